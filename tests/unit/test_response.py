"""response.py: Message -> fields, SSE events -> Message, error bodies -> ApiStatusError."""

from __future__ import annotations

import json
from email.utils import formatdate
from typing import Any

import pytest

from batchrun.client.response import StreamAssembler, error_from_body, message_fields
from batchrun.core.errors import ApiResponseError, ApiStatusError


def _message(content: list[Any], **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": content,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 34},
    }
    base.update(extra)
    return base


# --- message_fields ---------------------------------------------------------------------------

EVERY_BLOCK = [
    {"type": "thinking", "thinking": "First, think.", "signature": "sig1"},
    {"type": "redacted_thinking", "data": "opaque"},
    {"type": "thinking", "thinking": "Then think more.", "signature": "sig2"},
    {"type": "text", "text": "Héllo ", "citations": [{"type": "char_location"}]},
    {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {"q": "x"}},
    {"type": "web_search_tool_result", "tool_use_id": "srv_1", "content": []},
    {"type": "text", "text": "wörld"},
    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"key": "a"}},
    {"type": "tool_use", "id": "toolu_2", "name": "noargs", "input": {}},
    {"type": "hologram", "payload": [1, 2, 3]},  # a block type from the future
]


def test_message_fields_every_block_kind() -> None:
    message = _message(
        EVERY_BLOCK,
        stop_reason="tool_use",
        usage={
            "input_tokens": 10,
            "output_tokens": 20,
            "cache_creation_input_tokens": 30,
            "cache_read_input_tokens": 40,
        },
    )
    fields = message_fields(message)
    assert fields["text"] == "Héllo wörld"
    assert fields["thinking"] == "First, think.\n\nThen think more."
    assert json.loads(fields["tool_calls_json"]) == [
        {"id": "toolu_1", "name": "lookup", "input": {"key": "a"}},
        {"id": "toolu_2", "name": "noargs", "input": {}},
    ]
    compact = json.dumps(EVERY_BLOCK, separators=(",", ":"), ensure_ascii=False)
    assert fields["content_json"] == compact
    assert fields["stop_reason"] == "tool_use"
    assert fields["model"] == "claude-haiku-4-5-20251001"
    assert fields["message_id"] == "msg_01"
    assert (
        fields["input_tokens"],
        fields["output_tokens"],
        fields["cache_creation_input_tokens"],
        fields["cache_read_input_tokens"],
    ) == (10, 20, 30, 40)


@pytest.mark.parametrize(
    "stop_reason",
    [
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "pause_turn",
        "refusal",
        "model_context_window_exceeded",
        "brand_new_reason",
        None,
    ],
)
def test_message_fields_keeps_any_stop_reason(stop_reason: str | None) -> None:
    fields = message_fields(_message([], stop_reason=stop_reason, stop_sequence="###"))
    assert fields["stop_reason"] == stop_reason
    assert fields["stop_sequence"] == "###"


def test_message_fields_text_only_has_no_thinking_or_tool_calls() -> None:
    fields = message_fields(_message([{"type": "text", "text": "only"}]))
    assert fields["text"] == "only"
    assert fields["thinking"] is None
    assert fields["tool_calls_json"] is None


def test_message_fields_empty_content() -> None:
    fields = message_fields(_message([]))
    assert fields["text"] == ""
    assert fields["content_json"] == "[]"


def test_message_fields_null_cache_counts_become_zero() -> None:
    usage = {
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_creation_input_tokens": None,
        "cache_read_input_tokens": None,
    }
    fields = message_fields(_message([], usage=usage))
    assert fields["cache_creation_input_tokens"] == 0
    assert fields["cache_read_input_tokens"] == 0


@pytest.mark.parametrize(
    "bad",
    [
        {k: v for k, v in _message([]).items() if k != "usage"},
        {k: v for k, v in _message([]).items() if k != "content"},
        _message([], usage=None),
        _message("not a list"),  # type: ignore[arg-type]
        ["not", "a", "dict"],
        None,
    ],
)
def test_message_fields_unusable_message_is_malformed(bad: Any) -> None:
    with pytest.raises(ApiResponseError) as info:
        message_fields(bad)
    assert info.value.error_type == "malformed_response"


