"""What the simulator answers: the deterministic reply to a checked request; pure.

The reply is a function of the request alone, so a streamed and a non-streamed call give the
same content and usage, a re-sent request gets the same answer, and tests can predict it.
Checking the request comes before (``checks``), counting its tokens is shared with
``count_tokens`` and the rate limits (``tokens``), and the stream's events are made from the
finished reply (``events``); what is left here is what the answer says.

Reply text: ``re:<first 8 hex of sha256(last user text)>`` then filler words drawn from
``WORDS`` with a generator seeded by that hash; one word is one output token. The length is
picked from the hash within the configured range, then cut by ``max_tokens`` (stop_reason
``max_tokens``) and by the first stop sequence found (``stop_sequence``).

A request with ``output_config.format`` gets JSON text that fits its schema
(``answer_for_schema``: every property filled, values drawn from the same hash), cut at
``max_tokens`` like any text; one forcing a tool gets a call with a small valid input
(``example_for_schema``). A prompt holding ``REFUSAL_TRIGGER`` is refused (``stop_reason:
refusal``), as the API refuses what its safeguards stop.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from batchrun.core.frozen import frozen
from batchrun.simulator.cache import SHARED as SHARED_CACHE
from batchrun.simulator.cache import CacheUsage, PromptCache
from batchrun.simulator.checks import forced_tool, output_format
from batchrun.simulator.models import packaged_models
from batchrun.simulator.tokens import count_input_tokens, count_text_tokens

THINKING_WORDS = 12
ADAPTIVE_THINKING_WORDS = {"low": 4, "medium": 12, "high": 24, "xhigh": 32, "max": 48}
"""Words (tokens) adaptive thinking spends at each effort: the simulator's choice, small so
replies stay short; the API states none (docs/api-facts.md §12.7)."""
REDACTED_THINKING_TRIGGER = (
    "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253"
)
"""The string Anthropic's docs give for testing redacted thinking: a prompt holding it gets a
``redacted_thinking`` block after the thinking block (when thinking is on)."""
DEFAULT_REPLY_TOKENS = (8, 120)
REFUSAL_TRIGGER = "BATCHRUN_SIMULATE_REFUSAL"
"""A prompt holding this string is refused: ``stop_reason: refusal``, no content."""

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
"""The filler vocabulary: 64 plain lowercase words, each one token under ``tokens.TOKEN_RE``."""


@frozen  # made for every request: frozen to the type checker, quick to make
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
    cached: CacheUsage | None = None,
) -> Reply:
    """Build the deterministic answer to a checked ``/v1/messages`` body.

    >>> reply = make_reply({"model": "claude-haiku-4-5", "max_tokens": 3,
    ...                     "messages": [{"role": "user", "content": "Hi"}]})
    >>> reply.message["stop_reason"], reply.message["usage"]["output_tokens"]
    ('max_tokens', 3)

    ``cached`` is the cache usage the server already looked up when the request arrived
    (``PromptCache.lookup``); without it the cache is looked up and written at once.
    """
    digest = prompt_digest(last_user_text(body["messages"]))
    tag = f"re:{digest[:8]}"
    max_tokens = int(body["max_tokens"])
    tool = forced_tool(body)
    schema = output_format(body)
    stop_details = None
    blocks: list[dict[str, Any]]
    if REFUSAL_TRIGGER in last_user_text(body["messages"]):
        blocks, stop_reason, stop_sequence, output_tokens = [], "refusal", None, 1
        stop_details = {"type": "refusal", "category": "cyber", "explanation": "simulated"}
    elif tool is not None:
        blocks, stop_reason, stop_sequence, output_tokens = _tool_reply(tool, digest)
    elif schema is not None:
        blocks, stop_reason, stop_sequence, output_tokens = _format_reply(
            schema, digest, max_tokens
        )
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
        "stop_details": stop_details,
        "container": None,
        "usage": usage(
            count_input_tokens(body),
            max(output_tokens, 1),
            cache.apply(body, count_input_tokens) if cached is None else cached,
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
    used = thinking_tokens(body, max_tokens)
    if used:
        block = _thinking_block(digest, tag, used)
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
    if text or budget > 0:  # thinking that spent all of max_tokens leaves no text block
        blocks.append({"type": "text", "text": text})
    return blocks, stop_reason, matched, (max_tokens - budget) + len(text.split())


def thinking_tokens(body: Mapping[str, Any], max_tokens: int) -> int:
    """The tokens the reply spends thinking before its text (0: it does not think).

    Budgeted thinking (``enabled``) thinks a little: at most half of max_tokens. Adaptive
    thinking, asked for or the model's default (``thinks_by_default`` in the model table:
    every 5.x model), thinks ``ADAPTIVE_THINKING_WORDS`` at the request's effort (else the
    model's default) and may spend all of max_tokens, leaving no text, as the API's models do
    with a small max_tokens (docs/api-facts.md §12.7)."""
    thinking = body.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "enabled":
        return min(THINKING_WORDS, max(1, max_tokens // 2))
    facts = packaged_models().facts_for(str(body.get("model")))
    if kind != "adaptive" and not (kind is None and facts.thinks_by_default):
        return 0
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    words = ADAPTIVE_THINKING_WORDS.get(str(effort or facts.effort_default), THINKING_WORDS)
    return min(words, max_tokens)


def _thinking_block(digest: str, tag: str, count: int) -> dict[str, Any]:
    """A thinking block of ``count`` words."""
    words = ("Considering", tag, *filler_words(digest, max(count, THINKING_WORDS))[::-1])[:count]
    return {"type": "thinking", "thinking": " ".join(words), "signature": f"sig_sim_{digest}"}


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


def _format_reply(schema: Mapping[str, Any], digest: str, max_tokens: int) -> _Blocks:
    """The answer as JSON text fitting ``schema``, cut off at ``max_tokens`` (one token per
    ``tokens.count_text_tokens`` word, cut by characters in proportion)."""
    text = json.dumps(answer_for_schema(schema, digest), separators=(",", ":"))
    tokens = max(count_text_tokens(text), 1)
    if tokens <= max_tokens:
        return [{"type": "text", "text": text}], "end_turn", None, tokens
    cut = text[: len(text) * max_tokens // tokens]
    return [{"type": "text", "text": cut}], "max_tokens", None, max_tokens


def answer_for_schema(schema: Mapping[str, Any], digest: str) -> Any:
    """A value that fits ``schema`` (as structured outputs take it: ``checks``), every
    property filled, its values drawn from ``digest`` (a prompt's): the same prompt gets
    the same answer, and answers differ from prompt to prompt.

    >>> answer_for_schema({"type": "object", "properties": {"ok": {"type": "boolean"},
    ...     "label": {"enum": ["pos", "neg"]}}}, "0" * 64)
    {'ok': False, 'label': 'neg'}
    """
    draws = random.Random(int(digest[:16], 16))
    return _answer(schema, schema, draws, 0)


def _answer(node: Any, root: Mapping[str, Any], draws: random.Random, depth: int) -> Any:
    if not isinstance(node, Mapping) or depth > 8:
        return None
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return _answer(target, root, draws, depth + 1)
    if "const" in node:
        return node["const"]
    if isinstance(node.get("enum"), list) and node["enum"]:
        return draws.choice(node["enum"])
    for key in ("anyOf", "allOf"):
        options = [o for o in node.get(key) or () if isinstance(o, Mapping)]
        typed = [o for o in options if o.get("type") != "null"] or options
        if typed:
            return _answer(typed[0], root, draws, depth + 1)
    kind = _schema_type(node)
    if kind == "object":
        properties = node.get("properties") or {}
        return {name: _answer(sub, root, draws, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = max(int(node.get("minItems", 0)), draws.randint(1, 3))
        return [_answer(node.get("items") or {}, root, draws, depth + 1) for _ in range(count)]
    if kind == "integer":
        return draws.randint(0, 99)
    if kind == "number":
        return round(draws.random(), 3)
    if kind == "boolean":
        return draws.random() < 0.5
    if kind == "null":
        return None
    return _string(node.get("format"), draws)


_FORMATTED = {
    "date": "2026-12-07",
    "date-time": "2026-12-07T12:00:00Z",
    "time": "12:00:00Z",
    "duration": "P1D",
    "email": "sim@example.com",
    "hostname": "sim.example.com",
    "uri": "https://example.com/sim",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _string(fmt: Any, draws: random.Random) -> str:
    if isinstance(fmt, str) and fmt in _FORMATTED:
        return _FORMATTED[fmt]
    return " ".join(draws.choice(WORDS) for _ in range(draws.randint(1, 3)))


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
