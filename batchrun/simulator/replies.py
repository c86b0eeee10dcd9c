"""What the simulator answers: request checks, token counts and deterministic replies; pure.

The reply is a function of the request alone, so a streamed and a non-streamed call give the
same content and usage, a re-sent request gets the same answer, and tests can predict it.

Token counting (the same for ``/v1/messages`` usage and ``/v1/messages/count_tokens``):

* text is split by the regex ``\\w+|[^\\w\\s]`` (a word or one punctuation mark = 1 token);
* counted text: the system prompt, every text block (or string content) of every message,
  tool_use names and inputs, tool_result contents, text documents, and the JSON of the
  tool definitions;
* every message adds ``MESSAGE_OVERHEAD`` tokens (role markers in the real prompt format);
* an image block counts ``IMAGE_TOKENS``, a PDF or URL document ``DOCUMENT_TOKENS``;
* thinking blocks of earlier turns count nothing (the API drops them too).

Reply text: ``re:<first 8 hex of sha256(last user text)>`` then filler words drawn from
``WORDS`` with a generator seeded by that hash; one word is one output token. The length is
picked from the hash within the configured range, then cut by ``max_tokens`` (stop_reason
``max_tokens``) and by the first stop sequence found (``stop_sequence``).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from batchrun.simulator.cache import SHARED as SHARED_CACHE
from batchrun.simulator.cache import CacheUsage, PromptCache

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
MESSAGE_OVERHEAD = 3
IMAGE_TOKENS = 1500
DOCUMENT_TOKENS = 1500
THINKING_WORDS = 12
REDACTED_THINKING_TRIGGER = (
    "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253"
)
"""The string Anthropic's docs give for testing redacted thinking: a prompt holding it gets a
``redacted_thinking`` block after the thinking block (when thinking is on)."""
DEFAULT_REPLY_TOKENS = (8, 120)
TEXT_DELTA_WORDS = 8
JSON_DELTA_CHARS = 24

API_VERSIONS = frozenset({"2023-06-01", "2026-10-21"})
SAMPLING_FREE_VERSION = "2026-10-21"
"""Under this version ``temperature``/``top_p``/``top_k`` are rejected (API-FACTS §3.4)."""

MODEL_SNAPSHOTS: dict[str, str] = {
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-opus-4-5": "claude-opus-4-5-20251101",
    "claude-opus-4-1": "claude-opus-4-1-20250805",
    "claude-sonnet-4-0": "claude-sonnet-4-20250514",
    "claude-opus-4-0": "claude-opus-4-20250514",
}
"""Aliases the API answers with a dated model id; other names are served as asked."""

WORDS: tuple[str, ...] = (
    "alpha", "amber", "anchor", "apple", "arrow", "aspen", "atlas", "autumn",
    "badge", "basil", "beacon", "birch", "blossom", "breeze", "brook", "cabin",
    "canyon", "cedar", "chalk", "cinder", "clover", "comet", "coral", "cotton",
    "crystal", "delta", "dune", "ember", "falcon", "fern", "flint", "garnet",
    "glacier", "harbor", "hazel", "island", "ivory", "jasper", "juniper", "kettle",
    "lagoon", "lantern", "maple", "meadow", "mesa", "nectar", "oasis", "orchid",
    "pebble", "pine", "prairie", "quartz", "raven", "ridge", "saffron", "willow",
    "spruce", "summit", "thistle", "timber", "tundra", "velvet", "walnut", "zephyr",
)  # fmt: skip
"""The filler vocabulary: 64 plain lowercase words, each one token under TOKEN_RE."""

MESSAGES_FIELDS = frozenset(
    {
        "model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k",
        "stop_sequences", "stream", "metadata", "tools", "tool_choice", "thinking",
        "cache_control", "service_tier", "output_config", "container", "inference_geo",
    }
)  # fmt: skip
"""Top-level fields ``/v1/messages`` accepts; the API rejects any other (additionalProperties)."""

COUNT_TOKENS_FIELDS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "cache_control",
     "output_config"}
)  # fmt: skip
"""Top-level fields ``/v1/messages/count_tokens`` accepts (no ``max_tokens``, no ``stream``)."""


class InvalidRequest(Exception):
    """The request breaks a rule the API enforces; carries the status and envelope fields."""

    def __init__(
        self, message: str, status: int = 400, error_type: str = "invalid_request_error"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type


# --------------------------------------------------------------------------- request checks


def check_version(version: str | None) -> str:
    """Return the ``anthropic-version`` header value, or raise if missing or unknown."""
    if not version:
        raise InvalidRequest("anthropic-version: header is required")
    if version not in API_VERSIONS:
        raise InvalidRequest(f"anthropic-version: {version!r} is not a valid version")
    return version


def check_messages_body(body: object, version: str) -> dict[str, Any]:
    """Check a ``/v1/messages`` body as the API would; return it as a dict."""
    data = _as_object(body)
    _check_fields(data, MESSAGES_FIELDS)
    _check_model(data)
    _check_max_tokens(data)
    _check_messages(data)
    _check_sampling(data, version)
    _check_optional_types(data)
    _check_tools(data)
    _check_thinking(data)
    return data


def check_count_tokens_body(body: object, version: str) -> dict[str, Any]:
    """Check a ``/v1/messages/count_tokens`` body as the API would; return it as a dict."""
    data = _as_object(body)
    _check_fields(data, COUNT_TOKENS_FIELDS)
    _check_model(data)
    _check_messages(data)
    _check_sampling(data, version)
    _check_optional_types(data)
    _check_tools(data)
    return data


def _as_object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("Input should be a valid dictionary or object")
    return body


def _check_fields(data: Mapping[str, Any], allowed: frozenset[str]) -> None:
    for name in data:
        if name not in allowed:
            raise InvalidRequest(f"{name}: Extra inputs are not permitted")


def _check_model(data: Mapping[str, Any]) -> None:
    model = _required(data, "model")
    if not isinstance(model, str):
        raise InvalidRequest("model: Input should be a valid string")
    if not model.startswith("claude-"):
        raise InvalidRequest(f"model: {model}", status=404, error_type="not_found_error")


def _check_max_tokens(data: Mapping[str, Any]) -> None:
    value = _required(data, "max_tokens")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest("max_tokens: Input should be a valid integer")
    if value < 1:
        raise InvalidRequest("max_tokens: Input should be greater than or equal to 1")


def _check_messages(data: Mapping[str, Any]) -> None:
    messages = _required(data, "messages")
    if not isinstance(messages, list):
        raise InvalidRequest("messages: Input should be a valid list")
    if not messages:
        raise InvalidRequest("messages: at least one message is required")
    for index, message in enumerate(messages):
        _check_message(index, message)
    if messages[0]["role"] != "user":
        raise InvalidRequest('messages: first message must use the "user" role')


def _check_message(index: int, message: object) -> None:
    where = f"messages.{index}"
    if not isinstance(message, dict):
        raise InvalidRequest(f"{where}: Input should be a valid dictionary")
    role = message.get("role")
    if role is None:
        raise InvalidRequest(f"{where}.role: Field required")
    if role not in ("user", "assistant"):
        raise InvalidRequest(f"{where}.role: Input should be 'user' or 'assistant'")
    if "content" not in message:
        raise InvalidRequest(f"{where}.content: Field required")
    content = message["content"]
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content: Input should be a valid string or list")
    for block_index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequest(f"{where}.content.{block_index}.type: Field required")
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            raise InvalidRequest(f"{where}.content.{block_index}.text: Field required")


def _check_sampling(data: Mapping[str, Any], version: str) -> None:
    if version == SAMPLING_FREE_VERSION:
        for name in ("temperature", "top_p", "top_k"):
            if name in data:
                raise InvalidRequest(
                    f"{name}: not supported with anthropic-version {SAMPLING_FREE_VERSION}"
                )
    for name in ("temperature", "top_p"):
        if name in data:
            _check_unit_interval(name, data[name])
    if "top_k" in data:
        top_k = data["top_k"]
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise InvalidRequest("top_k: Input should be an integer greater than or equal to 0")


def _check_unit_interval(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{name}: Input should be a valid number")
    if value < 0:
        raise InvalidRequest(f"{name}: Input should be greater than or equal to 0")
    if value > 1:
        raise InvalidRequest(f"{name}: Input should be less than or equal to 1")


def _check_optional_types(data: Mapping[str, Any]) -> None:
    stops = data.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        raise InvalidRequest("stop_sequences: Input should be a valid list of strings")
    if "stream" in data and not isinstance(data["stream"], bool):
        raise InvalidRequest("stream: Input should be a valid boolean")
    system = data.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise InvalidRequest("system: Input should be a valid string or list")


def _check_tools(data: Mapping[str, Any]) -> None:
    tools = data.get("tools")
    if tools is not None and (
        not isinstance(tools, list)
        or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools)
    ):
        raise InvalidRequest("tools: each tool needs a string name")
    choice = data.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise InvalidRequest("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if choice["type"] in ("any", "tool") and not tools:
        raise InvalidRequest(f"tool_choice: type {choice['type']!r} requires tools")
    if choice["type"] == "tool":
        names = [t["name"] for t in tools or ()]
        if choice.get("name") not in names:
            raise InvalidRequest(f"tool_choice.name: no tool named {choice.get('name')!r}")


def _check_thinking(data: Mapping[str, Any]) -> None:
    thinking = data.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict) or thinking.get("type") not in (
        "enabled",
        "adaptive",
        "disabled",
    ):
        raise InvalidRequest("thinking.type: Input should be 'enabled', 'adaptive' or 'disabled'")
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise InvalidRequest("thinking.enabled.budget_tokens: Field required")
        if budget < 1024:
            raise InvalidRequest(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            )
        if budget >= data["max_tokens"]:
            raise InvalidRequest("`max_tokens` must be greater than `thinking.budget_tokens`")
    if thinking["type"] != "disabled" and _forced_tool(data) is not None:
        raise InvalidRequest("Thinking may not be enabled when tool_choice forces tool use.")


def _required(data: Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise InvalidRequest(f"{name}: Field required")
    return data[name]


# --------------------------------------------------------------------------- token counting


def count_text_tokens(text: str) -> int:
    """Tokens in plain text: words and single punctuation marks."""
    return len(TOKEN_RE.findall(text))


def count_input_tokens(body: Mapping[str, Any]) -> int:
    """Input tokens of a checked request body (see the module docstring for the method)."""
    total = _system_tokens(body.get("system"))
    for message in body.get("messages", ()):
        total += MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
    tools = body.get("tools")
    if tools:
        total += count_text_tokens(json.dumps(tools, sort_keys=True))
    return max(total, 1)


def _system_tokens(system: object) -> int:
    if isinstance(system, str):
        return count_text_tokens(system)
    if isinstance(system, list):
        return _content_tokens(system)
    return 0


def _content_tokens(content: object) -> int:
    if isinstance(content, str):
        return count_text_tokens(content)
    if isinstance(content, list):
        return sum(_block_tokens(block) for block in content if isinstance(block, dict))
    return 0


def _block_tokens(block: Mapping[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return count_text_tokens(str(block.get("text", "")))
    if kind == "image":
        return IMAGE_TOKENS
    if kind == "document":
        return _document_tokens(block)
    if kind == "tool_use":
        payload = json.dumps(block.get("input", {}), sort_keys=True)
        return count_text_tokens(str(block.get("name", ""))) + count_text_tokens(payload)
    if kind == "tool_result":
        return _content_tokens(block.get("content"))
    if kind in ("thinking", "redacted_thinking"):
        return 0
    if kind == "search_result":
        return count_text_tokens(str(block.get("title", ""))) + _content_tokens(
            block.get("content")
        )
    return count_text_tokens(json.dumps(block, sort_keys=True))


def _document_tokens(block: Mapping[str, Any]) -> int:
    source = block.get("source")
    extra = count_text_tokens(f"{block.get('title') or ''} {block.get('context') or ''}")
    if isinstance(source, dict) and source.get("type") == "text":
        return extra + count_text_tokens(str(source.get("data", "")))
    if isinstance(source, dict) and source.get("type") == "content":
        return extra + _content_tokens(source.get("content"))
    return extra + DOCUMENT_TOKENS


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Reply:
    """A finished answer: the Message JSON object and the tag tying it to its prompt."""

    message: dict[str, Any]
    tag: str


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last user turn: its string content or its text blocks joined."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(
                str(b.get("text", ""))
                for b in content
                if isinstance(b, dict) and b.get("type") == "text"
            )
        return ""
    return ""


def prompt_digest(text: str) -> str:
    """The sha256 hex digest everything in a reply is derived from."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def served_model(model: str) -> str:
    """The model id the reply names: a dated snapshot for known aliases."""
    return MODEL_SNAPSHOTS.get(model, model)


