"""A run read from a pipe (``batchrun run -`` as a real process), and again to resume (the file
shapes: tests/integration/test_file_shapes.py)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from support import (
    TEST_KEY,
    jsonl_bytes,
    prompts,
    reply_tag,
)

from batchrun.simulator import SimulatorThread


def test_run_from_a_pipe_and_again_resumes(tmp_path: Path, sim: SimulatorThread) -> None:
    out = tmp_path / "out.parquet"
    env = {**os.environ, "ANTHROPIC_API_KEY": TEST_KEY}
    cmd = [sys.executable, "-m", "batchrun", "run", "-", "-o", str(out), "-q"]
    cmd += ["--base-url", sim.base_url, "--model", "claude-haiku-4-5", "--max-tokens", "20"]
    rows = prompts(8)
    data = gzip.compress(jsonl_bytes(rows))
    first = subprocess.run(cmd, input=data, env=env, capture_output=True, timeout=120)
    assert first.returncode == 0, first.stderr.decode()
    table = pq.read_table(out).to_pylist()
    assert [r["id"] for r in table] == [r["id"] for r in rows]
    assert all(
        r["text"].startswith(reply_tag(p["prompt"])) for r, p in zip(table, rows, strict=True)
    )

    answered = sim.stats.snapshot().answered_ok
    again = subprocess.run(cmd, input=data, env=env, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert sim.stats.snapshot().answered_ok == answered  # the same bytes: nothing sent again
