"""Extended thinking: validated like the API, thinking apart from the answer, redacted counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import write_jsonl

from batchrun import load_config
from batchrun.client.response import StreamAssembler, message_fields
from batchrun.core.errors import ConfigError, InvalidRowError
from batchrun.rows.request import RequestDefaults, build_request
from batchrun.simulator.events import stream_events
from batchrun.simulator.replies import REDACTED_THINKING_TRIGGER, make_reply

DEFAULTS = RequestDefaults(model="claude-sonnet-4-6", max_tokens=4096)

ENABLED = {"type": "enabled", "budget_tokens": 2048}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1023}}, "at least 1024"),
        ({"thinking": {"type": "enabled"}}, "budget_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 4096}}, "less than max_tokens"),
        ({"thinking": {"type": "sometimes"}}, "type must be one of"),
        ({"thinking": ENABLED, "tools": [{"name": "t"}], "tool_choice": {"type": "any"}},
         "forces a tool"),
    ],
)  # fmt: skip
def test_thinking_is_validated_like_the_api(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidRowError, match=reason):
        build_request({"prompt": "x", **fields}, DEFAULTS)


def test_valid_thinking_settings_pass() -> None:
    for thinking in (ENABLED, {"type": "adaptive"}, {"type": "disabled"}):
        assert (
            build_request({"prompt": "x", "thinking": thinking}, DEFAULTS)["thinking"] == thinking
        )
    tools = {"tools": [{"name": "t"}], "tool_choice": {"type": "auto"}}
    assert build_request({"prompt": "x", "thinking": ENABLED, **tools}, DEFAULTS)


def thinking_body(prompt: str) -> dict[str, Any]:
    return build_request({"prompt": prompt, "thinking": ENABLED}, DEFAULTS)


def test_thinking_goes_to_its_column_and_redacted_blocks_are_counted() -> None:
    message = make_reply(thinking_body(f"Think {REDACTED_THINKING_TRIGGER}")).message
    kinds = [block["type"] for block in message["content"]]
    assert kinds == ["thinking", "redacted_thinking", "text"]
    fields = message_fields(message)
    assert fields["thinking"] == message["content"][0]["thinking"]
    assert fields["text"] == message["content"][2]["text"]
    assert fields["redacted_thinking_blocks"] == 1
    # Streamed, the redacted block arrives whole in content_block_start: same fields.
    assembler = StreamAssembler()
    for name, data in stream_events(message):
        assembler.feed(name, data)
    assert message_fields(assembler.message()) == fields


def test_no_thinking_means_null_thinking_and_no_redacted_blocks() -> None:
    message = make_reply(build_request({"prompt": "x"}, DEFAULTS)).message
    fields = message_fields(message)
    assert fields["thinking"] is None and fields["redacted_thinking_blocks"] == 0


def test_a_job_whose_own_thinking_settings_clash_is_refused_once(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    with pytest.raises(ConfigError, match="less than max_tokens"):
        load_config(inp, {"model": "m", "max_tokens": 1500, "thinking": ENABLED}, environ={})
    forced = {"model": "m", "max_tokens": 4096, "thinking": ENABLED,
              "tools": [{"name": "t"}], "tool_choice": {"type": "any"}}  # fmt: skip
    with pytest.raises(ConfigError, match="forces a tool"):
        load_config(inp, forced, environ={})