def reply_length(digest: str, reply_tokens: tuple[int, int]) -> int:
    """How many words the uncut reply has, chosen by the digest within the range."""
    low, high = reply_tokens
    return low + int(digest[8:16], 16) % (high - low + 1)


@lru_cache(maxsize=8192)
def filler_words(digest: str, count: int) -> tuple[str, ...]:
    """``count`` words from WORDS, drawn by a generator seeded with the digest (cached).

    One ``randbytes`` call, a byte per word (64 words): cheap enough for every request.
    """
    draws = random.Random(int(digest[:16], 16)).randbytes(count)
    return tuple([WORDS[byte & 63] for byte in draws])


def make_reply(
    body: Mapping[str, Any],
    reply_tokens: tuple[int, int] = DEFAULT_REPLY_TOKENS,
    cache: PromptCache = SHARED_CACHE,
) -> Reply:
    """Build the deterministic answer to a checked ``/v1/messages`` body.

    >>> reply = make_reply({"model": "claude-haiku-4-5", "max_tokens": 3,
    ...                     "messages": [{"role": "user", "content": "Hi"}]})
    >>> reply.message["stop_reason"], reply.message["usage"]["output_tokens"]
    ('max_tokens', 3)
    """
    digest = prompt_digest(last_user_text(body["messages"]))
    tag = f"re:{digest[:8]}"
    max_tokens = int(body["max_tokens"])
    tool = _forced_tool(body)
    if tool is not None:
        blocks, stop_reason, stop_sequence, output_tokens = _tool_reply(tool, digest)
    else:
        blocks, stop_reason, stop_sequence, output_tokens = _text_reply(
            body, digest, tag, max_tokens, reply_tokens
        )
    message = {
        "id": f"msg_sim_{digest[:24]}",
        "type": "message",
        "role": "assistant",
        "model": served_model(str(body["model"])),
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "stop_details": None,
        "container": None,
        "usage": usage(
            count_input_tokens(body), max(output_tokens, 1), cache.apply(body, count_input_tokens)
        ),
    }
    return Reply(message=message, tag=tag)