def test_message_fields_error_envelope_keeps_its_type() -> None:
    envelope = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(ApiResponseError) as info:
        message_fields(envelope)
    assert info.value.error_type == "overloaded_error"
    assert info.value.message == "Overloaded"


# --- StreamAssembler -------------------------------------------------------------------------


def _realistic_events() -> list[tuple[str, dict[str, Any]]]:
    """thinking (with signature) + text (with a citation) + tool_use streamed in JSON pieces."""
    start_message = _message(
        [],
        stop_reason=None,
        usage={
            "input_tokens": 472,
            "output_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    )
    return [
        ("message_start", {"type": "message_start", "message": start_message}),
        ("ping", {"type": "ping"}),
        (
            "content_block_start",
            {"index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        ),
        (
            "content_block_delta",
            {"index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me "}},
        ),
        (
            "content_block_delta",
            {"index": 0, "delta": {"type": "thinking_delta", "thinking": "check."}},
        ),
        (
            "content_block_delta",
            {"index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAh"}},
        ),
        ("content_block_stop", {"index": 0}),
        ("content_block_start", {"index": 1, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": "Hello"}}),
        ("brand_new_event", {"type": "brand_new_event", "anything": True}),
        ("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": ", wörld"}}),
        (
            "content_block_delta",
            {"index": 1, "delta": {"type": "citations_delta", "citation": {"cited_text": "c"}}},
        ),
        ("content_block_stop", {"index": 1}),
        (
            "content_block_start",
            {
                "index": 2,
                "content_block": {"type": "tool_use", "id": "toolu_9", "name": "get", "input": {}},
            },
        ),
        (
            "content_block_delta",
            {"index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
        ),
        (
            "content_block_delta",
            {"index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'}},
        ),
        (
            "content_block_delta",
            {"index": 2, "delta": {"type": "input_json_delta", "partial_json": 'ris", "n": 2}'}},
        ),
        ("content_block_stop", {"index": 2}),
        (
            "message_delta",
            {
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 50, "input_tokens": None},
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "message_delta",
            {
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 89, "cache_read_input_tokens": 100},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def _assemble(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    assembler = StreamAssembler()
    for name, data in events:
        assembler.feed(name, data)
    return assembler.message()


def test_stream_realistic_sequence() -> None:
    message = _assemble(_realistic_events())
    thinking, text, tool = message["content"]
    assert thinking == {"type": "thinking", "thinking": "Let me check.", "signature": "EqQBCgIYAh"}
    assert text == {"type": "text", "text": "Hello, wörld", "citations": [{"cited_text": "c"}]}
    assert tool == {
        "type": "tool_use",
        "id": "toolu_9",
        "name": "get",
        "input": {"city": "Paris", "n": 2},
    }
    assert message["stop_reason"] == "tool_use"
    assert message["id"] == "msg_01"
    fields = message_fields(message)
    assert fields["text"] == "Hello, wörld"
    assert fields["thinking"] == "Let me check."


def test_stream_usage_is_cumulative_not_added() -> None:
    usage = _assemble(_realistic_events())["usage"]
    # output overwritten by the last message_delta (89, not 2+50+89); null input kept at 472.
    assert usage["output_tokens"] == 89
    assert usage["input_tokens"] == 472
    assert usage["cache_read_input_tokens"] == 100
    assert usage["cache_creation_input_tokens"] == 0


def test_stream_event_name_may_come_from_data_type() -> None:
    events = [("", {"type": name, **data}) for name, data in _realistic_events()]
    assert _assemble(events)["stop_reason"] == "tool_use"


def test_stream_tool_with_empty_json_gets_empty_input() -> None:
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"message": _message([])}),
        ("content_block_start", {"index": 0, "content_block": {"type": "tool_use", "input": {}}}),
        (
            "content_block_delta",
            {"index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}},
        ),
        ("content_block_stop", {"index": 0}),
        ("message_stop", {}),
    ]
    assert _assemble(events)["content"][0]["input"] == {}


def test_stream_unknown_delta_and_block_types_kept() -> None:
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"message": _message([])}),
        ("content_block_start", {"index": 0, "content_block": {"type": "hologram", "x": 1}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "hologram_delta", "y": 2}}),
        ("content_block_stop", {"index": 0}),
        ("message_delta", {"delta": {"stop_reason": "brand_new_reason"}, "usage": {}}),
        ("message_stop", {}),
    ]
    message = _assemble(events)
    assert message["content"] == [{"type": "hologram", "x": 1}]
    assert message_fields(message)["stop_reason"] == "brand_new_reason"


def test_stream_error_event_raises_with_its_type() -> None:
    assembler = StreamAssembler()
    assembler.feed("message_start", {"message": _message([])})
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(ApiResponseError) as info:
        assembler.feed("error", error)
    assert info.value.status == 200
    assert info.value.error_type == "overloaded_error"
    assert info.value.message == "Overloaded"


def test_stream_event_before_message_start_is_rejected() -> None:
    assembler = StreamAssembler()
    assembler.feed("ping", {"type": "ping"})  # ping may come first
    with pytest.raises(ApiResponseError):
        assembler.feed("content_block_start", {"index": 0, "content_block": {"type": "text"}})


def test_stream_that_ends_early_is_interrupted() -> None:
    events = _realistic_events()[:-1]  # no message_stop
    with pytest.raises(ApiResponseError) as info:
        _assemble(events)
    assert info.value.error_type == "stream_interrupted"
    with pytest.raises(ApiResponseError) as empty:
        StreamAssembler().message()
    assert empty.value.error_type == "stream_interrupted"


def test_stream_bad_tool_json_is_malformed() -> None:
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"message": _message([])}),
        ("content_block_start", {"index": 0, "content_block": {"type": "tool_use", "input": {}}}),
        (
            "content_block_delta",
            {"index": 0, "delta": {"type": "input_json_delta", "partial_json": "{"}},
        ),
        ("content_block_stop", {"index": 0}),
    ]
    with pytest.raises(ApiResponseError) as info:
        _assemble(events)
    assert info.value.error_type == "malformed_response"


