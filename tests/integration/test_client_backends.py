"""client.py on its real transports (aiohttp and httpx) against servers on 127.0.0.1: answers,
streams, a refused connection and servers that hang up (the rest of the client, through
httpx.MockTransport: tests/unit/test_client.py).

pytest-asyncio is not installed: each test is a sync function that calls ``asyncio.run``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from support.mock_api import (
    BODY,
    KEY,
    MESSAGE,
    STREAM_EVENTS,
    sse_bytes,
)

from batchrun.client.credentials import Credentials
from batchrun.client.messages import MessagesClient, Reply
from batchrun.core.errors import (
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
)
from batchrun.core.secret import Secret

# --- real transports on 127.0.0.1 ------------------------------------------------------------


async def _with_server(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    use: Callable[[str], Awaitable[Any]],
) -> Any:
    app = web.Application()
    app.router.add_post("/v1/messages", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        return await use(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


async def _hang_up(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()  # close the connection without answering
    return web.Response(text="never delivered")


async def _answer(request: web.Request) -> web.StreamResponse:
    return web.json_response(MESSAGE, headers={"request-id": "req_local"})


def _real_client(base_url: str, backend: str) -> MessagesClient:
    return MessagesClient(
        base_url,
        Credentials(api_key=Secret(KEY)),
        backend=backend,  # type: ignore[arg-type]
        max_connections=4,
        timeout=10.0,
    )


def test_aiohttp_backend_server_hangs_up_is_connection_error() -> None:
    async def use(base_url: str) -> ApiError:
        async with _real_client(base_url, "aiohttp") as client:
            with pytest.raises(ApiError) as info:
                await client.create(BODY)
            return info.value

    error = asyncio.run(_with_server(_hang_up, use))
    assert isinstance(error, ApiConnectionError)
    assert error.error_type == "connection_error"


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
def test_real_backends_answer(backend: str) -> None:
    async def use(base_url: str) -> Reply:
        async with _real_client(base_url, backend) as client:
            return await client.create(BODY)

    reply = asyncio.run(_with_server(_answer, use))
    assert reply.message == MESSAGE
    assert reply.request_id == "req_local"


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
def test_real_backends_connection_refused(backend: str) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> None:
        async with _real_client(f"http://127.0.0.1:{port}", backend) as client:
            await client.create(BODY)

    with pytest.raises(ApiConnectionError):
        asyncio.run(main())


def _sse_handler(*, hang_up: bool) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Streams the events split mid-line across writes; optionally hangs up halfway."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in STREAM_EVENTS[:4] if hang_up else STREAM_EVENTS:
            chunk = sse_bytes([event])
            await response.write(chunk[:7])
            await asyncio.sleep(0.001)
            await response.write(chunk[7:])
        if hang_up:
            assert request.transport is not None
            request.transport.close()
        else:
            await response.write_eof()
        return response

    return handler


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
def test_real_backends_stream(backend: str) -> None:
    async def use(base_url: str) -> Reply:
        async with _real_client(base_url, backend) as client:
            return await client.create(BODY, stream=True)

    reply = asyncio.run(_with_server(_sse_handler(hang_up=False), use))
    assert reply.message["content"] == [{"type": "text", "text": "Ça va bien."}]


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
def test_real_backends_stream_cut_by_server_is_connection_error(backend: str) -> None:
    async def use(base_url: str) -> ApiError:
        async with _real_client(base_url, backend) as client:
            with pytest.raises(ApiError) as info:
                await client.create(BODY, stream=True)
            return info.value

    error = asyncio.run(_with_server(_sse_handler(hang_up=True), use))
    assert isinstance(error, ApiConnectionError)


async def _drip(request: web.Request) -> web.StreamResponse:
    """A plain answer whose body never ends: a byte now and then, each well within a read
    timeout."""
    response = web.StreamResponse(headers={"content-type": "application/json"})
    response.content_length = 10_000
    await response.prepare(request)
    await response.write(b'{"id": "msg_slow", ')
    while True:
        await asyncio.sleep(0.02)
        await response.write(b" ")


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
def test_real_backends_slow_drip_answer_hits_the_deadline(backend: str) -> None:
    # Plain requests leave no per-read timeout to the transport: the deadline bounds them.
    async def use(base_url: str) -> ApiError:
        client = MessagesClient(
            base_url,
            Credentials(api_key=Secret(KEY)),
            backend=backend,  # type: ignore[arg-type]
            timeout=0.5,
        )
        async with client:
            with pytest.raises(ApiError) as info:
                await client.create(BODY)
            return info.value

    error = asyncio.run(_with_server(_drip, use))
    assert isinstance(error, ApiTimeoutError)
    assert "no complete response within 0.5 s" in str(error)
