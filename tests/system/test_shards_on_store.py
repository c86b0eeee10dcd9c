"""Shards of a job whose output is on S3 (issue 26; a real moto server on 127.0.0.1): each
shard's file and proof are written where the output lives, each shard runs under a lease of
its own, resumes from its journal segments on any machine, and ``merge s3://...`` checks the
proofs there and uploads the job's output, every row once, in order."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import job_config, prompts, python_process, reply_tag, wait_until, write_jsonl

import batchrun
from batchrun.config.load import RunConfig
from batchrun.remote.lease import LEASE_OBJECT
from batchrun.remote.mirror import journal_prefix
from batchrun.remote.objects import Storage
from batchrun.runs.plan import in_shard
from batchrun.shards.layout import PROOF_SUFFIX, ShardError
from batchrun.simulator import SimulatorConfig, SimulatorThread


def shard_ids(n: int, index: int, count: int) -> list[str]:
    return [row["id"] for row in prompts(n) if in_shard(row["id"], (index, count))]


def shard_url(out: str, index: int, count: int) -> str:
    name = out.rstrip("/").rsplit("/", 1)[1]
    name += "" if "." in name else ".parquet"  # a folder's shards are Parquet files
    return f"{out.rstrip('/')}.shards/{index}-of-{count}/{name}"


def shard_run(
    inp: Path, out: str, url: str, env: dict[str, str], *extra: str
) -> subprocess.Popen[str]:
    """``batchrun run ... --shard ...`` as a real process, with the store's environment."""
    cmd = [sys.executable, "-m", "batchrun", "run", str(inp), "-o", out, "--base-url", url]
    cmd += ["--model", "claude-haiku-4-5", "--max-tokens", "20", "-q", *extra]
    return subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def config(inp: Path, out: str, url: str, env: dict[str, str], **flags: Any) -> RunConfig:
    return job_config(inp, out, url, environ=env, **{"max_tokens": 20, **flags})


def read_output(storage: Storage, out: str, tmp_path: Path) -> list[dict[str, Any]]:
    local = tmp_path / f"read-{uuid.uuid4().hex[:6]}"
    if out.endswith("/"):
        for info in storage.list(out):
            storage.download(info.url, local / info.url[len(out) :])
        return list(pq.read_table(local).to_pylist())  # the parts, as one table
    storage.download(out, local)
    return list(pq.read_table(local).to_pylist())


def check_rows(rows: list[dict[str, Any]], n: int, via: str) -> None:
    assert [r["id"] for r in rows] == [p["id"] for p in prompts(n)]
    for src, row in zip(prompts(n), rows, strict=True):
        assert row["status"] == "ok" and row["text"].startswith(reply_tag(src["prompt"]))
        assert row["via"] == via


def segment_lines(storage: Storage, url: str) -> int:
    return sum(
        storage.read_bytes(info.url).count(b"\n") for info in storage.list(journal_prefix(url))
    )