def test_stream_delta_for_unknown_index_is_malformed() -> None:
    assembler = StreamAssembler()
    assembler.feed("message_start", {"message": _message([])})
    with pytest.raises(ApiResponseError):
        assembler.feed("content_block_delta", {"index": 3, "delta": {"type": "text_delta"}})


# --- error_from_body -------------------------------------------------------------------------


def test_error_envelope_fills_every_field() -> None:
    body = json.dumps(
        {
            "type": "error",
            "error": {"type": "rate_limit_error", "message": "slow down", "details": None},
            "request_id": "req_body",
        }
    ).encode()
    error = error_from_body(429, body, {"retry-after": "120", "x-should-retry": "true"})
    assert isinstance(error, ApiStatusError)
    assert (error.status, error.error_type, error.message) == (429, "rate_limit_error", "slow down")
    assert error.request_id == "req_body"
    assert error.retry_after == 120.0
    assert error.should_retry is True
    assert error.error_code is None


def test_error_header_request_id_wins_and_lookup_ignores_case() -> None:
    body = '{"type":"error","error":{"type":"api_error","message":"m"},"request_id":"req_body"}'
    error = error_from_body(500, body, {"Request-Id": "req_hdr", "X-Should-Retry": "false"})
    assert error.request_id == "req_hdr"
    assert error.should_retry is False


def test_error_spend_limit_code() -> None:
    body = {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "spend limit reached",
            "details": {"error_code": "enforced_spend_limit_reached"},
        },
    }
    error = error_from_body(429, json.dumps(body), {})
    assert error.error_code == "enforced_spend_limit_reached"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # ms wins
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": "3600"}, 3600.0),  # no 60 s cap
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_error_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert error_from_body(429, b"", headers).retry_after == expected


def test_error_retry_after_http_date() -> None:
    now = 1_800_000_000.0
    headers = {"retry-after": formatdate(now + 90, usegmt=True)}
    assert error_from_body(503, None, headers, now=now).retry_after == pytest.approx(90.0)
    past = {"retry-after": formatdate(now - 90, usegmt=True)}
    assert error_from_body(503, None, past, now=now).retry_after == 0.0


