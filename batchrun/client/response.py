"""Response JSON or SSE events -> result fields; pure (no I/O, no clock unless given).

Three jobs, each tolerant of what the API may add later (new block types, stop reasons,
event names) and strict about what makes a reply unusable (no ``content``, no ``usage``):

- ``message_fields``: a Message object -> the output columns it fills (see ``store.columns``);
- ``StreamAssembler``: SSE events -> the same Message the non-streaming call would return;
- ``error_from_body``: a non-2xx response -> an ``ApiStatusError`` with everything the retry
  policy needs (``retry_after``, ``should_retry``, ``error_code``).
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from batchrun.core.errors import ApiResponseError, ApiStatusError
from batchrun.core.jsoncodec import compact

MALFORMED = "malformed_response"
STREAM_INTERRUPTED = "stream_interrupted"

# error.type to report when a non-2xx body is not the API's error envelope (a proxy's HTML
# page, an empty body); names follow docs/api-facts.md §4.2 so retry and reports treat them alike.
_STATUS_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# How much of a non-envelope error body to quote: enough to recognise a proxy's page.
_BODY_SNIPPET = 200


# --- Message -> fields ---------------------------------------------------------------------


def as_message(
    data: object, *, status: int | None = None, request_id: str | None = None
) -> dict[str, Any]:
    """Check that ``data`` is a usable Message and return it.

    A 200 carrying the error envelope (some gateways do this) becomes an ``ApiResponseError``
    with the envelope's ``error.type``, so the retry policy sees ``overloaded_error`` etc.
    """
    # A plain dict (every decoded reply) is taken by exact type first: checking a dict
    # against the Mapping ABC costs more than the rest of this check.
    if type(data) is not dict and not isinstance(data, Mapping):
        raise _malformed("the response is not a JSON object", status, request_id)
    if data.get("type") == "error":
        raise _envelope_error(data, status=status, request_id=request_id)
    if not isinstance(data.get("content"), list):
        raise _malformed("the message has no content array", status, request_id)
    usage = data.get("usage")
    if type(usage) is not dict and not isinstance(usage, Mapping):
        raise _malformed("the message has no usage object", status, request_id)
    unfit = _unfit_value(data)
    if unfit is not None:
        raise _malformed(unfit, status, request_id)
    return data if isinstance(data, dict) else dict(data)


# Fields of a Message copied into a column as they are, by the column's kind (store.columns).
_STRING_FIELDS = ("id", "model", "stop_reason", "stop_sequence")
_USAGE_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
_SPLIT_COUNTS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def _unfit_value(message: Mapping[str, Any]) -> str | None:
    """What in ``message`` cannot go into its output column, or None when all of it can.

    A string column takes a string or null, an int column an integer that fits 64 bits, or
    null. Anything else (a ``stop_reason`` that is an object, ``output_tokens`` of 10**30)
    makes the reply unusable: recording it would fail later, for every row in flight.
    """
    for key in _STRING_FIELDS:
        value = message.get(key)
        if value is not None and not isinstance(value, str):
            return f"the message's {key} is {_kind(value)}, not a string"
    usage: Mapping[str, Any] = message["usage"]
    unfit = _unfit_count(usage, _USAGE_WHERE)
    if unfit is None:
        split = usage.get("cache_creation")
        if split is not None and (type(split) is dict or isinstance(split, Mapping)):
            unfit = _unfit_count(split, _SPLIT_WHERE)
    return unfit


# (where a count is named in a message, its key): spelled out once, not once a reply.
_USAGE_WHERE = tuple((f"usage.{key}", key) for key in _USAGE_COUNTS)
_SPLIT_WHERE = tuple((f"usage.cache_creation.{key}", key) for key in _SPLIT_COUNTS)


def _unfit_count(table: Mapping[str, Any], names: tuple[tuple[str, str], ...]) -> str | None:
    """Why a count of ``table`` (``names``) is no int64 column's value, or None."""
    for where, key in names:
        value = table.get(key)
        if value is None or (type(value) is int and INT64_MIN <= value <= INT64_MAX):
            continue  # the usual case, decided at once
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{where} is {_kind(value)}, not an integer"
        if not INT64_MIN <= value <= INT64_MAX:
            return f"{where} is {_digits(value)}, beyond a 64-bit integer"
    return None


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _digits(value: int) -> str:
    """A huge integer for a message (str() of one over 4,300 digits raises ValueError)."""
    return f"an integer of about {value.bit_length() * 30103 // 100000 + 1} digits"


