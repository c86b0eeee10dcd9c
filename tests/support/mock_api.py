"""The Messages API stood in for through ``httpx.MockTransport``: a client on a handler,
JSON and SSE replies, a streamed Message's events, and everything an error could show."""

from __future__ import annotations

import asyncio
import json
import traceback
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest

from batchrun.client.credentials import Credentials
from batchrun.client.messages import MessagesClient, Reply
from batchrun.core.errors import ApiError
from batchrun.core.secret import Secret

KEY = "sk-ant-api03-LEAKCANARY-0123456789"

BODY: dict[str, Any] = {
    "model": "claude-haiku-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Bonjour, ça va ?"}],
}

MESSAGE: dict[str, Any] = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": "Ça va bien."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 6},
}

Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


def client_for(
    handler: Handler,
    credentials: Credentials | None = None,
    **kwargs: Any,
) -> MessagesClient:
    return MessagesClient(
        kwargs.pop("base_url", "https://api.example.test"),
        credentials or Credentials(api_key=Secret(KEY)),
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


def create(
    handler: Handler, *, stream: bool = False, body: dict[str, Any] | None = None, **kwargs: Any
) -> Reply:
    async def main() -> Reply:
        async with client_for(handler, **kwargs) as client:
            return await client.create(body or BODY, stream=stream)

    return asyncio.run(main())


def create_error(handler: Handler, *, stream: bool = False, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        create(handler, stream=stream, **kwargs)
    return info.value


def json_response(
    data: object, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(data).encode(),
        headers={"request-id": "req_1", **(headers or {})},
    )


def sse_bytes(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return "".join(
        f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n" for name, data in events
    ).encode()


def sse_response(events: list[tuple[str, dict[str, Any]]]) -> httpx.Response:
    return httpx.Response(
        200,
        content=sse_bytes(events),
        headers={"content-type": "text/event-stream; charset=utf-8", "request-id": "req_sse"},
    )


STREAM_EVENTS: list[tuple[str, dict[str, Any]]] = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                **MESSAGE,
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": 12, "output_tokens": 1},
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Ça va "},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "bien."},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 6},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]


def everything_shown(exc: BaseException) -> Iterator[str]:
    """Everything a log line or traceback could show about an exception and its chain."""
    yield "".join(traceback.format_exception(exc))
    current: BaseException | None = exc
    while current is not None:
        yield str(current)
        yield repr(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