@pytest.mark.parametrize(
    ("status", "body", "error_type"),
    [
        (413, b"<html><body>413 Request Entity Too Large</body></html>", "request_too_large"),
        (502, b"Bad gateway", "api_error"),
        (529, b"", "overloaded_error"),
        (418, b'{"unexpected": "json"}', "api_error"),
        (500, b"\xff\xfe not utf-8", "api_error"),
    ],
)
def test_error_body_that_is_not_the_envelope(status: int, body: bytes, error_type: str) -> None:
    error = error_from_body(status, body, {})
    assert error.status == status
    assert error.error_type == error_type
    assert f"HTTP {status}" in error.message


def test_a_429_keeps_its_rate_limit_headers_and_nothing_else() -> None:
    headers = {
        "Anthropic-RateLimit-Requests-Limit": "50",
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "request-id": "req_1",
        "x-api-key": "should never be kept",
    }
    err = error_from_body(429, b"", headers)
    assert dict(err.rate_limit_headers) == {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-input-tokens-remaining": "0",
    }
    assert dict(error_from_body(500, b"", headers).rate_limit_headers) == {}


# --- values that fit no column ---------------------------------------------------------------

USAGE = {"input_tokens": 12, "output_tokens": 34}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"usage": {**USAGE, "output_tokens": 10**30}}, "usage.output_tokens"),
        ({"usage": {**USAGE, "input_tokens": -(2**63) - 1}}, "usage.input_tokens"),
        ({"usage": {**USAGE, "output_tokens": "34"}}, "usage.output_tokens"),
        ({"usage": {**USAGE, "output_tokens": 3.5}}, "usage.output_tokens"),
        ({"usage": {**USAGE, "cache_read_input_tokens": True}}, "usage.cache_read_input_tokens"),
        (
            {"usage": {**USAGE, "cache_creation": {"ephemeral_1h_input_tokens": 2**64}}},
            "usage.cache_creation.ephemeral_1h_input_tokens",
        ),
        ({"stop_reason": {"type": "end_turn"}}, "stop_reason"),
        ({"stop_sequence": ["###"]}, "stop_sequence"),
        ({"model": 4}, "model"),
        ({"id": {"x": 1}}, "id"),
    ],
)
def test_message_fields_value_that_fits_no_column_is_malformed(
    extra: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ApiResponseError) as info:
        message_fields(_message([], **extra))
    assert info.value.error_type == "malformed_response"
    assert expected in info.value.message


def test_message_fields_takes_every_64_bit_count() -> None:
    usage = {"input_tokens": 2**63 - 1, "output_tokens": 0, "cache_read_input_tokens": None}
    fields = message_fields(_message([], usage=usage))
    assert (fields["input_tokens"], fields["output_tokens"]) == (2**63 - 1, 0)


def test_stream_with_a_value_that_fits_no_column_is_malformed() -> None:
    a = StreamAssembler()
    a.feed("message_start", {"message": {"content": [], "usage": {"input_tokens": 1}}})
    a.feed("message_delta", {"delta": {"stop_reason": {"nested": True}}, "usage": {}})
    a.feed("message_stop", {})
    with pytest.raises(ApiResponseError) as info:
        a.message()
    assert info.value.error_type == "malformed_response"
    b = StreamAssembler()
    b.feed("message_start", {"message": {"content": [], "usage": {"input_tokens": 1}}})
    b.feed("message_delta", {"delta": {}, "usage": {"output_tokens": 10**30}})
    b.feed("message_stop", {})
    with pytest.raises(ApiResponseError):
        b.message()


def test_message_fields_content_too_deep_to_record_is_malformed() -> None:
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ApiResponseError) as info:
        message_fields(_message([{"type": "hologram", "payload": deep}]))
    assert info.value.error_type == "malformed_response"


def test_error_texts_from_a_body_are_encodable() -> None:
    body = b'{"type": "error", "error": {"type": "api_error", "message": "half \\ud83d"},'
    body += b' "request_id": "req_\\udc80"}'
    error = error_from_body(500, body, {})
    assert error.message == "half \ufffd" and error.request_id == "req_\ufffd"