def message_fields(message: Mapping[str, Any], *, checked: bool = False) -> dict[str, Any]:
    """The output columns a Message fills.

    ``checked``: ``message`` already passed ``as_message`` (a ``client.messages.Reply``'s
    does), so it is not checked a second time.

    >>> message_fields({"id": "msg_1", "model": "m", "stop_reason": "end_turn",
    ...     "content": [{"type": "text", "text": "hi"}],
    ...     "usage": {"input_tokens": 3, "output_tokens": 1}})["text"]
    'hi'
    """
    fields: dict[str, Any] = {}
    put_message_fields(fields, message, checked=checked)
    return fields


def put_message_fields(
    row: dict[str, Any], message: Mapping[str, Any], *, checked: bool = False
) -> None:
    """Set the output columns a Message fills in ``row`` (``message_fields``'s, in one pass
    over the content: this runs once for every answered row)."""
    if not checked:
        message = as_message(message)
    content: list[Any] = message["content"]
    usage: Mapping[str, Any] = message["usage"]
    texts: list[str] = []
    thoughts: list[str] = []
    redacted = 0
    calls: list[dict[str, Any]] = []
    for block in content:
        if type(block) is not dict and not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if isinstance(text, str):
                texts.append(text)
        elif kind == "thinking":
            thought = block.get("thinking")
            if isinstance(thought, str):
                thoughts.append(thought)
        elif kind == "redacted_thinking":
            redacted += 1
        elif kind == "tool_use":
            calls.append(
                {"id": block.get("id"), "name": block.get("name"), "input": block.get("input")}
            )
    try:
        content_json = compact(content)
        tool_calls_json = compact(calls) if calls else None
    except (ValueError, TypeError, RecursionError) as exc:
        # Content nested too deep to encode again (it decoded near the recursion limit).
        raise _malformed(f"the message's content cannot be recorded ({exc})", None, None) from exc
    get = usage.get
    row["model"] = message.get("model")
    row["stop_reason"] = message.get("stop_reason")
    row["stop_sequence"] = message.get("stop_sequence")
    row["text"] = "".join(texts)
    row["content_json"] = content_json
    row["thinking"] = "\n\n".join(thoughts) if thoughts else None
    row["redacted_thinking_blocks"] = redacted
    row["tool_calls_json"] = tool_calls_json
    row["input_tokens"] = _int_or_none(get("input_tokens"))
    row["output_tokens"] = _int_or_none(get("output_tokens"))
    # Null means "no cache involved"; 0 keeps the column numeric and sums simple.
    row["cache_creation_input_tokens"] = _int_or_none(get("cache_creation_input_tokens")) or 0
    row["cache_read_input_tokens"] = _int_or_none(get("cache_read_input_tokens")) or 0
    split = get("cache_creation")
    if split is not None and (type(split) is dict or isinstance(split, Mapping)):
        row["cache_creation_5m_input_tokens"] = _int_or_none(split.get("ephemeral_5m_input_tokens"))
        row["cache_creation_1h_input_tokens"] = _int_or_none(split.get("ephemeral_1h_input_tokens"))
    else:  # null where the API (or a gateway) gives no 5 m / 1 h split
        row["cache_creation_5m_input_tokens"] = None
        row["cache_creation_1h_input_tokens"] = None
    row["message_id"] = message.get("id")


def _int_or_none(value: object) -> int | None:
    # bool is an int subclass; a true/false token count would be nonsense, not a number.
    if type(value) is int:  # a count, as a rule: decided at once
        return value
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _malformed(message: str, status: int | None, request_id: str | None) -> ApiResponseError:
    return ApiResponseError(message, status=status, error_type=MALFORMED, request_id=request_id)


def _envelope_error(
    data: Mapping[str, Any], *, status: int | None, request_id: str | None
) -> ApiResponseError:
    """An ``{"type": "error", "error": {...}}`` object received with a 2xx status."""
    error = data.get("error")
    error = error if isinstance(error, Mapping) else {}
    details = error.get("details")
    return ApiResponseError(
        _str_or(error.get("message"), "the API reported an error"),
        status=status,
        error_type=_str_or(error.get("type"), "api_error"),
        request_id=request_id or _str_or_none(data.get("request_id")),
        error_code=_error_code(details),
    )


# --- SSE events -> Message -------------------------------------------------------------------


