"""Extended thinking in a whole run against the simulator (validation and columns:
tests/unit/test_thinking.py)."""

from __future__ import annotations

import json
from pathlib import Path

from support import TEST_KEY, write_jsonl

from batchrun import load_config, run
from batchrun.simulator import SimulatorThread
from batchrun.simulator.replies import REDACTED_THINKING_TRIGGER

ENABLED = {"type": "enabled", "budget_tokens": 2048}


def test_whole_run_with_thinking(tmp_path: Path, sim: SimulatorThread) -> None:
    rows = [
        {"id": "plain", "prompt": "Why is the sky blue?"},
        {"id": "redacted", "prompt": f"Hmm {REDACTED_THINKING_TRIGGER}"},
        {"id": "adaptive", "prompt": "Think freely", "thinking": {"type": "adaptive"}},
        {"id": "off", "prompt": "No thinking", "thinking": {"type": "disabled"}},
        {"id": "bad", "prompt": "x", "thinking": {"type": "enabled", "budget_tokens": 9000}},
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    settings = {"output": str(out), "model": "claude-sonnet-4-6", "max_tokens": 4096,
                "thinking": ENABLED, "base_url": sim.base_url, "quiet": True}  # fmt: skip
    summary = run(load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY}))
    assert summary.exit_code == 3
    got = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    for name in ("plain", "redacted", "adaptive"):
        row = got[name]
        assert row["status"] == "ok" and row["thinking"].startswith("Considering re:")
        assert row["text"].startswith("re:") and row["thinking"] not in row["text"]
    assert got["redacted"]["redacted_thinking_blocks"] == 1
    assert got["plain"]["redacted_thinking_blocks"] == 0
    assert got["off"]["thinking"] is None and got["off"]["status"] == "ok"
    assert got["bad"]["error_type"] == "invalid_request"
    assert "budget_tokens (9000) must be less than max_tokens (4096)" in got["bad"]["error_message"]
