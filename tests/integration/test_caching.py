"""Prompt caching: cache_control passes through, cache_system, and the simulator's cache."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import TEST_KEY, RecordingTransport, write_jsonl
from test_conformance import assert_conforms

from batchrun import load_config, run
from batchrun.client.response import message_fields
from batchrun.core.errors import ConfigError
from batchrun.rows.request import RequestDefaults, build_request
from batchrun.runs.runtime import Runtime
from batchrun.simulator.cache import MIN_CACHEABLE_TOKENS, PromptCache
from batchrun.simulator.replies import make_reply
from batchrun.simulator.tokens import count_input_tokens

EPHEMERAL = {"type": "ephemeral"}


def long_text(words: int = MIN_CACHEABLE_TOKENS + 200) -> str:
    """Enough text to be cacheable, unique so no other test's cache entries can match."""
    return f"context {uuid.uuid4().hex} " + "lorem " * words


def test_cache_control_passes_through_everywhere() -> None:
    tool = {"name": "t", "input_schema": {"type": "object"}, "cache_control": EPHEMERAL}
    system = [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    content = [{"type": "text", "text": "doc", "cache_control": EPHEMERAL}]
    fields = {"messages": [{"role": "user", "content": content}], "system": system,
              "tools": [tool]}  # fmt: skip
    body = build_request(fields, RequestDefaults(model="m", max_tokens=5))
    assert body["tools"][0]["cache_control"] == EPHEMERAL
    assert body["system"] == system
    assert body["messages"][0]["content"][0]["cache_control"] == EPHEMERAL
    assert_conforms(body)


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("Be brief.", [{"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL}]),
        (
            [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            [
                {"type": "text", "text": "a"},
                {"type": "text", "text": "b", "cache_control": EPHEMERAL},
            ],
        ),
        (
            [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        ),
    ],
)
def test_cache_system_marks_the_end_of_the_system_prompt(system: Any, expected: Any) -> None:
    defaults = RequestDefaults(model="m", max_tokens=5, cache_system=EPHEMERAL)
    body = build_request({"prompt": "x", "system": system}, defaults)
    assert body["system"] == expected
    assert_conforms(body)
    assert "system" not in build_request({"prompt": "x"}, defaults)  # nothing to mark


def test_cache_keys_in_the_job(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    base = {"model": "m", "max_tokens": 5, "system": "s"}
    config = load_config(inp, {**base, "cache_system": True, "cache_ttl": "1h"}, environ={})
    assert config.defaults.cache_system == {"type": "ephemeral", "ttl": "1h"}
    assert load_config(inp, {**base, "cache_system": True}, environ={}).defaults.cache_system == (
        EPHEMERAL
    )
    with pytest.raises(ConfigError, match="5m"):
        load_config(inp, {**base, "cache_system": True, "cache_ttl": "2h"}, environ={})
    with pytest.raises(ConfigError, match="no effect"):
        load_config(inp, {**base, "cache": "off", "cache_ttl": "1h"}, environ={})
    with pytest.raises(ConfigError, match="drop one"):
        load_config(inp, {**base, "cache": "auto", "cache_system": True}, environ={})
    with pytest.raises(ConfigError, match="one of"):
        load_config(inp, {**base, "cache": "always"}, environ={})


def test_cache_modes_reach_the_request_defaults(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    base = {"model": "claude-haiku-4-5", "max_tokens": 5, "system": "s"}
    auto = load_config(inp, base, environ={}).defaults
    assert auto.cache is not None and auto.cache_system is None  # auto is the default
    assert auto.cache.minimum_tokens("claude-haiku-4-5") == 4096  # from the price table
    assert auto.cache.minimum_tokens("claude-sonnet-4-6") == 1024
    assert load_config(inp, base, environ={}).defaults == auto  # loaded alike, equal
    hour = load_config(inp, {**base, "cache_ttl": "1h"}, environ={}).defaults.cache
    assert hour is not None and hour.control == {"type": "ephemeral", "ttl": "1h"}
    off = load_config(inp, {**base, "cache": "off"}, environ={}).defaults
    assert off.cache is None and off.cache_system is None
    system = load_config(inp, {**base, "cache": "system"}, environ={}).defaults
    assert system.cache is None and system.cache_system == EPHEMERAL


def body_with(system_text: str, prompt: str, ttl: str | None = None) -> dict[str, Any]:
    control = EPHEMERAL if ttl is None else {"type": "ephemeral", "ttl": ttl}
    system = [{"type": "text", "text": system_text, "cache_control": control}]
    fields = {"prompt": prompt, "system": system}
    return build_request(fields, RequestDefaults(model="claude-sonnet-4-6", max_tokens=20))


def test_the_simulator_writes_then_reads_a_repeated_prefix() -> None:
    cache = PromptCache()
    shared = long_text()
    first = make_reply(body_with(shared, "question one"), cache=cache).message["usage"]
    second = make_reply(body_with(shared, "question two"), cache=cache).message["usage"]
    total = count_input_tokens(body_with(shared, "question two"))
    assert first["cache_creation_input_tokens"] > MIN_CACHEABLE_TOKENS
    assert first["cache_read_input_tokens"] == 0
    assert (
        first["cache_creation"]["ephemeral_5m_input_tokens"] == first["cache_creation_input_tokens"]
    )
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
    assert second["cache_creation_input_tokens"] == 0
    assert second["input_tokens"] + second["cache_read_input_tokens"] == total
    fields = message_fields(make_reply(body_with(shared, "q3", "1h"), cache=PromptCache()).message)
    assert fields["cache_creation_1h_input_tokens"] == fields["cache_creation_input_tokens"] > 0
    assert fields["cache_creation_5m_input_tokens"] == 0


def test_short_prefixes_and_expired_entries_are_not_read() -> None:
    now = [0.0]
    cache = PromptCache(clock=lambda: now[0])
    short = "short system prompt"
    for _ in range(2):
        usage = make_reply(body_with(short, "q"), cache=cache).message["usage"]
        assert usage["cache_creation_input_tokens"] == usage["cache_read_input_tokens"] == 0
    shared = long_text()
    make_reply(body_with(shared, "q"), cache=cache)
    now[0] += 301  # past the 5 minute ttl
    usage = make_reply(body_with(shared, "q"), cache=cache).message["usage"]
    assert usage["cache_read_input_tokens"] == 0 and usage["cache_creation_input_tokens"] > 0


def test_a_longer_prefix_reads_the_shorter_and_writes_the_rest() -> None:
    cache = PromptCache()
    shared = long_text()
    make_reply(body_with(shared, "q"), cache=cache)
    body = body_with(shared, "q")
    doc = long_text()
    body["messages"][0]["content"] = [
        {"type": "text", "text": doc, "cache_control": EPHEMERAL},
        {"type": "text", "text": "What changed?"},
    ]
    usage = make_reply(body, cache=cache).message["usage"]
    assert usage["cache_read_input_tokens"] > MIN_CACHEABLE_TOKENS
    assert usage["cache_creation_input_tokens"] > MIN_CACHEABLE_TOKENS  # the document


def test_whole_run_with_cache_system(tmp_path: Path, sim: Any) -> None:
    rows = [{"id": f"r{i}", "prompt": f"Review {i}: fine."} for i in range(4)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    settings = {"output": str(out), "model": "claude-sonnet-4-6", "max_tokens": 20,
                "system": long_text(), "cache_system": True, "cache_ttl": "1h",
                "concurrency": 1, "base_url": sim.base_url, "quiet": True}  # fmt: skip
    recorder = RecordingTransport()
    summary = run(
        load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY}),
        runtime=Runtime(transport=recorder),
    )
    assert summary.exit_code == 0
    got = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    written = got[0]["cache_creation_input_tokens"]
    assert written > MIN_CACHEABLE_TOKENS and got[0]["cache_creation_1h_input_tokens"] == written
    for row in got[1:]:  # one at a time: every later row reads what the first wrote
        assert row["cache_read_input_tokens"] == written
        assert row["cache_creation_input_tokens"] == 0
    assert got[1]["cost_usd"] < got[0]["cost_usd"]  # reads are priced below writes
    for body in recorder.bodies:
        assert body["system"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
        assert_conforms(body)


# --- marks only where the API takes them (issue 23, item 6) ----------------------------------


def count_marks(body: Any) -> int:
    """Every cache_control in the body, wherever it is (independent of batchrun's counter)."""
    if isinstance(body, dict):
        own = int(body.get("cache_control") is not None)
        return own + sum(count_marks(v) for k, v in body.items() if k != "cache_control")
    if isinstance(body, list):
        return sum(count_marks(item) for item in body)
    return 0


def whole_run(
    tmp_path: Path, sim: Any, rows: list[dict[str, Any]], **settings: Any
) -> tuple[Any, list[dict[str, Any]], RecordingTransport]:
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    base = {"output": str(out), "model": "claude-haiku-4-5", "max_tokens": 20,
            "concurrency": 1, "base_url": sim.base_url, "quiet": True}  # fmt: skip
    recorder = RecordingTransport()
    config = load_config(inp, {**base, **settings}, environ={"ANTHROPIC_API_KEY": TEST_KEY})
    summary = run(config, runtime=Runtime(transport=recorder))
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return summary, got, recorder


@pytest.mark.parametrize(("cache", "system"), [("auto", ""), ("auto", " \n"), ("system", "")])
def test_an_empty_system_prompt_is_not_sent_and_no_mark_lands_on_it(
    tmp_path: Path, sim: Any, cache: str, system: str
) -> None:
    """`--cache auto` with large --tools and `--system ""` sent an empty system text block
    carrying cache_control, which the API refuses: every row failed."""
    tools = [{"name": "lookup", "description": long_text(5000), "input_schema": {"type": "object"}}]
    rows = [{"id": f"r{i}", "prompt": f"Question {i}?"} for i in range(3)]
    summary, got, recorder = whole_run(tmp_path, sim, rows, tools=tools, system=system, cache=cache)
    assert summary.exit_code == 0 and [row["status"] for row in got] == ["ok"] * 3
    for body in recorder.bodies:
        assert "system" not in body  # no system prompt, as asked: not an empty block
        assert_conforms(body)
        if cache == "auto":  # the shared tools are still cached
            assert body["tools"][-1]["cache_control"] == EPHEMERAL and count_marks(body) == 1


def test_a_row_with_more_marks_than_the_api_takes_is_its_error_row_and_ours_give_way(
    tmp_path: Path, sim: Any
) -> None:
    """A row of 5 marks of its own was sent (the API takes 4); `--cache system` added a fifth
    to a row that had four."""

    def marked(n: int) -> list[dict[str, Any]]:
        blocks = [
            {"type": "text", "text": f"part {i}", "cache_control": EPHEMERAL} for i in range(n)
        ]
        return [{"role": "user", "content": blocks}]

    rows = [
        {"id": "plain", "prompt": "Hello?"},
        {"id": "five", "messages": marked(5)},
        {"id": "four", "messages": marked(4)},
    ]
    summary, got, recorder = whole_run(tmp_path, sim, rows, system="Be brief.", cache="system")
    assert summary.exit_code == 3
    by_id = {row["id"]: row for row in got}
    assert by_id["plain"]["status"] == by_id["four"]["status"] == "ok"
    assert by_id["five"]["error_type"] == "invalid_request"
    assert by_id["five"]["error_message"].endswith(
        ":2: cache_control: the request carries 5 cache_control marks (5 in messages), and the "
        "API takes at most 4 in one request: remove 1 (a mark caches everything before it, so "
        "the last ones are usually the ones to keep)"
    )
    assert len(recorder.bodies) == 2  # the row of five was never sent
    for body in recorder.bodies:
        assert count_marks(body) <= 4
        assert_conforms(body)
    plain, four = sorted(recorder.bodies, key=lambda body: count_marks(body["messages"]))
    assert plain["system"][-1]["cache_control"] == EPHEMERAL  # batchrun's mark, room for it
    assert four["system"] == "Be brief." and count_marks(four) == 4  # the row's four win


def test_validate_names_a_row_with_too_many_marks(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from batchrun.cli import cli

    blocks = [{"type": "text", "text": f"p{i}", "cache_control": EPHEMERAL} for i in range(6)]
    inp = write_jsonl(tmp_path / "in.jsonl", [{"messages": [{"role": "user", "content": blocks}]}])
    result = CliRunner().invoke(cli, ["validate", str(inp), "--model", "m", "--max-tokens", "5"])
    assert result.exit_code == 3, result.output
    assert f"{inp}:1: cache_control: the request carries 6 cache_control marks" in result.output
    assert "remove 2" in result.output
