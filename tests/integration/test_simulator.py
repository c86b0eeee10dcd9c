"""The built-in simulator: pure reply and fault logic, then the server over a loopback socket."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from support import wait_until_async

from batchrun.simulator import (
    Simulator,
    SimulatorConfig,
    SimulatorThread,
    count_input_tokens,
    make_reply,
    parse_fault_spec,
    serve,
)
from batchrun.simulator.checks import (
    InvalidRequest,
    check_count_tokens_body,
    check_messages_body,
    check_version,
)
from batchrun.simulator.events import split_text, stream_events
from batchrun.simulator.faults import FaultPicker, effective_fault
from batchrun.simulator.replies import cut_at_stop_sequence, example_for_schema
from batchrun.simulator.server import loopback_address
from batchrun.simulator.tokens import IMAGE_TOKENS, MESSAGE_OVERHEAD, count_text_tokens

HEADERS = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
NEW_VERSION = "2026-10-21"


def body(prompt: str = "Name three rivers.", **extra: Any) -> dict[str, Any]:
    """A minimal valid Messages body."""
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1},
            "hourly": {"type": "boolean"},
            "note": {"type": "string"},
        },
        "required": ["city", "unit", "days", "hourly"],
    },
}


# ------------------------------------------------------------------------------ replies (pure)


def test_reply_is_deterministic_and_tagged_with_the_prompt_hash() -> None:
    first = make_reply(body("Hello there"))
    again = make_reply(body("Hello there"))
    digest = hashlib.sha256(b"Hello there").hexdigest()

    assert first == again
    assert first.tag == f"re:{digest[:8]}"
    text = first.message["content"][0]["text"]
    assert text.startswith(first.tag + " ")
    assert first.message["id"].startswith("msg_sim_")
    assert first.message["model"] == "claude-haiku-4-5-20251001"
    assert make_reply(body("Other prompt")).tag != first.tag


def test_reply_uses_the_last_user_turn_and_shape_matches_the_api() -> None:
    turns = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]
    reply = make_reply({"model": "claude-x", "max_tokens": 50, "messages": turns})

    assert reply.tag == "re:" + hashlib.sha256(b"second").hexdigest()[:8]
    assert reply.message["model"] == "claude-x"
    assert {"id", "type", "role", "content", "model", "stop_reason", "stop_sequence", "usage"} <= (
        reply.message.keys()
    )
    usage = reply.message["usage"]
    assert usage["cache_creation_input_tokens"] == 0
    assert usage["cache_read_input_tokens"] == 0
    assert usage["service_tier"] == "standard"


def test_reply_length_stays_in_the_configured_range() -> None:
    for index in range(40):
        reply = make_reply(body(f"prompt {index}"), reply_tokens=(5, 9))
        words = reply.message["content"][0]["text"].split()
        assert 5 <= len(words) <= 9
        assert reply.message["usage"]["output_tokens"] == len(words)
        assert reply.message["stop_reason"] == "end_turn"
    fixed = make_reply(body("x"), reply_tokens=(7, 7))
    assert len(fixed.message["content"][0]["text"].split()) == 7


def test_max_tokens_cuts_the_reply() -> None:
    reply = make_reply(body("cut me", max_tokens=3), reply_tokens=(50, 60))

    assert len(reply.message["content"][0]["text"].split()) == 3
    assert reply.message["stop_reason"] == "max_tokens"
    assert reply.message["usage"]["output_tokens"] == 3


def test_stop_sequence_cuts_before_the_earliest_match() -> None:
    words = make_reply(body("stop me"), reply_tokens=(30, 30)).message["content"][0]["text"]
    third, fifth = words.split()[2], words.split()[4]
    reply = make_reply(body("stop me", stop_sequences=[fifth, third]), reply_tokens=(30, 30))

    message = reply.message
    assert message["stop_reason"] == "stop_sequence"
    assert message["stop_sequence"] == third
    assert message["content"][0]["text"] == words[: words.index(" " + third) + 1]
    assert message["usage"]["output_tokens"] == 2


def test_stop_sequence_at_the_start_still_bills_one_token() -> None:
    reply = make_reply(body("x", stop_sequences=["re:"]))

    assert reply.message["content"][0]["text"] == ""
    assert reply.message["usage"]["output_tokens"] == 1


def test_cut_at_stop_sequence_ignores_empty_and_missing() -> None:
    assert cut_at_stop_sequence("a b c", ["", "z"]) == ("a b c", None)
    assert cut_at_stop_sequence("a b c", ["c", "b"]) == ("a ", "b")


def test_forced_tool_gives_a_valid_tool_use_block() -> None:
    request = body(tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "get_weather"})
    message = make_reply(request).message

    assert message["stop_reason"] == "tool_use"
    [block] = message["content"]
    assert block["type"] == "tool_use"
    assert block["id"].startswith("toolu_sim_")
    assert block["name"] == "get_weather"
    assert block["input"] == {"city": "sim", "unit": "celsius", "days": 1, "hourly": False}
    assert message["usage"]["output_tokens"] >= 1


def test_tool_choice_any_uses_a_tool_and_auto_answers_text() -> None:
    other = {"name": "noop", "input_schema": {"type": "object"}}
    forced = make_reply(body(tools=[other, WEATHER_TOOL], tool_choice={"type": "any"}))
    free = make_reply(body(tools=[WEATHER_TOOL], tool_choice={"type": "auto"}))

    assert forced.message["content"][0] == {
        "type": "tool_use",
        "id": forced.message["content"][0]["id"],
        "name": "noop",
        "input": {},
    }
    assert free.message["content"][0]["type"] == "text"


def test_example_for_schema_fills_required_fields_by_type() -> None:
    schema = {
        "type": "object",
        "required": ["a", "b", "c", "d", "e", "f"],
        "properties": {
            "a": {"type": "array", "items": {"type": "number"}, "minItems": 2},
            "b": {"type": ["null", "string"], "minLength": 5},
            "c": {"const": 7},
            "d": {"anyOf": [{"type": "boolean"}, {"type": "string"}]},
            "e": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
            "f": {"type": "integer", "exclusiveMinimum": 4},
        },
    }

    assert example_for_schema(schema) == {
        "a": [0.0, 0.0],
        "b": "simxx",
        "c": 7,
        "d": False,
        "e": {"x": 0},
        "f": 5,
    }


def test_thinking_block_comes_before_the_text() -> None:
    request = body(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024})
    message = make_reply(request).message
    thinking, text = message["content"]

    assert thinking["type"] == "thinking"
    assert thinking["thinking"]
    assert thinking["signature"]
    assert text["type"] == "text"
    expected = len(thinking["thinking"].split()) + len(text["text"].split())
    assert message["usage"]["output_tokens"] == expected
    adaptive = make_reply(body(thinking={"type": "adaptive"})).message
    assert adaptive["content"][0]["type"] == "thinking"


def test_thinking_and_text_share_max_tokens() -> None:
    request = body(max_tokens=10, thinking={"type": "adaptive"})
    message = make_reply(request, reply_tokens=(50, 50)).message

    assert message["usage"]["output_tokens"] == 10
    assert message["stop_reason"] == "max_tokens"


def test_token_counting_follows_the_documented_method() -> None:
    assert count_text_tokens("Hello, world!") == 4
    plain = {"system": "Be brief.", "messages": [{"role": "user", "content": "Hello, world!"}]}
    assert count_input_tokens(plain) == 3 + 4 + MESSAGE_OVERHEAD

    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}
    with_image = {"messages": [{"role": "user", "content": [image, {"type": "text", "text": "a"}]}]}
    assert count_input_tokens(with_image) == IMAGE_TOKENS + 1 + MESSAGE_OVERHEAD

    thought = {"type": "thinking", "thinking": "many many words here", "signature": "s"}
    turns = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [thought, {"type": "text", "text": "b"}]},
    ]
    assert count_input_tokens({"messages": turns}) == 2 + 2 * MESSAGE_OVERHEAD

    with_tools = {**plain, "tools": [WEATHER_TOOL]}
    assert count_input_tokens(with_tools) > count_input_tokens(plain)


def test_reply_usage_counts_input_like_count_tokens() -> None:
    request = body("Count these words, please.", system="You are terse.")
    assert make_reply(request).message["usage"]["input_tokens"] == count_input_tokens(request)


# ------------------------------------------------------------------------------ request checks


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"max_tokens": None}, 400, "max_tokens: Field required"),
        ({"model": None}, 400, "model: Field required"),
        ({"messages": None}, 400, "messages: Field required"),
        ({"max_tokens": 0}, 400, "max_tokens: Input should be greater than or equal to 1"),
        ({"max_tokens": "9"}, 400, "max_tokens: Input should be a valid integer"),
        ({"messages": []}, 400, "messages: at least one message is required"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, 400, "first message must use"),
        ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, 400, "messages.0.content: Field required"),
        ({"temperature": 1.5}, 400, "temperature: Input should be less than or equal to 1"),
        ({"top_p": -0.1}, 400, "top_p: Input should be greater than or equal to 0"),
        ({"prompt": "x"}, 400, "prompt: Extra inputs are not permitted"),
        ({"model": "gpt-4"}, 404, "model: gpt-4"),
        ({"tool_choice": {"type": "any"}}, 400, "tool_choice"),
    ],
)
def test_body_checks_match_the_api(change: dict[str, Any], status: int, message: str) -> None:
    request = body()
    for key, value in change.items():
        if value is None:
            del request[key]
        else:
            request[key] = value

    with pytest.raises(InvalidRequest) as caught:
        check_messages_body(request, "2023-06-01")
    assert caught.value.status == status
    assert message in caught.value.message
    assert caught.value.error_type == (
        "not_found_error" if status == 404 else "invalid_request_error"
    )


def test_new_api_version_rejects_sampling_parameters() -> None:
    for name, value in (("temperature", 0.5), ("top_p", 0.9), ("top_k", 5)):
        request = {**body(), name: value}
        check_messages_body(request, "2023-06-01")
        with pytest.raises(InvalidRequest, match=name):
            check_messages_body(request, NEW_VERSION)


def test_version_header_check() -> None:
    assert check_version(NEW_VERSION) == NEW_VERSION
    for bad in (None, "", "2024-01-01"):
        with pytest.raises(InvalidRequest, match="anthropic-version"):
            check_version(bad)


def test_count_tokens_body_refuses_max_tokens() -> None:
    request = body()
    with pytest.raises(InvalidRequest, match="max_tokens"):
        check_count_tokens_body(request, "2023-06-01")
    del request["max_tokens"]
    assert check_count_tokens_body(request, "2023-06-01") is request


def test_thinking_checks() -> None:
    small_budget = body(max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 10})
    with pytest.raises(InvalidRequest, match="budget_tokens"):
        check_messages_body(small_budget, "2023-06-01")
    over_max = body(max_tokens=1500, thinking={"type": "enabled", "budget_tokens": 2000})
    with pytest.raises(InvalidRequest, match="max_tokens"):
        check_messages_body(over_max, "2023-06-01")
    forced = body(
        thinking={"type": "adaptive"},
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    with pytest.raises(InvalidRequest, match="Thinking"):
        check_messages_body(forced, "2023-06-01")


# ------------------------------------------------------------------------------ SSE (pure)


def assemble(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Rebuild the final message from SSE events the way a client accumulates them."""
    message: dict[str, Any] = {}
    partial_json: dict[int, str] = {}
    for name, data in events:
        assert data["type"] == name
        if name == "message_start":
            message = json.loads(json.dumps(data["message"]))
        elif name == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            kind = delta["type"]
            if kind == "text_delta":
                block["text"] += delta["text"]
            elif kind == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif kind == "signature_delta":
                block["signature"] = delta["signature"]
            elif kind == "input_json_delta":
                partial_json[data["index"]] = (
                    partial_json.get(data["index"], "") + delta["partial_json"]
                )
        elif name == "content_block_stop" and data["index"] in partial_json:
            message["content"][data["index"]]["input"] = json.loads(partial_json[data["index"]])
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"].update(data["usage"])
    return message


