"""A reply on the wire: the SSE events of a streamed answer, and compact JSON as the API sends it.

A streamed and a non-streamed call get the same Message (``replies``); only its delivery
differs. How a Message becomes ``message_start``, content block deltas, ``message_delta`` and
``message_stop`` (docs/api-facts.md §6.1) is the stream's own format, kept here apart from what the
answer says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

TEXT_DELTA_WORDS = 8
JSON_DELTA_CHARS = 24


def stream_events(message: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events that deliver ``message``, in the API's order (docs/api-facts.md §6.1)."""
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
