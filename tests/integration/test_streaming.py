"""Streaming and non-streaming runs of the same job give the same rows (bar timing)."""

from __future__ import annotations

import json
from pathlib import Path

from support import TEST_KEY, RecordingTransport, write_jsonl

from batchrun import load_config, run
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorThread
from batchrun.simulator.replies import REDACTED_THINKING_TRIGGER

TIMING = {"latency_ms", "elapsed_ms", "finished_at", "request_id"}
THINKING = {"type": "enabled", "budget_tokens": 1024}
TOOL = {
    "name": "classify",
    "description": "Record a label.",
    "input_schema": {
        "type": "object",
        "required": ["label", "scores"],
        "properties": {
            "label": {"type": "string", "enum": ["spam", "ham"]},
            "scores": {"type": "array", "minItems": 2, "items": {"type": "number"}},
        },
    },
}


def test_streamed_and_plain_runs_write_identical_rows(tmp_path: Path, sim: SimulatorThread) -> None:
    rows = [
        {"id": "text", "prompt": "Plain question"},
        {"id": "thinking", "prompt": "Think first", "thinking": THINKING},
        {"id": "redacted", "prompt": f"x {REDACTED_THINKING_TRIGGER}", "thinking": THINKING},
        {"id": "adaptive", "prompt": "Think if you like", "thinking": {"type": "adaptive"}},
        {"id": "tool", "prompt": "Classify this", "tools": [TOOL],
         "tool_choice": {"type": "tool", "name": "classify"}},
        {"id": "tool-any", "prompt": "Classify that", "tools": [TOOL],
         "tool_choice": {"type": "any"}},
        {"id": "tools-thinking", "prompt": "Maybe a tool", "tools": [TOOL],
         "tool_choice": {"type": "auto"}, "thinking": THINKING},
        {"id": "short", "prompt": "Cut me off", "max_tokens": 3},
        {"id": "multi", "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "Go on"}]}]},
    ]  # fmt: skip
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    outputs = {}
    for stream in (False, True):
        out = tmp_path / f"out-{stream}.jsonl"
        settings = {"output": str(out), "model": "claude-sonnet-4-6", "max_tokens": 2000,
                    "stream": stream, "base_url": sim.base_url, "quiet": True}  # fmt: skip
        recorder = RecordingTransport()
        config = load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY})
        summary = run(config, runtime=Runtime(transport=recorder))
        assert summary.exit_code == 0
        assert [body.get("stream", False) for body in recorder.bodies] == [stream] * len(rows)
        outputs[stream] = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    plain, streamed = outputs[False], outputs[True]
    assert len(plain) == len(streamed) == len(rows)
    for a, b in zip(plain, streamed, strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING} == {
            k: v for k, v in b.items() if k not in TIMING
        }
    by_id = {r["id"]: r for r in plain}
    # The rows really exercise what they claim to (so the comparison is not vacuous).
    assert json.loads(by_id["tool"]["tool_calls_json"])[0]["input"]["scores"] == [0.0, 0.0]
    assert by_id["tool-any"]["stop_reason"] == "tool_use"
    assert by_id["thinking"]["thinking"] and by_id["redacted"]["redacted_thinking_blocks"] == 1
    assert by_id["short"]["stop_reason"] == "max_tokens"
    assert sim.stats.by_status[200] == 2 * len(rows)
