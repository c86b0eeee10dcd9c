"""client.py through httpx.MockTransport (its real transports against servers on 127.0.0.1:
tests/integration/test_client_backends.py).

pytest-asyncio is not installed: each test is a sync function that calls ``asyncio.run``."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from httpx_aiohttp import AiohttpTransport
from support.mock_api import (
    BODY,
    KEY,
    MESSAGE,
    STREAM_EVENTS,
    Handler,
    client_for,
    create,
    create_error,
    everything_shown,
    json_response,
    sse_bytes,
    sse_response,
)
from yarl import URL

from batchrun.client.credentials import Credentials
from batchrun.client.messages import MessagesClient, plain_headers
from batchrun.core.errors import (
    ApiConnectionError,
    ApiResponseError,
    ApiStatusError,
    ApiTimeoutError,
    ConfigError,
)
from batchrun.core.secret import Secret

TOKEN = "gw-token-LEAKCANARY-9876543210"


class Recorder:
    """A scripted MockTransport handler that remembers every request it saw."""

    def __init__(self, *responses: httpx.Response | BaseException) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        await request.aread()
        item = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(item, BaseException):
            raise item
        return item

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def last_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.last.content)
        return data


# --- headers and body ------------------------------------------------------------------------


def test_headers_with_api_key_and_betas() -> None:
    recorder = Recorder(json_response(MESSAGE))
    create(recorder, betas=["files-api-2025-04-14", "context-1m-2025-08-07"])
    headers = recorder.last.headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"] == "application/json"
    assert headers["anthropic-beta"] == "files-api-2025-04-14,context-1m-2025-08-07"
    assert headers["x-api-key"] == KEY
    assert "authorization" not in headers
    assert headers["user-agent"].startswith("batchrun/")
    assert recorder.last.method == "POST"
    assert recorder.last.url == "https://api.example.test/v1/messages"


def test_headers_with_bearer_token_only_and_no_betas() -> None:
    recorder = Recorder(json_response(MESSAGE))
    create(recorder, credentials=Credentials(auth_token=Secret(TOKEN)), api_version="2026-10-21")
    headers = recorder.last.headers
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert "x-api-key" not in headers
    assert "anthropic-beta" not in headers
    assert headers["anthropic-version"] == "2026-10-21"


def test_both_credentials_are_both_sent() -> None:
    recorder = Recorder(json_response(MESSAGE))
    create(recorder, credentials=Credentials(api_key=Secret(KEY), auth_token=Secret(TOKEN)))
    assert recorder.last.headers["x-api-key"] == KEY
    assert recorder.last.headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://gw.test", "https://gw.test/v1/messages"),
        ("https://gw.test/", "https://gw.test/v1/messages"),
        ("https://gw.test/anthropic", "https://gw.test/anthropic/v1/messages"),
        ("https://gw.test/anthropic/", "https://gw.test/anthropic/v1/messages"),
    ],
)
def test_base_url_with_or_without_slash(base_url: str, expected: str) -> None:
    recorder = Recorder(json_response(MESSAGE))
    create(recorder, base_url=base_url)
    assert str(recorder.last.url) == expected


@pytest.mark.parametrize("content", [b"{}", json.dumps({"text": "caf\u00e9 " * 300}).encode()])
def test_requests_are_built_as_httpx_builds_them(content: bytes) -> None:
    # The client builds its POSTs itself (cheaper than AsyncClient.build_request per call).
    async def main() -> tuple[httpx.Request, httpx.Request]:
        base = "https://gw.test/anthropic"
        async with client_for(Recorder(json_response(MESSAGE)), base_url=base) as client:
            client._post_request("/v1/messages", b'{"first": 1}')  # the path's parts kept
            ours = client._post_request("/v1/messages", content)
            theirs = client._http.build_request("POST", "/v1/messages", content=content)
            return ours, theirs

    ours, theirs = asyncio.run(main())
    assert ours.url == theirs.url == "https://gw.test/anthropic/v1/messages"
    assert ours.headers.multi_items() == theirs.headers.multi_items()
    # The deadline bounds the whole attempt: only the connect timeout is the transport's.
    assert ours.extensions == {
        "timeout": {**theirs.extensions["timeout"], "read": None, "pool": None}
    }
    assert ours.content == theirs.content


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:9", "https://api.example.test"])
def test_tls_settings_are_made_for_https_only_and_always_verify(base_url: str) -> None:
    async def main() -> ssl.SSLContext:
        async with MessagesClient(base_url, Credentials(api_key=Secret(KEY))) as client:
            transport = client._transport
            assert isinstance(transport, AiohttpTransport)
            return transport.ssl_context

    context = asyncio.run(main())
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    # Plain http never uses TLS: its stand-in settings trust no certificate at all.
    assert bool(context.get_ca_certs()) == base_url.startswith("https")


def test_cookies_a_server_sets_are_sent_back() -> None:
    recorder = Recorder(
        json_response(MESSAGE, headers={"set-cookie": "route=b7; Path=/"}),
        json_response(MESSAGE),
        json_response({"input_tokens": 12}),
    )

    async def main() -> None:
        async with client_for(recorder) as client:
            await client.create(BODY)
            await client.create(BODY)
            await client.count_tokens(BODY)

    asyncio.run(main())
    assert "cookie" not in recorder.requests[0].headers
    assert recorder.requests[1].headers["cookie"] == "route=b7"
    assert recorder.requests[2].headers["cookie"] == "route=b7"


def test_a_closed_client_sends_nothing() -> None:
    recorder = Recorder(json_response(MESSAGE))

    async def main() -> None:
        client = client_for(recorder)
        await client.aclose()
        await client.create(BODY)

    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(main())
    assert recorder.requests == []


def test_body_is_compact_utf8_json_without_stream_key() -> None:
    recorder = Recorder(json_response(MESSAGE))
    create(recorder, body={**BODY, "stream": True})  # a stray stream flag is not sent
    assert recorder.last.content == json.dumps(
        BODY, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert "stream" not in recorder.last_json()


# --- plain JSON replies ----------------------------------------------------------------------


def test_json_success_reply() -> None:
    ticks = iter([10.0, 10.25])
    recorder = Recorder(
        json_response(MESSAGE, headers={"anthropic-ratelimit-requests-remaining": "49"})
    )
    reply = create(recorder, clock=lambda: next(ticks))
    assert reply.message == MESSAGE
    assert reply.status == 200
    assert reply.request_id == "req_1"
    assert reply.headers["anthropic-ratelimit-requests-remaining"] == "49"
    assert reply.latency_ms == pytest.approx(250.0)


def test_error_envelope_becomes_status_error() -> None:
    envelope = {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Number of requests exceeded"},
        "request_id": "req_body",
    }
    response = json_response(envelope, 429, {"retry-after": "120", "request-id": "req_hdr"})
    error = create_error(Recorder(response))
    assert isinstance(error, ApiStatusError)
    assert error.status == 429
    assert error.error_type == "rate_limit_error"
    assert error.message == "Number of requests exceeded"
    assert error.request_id == "req_hdr"
    assert error.retry_after == 120.0


def test_retry_after_ms_header() -> None:
    envelope = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    response = json_response(envelope, 529, {"retry-after-ms": "2500", "x-should-retry": "true"})
    error = create_error(Recorder(response))
    assert error.status == 529
    assert error.error_type == "overloaded_error"
    assert error.retry_after == 2.5
    assert error.should_retry is True


def test_non_envelope_error_body() -> None:
    response = httpx.Response(502, content=b"<html>Bad Gateway</html>")
    error = create_error(Recorder(response))
    assert isinstance(error, ApiStatusError)
    assert error.status == 502
    assert "Bad Gateway" in error.message


@pytest.mark.parametrize(
    "content",
    [b"not json at all", b'{"type":"message","content":[]}', b"[1, 2]", b"\xff\xfe"],
)
def test_malformed_success_body(content: bytes) -> None:
    response = httpx.Response(200, content=content, headers={"request-id": "req_bad"})
    error = create_error(Recorder(response))
    assert isinstance(error, ApiResponseError)
    assert error.error_type == "malformed_response"
    assert error.status == 200
    assert error.request_id == "req_bad"


# --- streaming -------------------------------------------------------------------------------


def test_sse_success() -> None:
    recorder = Recorder(sse_response(STREAM_EVENTS))
    reply = create(recorder, stream=True)
    assert recorder.last_json()["stream"] is True
    assert recorder.last.headers["accept"] == "text/event-stream"
    assert reply.message["content"] == [{"type": "text", "text": "Ça va bien."}]
    assert reply.message["stop_reason"] == "end_turn"
    assert reply.message["usage"] == {"input_tokens": 12, "output_tokens": 6}
    assert reply.request_id == "req_sse"
    assert reply.status == 200


def test_sse_error_event() -> None:
    error_event = (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    recorder = Recorder(sse_response([*STREAM_EVENTS[:4], error_event]))
    error = create_error(recorder, stream=True)
    assert isinstance(error, ApiResponseError)
    assert error.status == 200
    assert error.error_type == "overloaded_error"
    assert error.request_id == "req_sse"


def test_sse_cut_stream_is_interrupted() -> None:
    recorder = Recorder(sse_response(STREAM_EVENTS[:5]))
    error = create_error(recorder, stream=True)
    assert isinstance(error, ApiResponseError)
    assert error.error_type == "stream_interrupted"
    assert error.request_id == "req_sse"


def test_sse_non_2xx_reads_error_body() -> None:
    envelope = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    error = create_error(Recorder(json_response(envelope, 529)), stream=True)
    assert isinstance(error, ApiStatusError)
    assert (error.status, error.error_type, error.message) == (
        529,
        "overloaded_error",
        "Overloaded",
    )


def test_sse_wrong_content_type_is_malformed() -> None:
    error = create_error(Recorder(json_response(MESSAGE)), stream=True)
    assert isinstance(error, ApiResponseError)
    assert error.error_type == "malformed_response"


def test_sse_invalid_event_json_is_malformed() -> None:
    content = sse_bytes(STREAM_EVENTS[:2]) + b"event: content_block_delta\ndata: {oops\n\n"
    response = httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})
    error = create_error(Recorder(response), stream=True)
    assert error.error_type == "malformed_response"


class BrokenStream(httpx.AsyncByteStream):
    """A body that sends some events, then the connection breaks (or stalls)."""

    def __init__(self, head: bytes, failure: BaseException | None, drip: float = 0.0) -> None:
        self.head, self.failure, self.drip = head, failure, drip

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        if self.failure is not None:
            raise self.failure
        while True:  # a slow drip: a ping now and then, never the end
            await asyncio.sleep(self.drip)
            yield b'event: ping\ndata: {"type":"ping"}\n\n'


def test_transport_error_mid_stream_is_connection_error() -> None:
    stream = BrokenStream(sse_bytes(STREAM_EVENTS[:4]), httpx.ReadError("connection reset"))
    response = httpx.Response(200, stream=stream, headers={"content-type": "text/event-stream"})
    error = create_error(Recorder(response), stream=True)
    assert isinstance(error, ApiConnectionError)
    assert error.error_type == "connection_error"
    assert isinstance(error.__cause__, httpx.ReadError)


def test_slow_drip_stream_hits_total_deadline() -> None:
    stream = BrokenStream(sse_bytes(STREAM_EVENTS[:2]), None, drip=0.01)
    response = httpx.Response(200, stream=stream, headers={"content-type": "text/event-stream"})
    error = create_error(Recorder(response), stream=True, timeout=0.2)
    assert isinstance(error, ApiTimeoutError)
    assert error.error_type == "timeout"
    assert "0.2 s" in error.message


# --- transport failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("reset"),
        ConnectionResetError(104, "Connection reset by peer"),
        aiohttp.ServerDisconnectedError(),
    ],
)
def test_transport_exception_is_connection_error(failure: Exception) -> None:
    error = create_error(Recorder(failure))
    assert isinstance(error, ApiConnectionError)
    assert error.error_type == "connection_error"
    assert error.status is None
    assert error.__cause__ is failure


@pytest.mark.parametrize(
    "failure", [httpx.ReadTimeout("timed out"), httpx.ConnectTimeout(""), httpx.PoolTimeout("")]
)
def test_httpx_timeout_is_timeout_error(failure: Exception) -> None:
    error = create_error(Recorder(failure))
    assert isinstance(error, ApiTimeoutError)
    assert error.error_type == "timeout"


def test_disconnect_reported_as_connect_timeout_is_connection_error() -> None:
    # What httpx-aiohttp raises for aiohttp.ServerDisconnectedError.
    failure = httpx.ConnectTimeout("Server disconnected")
    failure.__cause__ = aiohttp.ServerDisconnectedError()
    error = create_error(Recorder(failure))
    assert isinstance(error, ApiConnectionError)


def test_slow_server_hits_total_deadline() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return json_response(MESSAGE)

    error = create_error(slow, timeout=0.05)
    assert isinstance(error, ApiTimeoutError)


# --- credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "credentials",
    [Credentials(), Credentials(api_key=Secret("   "), auth_token=Secret(""))],
)
def test_missing_credentials_is_config_error(credentials: Credentials) -> None:
    with pytest.raises(ConfigError) as info:
        MessagesClient("https://api.example.test", credentials)
    assert "ANTHROPIC_API_KEY" in str(info.value)
    assert "ANTHROPIC_AUTH_TOKEN" in str(info.value)


def test_key_with_illegal_characters_is_config_error_without_the_key() -> None:
    bad = KEY[:10] + "\n" + KEY[10:]
    with pytest.raises(ConfigError) as info:
        MessagesClient("https://api.example.test", Credentials(api_key=Secret(bad)))
    assert KEY[10:] not in str(info.value)
    assert "ANTHROPIC_API_KEY" in str(info.value)


def test_surrounding_whitespace_is_stripped_from_the_key() -> None:
    recorder = Recorder(json_response(MESSAGE))
    create(recorder, credentials=Credentials(api_key=Secret(f"  {KEY}\n")))
    assert recorder.last.headers["x-api-key"] == KEY


def _leaky_aiohttp_error(request: httpx.Request) -> aiohttp.ClientResponseError:
    # aiohttp's repr of this error includes the request headers, key and all.
    info = aiohttp.RequestInfo(
        url=URL(str(request.url)),
        method="POST",
        headers=dict(request.headers),  # type: ignore[arg-type]
        real_url=URL(str(request.url)),
    )
    return aiohttp.ClientResponseError(info, (), status=400, message="bad")


async def _raise_leaky(request: httpx.Request) -> httpx.Response:
    raise _leaky_aiohttp_error(request)


async def _quote_key(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError(f"proxy refused key {request.headers['x-api-key']}")


async def _echo_headers(request: httpx.Request) -> httpx.Response:
    envelope = {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}
    return json_response(envelope, 400)


FAILURE_PATHS: list[tuple[str, Handler, bool]] = [
    ("connect", Recorder(httpx.ConnectError("refused")), False),
    ("timeout", Recorder(httpx.ReadTimeout("read")), False),
    ("status", _echo_headers, False),
    ("malformed", Recorder(httpx.Response(200, content=b"nope")), False),
    (
        "stream-error",
        Recorder(sse_response([*STREAM_EVENTS[:2], ("error", {"error": {"type": "api_error"}})])),
        True,
    ),
    ("stream-cut", Recorder(sse_response(STREAM_EVENTS[:3])), True),
    ("aiohttp-repr", _raise_leaky, False),
    ("quoted-key", _quote_key, False),
]


@pytest.mark.parametrize(
    ("name", "handler", "stream"), FAILURE_PATHS, ids=[p[0] for p in FAILURE_PATHS]
)
def test_key_never_appears_in_failures(name: str, handler: Handler, stream: bool) -> None:
    credentials = Credentials(api_key=Secret(KEY), auth_token=Secret(TOKEN))
    error = create_error(handler, stream=stream, credentials=credentials)
    for text in everything_shown(error):
        assert KEY not in text, name
        assert TOKEN not in text, name


def test_client_repr_and_credentials_do_not_show_the_key() -> None:
    async def main() -> list[str]:
        credentials = Credentials(api_key=Secret(KEY), auth_token=Secret(TOKEN))
        async with client_for(Recorder(json_response(MESSAGE)), credentials) as client:
            return [repr(client), str(client), repr(credentials)]

    for text in asyncio.run(main()):
        assert KEY not in text
        assert TOKEN not in text


# --- count_tokens ----------------------------------------------------------------------------


def test_count_tokens() -> None:
    recorder = Recorder(json_response({"input_tokens": 17}))

    async def main() -> int:
        async with client_for(recorder) as client:
            body = {**BODY, "temperature": 0.5, "metadata": {"user_id": "u"}, "system": "s"}
            return await client.count_tokens(body)

    assert asyncio.run(main()) == 17
    assert recorder.last.url.path == "/v1/messages/count_tokens"
    sent = recorder.last_json()
    assert sent == {"model": BODY["model"], "messages": BODY["messages"], "system": "s"}


def test_count_tokens_errors() -> None:
    async def main(response: httpx.Response) -> int:
        async with client_for(Recorder(response)) as client:
            return await client.count_tokens(BODY)

    with pytest.raises(ApiResponseError):
        asyncio.run(main(json_response({"tokens": 3})))
    envelope = {"type": "error", "error": {"type": "not_found_error", "message": "model"}}
    with pytest.raises(ApiStatusError) as info:
        asyncio.run(main(json_response(envelope, 404)))
    assert info.value.status == 404


def test_a_body_nested_deeper_than_the_parser_goes_is_a_malformed_response() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    response = httpx.Response(200, content=deep, headers={"content-type": "application/json"})
    error = create_error(Recorder(response))
    assert error.error_type == "malformed_response" and "nested too deep" in error.message


def test_a_stream_event_nested_too_deep_is_a_malformed_response() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    body = f"event: message_start\ndata: {deep}\n\n".encode()
    response = httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    error = create_error(Recorder(response), stream=True)
    assert error.error_type == "malformed_response"


@pytest.mark.parametrize(
    "raw",
    [
        [(b"Request-Id", b"req_1"), (b"anthropic-ratelimit-requests-limit", b"50")],
        [(b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"X-Note", b"plain")],
        [(b"x-text", "caf\u00e9".encode()), (b"X-Text", b"again")],  # utf-8
        [(b"x-latin", b"caf\xe9")],  # not utf-8: iso-8859-1, as httpx falls back
    ],
)
def test_plain_headers_are_what_httpx_items_give(raw: list[tuple[bytes, bytes]]) -> None:
    headers = httpx.Headers(raw)
    assert plain_headers(headers) == dict(headers.items())
