"""Runs in tests: input files, job configs against the simulator, answer tags, a run as a real
process, and how far its journal got."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun import load_config
from batchrun.config.load import RunConfig
from batchrun.simulator import SimulatorThread
from batchrun.store.sink import journal_path
from support.waiting import wait_until

TEST_KEY = "sk-ant-test-0123456789abcdef"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def prompts(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"q{i:04d}", "prompt": f"Question number {i}: what is {i} + {i}?"} for i in range(n)
    ]


def reply_tag(prompt: str) -> str:
    """The tag the simulator starts every answer with: ties an answer to its own prompt."""
    return "re:" + hashlib.sha256(prompt.encode()).hexdigest()[:8]


def job_config(
    inp: Path | str,
    out: Path | str,
    url: str,
    *,
    environ: Mapping[str, str] | None = None,
    **flags: Any,
) -> RunConfig:
    """A run of ``inp`` against the simulator at ``url``, quiet, with a test key (or the
    environment ``environ``, such as a remote output's credentials)."""
    settings = {
        "output": str(out),
        "model": "claude-haiku-4-5",
        "max_tokens": 40,
        "base_url": url,
        "quiet": True,
        "concurrency": 8,
        **flags,
    }
    return load_config(inp, settings, environ=environ or {"ANTHROPIC_API_KEY": TEST_KEY})


def start_run(
    inp: Path, out: Path, url: str, *extra: str, concurrency: int = 16
) -> subprocess.Popen[str]:
    """``python -m batchrun run`` of ``inp`` into ``out`` against ``url``, as a real process."""
    env = {**os.environ, "ANTHROPIC_API_KEY": TEST_KEY}
    cmd = [sys.executable, "-m", "batchrun", "run", str(inp), "-o", str(out)]
    cmd += ["--base-url", url, "--model", "claude-haiku-4-5", "--max-tokens", "20"]
    cmd += ["-c", str(concurrency), "-q", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def python_process(
    *args: str,
    env: Mapping[str, str] | None = None,
    unset: Iterable[str] = (),
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` (``-m batchrun ...``, ``-c CODE``) as a real process run to its end, its
    output captured: this process's environment less ``unset``, with ``env`` over it."""
    gone = set(unset)
    base = {name: value for name, value in os.environ.items() if name not in gone}
    return subprocess.run(
        [sys.executable, *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def journal_lines(out: Path) -> int:
    """Rows journaled so far (lines of ``out``'s journal)."""
    path = journal_path(out)
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for_journal(out: Path, proc: subprocess.Popen[str], lines: int) -> None:
    """Until ``proc``, a run into ``out``, has journaled ``lines`` rows (it must not end first)."""
    wait_until(lambda: journal_lines(out) >= lines, 60, f"{lines} rows journaled", alive=[proc])


def settled(sim: SimulatorThread, *, every: float = 0.5) -> tuple[int, int]:
    """The simulator's request and answered counts once nothing arrives or is answered any
    more: a killed client leaves requests the server goes on answering, and bytes in a socket
    that may reach it just after the client died."""
    last = (-1, -1)
    while True:
        stats = sim.stats.snapshot()
        now = (stats.requests, stats.answered_ok)
        if now == last and stats.in_flight == 0:
            return now
        last = now
        time.sleep(every)


def check_output(out: Path, n: int) -> None:
    """The output holds every row of ``prompts(n)`` once, in input order, each answered ok with
    its own prompt's answer."""
    table = pq.read_table(out).to_pylist()
    assert [r["id"] for r in table] == [r["id"] for r in prompts(n)]  # every id, once, in order
    for src, res in zip(prompts(n), table, strict=True):
        assert res["status"] == "ok" and res["text"].startswith(reply_tag(src["prompt"]))


def rows_of(out: Path) -> list[dict[str, Any]]:
    """The rows of a Parquet output."""
    return list(pq.read_table(out).to_pylist())


def jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    """``rows`` as JSONL, as a pipe would carry them."""
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


# -- Message Batches runs --------------------------------------------------------------------


def batch_config(inp: Path, out: Path, url: str, **flags: Any) -> Any:
    """``job_config`` through the Message Batches API, polled every 50 ms."""
    return job_config(inp, out, url, via="batches", poll_interval=0.05, **flags)


def submitted_once(sim: SimulatorThread, n: int) -> None:
    """The simulator received ``n`` batch requests, each custom id once."""
    stats = sim.stats.snapshot()
    assert stats.batch_requests_submitted == n
    assert set(stats.batch_custom_ids.values()) == {1}


# -- the Python API (batchrun.run on rows) ---------------------------------------------------


def questions(n: int) -> list[dict[str, Any]]:
    """``n`` rows with an id, a prompt and a number."""
    return [{"id": f"q{i}", "prompt": f"What is {i} + {i}?", "n": i} for i in range(n)]


def against(sim: SimulatorThread, **settings: Any) -> dict[str, Any]:
    """The keywords of a quiet run against ``sim`` with the test key."""
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 20,
        "base_url": sim.base_url,
        "environ": {"ANTHROPIC_API_KEY": TEST_KEY},
        "quiet": True,
        **settings,
    }


def assert_answers(table: pa.Table, rows: list[dict[str, Any]]) -> None:
    """One ok row per input row, in input order, each answer its own prompt's."""
    assert table.column("id").to_pylist() == [row["id"] for row in rows]
    assert set(table.column("status").to_pylist()) == {"ok"}
    for text, row in zip(table.column("text").to_pylist(), rows, strict=True):
        assert text.startswith(reply_tag(row["prompt"]))