def test_two_batch_shard_processes_on_s3_and_merge_output_write_every_row_once_in_order(
    tmp_path: Path, env: dict[str, str], bucket: str, storage: Storage
) -> None:
    n = 70
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = f"s3://{bucket}/out/labels.parquet"
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.3)) as sim:
        batches = ("--via", "batches", "--poll-interval", "0.05")
        procs = [
            shard_run(inp, out, sim.base_url, env, "--shard", f"{i}/2", *batches) for i in (0, 1)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
        stats = sim.stats.snapshot()
        assert stats.batch_requests_submitted == n and stats.batches_created == 2
    for i in (0, 1):
        url = shard_url(out, i, 2)
        # Where the output lives: the shard's file and its proof; its lease and segments gone.
        assert storage.exists(url) and storage.exists(url + PROOF_SUFFIX)
        assert not storage.exists(url + LEASE_OBJECT)
        assert storage.list(journal_prefix(url)) == []
    assert not storage.exists(out)

    merged = python_process("-m", "batchrun", "merge", out, env=env)
    assert merged.returncode == 0, merged.stderr
    assert f"merged into {out}: {n:,} rows ({n:,} ok, 0 error)" in merged.stderr
    check_rows(read_output(storage, out, tmp_path), n, "batches")


def test_online_shards_into_an_s3_folder_merge_into_a_dataset(
    tmp_path: Path, env: dict[str, str], bucket: str, storage: Storage, sim: SimulatorThread
) -> None:
    n = 50
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = f"s3://{bucket}/out/labels/"
    job = config(inp, out, sim.base_url, env)
    for i in range(3):
        result = batchrun.run_shard(job, i, 3)
        assert result.exit_code == 0
        assert result.summary.final is not None
        assert result.summary.final.rows == len(shard_ids(n, i, 3))
    assert sim.stats.requests == n
    counts = batchrun.merge_shards(job)  # the job's config: its input and settings
    assert (counts.rows, counts.ok) == (n, n)
    assert storage.exists(out + "_SUCCESS")
    check_rows(read_output(storage, out, tmp_path), n, "online")


def test_a_shard_lost_mid_run_resumes_on_a_new_machine_from_its_segments(
    tmp_path: Path,
    env: dict[str, str],
    bucket: str,
    storage: Storage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])  # merge by URL reads it
    n = 160
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = f"s3://{bucket}/out/labels.parquet"
    mine = shard_ids(n, 1, 2)
    url = shard_url(out, 1, 2)
    with SimulatorThread(SimulatorConfig(latency_mean=0.05, latency_jitter=0.01)) as sim:
        job = config(inp, out, sim.base_url, env, segment_rows=5)
        assert batchrun.run_shard(job, 0, 2).exit_code == 0
        lost = shard_run(
            inp, out, sim.base_url, env, "--shard", "1/2", "-c", "2", "--segment-rows", "5"
        )
        wait_until(lambda: segment_lines(storage, url) >= 10, 60, "two segments", alive=[lost])
        lost.kill()
        lost.communicate(timeout=30)
        sealed = segment_lines(storage, url)
        assert 10 <= sealed < len(mine)

        # Its lease outlives it (a machine lost says nothing): merge names the holder.
        with pytest.raises(ShardError, match=r"shard 1/2 is running \(run .* \(pid"):
            batchrun.merge_shards(out)

        # A new machine: no work folder. The shard resumes from its segments on the store
        # (the lease of a process of this host that is gone is taken over at once).
        shutil.rmtree(job.output.path.parent)
        sent = sim.stats.requests
        again = batchrun.run_shard(job, 1, 2)
        assert again.exit_code == 0 and again.summary.skipped == sealed
        assert sim.stats.requests - sent == len(mine) - sealed

        # Run once more: the shard's file on the store is taken back as its journal; nothing
        # is sent and the same rows are published again.
        before = storage.read_bytes(url)
        sent = sim.stats.requests
        once_more = batchrun.run_shard(job, 1, 2)
        assert once_more.exit_code == 0 and once_more.summary.skipped == len(mine)
        assert sim.stats.requests == sent
        assert pq.read_table(pa.BufferReader(storage.read_bytes(url))).equals(
            pq.read_table(pa.BufferReader(before))
        )
    counts = batchrun.merge_shards(out)
    assert (counts.rows, counts.ok) == (n, n)
    check_rows(read_output(storage, out, tmp_path), n, "online")


def test_each_shard_holds_its_own_lease(
    tmp_path: Path,
    env: dict[str, str],
    bucket: str,
    storage: Storage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])  # merge by URL reads it
    n = 80
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = f"s3://{bucket}/out/labels.parquet"
    # Shard 0 takes about 40 x 0.2 s, one request at a time: it runs all through the rest.
    with SimulatorThread(SimulatorConfig(latency_mean=0.2, latency_jitter=0.01)) as sim:
        running = shard_run(inp, out, sim.base_url, env, "--shard", "0/2", "-c", "1")
        lease = shard_url(out, 0, 2) + LEASE_OBJECT
        wait_until(lambda: storage.exists(lease), 60, "shard 0's lease", alive=[running])
        # Another machine (a work folder of its own) is refused the shard that runs, told
        # who holds it ...
        elsewhere = {**env, "XDG_CACHE_HOME": str(tmp_path / "other-machine")}
        with pytest.raises(batchrun.OutputError, match="is being written by run"):
            batchrun.run_shard(config(inp, out, sim.base_url, elsewhere), 0, 2)
        # ... and runs the other shard meanwhile.
        other = batchrun.run_shard(config(inp, out, sim.base_url, elsewhere), 1, 2)
        assert other.exit_code == 0
        assert running.poll() is None  # both at once
        _, err = running.communicate(timeout=120)
        assert running.returncode == 0, err
    assert batchrun.merge_shards(out).rows == n
