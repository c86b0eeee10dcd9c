"""Failing fast from the command line as a real process: a closed port stops it within a few
attempts, naming the base URL (the policy, through MockTransport: tests/unit/test_fail_fast.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from support import TEST_KEY, prompts, write_jsonl

from batchrun.engine.fail_fast import QUICK_RETRIES, FailFast
from batchrun.store.sink import journal_path


def test_a_closed_port_stops_the_cli_within_a_few_attempts(tmp_path: Path) -> None:
    # A port nothing listens on: every connection is refused, as with a wrong --base-url.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(100))
    out = tmp_path / "out.parquet"
    cmd = [sys.executable, "-m", "batchrun", "run", str(inp), "-o", str(out), "-q"]
    cmd += ["--base-url", f"http://gw-user:gw-secret-1@127.0.0.1:{port}/?token=gw-2"]
    cmd += ["--model", "claude-haiku-4-5", "--max-tokens", "5", "-c", "4"]
    env = {**os.environ, "ANTHROPIC_API_KEY": TEST_KEY}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "stopping early" in done.stderr and "could not connect" in done.stderr
    assert f"no answer from {url}/ (" in done.stderr
    assert "gw-secret-1" not in done.stderr and "gw-2" not in done.stderr
    journaled = [json.loads(line) for line in journal_path(out).read_text().splitlines()]
    assert FailFast.LIMIT <= len(journaled) < FailFast.LIMIT + 4
    assert all(r["attempts"] <= 1 + QUICK_RETRIES for r in journaled)  # not 1 + 8 each
