"""The command line as a real subprocess: the shipped job against the simulator, and
``python -m batchrun --help`` (through click's runner: tests/integration/test_cli.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_job_runs_on_the_simulator_as_a_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "labels.parquet"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchrun",
            "run",
            str(REPO / "jobs" / "label_sentiment.toml"),
            "--simulate",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    assert table.num_rows == 200
    assert set(table.column("status").to_pylist()) == {"ok"}
    assert "200 ok, 0 error" in proc.stderr


def test_python_dash_m_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "batchrun", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "Usage" in proc.stdout