class StreamAssembler:
    """Rebuilds the final Message from SSE events, following the SDK's accumulation rules.

    Usage values in ``message_delta`` are cumulative, so they overwrite rather than add.
    ``ping`` and unknown events are ignored because the API may add new ones at any time.

    >>> a = StreamAssembler()
    >>> a.feed("message_start", {"message": {"content": [], "usage": {"input_tokens": 1}}})
    >>> a.feed("message_stop", {})
    >>> a.message()["content"]
    []
    """

    def __init__(self) -> None:
        self._snapshot: dict[str, Any] | None = None
        self._json_parts: dict[int, list[str]] = {}
        self._stopped = False
        self._handlers: dict[str, Callable[[dict[str, Any], Mapping[str, Any]], None]] = {
            "content_block_start": self._block_start,
            "content_block_delta": self._block_delta,
            "content_block_stop": self._block_stop,
            "message_delta": self._message_delta,
            "message_stop": self._message_stop,
        }

    def feed(self, event_name: str, data: Mapping[str, Any]) -> None:
        """Apply one SSE event; an empty event name falls back to the data's ``type``."""
        name = event_name or _str_or(data.get("type"), "")
        if name == "error":
            raise _stream_error(data)
        if name == "message_start":
            self._start(data)
            return
        handler = self._handlers.get(name)
        if handler is None:  # ping, or an event type newer than this code
            return
        if self._snapshot is None:
            raise _malformed(f"stream event {name!r} arrived before message_start", 200, None)
        handler(self._snapshot, data)

    def message(self) -> dict[str, Any]:
        """The assembled Message; only a stream that reached ``message_stop`` is complete."""
        if self._snapshot is None or not self._stopped:
            raise ApiResponseError(
                "the stream ended before message_stop",
                status=200,
                error_type=STREAM_INTERRUPTED,
            )
        # The same checks as a plain reply's: events can carry any value (a stop_reason
        # object, output_tokens of 10**30) and must not reach the columns.
        return as_message(self._snapshot, status=200)

    def _start(self, data: Mapping[str, Any]) -> None:
        message = data.get("message")
        if not isinstance(message, Mapping):
            raise _malformed("message_start carries no message object", 200, None)
        snapshot = dict(message)
        content = snapshot.get("content")
        snapshot["content"] = list(content) if isinstance(content, list) else []
        usage = snapshot.get("usage")
        snapshot["usage"] = dict(usage) if isinstance(usage, Mapping) else {}
        self._snapshot = snapshot
        self._json_parts = {}
        self._stopped = False

    def _block_start(self, snapshot: dict[str, Any], data: Mapping[str, Any]) -> None:
        block = data.get("content_block")
        if not isinstance(block, Mapping):
            raise _malformed("content_block_start carries no content_block", 200, None)
        content: list[Any] = snapshot["content"]
        index = data.get("index", len(content))
        if not isinstance(index, int) or not 0 <= index <= len(content):
            raise _malformed(f"content_block_start has an out-of-order index {index!r}", 200, None)
        if index == len(content):
            content.append(dict(block))
        else:
            content[index] = dict(block)

    def _block_delta(self, snapshot: dict[str, Any], data: Mapping[str, Any]) -> None:
        index, block = _block_at(snapshot, data)
        delta = data.get("delta")
        if not isinstance(delta, Mapping):
            return
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = _str_or(block.get("text"), "") + _str_or(delta.get("text"), "")
        elif kind == "input_json_delta":
            # Pieces are not valid JSON on their own; parse once the block is complete.
            self._json_parts.setdefault(index, []).append(_str_or(delta.get("partial_json"), ""))
        elif kind == "thinking_delta":
            block["thinking"] = _str_or(block.get("thinking"), "") + _str_or(
                delta.get("thinking"), ""
            )
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature")
        elif kind == "citations_delta":
            citations = block.get("citations")
            previous = citations if isinstance(citations, list) else []
            block["citations"] = [*previous, delta.get("citation")]

    def _block_stop(self, snapshot: dict[str, Any], data: Mapping[str, Any]) -> None:
        index, block = _block_at(snapshot, data)
        parts = self._json_parts.pop(index, None)
        if parts is None:
            return
        raw = "".join(parts)
        try:
            # A tool called without arguments streams "" rather than "{}".
            block["input"] = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise _malformed(f"tool input at block {index} is not valid JSON", 200, None) from exc

    def _message_delta(self, snapshot: dict[str, Any], data: Mapping[str, Any]) -> None:
        delta = data.get("delta")
        if isinstance(delta, Mapping):
            for key in ("stop_reason", "stop_sequence", "stop_details", "container"):
                if key in delta:
                    snapshot[key] = delta[key]
        usage = data.get("usage")
        if isinstance(usage, Mapping):
            _merge_usage(snapshot["usage"], usage)

    def _message_stop(self, snapshot: dict[str, Any], data: Mapping[str, Any]) -> None:
        self._stopped = True


