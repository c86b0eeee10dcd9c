"""Every stop_reason is recorded as given, known or not, streamed or not (whole runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import TEST_KEY, write_jsonl

from batchrun import load_config, report, run
from batchrun.runs.runtime import Runtime
from batchrun.simulator.events import encode_event, stream_events
from batchrun.simulator.replies import make_reply

REASONS = [
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
    "a_reason_added_next_year",
]


def scripted(request: httpx.Request) -> httpx.Response:
    """The simulator's reply with the stop_reason the prompt asks for ("stop:<reason>")."""
    body = json.loads(request.content)
    reason = body["messages"][0]["content"].split("stop:")[1]
    message: dict[str, Any] = dict(make_reply(body).message)
    message["stop_reason"] = reason
    message["stop_sequence"] = "###" if reason == "stop_sequence" else None
    headers = {"request-id": "req_test"}
    if body.get("stream"):
        stream = b"".join(encode_event(name, data) for name, data in stream_events(message))
        headers["content-type"] = "text/event-stream"
        return httpx.Response(200, content=stream, headers=headers)
    return httpx.Response(200, json=message, headers=headers)


@pytest.mark.parametrize("stream", [False, True])
def test_every_stop_reason_is_recorded_as_given(tmp_path: Path, stream: bool) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": r, "prompt": f"stop:{r}"} for r in REASONS])
    out = tmp_path / "out.jsonl"
    settings = {"output": str(out), "model": "claude-haiku-4-5", "max_tokens": 30,
                "stream": stream, "quiet": True}  # fmt: skip
    config = load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY})
    summary = run(config, runtime=Runtime(transport=httpx.MockTransport(scripted)))
    assert summary.exit_code == 0
    got = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    for reason in REASONS:
        assert got[reason]["status"] == "ok"
        assert got[reason]["stop_reason"] == reason
        expected_sequence = "###" if reason == "stop_sequence" else None
        assert got[reason]["stop_sequence"] == expected_sequence
    assert report([out]).stop_reasons == dict.fromkeys(REASONS, 1)
