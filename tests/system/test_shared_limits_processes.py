"""One rate limit for many workers (``--rate-limit-store``): whole runs of several ``python -m
batchrun run`` processes against one rate-limited simulator and a real Redis, alive and killed
mid-run (the scripts and limiters in-process: tests/integration/test_shared_limits.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import redis
from support import TEST_KEY, prompts, reply_tag, wait_until, write_jsonl
from support.redis_server import RedisServer

from batchrun.simulator import SimulatorConfig, SimulatorThread

MODEL = "claude-haiku-4-5"

# --------------------------------------------------------------------------- whole runs


RPM = 300  # 5 a second once the bucket is drained

ROWS_PER_WORKER = 12


def drain(url: str) -> None:
    """Spend the simulator's request bucket from another client, as other jobs would."""
    headers = {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"}
    body = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(base_url=url, headers=headers) as http:
        while http.post("/v1/messages", json=body).status_code != 429:
            pass


def start_worker(
    tmp_path: Path,
    name: str,
    url: str,
    store: str,
    rows_per_worker: int = ROWS_PER_WORKER,
    rpm: int = RPM,
) -> subprocess.Popen[bytes]:
    """``python -m batchrun run`` of this worker's own rows, its stderr to NAME.log."""
    rows = [
        {**row, "id": f"{name}-{row['id']}", "prompt": f"{name}: {row['prompt']}"}
        for row in prompts(rows_per_worker)
    ]
    inp = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    out = tmp_path / f"{name}.parquet"
    argv = [sys.executable, "-m", "batchrun", "run", str(inp), "-o", str(out)]
    argv += ["--model", MODEL, "--max-tokens", "16", "--base-url", url, "-c", "4"]
    argv += ["--rpm", str(rpm), "--rate-limit-store", store]
    env = {**os.environ, "ANTHROPIC_API_KEY": TEST_KEY}
    with (tmp_path / f"{name}.log").open("wb") as log:
        return subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=log)


def check_every_row_answered_once(
    tmp_path: Path, names: list[str], sim: SimulatorThread, rows_per_worker: int = ROWS_PER_WORKER
) -> None:
    for name in names:
        table = pq.read_table(tmp_path / f"{name}.parquet").to_pylist()
        assert [row["id"] for row in table] == [f"{name}-q{i:04d}" for i in range(rows_per_worker)]
        assert {row["status"] for row in table} == {"ok"}
        for i in range(rows_per_worker):
            prompt = f"{name}: " + prompts(rows_per_worker)[i]["prompt"]
            assert sim.stats.answers_by_tag[reply_tag(prompt)] == 1


def answered_by(sim: SimulatorThread, name: str, rows_per_worker: int) -> int:
    """How many of worker ``name``'s rows the simulator has answered so far."""
    return sum(
        sim.stats.answers_by_tag[reply_tag(f"{name}: " + row["prompt"])]
        for row in prompts(rows_per_worker)
    )


def finish(tmp_path: Path, workers: list[subprocess.Popen[bytes]]) -> list[str]:
    """Wait for every worker; what each wrote on stderr."""
    logs = []
    for number, worker in enumerate(workers):
        worker.wait(timeout=300)
        log = (tmp_path / f"w{number}.log").read_text(encoding="utf-8")
        assert worker.returncode == 0, log
        logs.append(log)
    return logs


def test_processes_sharing_a_store_pace_as_one_and_draw_almost_no_429s(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    names = ["w0", "w1", "w2"]
    with SimulatorThread(SimulatorConfig(latency_mean=0.002, rpm=RPM)) as sim:
        drain(sim.base_url)
        refused_before = sim.stats.rate_limited
        finish(
            tmp_path,
            [start_worker(tmp_path, name, sim.base_url, redis_server.url) for name in names],
        )
        refused = sim.stats.rate_limited - refused_before
        check_every_row_answered_once(tmp_path, names, sim)
    # The probe meets the drained bucket (and so may a worker that began before it was told);
    # unshared, each worker would send at the whole limit: three times what the bucket refills.
    assert refused <= len(names)


def test_a_run_whose_redis_dies_midway_finishes_with_every_row_once(tmp_path: Path) -> None:
    # 2 requests a second for both: a worker that starts seconds before the other (a loaded
    # machine) cannot finish its 20 rows before the other has begun.
    names, rows, rpm = ["w0", "w1"], 20, 120
    with SimulatorThread(SimulatorConfig(latency_mean=0.002, rpm=rpm)) as sim:
        drain(sim.base_url)
        with RedisServer() as doomed:
            workers = [
                start_worker(tmp_path, name, sim.base_url, doomed.url, rows, rpm) for name in names
            ]
            watcher = redis.Redis.from_url(doomed.url)
            # Both under way (registered, a row answered each), and each with more rows left
            # than it can have in flight (-c 4): each must ask Redis again after it is gone.
            wait_until(
                lambda: (
                    watcher.zcard("batchrun:workers") >= len(names)
                    and all(answered_by(sim, name, rows) >= 1 for name in names)
                ),
                60,
                "every worker registered and a row answered by each",
                alive=workers,
                every=0.05,
            )
            assert all(answered_by(sim, name, rows) <= rows - 5 for name in names)
            watcher.close()
            doomed.kill()
        errors = finish(tmp_path, workers)
        check_every_row_answered_once(tmp_path, names, sim, rows)
    assert all("shared rate-limit store stopped answering" in text for text in errors)