def _block_at(snapshot: dict[str, Any], data: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    content: list[Any] = snapshot["content"]
    index = data.get("index")
    if not isinstance(index, int) or not 0 <= index < len(content):
        raise _malformed(f"stream event refers to unknown block index {index!r}", 200, None)
    block: dict[str, Any] = content[index]
    return index, block


def _merge_usage(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Cumulative usage: output_tokens always overwrites; the rest only when reported."""
    if "output_tokens" in update:
        target["output_tokens"] = update["output_tokens"]
    for key in (
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "server_tool_use",
    ):
        if update.get(key) is not None:
            target[key] = update[key]


def _stream_error(data: Mapping[str, Any]) -> ApiResponseError:
    """An ``error`` event after HTTP 200: classified by its error.type, never by status."""
    error = data.get("error")
    error = error if isinstance(error, Mapping) else {}
    return ApiResponseError(
        _str_or(error.get("message"), "error event in the stream"),
        status=200,
        error_type=_str_or(error.get("type"), "api_error"),
        error_code=_error_code(error.get("details")),
    )


# --- non-2xx -> ApiStatusError --------------------------------------------------------------


def error_from_body(
    status: int,
    body: bytes | str | None,
    headers: Mapping[str, str],
    *,
    now: float | None = None,
) -> ApiStatusError:
    """The ``ApiStatusError`` a non-2xx response stands for.

    ``now`` (epoch seconds) is only used to turn an HTTP-date ``retry-after`` into seconds.
    """
    text = _decode(body)
    envelope = _parse_envelope(text)
    error = envelope.get("error") if envelope else None
    if isinstance(error, Mapping):
        message = _str_or(error.get("message"), f"HTTP {status}")
        error_type = _str_or(error.get("type"), _fallback_type(status))
        error_code = _error_code(error.get("details"))
    else:
        message, error_type, error_code = (
            _status_message(status, text),
            _fallback_type(status),
            None,
        )
    body_request_id = _str_or_none(envelope.get("request_id")) if envelope else None
    error = ApiStatusError(
        message,
        status=status,
        error_type=error_type,
        request_id=_header(headers, "request-id") or body_request_id,
        retry_after=retry_after_seconds(headers, now=now),
        should_retry=_should_retry(headers),
        error_code=error_code,
    )
    if status == 429:  # the rate-limit state that caused it; other statuses need none
        error.rate_limit_headers = {
            name.lower(): value
            for name, value in headers.items()
            if name.lower().startswith(RATE_LIMIT_HEADER_PREFIX)
        }
    return error


RATE_LIMIT_HEADER_PREFIX = "anthropic-ratelimit-"


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``retry-after``.

    Any size is kept: capping at 60 s (as the SDK does) retries inside a rate-limit window.
    """
    millis = _finite(_header(headers, "retry-after-ms"))
    if millis is not None and millis >= 0:
        return millis / 1000.0
    value = _header(headers, "retry-after")
    if value is None:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return max(seconds, 0.0)
    return _seconds_until_http_date(value, time.time() if now is None else now)


def _seconds_until_http_date(value: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - now, 0.0)


def _finite(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _should_retry(headers: Mapping[str, str]) -> bool | None:
    value = (_header(headers, "x-should-retry") or "").strip().lower()
    return {"true": True, "false": False}.get(value)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that also works for a plain dict (httpx.Headers already is)."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, item in headers.items():
        if key.lower() == name:
            return item
    return None


def _decode(body: bytes | str | None) -> str:
    if body is None:
        return ""
    return body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body


def _parse_envelope(text: str) -> Mapping[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, Mapping) else None


def _status_message(status: int, text: str) -> str:
    """A message for a body that is not the error envelope: status, plus the body's start."""
    snippet = " ".join(text.split())[:_BODY_SNIPPET]
    return f"HTTP {status}: {snippet}" if snippet else f"HTTP {status} with no error body"


def _fallback_type(status: int) -> str:
    return _STATUS_ERROR_TYPES.get(status, "api_error")


def _error_code(details: object) -> str | None:
    return _str_or_none(details.get("error_code")) if isinstance(details, Mapping) else None


def _str_or(value: object, default: str) -> str:
    return _encodable(value) if isinstance(value, str) and value else default


def _str_or_none(value: object) -> str | None:
    return _encodable(value) if isinstance(value, str) and value else None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _encodable(text: str) -> str:
    """``text`` with lone surrogates (a JSON ``"\\ud83d"`` escape) replaced, so that the
    error message, type or request id taken from a body can be written as UTF-8."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub("\ufffd", text)