def test_stream_events_follow_the_api_sequence() -> None:
    message = make_reply(body("stream me"), reply_tokens=(40, 40)).message
    events = stream_events(message)
    names = [name for name, _ in events]

    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names
    assert names.count("content_block_delta") > 1
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["output_tokens"] == 1
    assert start["usage"]["input_tokens"] == message["usage"]["input_tokens"]
    assert events[-2][1]["usage"]["output_tokens"] == message["usage"]["output_tokens"]
    assert assemble(events) == message


def test_stream_events_carry_thinking_and_tool_use() -> None:
    thinking = make_reply(body(thinking={"type": "adaptive"})).message
    tool = make_reply(body(tools=[WEATHER_TOOL], tool_choice={"type": "any"})).message

    assert assemble(stream_events(thinking)) == thinking
    assert assemble(stream_events(tool)) == tool


def test_split_text_joins_back() -> None:
    text = " ".join(f"w{i}" for i in range(30))
    pieces = split_text(text, words=4)
    assert "".join(pieces) == text
    assert len(pieces) == 8
    assert split_text("") == []


# ------------------------------------------------------------------------------ faults (pure)


def test_parse_fault_spec() -> None:
    assert parse_fault_spec("429=0.05, 529=0.02,500=0.01,reset=0.02") == {
        "429": 0.05,
        "529": 0.02,
        "500": 0.01,
        "reset": 0.02,
    }
    assert parse_fault_spec("") == {}
    assert parse_fault_spec("hang=1") == {"hang": 1.0}


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("418=0.1", "418"),
        ("429=1.5", "429"),
        ("529=-0.1", "529"),
        ("reset", "reset"),
        ("cut=lots", "cut"),
        ("500=0.1,500=0.2", "500"),
        ("429=0.6,529=0.6", "more than 1"),
    ],
)
def test_parse_fault_spec_errors_name_the_culprit(spec: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_fault_spec(spec)


def test_fault_picker_is_seeded_and_follows_rates() -> None:
    rates = {"429": 0.3, "reset": 0.2}
    first = [FaultPicker(rates, seed=7).pick() for _ in range(1)]
    picker_a, picker_b = FaultPicker(rates, seed=7), FaultPicker(rates, seed=7)
    draws = [picker_a.pick() for _ in range(5000)]

    assert draws == [picker_b.pick() for _ in range(5000)]
    assert first == draws[:1]
    assert 1300 < draws.count("429") < 1700
    assert 850 < draws.count("reset") < 1150
    assert set(draws) == {"429", "reset", None}
    assert all(FaultPicker({}, seed=1).pick() is None for _ in range(100))


def test_scripted_faults_come_first_in_order() -> None:
    picker = FaultPicker({"429": 1.0}, seed=0)
    picker.script(["cut", None, "hang"])

    assert [picker.pick() for _ in range(4)] == ["cut", None, "hang", "429"]
    with pytest.raises(ValueError, match="nope"):
        picker.script(["nope"])


def test_stream_only_faults_adapt_to_plain_requests() -> None:
    assert effective_fault("cut", streaming=False) == "reset"
    assert effective_fault("sse_error", streaming=False) == "529"
    assert effective_fault("cut", streaming=True) == "cut"
    assert effective_fault("429", streaming=False) == "429"
    assert effective_fault(None, streaming=False) is None


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="boom"):
        SimulatorConfig(error_rates={"boom": 0.1})
    with pytest.raises(ValueError, match="latency_mean"):
        SimulatorConfig(latency_mean=-1)
    with pytest.raises(ValueError, match="reply_tokens"):
        SimulatorConfig(reply_tokens=(0, 5))


