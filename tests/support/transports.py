"""Transports and replies for tests: a recording loopback transport, stand-in Messages, and
retry waits that cost nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx


class RecordingTransport(httpx.AsyncBaseTransport):
    """A real loopback transport that remembers every JSON body it sent (whole-run tests)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(await request.aread()))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def no_wait(seconds: float) -> None:
    """Retry waits cost nothing in tests; the policy itself is tested in test_retry."""


def canned_message(
    model: str, text: str = "fine", *, input_tokens: int = 10, output_tokens: int = 3
) -> dict[str, Any]:
    """A Message the API could answer with, for stand-in transports."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