def usage(
    input_tokens: int, output_tokens: int, cached: CacheUsage | None = None
) -> dict[str, Any]:
    """A usage object, standard tier; ``cached`` takes its tokens out of ``input_tokens``."""
    cached = cached or CacheUsage()
    return {
        "input_tokens": max(input_tokens - cached.read - cached.written, 0),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cached.written,
        "cache_read_input_tokens": cached.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cached.write_5m,
            "ephemeral_1h_input_tokens": cached.write_1h,
        },
        "server_tool_use": None,
        "service_tier": "standard",
    }


_Blocks = tuple[list[dict[str, Any]], str, str | None, int]


def _text_reply(
    body: Mapping[str, Any],
    digest: str,
    tag: str,
    max_tokens: int,
    reply_tokens: tuple[int, int],
) -> _Blocks:
    """Optional thinking block, then the text block, cut by max_tokens and stop sequences."""
    blocks: list[dict[str, Any]] = []
    budget = max_tokens
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
        block, used = _thinking_block(digest, tag, max_tokens)
        blocks.append(block)
        budget -= used
        if REDACTED_THINKING_TRIGGER in last_user_text(body["messages"]):
            blocks.append({"type": "redacted_thinking", "data": f"redacted_sim_{digest[:24]}"})
    length = reply_length(digest, reply_tokens)
    words = (tag, *filler_words(digest, max(reply_tokens[1] - 1, 0)))[:length]
    stop_reason = "end_turn"
    if length > budget:
        words = words[: max(budget, 0)]
        stop_reason = "max_tokens"
    text = " ".join(words)
    text, matched = cut_at_stop_sequence(text, body.get("stop_sequences") or ())
    if matched is not None:
        stop_reason = "stop_sequence"
    blocks.append({"type": "text", "text": text})
    return blocks, stop_reason, matched, (max_tokens - budget) + len(text.split())