def test_only_loopback_hosts_are_accepted() -> None:
    assert loopback_address("127.0.0.1") == (socket.AF_INET, "127.0.0.1")
    assert loopback_address("localhost") == (socket.AF_INET, "127.0.0.1")
    assert loopback_address("::1")[0] == socket.AF_INET6
    for host in ("0.0.0.0", "192.168.1.10", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            loopback_address(host)


# ------------------------------------------------------------------------------ server helpers


@asynccontextmanager
async def running(
    config: SimulatorConfig | None = None,
) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    """A started simulator and a client pointed at it; both closed on exit."""
    async with (
        Simulator(config) as sim,
        httpx.AsyncClient(base_url=sim.base_url, timeout=10) as client,
    ):
        yield sim, client


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def parse_sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for chunk in raw.split("\n\n"):
        if not chunk.strip():
            continue
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# ------------------------------------------------------------------------------ server


def test_json_reply_over_http() -> None:
    async def scenario() -> None:
        async with running() as (sim, client):
            response = await client.post("/v1/messages", json=body(), headers=HEADERS)

            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/json")
            assert response.headers["request-id"].startswith("req_sim_")
            assert response.json() == make_reply(body()).message
            assert sim.base_url.startswith("http://127.0.0.1:")

    run(scenario)


def test_sse_reply_assembles_to_the_json_reply() -> None:
    async def scenario() -> None:
        async with running() as (_, client):
            request = body("Stream or not, same answer.", max_tokens=30)
            plain = (await client.post("/v1/messages", json=request, headers=HEADERS)).json()
            streamed = await client.post(
                "/v1/messages", json={**request, "stream": True}, headers=HEADERS
            )

            assert streamed.status_code == 200
            assert streamed.headers["content-type"].startswith("text/event-stream")
            assert streamed.headers["request-id"].startswith("req_sim_")
            events = parse_sse(streamed.text)
            assert [n for n, _ in events][-1] == "message_stop"
            rebuilt = assemble(events)
            assert rebuilt["content"] == plain["content"]
            assert rebuilt["usage"] == plain["usage"]
            assert rebuilt["stop_reason"] == plain["stop_reason"]

    run(scenario)


def test_request_ids_are_unique() -> None:
    async def scenario() -> None:
        async with running() as (_, client):
            ids = set()
            for _ in range(5):
                response = await client.post("/v1/messages", json=body(), headers=HEADERS)
                ids.add(response.headers["request-id"])
            assert len(ids) == 5

    run(scenario)


def test_auth_is_checked() -> None:
    async def scenario() -> None:
        async with running(SimulatorConfig(api_key="sk-right")) as (_, client):
            version = {"anthropic-version": "2023-06-01"}
            missing = await client.post("/v1/messages", json=body(), headers=version)
            wrong = await client.post(
                "/v1/messages", json=body(), headers={**version, "x-api-key": "sk-wrong"}
            )
            bearer = await client.post(
                "/v1/messages",
                json=body(),
                headers={**version, "authorization": "Bearer sk-right"},
            )
            keyed = await client.post(
                "/v1/messages", json=body(), headers={**version, "x-api-key": "sk-right"}
            )

            assert missing.status_code == 401
            assert missing.json()["error"]["type"] == "authentication_error"
            assert wrong.status_code == 401
            assert wrong.json()["error"]["message"] == "invalid x-api-key"
            assert wrong.json()["request_id"] == wrong.headers["request-id"]
            assert bearer.status_code == 200
            assert keyed.status_code == 200

    run(scenario)


def test_any_key_is_accepted_without_a_configured_key() -> None:
    async def scenario() -> None:
        async with running() as (_, client):
            headers = {**HEADERS, "x-api-key": "anything"}
            assert (await client.post("/v1/messages", json=body(), headers=headers)).is_success

    run(scenario)


def test_bad_requests_get_api_errors() -> None:
    async def scenario() -> None:
        async with running() as (sim, client):
            no_max = body()
            del no_max["max_tokens"]
            cases = [
                (no_max, HEADERS, 400, "max_tokens: Field required"),
                (body(model="gpt-4"), HEADERS, 404, "model: gpt-4"),
                (body(), {"x-api-key": "k"}, 400, "anthropic-version"),
                (body(temperature=0.2), {**HEADERS, "anthropic-version": NEW_VERSION}, 400, ""),
            ]
            for request, headers, status, message in cases:
                response = await client.post("/v1/messages", json=request, headers=headers)
                assert response.status_code == status
                envelope = response.json()
                assert envelope["type"] == "error"
                assert message in envelope["error"]["message"]
            garbage = await client.post("/v1/messages", content=b"{not json", headers=HEADERS)
            assert garbage.status_code == 400
            assert garbage.json()["error"]["type"] == "invalid_request_error"
            assert sim.stats.by_status == {400: 4, 404: 1}
            assert sim.stats.answered_ok == 0

    run(scenario)


def test_oversized_body_gets_413() -> None:
    async def scenario() -> None:
        async with running() as (_, client):
            huge = body("x" * (32 * 1024 * 1024 + 10))
            response = await client.post("/v1/messages", json=huge, headers=HEADERS)

            assert response.status_code == 413
            assert response.json()["error"]["type"] == "request_too_large"

    run(scenario)


def test_count_tokens_endpoint() -> None:
    async def scenario() -> None:
        async with running() as (_, client):
            request = body("How many tokens is this?", system="Be terse.")
            del request["max_tokens"]
            counted = await client.post("/v1/messages/count_tokens", json=request, headers=HEADERS)
            with_max = await client.post("/v1/messages/count_tokens", json=body(), headers=HEADERS)

            assert counted.status_code == 200
            assert counted.json() == {"input_tokens": count_input_tokens(request)}
            assert counted.headers["request-id"].startswith("req_sim_")
            assert with_max.status_code == 400
            assert "max_tokens" in with_max.json()["error"]["message"]

    run(scenario)


def test_unknown_path_is_a_404_envelope() -> None:
    async def scenario() -> None:
        async with running() as (_, client):
            response = await client.get("/v1/models", headers=HEADERS)

            assert response.status_code == 404
            assert response.json()["error"]["type"] == "not_found_error"

    run(scenario)


@pytest.mark.parametrize(
    ("fault", "status", "error_type"),
    [
        ("429", 429, "rate_limit_error"),
        ("529", 529, "overloaded_error"),
        ("500", 500, "api_error"),
        ("503", 503, "api_error"),
    ],
)
def test_status_faults(fault: str, status: int, error_type: str) -> None:
    async def scenario() -> None:
        async with running(SimulatorConfig(retry_after=7)) as (sim, client):
            sim.script([fault])
            response = await client.post("/v1/messages", json=body(), headers=HEADERS)

            assert response.status_code == status
            assert response.json()["error"]["type"] == error_type
            assert response.headers["request-id"].startswith("req_sim_")
            assert response.headers.get("retry-after") == ("7" if fault == "429" else None)
            assert sim.stats.faults == {fault: 1}

    run(scenario)


def test_reset_fault_drops_the_connection() -> None:
    async def scenario() -> None:
        async with running() as (sim, client):
            sim.script(["reset", "cut"])  # a cut on a plain request is a reset too
            for _ in range(2):
                with pytest.raises(httpx.TransportError):
                    await client.post("/v1/messages", json=body(), headers=HEADERS)
            assert (await client.post("/v1/messages", json=body(), headers=HEADERS)).is_success
            assert sim.stats.faults == {"reset": 2}

    run(scenario)


def test_malformed_fault_sends_broken_json() -> None:
    async def scenario() -> None:
        async with running() as (sim, client):
            sim.script(["malformed", "malformed"])
            response = await client.post("/v1/messages", json=body(), headers=HEADERS)
            streamed = await client.post("/v1/messages", json=body(stream=True), headers=HEADERS)

            assert response.status_code == 200
            with pytest.raises(json.JSONDecodeError):
                json.loads(response.content)
            assert streamed.status_code == 200
            with pytest.raises(json.JSONDecodeError):
                parse_sse(streamed.text)
            assert sim.stats.answered_ok == 0

    run(scenario)


def test_cut_fault_ends_the_stream_early() -> None:
    async def scenario() -> None:
        async with running() as (sim, client):
            sim.script(["cut"])
            received = b""
            with pytest.raises(httpx.TransportError):
                async with client.stream(
                    "POST", "/v1/messages", json=body(stream=True), headers=HEADERS
                ) as response:
                    assert response.status_code == 200
                    async for chunk in response.aiter_bytes():
                        received += chunk
            assert b"event: message_start" in received
            assert b"message_stop" not in received
            assert sim.stats.answered_ok == 0

    run(scenario)


def test_sse_error_fault_sends_an_error_event() -> None:
    async def scenario() -> None:
        async with running() as (sim, client):
            sim.script(["sse_error", "sse_error"])
            streamed = await client.post("/v1/messages", json=body(stream=True), headers=HEADERS)
            plain = await client.post("/v1/messages", json=body(), headers=HEADERS)

            assert streamed.status_code == 200
            events = parse_sse(streamed.text)
            assert events[0][0] == "message_start"
            assert events[-1] == (
                "error",
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            )
            assert plain.status_code == 529
            assert sim.stats.faults == {"sse_error": 1, "529": 1}

    run(scenario)


def test_fault_rates_apply_with_a_seed() -> None:
    async def scenario() -> None:
        async with running(SimulatorConfig(error_rates={"529": 1.0})) as (sim, client):
            sim.script([None])
            first = await client.post("/v1/messages", json=body(), headers=HEADERS)
            rest = [await client.post("/v1/messages", json=body(), headers=HEADERS) for _ in "ab"]

            assert first.status_code == 200
            assert [r.status_code for r in rest] == [529, 529]

    run(scenario)


def test_stats_count_requests_answers_and_tags() -> None:
    async def scenario() -> None:
        async with running() as (sim, client):
            sim.script(["429"])
            for prompt in ("a", "a", "b"):
                await client.post("/v1/messages", json=body(prompt), headers=HEADERS)
            await client.post("/v1/messages", json=body("b", stream=True), headers=HEADERS)
            stats = sim.stats

            assert stats.requests == 4
            assert stats.answered_ok == 3
            assert stats.by_status == {429: 1, 200: 3}
            assert stats.faults == {"429": 1}
            assert stats.answers_by_tag == {
                make_reply(body("a")).tag: 1,
                make_reply(body("b")).tag: 2,
            }
            assert stats.in_flight == 0
            assert stats.snapshot() == stats
            stats.reset()
            assert (stats.requests, stats.answered_ok, stats.max_in_flight) == (0, 0, 0)
            assert not stats.by_status and not stats.answers_by_tag

    run(scenario)


def test_max_in_flight_sees_concurrent_requests() -> None:
    async def scenario() -> None:
        config = SimulatorConfig(latency_mean=0.3, latency_jitter=0.05)
        async with running(config) as (sim, client):
            prompts = [f"p{i}" for i in range(16)]
            responses = await asyncio.gather(
                *(client.post("/v1/messages", json=body(p), headers=HEADERS) for p in prompts)
            )

            assert all(r.status_code == 200 for r in responses)
            assert sim.stats.max_in_flight == 16
            assert sim.stats.in_flight == 0
            assert sim.stats.answered_ok == 16

    run(scenario)


def test_stop_ends_a_hanging_request() -> None:
    async def scenario() -> None:
        sim = Simulator(SimulatorConfig(hang_seconds=3600))
        await sim.start()
        async with httpx.AsyncClient(base_url=sim.base_url, timeout=30) as client:
            sim.script(["hang"])
            pending = asyncio.create_task(client.post("/v1/messages", json=body(), headers=HEADERS))
            await wait_until_async(lambda: sim.stats.in_flight == 1, 5, "one request in flight")
            await asyncio.wait_for(sim.stop(), timeout=10)
            with pytest.raises(httpx.TransportError):
                await pending
            assert sim.stats.in_flight == 0
            assert sim.stats.faults == {"hang": 1}

    run(scenario)


def test_a_client_giving_up_on_a_hang_frees_the_handler() -> None:
    async def scenario() -> None:
        async with running(SimulatorConfig(hang_seconds=3600)) as (sim, client):
            sim.script(["hang"])
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/v1/messages", json=body(), headers=HEADERS, timeout=0.2)
            await wait_until_async(lambda: sim.stats.in_flight == 0, 5, "no request in flight")
            assert sim.stats.answered_ok == 0

    run(scenario)


def test_hang_answers_after_hang_seconds() -> None:
    async def scenario() -> None:
        async with running(SimulatorConfig(hang_seconds=0.01)) as (sim, client):
            sim.script(["hang"])
            response = await client.post("/v1/messages", json=body(), headers=HEADERS)
            assert response.status_code == 200
            assert sim.stats.answered_ok == 1

    run(scenario)


def test_start_refuses_non_loopback_and_double_start() -> None:
    async def scenario() -> None:
        sim = Simulator()
        with pytest.raises(ValueError, match="loopback"):
            await sim.start(host="0.0.0.0")
        with pytest.raises(RuntimeError):
            _ = sim.base_url
        await sim.start()
        try:
            with pytest.raises(RuntimeError, match="already"):
                await sim.start()
        finally:
            await sim.stop()
        await sim.stop()  # stopping twice is harmless

    run(scenario)


def test_serve_runs_until_cancelled() -> None:
    async def scenario() -> None:
        urls: list[str] = []
        task = asyncio.create_task(serve(SimulatorConfig(), on_ready=urls.append))
        await wait_until_async(lambda: bool(urls), 5, "the server's address")
        async with httpx.AsyncClient(base_url=urls[0], timeout=10) as client:
            assert (await client.post("/v1/messages", json=body(), headers=HEADERS)).is_success
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with httpx.AsyncClient(base_url=urls[0], timeout=10) as client:
            with pytest.raises(httpx.ConnectError):
                await client.post("/v1/messages", json=body(), headers=HEADERS)

    run(scenario)


def test_simulator_thread_serves_sync_callers() -> None:
    with SimulatorThread(SimulatorConfig(api_key="sk-test")) as sim:
        url = sim.base_url
        sim.script(["429"])
        with httpx.Client(base_url=url, timeout=10) as client:
            limited = client.post("/v1/messages", json=body(), headers=HEADERS)
            answered = client.post("/v1/messages", json=body(), headers=HEADERS)
        assert limited.status_code == 429
        assert answered.json() == make_reply(body()).message
        assert sim.stats.snapshot().answered_ok == 1
    with httpx.Client(base_url=url, timeout=10) as client, pytest.raises(httpx.ConnectError):
        client.post("/v1/messages", json=body(), headers=HEADERS)


def test_simulator_thread_reports_start_failures() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SimulatorThread(host="10.0.0.1").start()


# --- models: the API's 404 for a model it does not serve --------------------------------------


# A typo of a Claude id, a retired model by its alias and by its dated id, a name that is not
# a Claude id: what the API answers with 404.
NOT_SERVED = (
    "claude-haiku-4.6",
    "claude-haiku-4-6",
    "claude-opus-4-1",
    "claude-sonnet-4-20250514",
    "claude-sonnet-4-5",  # retired 2026-11-30
    "my-gateway-fast",
)
# Ids and aliases of the table, a new snapshot of a listed alias, the dotted version the
# simulator has always taken, the newest models.
SERVED = (
    "claude-haiku-4-5",
    "claude-haiku-4-5-20251001",
    "claude-haiku-4.5",
    "claude-opus-4-6-20991231",
    "claude-haiku-5-5",
    "claude-fable-5-2",
)


def test_a_claude_id_the_api_does_not_serve_gets_its_404_not_found_error() -> None:
    async def scenario() -> None:
        async with running() as (sim, client):
            for model in NOT_SERVED:  # on messages and count_tokens alike
                for path in ("/v1/messages", "/v1/messages/count_tokens"):
                    request = body(model=model)
                    if path.endswith("count_tokens"):
                        del request["max_tokens"]
                    response = await client.post(path, json=request, headers=HEADERS)
                    assert response.status_code == 404, (model, path)
                    envelope = response.json()
                    assert envelope["type"] == "error"
                    assert envelope["error"] == {
                        "type": "not_found_error",
                        "message": f"model: {model}",
                    }
                    assert envelope["request_id"].startswith("req_")
            for model in SERVED:
                request = body(model=model)
                response = await client.post("/v1/messages", json=request, headers=HEADERS)
                assert response.status_code == 200, model
            assert sim.stats.by_status == {404: 2 * len(NOT_SERVED), 200: len(SERVED)}

    run(scenario)


def test_a_gateway_alias_is_served_only_by_a_simulator_told_about_it() -> None:
    async def scenario() -> None:
        config = SimulatorConfig(gateway_models=frozenset({"my-gateway-fast"}))
        async with running(config) as (_, client):
            request = body(model="my-gateway-fast")
            response = await client.post("/v1/messages", json=request, headers=HEADERS)
            assert response.status_code == 200
            assert response.json()["model"] == "my-gateway-fast"  # named as asked
            typo = body(model="claude-haiku-4-6")
            assert (
                await client.post("/v1/messages", json=typo, headers=HEADERS)
            ).status_code == 404

    run(scenario)
    with pytest.raises(ValueError, match="gateway_models"):
        SimulatorConfig(gateway_models=frozenset({""}))


def test_the_simulator_serves_exactly_the_live_models_of_the_client_price_table() -> None:
    # The simulator reads the same file as data; this ties the two readings together.
    from batchrun.cost.prices import default_prices
    from batchrun.simulator.models import packaged_models

    served = packaged_models()
    for price in default_prices().models():
        for model_id in (price.model, *price.ids):
            assert served.serves(model_id) is (price.retired is None), model_id
