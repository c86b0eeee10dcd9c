"""The one HTTP client of a run: auth, transport, deadlines, status -> error mapping.

Everything foreign (httpx, aiohttp, OSError, JSON, SSE) is translated here, once, into the
``ApiError`` tree and chained. Credentials are revealed only into request headers. This is
also the one place where what a server said becomes ours, so every ``ApiError`` leaving an
attempt is scrubbed here (``core.scrub``): its message and everything else taken from the
response (a server or gateway may quote the key it refused, whole or cut short), before any
message, journal record, output row, log line or traceback can carry it. A foreign exception
whose text would show a credential (aiohttp's ``ClientResponseError`` repr includes the
request headers) is not chained at all.

>>> async def main() -> None:  # doctest: +SKIP
...     creds = Credentials(api_key=Secret("sk-ant-..."))
...     async with MessagesClient("https://api.anthropic.com", creds) as client:
...         reply = await client.create({"model": "claude-haiku-4-5", "max_tokens": 64,
...                                      "messages": [{"role": "user", "content": "Hi"}]})
...         print(reply.message["content"][0]["text"])
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import aclosing, contextmanager
from importlib import metadata
from types import TracebackType
from typing import Any, Literal, NoReturn, TypeVar

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_sse import EventSource

from batchrun.client.credentials import DEFAULT_API_VERSION, Credentials
from batchrun.client.response import (
    MALFORMED,
    StreamAssembler,
    as_message,
    error_from_body,
)
from batchrun.core.errors import (
    CONNECTION_ERROR,
    TIMEOUT,
    ApiConnectionError,
    ApiError,
    ApiResponseError,
    ApiTimeoutError,
    ConfigError,
)
from batchrun.core.frozen import frozen
from batchrun.core.jsoncodec import compact
from batchrun.core.scrub import Scrubber, url_secrets

T = TypeVar("T")

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"

# count_tokens rejects unknown fields (additionalProperties: false), max_tokens among them
# (docs/api-facts.md §9), so we send only the fields it documents.
COUNT_TOKENS_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "cache_control",
        "output_config",
        "mcp_servers",
        "context_management",
    }
)

_MISSING_CREDENTIALS = (
    "no API credentials: set ANTHROPIC_API_KEY (sent as x-api-key) or "
    "ANTHROPIC_AUTH_TOKEN (sent as Authorization: Bearer, for gateways)"
)


def _user_agent() -> str:
    try:
        version = metadata.version("batchrun")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"batchrun/{version}"


USER_AGENT = _user_agent()


@frozen  # made for every request: frozen to the type checker, quick to make
class Reply:
    """One successful attempt: the Message, and what the response said about itself."""

    # Checked (``response.as_message``) on both paths, plain and streamed: ``engine.outcome``
    # makes its row without checking it again (``ok_row(checked=True)``).
    message: dict[str, Any]
    status: int
    request_id: str | None
    headers: Mapping[str, str]  # kept for rate-limit pacing
    latency_ms: float  # this attempt, send -> full body


class MessagesClient:
    """``POST /v1/messages`` (plain or streamed) and ``count_tokens`` over one connection pool.

    ``max_connections`` should equal the run's concurrency: more sockets than requests in
    flight buy nothing, fewer make requests queue inside the pool where no deadline sees them.
    ``timeout`` bounds each attempt as a whole (httpx's own timeouts are per read, so a
    slow-dripping response would never trip them, docs/api-facts.md §5.2).
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        api_version: str = DEFAULT_API_VERSION,
        betas: Sequence[str] = (),
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_connections: int = 64,
        backend: Literal["aiohttp", "httpx"] = "aiohttp",
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        auth_headers = _auth_headers(credentials)  # before anything needs closing
        # Masks the credentials (and those a gateway's URL carries) in every failure this
        # client reports.
        secrets = [secret for _, secret in credentials.secrets()]
        self._scrub = Scrubber([*secrets, *url_secrets(base_url)])
        self._deadline = timeout
        self._clock = clock
        plain_http = base_url.lower().startswith("http://")
        self._transport = transport or _make_transport(backend, max_connections, not plain_http)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={**_static_headers(api_version, betas), **auth_headers},
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=self._transport,
        )
        # For _post_request, whose requests are all awaited within the deadline: only the
        # connect timeout is left to the transport. A per-read timeout as long as the deadline
        # can never fire first, and for it aiohttp moves a timer on every chunk it receives
        # (and one more for the wait for a pooled connection): timers a request pays for
        # and never uses.
        self._timeouts = {**self._http.timeout.as_dict(), "read": None, "pool": None}
        self._made: dict[str, tuple[httpx.URL, list[tuple[bytes, bytes]]]] = {}

    async def __aenter__(self) -> MessagesClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool (and the aiohttp session under it)."""
        await self._http.aclose()

    async def create(
        self,
        body: Mapping[str, Any],
        *,
        stream: bool = False,
        content: bytes | None = None,
        on_answer_start: Callable[[], None] | None = None,
    ) -> Reply:
        """Send one Messages request; one attempt, no retries (``client.retry`` owns those).

        ``content`` is ``body`` (without ``stream``) already encoded as JSON, such as a
        prepared request's canonical JSON: a plain request sends it as it is.
        ``on_answer_start`` is called when a streamed answer begins (its event stream opens),
        before the rest of it arrives: the moment its prompt-cache entry becomes readable.
        """
        if content is None or stream:
            payload = {key: value for key, value in body.items() if key != "stream"}
            if stream:
                payload["stream"] = True
            content = _encode(payload)
        started = self._clock()
        with self._translated():
            send = (
                self._send_streaming(content, on_answer_start)
                if stream
                else self._send_plain(content)
            )
            message, response, headers = await _within(self._deadline, send)
        return Reply(
            message=message,
            status=response.status_code,
            request_id=headers.get("request-id"),
            headers=headers,
            latency_ms=(self._clock() - started) * 1000.0,
        )

    async def count_tokens(self, body: Mapping[str, Any]) -> int:
        """Input tokens the request would use, from ``POST /v1/messages/count_tokens``."""
        content = _encode({k: v for k, v in body.items() if k in COUNT_TOKENS_FIELDS})
        with self._translated():
            response = await _within(self._deadline, self._post(COUNT_TOKENS_PATH, content))
        data = _json_body(response)
        tokens = data.get("input_tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, int) or isinstance(tokens, bool):
            raise _malformed(response, "count_tokens reply has no integer input_tokens")
        return tokens

    async def call_json(
        self,
        method: str,
        path: str,
        *,
        content: bytes | AsyncIterable[bytes] | None = None,
        content_length: int | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> dict[str, Any]:
        """One request to another JSON endpoint (Message Batches); one attempt, no retries.

        ``content`` may be read as it is sent (a batch's body from its file); then
        ``content_length`` is its size, sent as such rather than in chunks."""
        headers = {"content-length": str(content_length)} if content_length is not None else None
        with self._translated():
            response = await _within(
                self._deadline,
                self._http.request(method, path, content=content, params=params, headers=headers),
            )
            _raise_for_status(response)
        data = _json_body(response)
        if not isinstance(data, dict):
            raise _malformed(response, f"{method} {path}: the reply is not a JSON object")
        return data

    async def lines(self, path: str) -> AsyncIterator[bytes]:
        """The non-empty lines of a JSONL response, as they arrive (batch results).

        No overall deadline: a large result file may take longer than one request's timeout;
        httpx's per-read timeout still catches a stalled stream.
        """
        with self._translated():
            async with self._http.stream("GET", path) as response:
                if not response.is_success:
                    await response.aread()
                    _raise_for_status(response)
                pending = b""
                async for chunk in response.aiter_bytes():
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for line in complete:
                        if line.strip():
                            yield line
                if pending.strip():
                    yield pending

    async def _post(self, path: str, content: bytes) -> httpx.Response:
        response = await self._send(self._post_request(path, content))
        _raise_for_status(response)
        return response

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """``self._http.send(request)``, body read, without the steps that do nothing here.

        This client has no auth flow, no event hooks, no mounts and follows no redirects, so
        all ``send`` adds to the transport's work is bookkeeping, plus copying every
        response's headers into ``http.cookiejar``'s objects to look for cookies: about 35 us
        of the ~500 us a request costs in this process. A response that does set a cookie
        goes to the client's jar exactly as ``send`` would pass it (``_post_request`` then
        sends it back).
        """
        if self._http.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            if _sets_cookies(response):
                self._http.cookies.extract_cookies(response)
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response

    def _post_request(self, path: str, content: bytes) -> httpx.Request:
        """The request ``self._http.post(path, content=content)`` would send, made for less.

        ``build_request`` parses and joins the URL, copies the client's headers and timeouts
        and works out ``Host`` and ``Content-Length`` for every request, checking each header
        name against all the others: about 50 us a request in this process, a tenth of all
        it spends on one. Here the URL and every header but ``Content-Length`` are worked out
        once per path, and the request is given its body as a ready stream (so httpx adds no
        headers of its own) and read at once (so the transport sends it as bytes, with that
        length). Cookies a server set are the only thing that would make two requests
        differ, so while the jar holds any, httpx builds the request.
        """
        if self._http.cookies:
            request = self._http.build_request("POST", path, content=content)
            request.extensions["timeout"] = self._timeouts
            return request
        made = self._made.get(path)
        if made is None:
            model = self._http.build_request("POST", path, content=b"{}")
            head = [(name, value) for name, value in model.headers.raw if name != b"Content-Length"]
            made = self._made[path] = (model.url, head)
        url, head = made
        request = httpx.Request(
            "POST",
            url,
            headers=[*head, (b"Content-Length", b"%d" % len(content))],
            stream=httpx.ByteStream(content),
            extensions={"timeout": self._timeouts},
        )
        request.read()
        return request

    async def _send_plain(
        self, content: bytes
    ) -> tuple[dict[str, Any], httpx.Response, PlainHeaders]:
        response = await self._post(MESSAGES_PATH, content)
        headers = plain_headers(response.headers)
        message = as_message(
            _json_body(response),
            status=response.status_code,
            request_id=headers.get("request-id"),
        )
        return message, response, headers

    async def _send_streaming(
        self, content: bytes, on_answer_start: Callable[[], None] | None = None
    ) -> tuple[dict[str, Any], httpx.Response, PlainHeaders]:
        headers = {"accept": "text/event-stream"}
        async with self._http.stream(
            "POST", MESSAGES_PATH, content=content, headers=headers
        ) as response:
            if not response.is_success:
                await response.aread()
                _raise_for_status(response)
            _require_event_stream(response)
            if on_answer_start is not None:
                on_answer_start()
            request_id = response.headers.get("request-id")
            try:
                message = await _assemble(EventSource(response))
            except ApiResponseError as exc:
                exc.request_id = exc.request_id or request_id
                raise
            return message, response, plain_headers(response.headers)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn every foreign failure of one attempt into an ``ApiError``, chained once."""
        try:
            yield
        except ApiError as exc:
            self._scrub.cleaned(exc)  # texts it took from the response, in place
            raise
        except httpx.TimeoutException as exc:
            if _is_disconnect(exc):
                # Name the real failure (httpx-aiohttp calls them all ConnectTimeout).
                cause = exc.__cause__
                assert cause is not None
                what = (
                    "could not connect"
                    if isinstance(cause, aiohttp.ClientConnectorError)
                    else "the server closed the connection"
                )
                self._raise(ApiConnectionError, what, cause)
            self._raise(ApiTimeoutError, "timed out", exc, error_type=TIMEOUT)
        except (httpx.HTTPError, httpx.StreamError, aiohttp.ClientError) as exc:
            if isinstance(exc, TimeoutError):  # aiohttp's timeouts, should one leak
                self._raise(ApiTimeoutError, "timed out", exc, error_type=TIMEOUT)
            self._raise(ApiConnectionError, "connection failed", exc)
        except asyncio.TimeoutError as exc:
            message = f"no complete response within {self._deadline:g} s"
            self._raise(ApiTimeoutError, message, exc, error_type=TIMEOUT, detail=False)
        except OSError as exc:
            self._raise(ApiConnectionError, "connection failed", exc)

    def _raise(
        self,
        kind: type[ApiError],
        summary: str,
        cause: BaseException,
        *,
        error_type: str = CONNECTION_ERROR,
        detail: bool = True,
    ) -> NoReturn:
        reason = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        text = f"{summary} ({reason})" if detail else summary
        error = kind(self._scrub(text), error_type=error_type)
        raise error from self._scrub.safe_cause(cause)