def _thinking_block(digest: str, tag: str, max_tokens: int) -> tuple[dict[str, Any], int]:
    """A short thinking block and the tokens it uses (at most half of max_tokens)."""
    count = min(THINKING_WORDS, max(1, max_tokens // 2))
    words = ("Considering", tag, *filler_words(digest, THINKING_WORDS)[::-1])[:count]
    block = {"type": "thinking", "thinking": " ".join(words), "signature": f"sig_sim_{digest}"}
    return block, count


def cut_at_stop_sequence(text: str, stop_sequences: Sequence[str]) -> tuple[str, str | None]:
    """Cut text before the earliest stop sequence it contains; return (text, the sequence)."""
    best: tuple[int, str] | None = None
    for sequence in stop_sequences:
        if not sequence:
            continue
        at = text.find(sequence)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, sequence)
    if best is None:
        return text, None
    return text[: best[0]], best[1]


def _forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The tool the request forces (``tool_choice`` ``tool`` or ``any``), or None."""
    choice = body.get("tool_choice")
    tools = body.get("tools")
    if not isinstance(choice, dict) or not tools:
        return None
    if choice.get("type") == "tool":
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    if choice.get("type") == "any":
        first: Mapping[str, Any] = tools[0]
        return first
    return None


def _tool_reply(tool: Mapping[str, Any], digest: str) -> _Blocks:
    schema = tool.get("input_schema")
    tool_input = example_for_schema(schema if isinstance(schema, dict) else {})
    name = str(tool["name"])
    block = {
        "type": "tool_use",
        "id": f"toolu_sim_{digest[:24]}",
        "name": name,
        "input": tool_input,
    }
    tokens = count_text_tokens(name) + count_text_tokens(json.dumps(tool_input))
    return [block], "tool_use", None, tokens


def example_for_schema(schema: Mapping[str, Any], depth: int = 0) -> Any:
    """A small value valid for a JSON schema: required properties filled, enums' first value.

    >>> example_for_schema({"type": "object", "required": ["n"],
    ...                     "properties": {"n": {"type": "integer", "minimum": 3}}})
    {'n': 3}
    """
    if depth > 8:
        return None
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options and isinstance(options[0], dict):
            return example_for_schema(options[0], depth + 1)
    return _example_for_type(schema, _schema_type(schema), depth)


def _schema_type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    return "object" if "properties" in schema else "string"


def _example_for_type(schema: Mapping[str, Any], kind: str, depth: int) -> Any:
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            name: example_for_schema(properties.get(name) or {}, depth + 1)
            for name in schema.get("required") or ()
        }
    if kind == "array":
        items = schema.get("items")
        item_schema: Mapping[str, Any] = items if isinstance(items, dict) else {}
        count = int(schema.get("minItems", 0))
        return [example_for_schema(item_schema, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        low = min(low, schema.get("maximum", low))
        return int(low) if kind == "integer" else float(low)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    text = "sim" + "x" * max(int(schema.get("minLength", 0)) - 3, 0)
    return text[: int(schema.get("maxLength", len(text)))]


# --------------------------------------------------------------------------- SSE events


def stream_events(message: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events that deliver ``message``, in the API's order (API-FACTS §6.1)."""
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**message["usage"], "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for index, block in enumerate(message["content"]):
        events.extend(_block_events(index, block))
        if index == 0:
            events.append(("ping", {"type": "ping"}))
    if not message["content"]:
        events.append(("ping", {"type": "ping"}))
    delta = {
        "stop_reason": message["stop_reason"],
        "stop_sequence": message["stop_sequence"],
        "stop_details": message.get("stop_details"),
    }
    final_usage = {k: v for k, v in message["usage"].items() if k != "service_tier"}
    events.append(
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage})
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _block_events(index: int, block: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    kind = block["type"]
    if kind == "text":
        empty: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in split_text(block["text"])]
    elif kind == "thinking":
        empty = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in split_text(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "redacted_thinking":
        empty, deltas = dict(block), []  # arrives whole in content_block_start, as from the API
    else:
        empty = {**block, "input": {}}
        raw = json.dumps(block["input"])
        deltas = [{"type": "input_json_delta", "partial_json": ""}] + [
            {"type": "input_json_delta", "partial_json": raw[i : i + JSON_DELTA_CHARS]}
            for i in range(0, len(raw), JSON_DELTA_CHARS)
        ]
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": empty},
        )
    ]
    events.extend(
        ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
        for d in deltas
    )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def split_text(text: str, words: int = TEXT_DELTA_WORDS) -> list[str]:
    """Split text into pieces of a few words that join back to exactly ``text``."""
    pieces = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)]


def encode_event(name: str, data: Mapping[str, Any]) -> bytes:
    """One SSE event on the wire: ``event: <name>\\ndata: <json>\\n\\n``."""
    return f"event: {name}\ndata: {dumps(data)}\n\n".encode()


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(data: object) -> str:
    """Compact JSON, as the API sends it (one shared encoder: this runs per event)."""
    return _ENCODER.encode(data)