# --- helpers ---------------------------------------------------------------------------------


def _secret_values(credentials: Credentials) -> list[tuple[str, str]]:
    """(env var, value) for each credential present, stripped of stray whitespace."""
    found = []
    for name, secret in credentials.secrets():
        value = secret.reveal().strip()
        if value:
            found.append((name, value))
    return found


def _auth_headers(credentials: Credentials) -> dict[str, str]:
    """The auth headers; both are sent when both are set, as the SDK does
    (docs/api-facts.md §3.1)."""
    values = dict(_secret_values(credentials))
    if not values:
        raise ConfigError(_MISSING_CREDENTIALS)
    for name, value in values.items():
        # httpx/h11 would quote an illegal value in its error message: check it ourselves.
        if not value.isascii() or not value.isprintable():
            raise ConfigError(f"{name} contains characters not allowed in an HTTP header")
    headers = {}
    if "ANTHROPIC_API_KEY" in values:
        headers["x-api-key"] = values["ANTHROPIC_API_KEY"]
    if "ANTHROPIC_AUTH_TOKEN" in values:
        headers["authorization"] = f"Bearer {values['ANTHROPIC_AUTH_TOKEN']}"
    return headers


def _static_headers(api_version: str, betas: Sequence[str]) -> dict[str, str]:
    headers = {
        "anthropic-version": api_version,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    if betas:
        headers["anthropic-beta"] = ",".join(betas)
    return headers


def _make_transport(
    backend: Literal["aiohttp", "httpx"], max_connections: int, tls: bool = True
) -> httpx.AsyncBaseTransport:
    """aiohttp's pool by default: plain httpx slows down sharply with hundreds in flight.

    Without ``tls`` (a plain-http base URL: a local gateway, the simulator, where every
    request goes) no TLS settings are made: reading the CA bundle for them takes ~25 ms.
    Their stand-in still verifies, and trusts no one, so no TLS connection could ever pass.
    """
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    verify: ssl.SSLContext | bool = True if tls else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if backend == "aiohttp":
        transport: httpx.AsyncBaseTransport = AiohttpTransport(verify=verify, limits=limits)
        return transport
    if backend == "httpx":
        return httpx.AsyncHTTPTransport(verify=verify, limits=limits)
    raise ConfigError(f"unknown HTTP backend {backend!r}: use 'aiohttp' or 'httpx'")


def _encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON: smaller bodies, and non-ASCII prompts are not inflated by escapes."""
    return compact(payload).encode()


async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
    """Await with a total deadline; raises ``asyncio.TimeoutError`` when it passes."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


PlainHeaders = dict[str, str]


def plain_headers(headers: httpx.Headers) -> PlainHeaders:
    """``dict(headers.items())``, made in one pass: lower-case names, the values of a name
    sent more than once joined with ", ", decoded as httpx decodes them.

    Every lookup on httpx's ``Headers`` decodes all of them again, and a response's are
    read a dozen times (its request id, the rate limiter's), so they are made a plain dict
    once. ``items()`` would ask for their encoding twice a header and build the dict twice:
    about half again as long as this.
    """
    encoding = headers.encoding
    plain: PlainHeaders = {}
    for key, value in headers.raw:
        name = key.lower().decode(encoding)
        text = value.decode(encoding)
        plain[name] = f"{plain[name]}, {text}" if name in plain else text
    return plain


def _sets_cookies(response: httpx.Response) -> bool:
    """True when the response has a header ``http.cookiejar`` takes cookies from."""
    headers = response.headers
    return "set-cookie" in headers or "set-cookie2" in headers


def _raise_for_status(response: httpx.Response) -> None:
    """Non-2xx -> ``ApiStatusError``; the body must already be read."""
    if not response.is_success:
        raise error_from_body(response.status_code, response.content, response.headers)


def _json_body(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise _malformed(response, "the response body is not valid JSON") from exc
    except RecursionError as exc:  # nested deeper than Python's parser goes: no API reply
        raise _malformed(response, "the response body is JSON nested too deep") from exc


def _malformed(response: httpx.Response, message: str) -> ApiResponseError:
    return ApiResponseError(
        message,
        status=response.status_code,
        error_type=MALFORMED,
        request_id=response.headers.get("request-id"),
    )


def _require_event_stream(response: httpx.Response) -> None:
    content_type = response.headers.get("content-type", "")
    if "text/event-stream" not in content_type:
        raise _malformed(response, f"expected an event stream, got {content_type!r}")


async def _assemble(source: EventSource) -> dict[str, Any]:
    """Feed every SSE event to a ``StreamAssembler``; closes the event iterator on any exit."""
    assembler = StreamAssembler()
    async with aclosing(source.aiter_sse()) as events:
        async for sse in events:
            if sse.data:
                assembler.feed(sse.event, _event_data(sse.event, sse.data))
    return assembler.message()


def _event_data(event: str, data: str) -> dict[str, Any]:
    """An event's JSON object; data that is not JSON makes the reply unusable."""
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ApiResponseError(
            f"stream event {event!r} carries invalid or too deeply nested JSON",
            status=200,
            error_type=MALFORMED,
        ) from exc
    return parsed if isinstance(parsed, dict) else {}


def _is_disconnect(exc: httpx.TimeoutException) -> bool:
    """True when httpx-aiohttp reported a dropped connection as ``ConnectTimeout``.

    It maps every ``aiohttp.ClientConnectionError`` (server disconnected, connection reset)
    to ``httpx.ConnectTimeout``; the real aiohttp error is the ``__cause__``.
    """
    cause = exc.__cause__
    return isinstance(cause, aiohttp.ClientError) and not isinstance(cause, TimeoutError)
