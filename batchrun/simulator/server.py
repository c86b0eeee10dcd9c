"""The simulator's HTTP side: an aiohttp stand-in for the Messages API on a loopback port.

It checks requests like the API (auth, version header, body: ``checks``), enforces RPM /
ITPM / OTPM limits with the API's headers and 429s (``ratelimits``), answers with the
deterministic replies of ``replies`` as JSON or SSE (``events``), and injects the faults of
``faults`` (error statuses, dropped connections, hangs, broken bodies and streams) after a
configurable latency.
It also serves the Message Batches API over the store of ``batches``.

    >>> async def demo() -> None:
    ...     async with Simulator(SimulatorConfig(latency_mean=0.01)) as sim:
    ...         print(sim.base_url)  # POST {base_url}/v1/messages
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import logging
import random
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from batchrun.simulator.batch_store import (
    DEFAULT_CANCEL_S,
    MAX_BATCH_BYTES,
    BatchSettings,
    BatchStore,
    QueueFull,
    check_create_body,
    parse_list_query,
)
from batchrun.simulator.cache import SHARED as SHARED_CACHE
from batchrun.simulator.cache import CacheLookup, PromptCache
from batchrun.simulator.checks import (
    InvalidRequest,
    check_count_tokens_body,
    check_messages_body,
    check_version,
    forced_tool,
    output_format,
)
from batchrun.simulator.events import dumps, encode_event, stream_events
from batchrun.simulator.faults import STATUS_FAULTS, FaultPicker, check_rates, effective_fault
from batchrun.simulator.models import packaged_models
from batchrun.simulator.ratelimits import Admission, RateLimits, Refusal, SimLimits
from batchrun.simulator.replies import DEFAULT_REPLY_TOKENS, Reply, make_reply
from batchrun.simulator.tokens import count_input_tokens

MAX_BODY_BYTES = 32 * 1024 * 1024
"""The API's request size limit for Messages and count_tokens (docs/api-facts.md §1.3)."""

SHUTDOWN_GRACE = 0.5
"""Seconds stop() lets in-flight handlers finish before cancelling them."""

_log = logging.getLogger(__name__)

_STREAM_ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulator behaves: latency, faults, rate limits, accepted key and reply length.

    ``rpm``, ``itpm`` and ``otpm`` are per-minute limits per model (None: unlimited, and no
    ``anthropic-ratelimit-*`` headers for that limit). ``batch_*`` shape Message Batches: a
    batch ends ``batch_processing_s`` after its creation, and these fractions of its valid
    requests come back errored (a retryable server error) or expired (see ``batches``).
    Models are served as the API serves them (``models``: a Claude id the API does not know
    gets its 404); ``gateway_models`` are other names answered as asked, the way a gateway
    answers its own aliases, and with ``gateway`` every name that is not a Claude id is.
    """

    latency_mean: float = 0.0
    latency_jitter: float = 0.0
    error_rates: dict[str, float] = field(default_factory=dict)
    retry_after: float = 1.0
    api_key: str | None = None
    reply_tokens: tuple[int, int] = DEFAULT_REPLY_TOKENS
    seed: int = 0
    hang_seconds: float = 3600.0
    rpm: int | None = None
    itpm: int | None = None
    otpm: int | None = None
    batch_processing_s: float = 0.5
    batch_error_rate: float = 0.0
    batch_expire_rate: float = 0.0
    batch_cancel_s: float = DEFAULT_CANCEL_S  # a cancel ends this long after it is asked
    # Requests queued over all unended batches (docs/api-facts.md §8.5); None: no cap. A
    # create past it is a 429 rate_limit_error with ``retry_after``.
    batch_queue_limit: int | None = None
    gateway_models: frozenset[str] = frozenset()
    gateway: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "gateway_models", frozenset(self.gateway_models))
        if not all(isinstance(name, str) and name for name in self.gateway_models):
            raise ValueError("gateway_models must be non-empty model names")
        object.__setattr__(self, "error_rates", check_rates(self.error_rates))
        self.rate_limits()  # validates them
        self.batch_settings()  # validates them
        for name in ("latency_mean", "latency_jitter", "retry_after", "hang_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        low, high = self.reply_tokens
        if not 1 <= low <= high:
            raise ValueError(f"reply_tokens must satisfy 1 <= low <= high, got {self.reply_tokens}")
        if self.api_key == "":
            raise ValueError("api_key must be None (accept any key) or a non-empty string")

    def rate_limits(self) -> SimLimits:
        return SimLimits(self.rpm, self.itpm, self.otpm)

    def batch_settings(self) -> BatchSettings:
        return BatchSettings(
            self.batch_processing_s,
            self.batch_error_rate,
            self.batch_expire_rate,
            self.seed,
            self.batch_cancel_s,
            self.batch_queue_limit,
        )


@dataclass
class SimulatorStats:
    """What the simulator saw; updated by its event loop, safe to read from other threads."""

    requests: int = 0
    answered_ok: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    answers_by_tag: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0  # 429s because a rate-limit bucket was short (not injected faults)
    rate_limited_by: Counter[str] = field(default_factory=Counter)  # which bucket was short
    batches_created: int = 0
    batch_requests_submitted: int = 0  # requests over all batch creates
    batch_custom_ids: Counter[str] = field(default_factory=Counter)  # submissions per custom_id
    # Checked /v1/messages requests by how they asked for a structured answer: "format"
    # (output_config.format) or "tool" (a forced tool)
    structured: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def begin(self) -> None:
        """A request arrived."""
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def end(self) -> None:
        """A request's handler finished, however it ended."""
        with self._lock:
            self.in_flight -= 1

    def status(self, code: int) -> None:
        """A response with this status was sent (or began, for streams)."""
        with self._lock:
            self.by_status[code] += 1

    def fault(self, name: str) -> None:
        """A fault was injected."""
        with self._lock:
            self.faults[name] += 1

    def limited(self, dimension: str) -> None:
        """A request was refused with 429 because the ``dimension`` bucket was short."""
        with self._lock:
            self.rate_limited += 1
            self.rate_limited_by[dimension] += 1

    def answered(self, tag: str, count: int = 1) -> None:
        """A complete 200 answer for the prompt with this tag is being written (-1: was not)."""
        with self._lock:
            self.answered_ok += count
            self.answers_by_tag[tag] += count

    def asked(self, body: Mapping[str, Any]) -> None:
        """A checked request arrived: count how it asked for a structured answer, if it did."""
        way = "format" if output_format(body) is not None else None
        if way is None and forced_tool(body) is not None:
            way = "tool"
        if way is not None:
            with self._lock:
                self.structured[way] += 1

    def batch_created(self, custom_ids: Iterable[str]) -> None:
        """A Message Batch of requests with these custom_ids was stored."""
        with self._lock:
            self.batches_created += 1
            for custom_id in custom_ids:
                self.batch_requests_submitted += 1
                self.batch_custom_ids[custom_id] += 1

    def reset(self) -> None:
        """Zero the counters; requests still in flight stay counted in ``in_flight``."""
        with self._lock:
            self.requests = self.answered_ok = self.rate_limited = 0
            self.batches_created = self.batch_requests_submitted = 0
            self.by_status.clear()
            self.faults.clear()
            self.answers_by_tag.clear()
            self.rate_limited_by.clear()
            self.batch_custom_ids.clear()
            self.structured.clear()
            self.max_in_flight = self.in_flight

    def snapshot(self) -> SimulatorStats:
        """A consistent copy, for reading while requests are still being handled."""
        with self._lock:
            return SimulatorStats(
                requests=self.requests,
                answered_ok=self.answered_ok,
                by_status=Counter(self.by_status),
                faults=Counter(self.faults),
                in_flight=self.in_flight,
                max_in_flight=self.max_in_flight,
                answers_by_tag=Counter(self.answers_by_tag),
                rate_limited=self.rate_limited,
                rate_limited_by=Counter(self.rate_limited_by),
                batches_created=self.batches_created,
                batch_requests_submitted=self.batch_requests_submitted,
                batch_custom_ids=Counter(self.batch_custom_ids),
                structured=Counter(self.structured),
            )


def loopback_address(host: str) -> tuple[socket.AddressFamily, str]:
    """The socket family and literal address for a loopback host; ValueError otherwise.

    The simulator accepts any key and has no TLS, so it must never listen beyond this machine.
    """
    literal = "127.0.0.1" if host == "localhost" else host
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        raise ValueError(f"simulator host must be a loopback address, got {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"simulator host must be a loopback address, got {host!r}")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return family, literal


def error_body(error_type: str, message: str, request_id: str) -> bytes:
    """The API's error envelope, as bytes."""
    envelope = {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }
    return dumps(envelope).encode()


class Simulator:
    """A local Messages API. Start it, point a client at ``base_url``, read ``stats``, stop it.

    Order of work for ``POST /v1/messages``: size (413), auth (401), version and body checks
    (400/404), rate limits (429, at once), then the fault choice, the latency sleep (faults
    included, so they cost time as real ones do), then the answer. ``count_tokens`` gets the
    checks only: no rate limit, no fault, no latency, so estimates stay exact and scripted
    faults stay aimed at messages. The Message Batches endpoints get the same checks and
    nothing else; their batches live in ``batches`` for the simulator's life.

    ``on_batch_created`` (a test hook) is called with each new MessageBatch once it is stored
    and before the create response goes out, so a test can kill its client at that moment.

    ``clock`` (monotonic seconds) refills the rate-limit buckets. A test passes a fake one, so
    a bucket does not refill between the request that takes from it and the header that shows
    what is left.

    ``cache`` is the prompt cache it answers from: the process's shared one by default, or
    a test's own (with its own clock, to expire entries without waiting).
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        cache: PromptCache | None = None,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.cache = SHARED_CACHE if cache is None else cache
        self.stats = SimulatorStats()
        self._faults = FaultPicker(self.config.error_rates, self.config.seed)
        self._latency_rng = random.Random(self.config.seed)
        limits = self.config.rate_limits()
        self._limits = RateLimits(limits, clock=clock) if limits.any else None
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4)
        self.models = packaged_models().with_gateway(
            self.config.gateway_models, self.config.gateway
        )
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._base_url: str | None = None
        # Each batch's wave of requests answered but not yet readable (``_reply``).
        self._waves: dict[str, list[CacheLookup]] = {}
        self.batches = BatchStore(
            self.config.batch_settings(),
            lambda body: self._reply(body).message,
            on_wave=self._wave_done,
            results_url=self._results_url,
            id_prefix=self._id_prefix,
            models=self.models,
        )
        self.on_batch_created: Callable[[dict[str, Any]], None] | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` once started."""
        if self._base_url is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return self._base_url

    def script(self, faults: Iterable[str | None]) -> None:
        """Give the next ``/v1/messages`` requests these faults, in order (None = no fault)."""
        self._faults.script(faults)

    def make_app(self) -> web.Application:
        """The aiohttp application (routes only; start() serves it)."""
        app = web.Application(client_max_size=MAX_BODY_BYTES + 1)
        one_batch = self._handler(self._answer_one_batch)
        app.router.add_post("/v1/messages", self._handler(self._answer_messages))
        app.router.add_post("/v1/messages/count_tokens", self._handler(self._answer_count_tokens))
        app.router.add_post("/v1/messages/batches", self._handler(self._answer_create_batch))
        app.router.add_get("/v1/messages/batches", self._handler(self._answer_list_batches))
        app.router.add_get("/v1/messages/batches/{batch_id}", one_batch)
        app.router.add_delete("/v1/messages/batches/{batch_id}", one_batch)
        app.router.add_post("/v1/messages/batches/{batch_id}/cancel", one_batch)
        app.router.add_get(
            "/v1/messages/batches/{batch_id}/results", self._handler(self._answer_batch_results)
        )
        app.router.add_route("*", "/{tail:.*}", self._handler(self._answer_not_found))
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = any free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        family, literal = loopback_address(host)
        sock = _listening_socket(family, literal, port)
        runner = web.AppRunner(
            self.make_app(),
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_GRACE,
        )
        try:
            await runner.setup()
            await web.SockSite(runner, sock, backlog=4096).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        self._stopping = asyncio.Event()
        bound_port = sock.getsockname()[1]
        shown = f"[{literal}]" if family == socket.AF_INET6 else literal
        self._base_url = f"http://{shown}:{bound_port}"
        return self._base_url

    async def stop(self) -> None:
        """Stop listening, wake hanging requests, and close every connection."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._stopping is not None:
            self._stopping.set()
        await runner.cleanup()
        self._base_url = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ handlers

    def _handler(
        self, answer: Callable[[web.Request, str], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The route handler that answers with ``answer(request, request_id)``: every request
        is given an id and counted while it is answered; one the checks refuse
        (InvalidRequest) is answered with its error."""

        async def handle(request: web.Request) -> web.StreamResponse:
            request_id = self._request_id()
            self.stats.begin()
            try:
                return await answer(request, request_id)
            except InvalidRequest as exc:
                return self._error(exc.status, exc.error_type, exc.message, request_id)
            finally:
                self.stats.end()

        return handle

    async def _answer_count_tokens(self, request: web.Request, request_id: str) -> web.Response:
        """Token counting: same checks and counting as messages; no faults, no latency."""
        version = self._check_headers(request)
        body = check_count_tokens_body(await self._read_json(request), version, self.models)
        payload = dumps({"input_tokens": count_input_tokens(body)}).encode()
        return self._json(200, payload, request_id)

    async def _answer_not_found(self, request: web.Request, request_id: str) -> web.Response:
        message = f"{request.method} {request.path} is not served by the simulator"
        return self._error(404, "not_found_error", message, request_id)

    async def _answer_messages(self, request: web.Request, request_id: str) -> web.StreamResponse:
        version = self._check_headers(request)
        body = check_messages_body(await self._read_json(request), version, self.models)
        self.stats.asked(body)
        streaming = body.get("stream") is True
        model = str(body["model"])
        admission = self._admit(model, body)
        if isinstance(admission, Refusal):
            return self._rate_limited(admission, model, request_id)
        fault = effective_fault(self._faults.pick(), streaming)
        if fault is not None:
            self.stats.fault(fault)
        # The cache is looked up on arrival; what this request writes is readable only once
        # its answer starts (below), as with the API: a herd of cold requests all write.
        cached = self.cache.lookup(body, count_input_tokens)
        await self._delay()
        if fault == "hang" and await self._hang():
            return self._drop(request)
        if fault in STATUS_FAULTS:
            self._end_with_error(admission, fault)
            return self._status_fault(fault, request_id, self._rate_headers(model))
        if fault == "reset":
            return self._drop(request)  # the work may have been done: the charge stands
        reply = make_reply(body, self.config.reply_tokens, self.cache, cached.usage)
        self.cache.commit(cached)
        if admission is not None and self._limits is not None:
            self._limits.finish(admission, int(reply.message["usage"]["output_tokens"]))
        headers = self._rate_headers(model)
        if streaming:
            return await self._send_stream(request, request_id, reply, fault, headers)
        return await self._send_json(request, request_id, reply, fault, headers)

    def _reply(self, body: Mapping[str, Any]) -> Reply:
        """The answer to a batch request, answered when it is run. A batch's requests are
        processed together, best effort (docs/api-facts.md §8.4): a request reads only what
        earlier waves of its batch (``batch_store.CACHE_WAVE``) and other requests wrote, so
        a cold prefix is written by every request of the wave that first reaches it, as a
        herd of online requests does (§10), and a prefix written before the batch is read."""
        cached = self.cache.lookup(body, count_input_tokens)
        batch_id = self.batches.processing
        if batch_id is None:  # answered alone: readable at once
            self.cache.commit(cached)
        else:
            self._waves.setdefault(batch_id, []).append(cached)
        return make_reply(body, self.config.reply_tokens, self.cache, cached.usage)

    def _wave_done(self, batch_id: str) -> None:
        """A wave of the batch has been answered: what its requests wrote is readable now."""
        for cached in self._waves.pop(batch_id, []):
            self.cache.commit(cached)

    # ------------------------------------------------------------------ message batches
    # Counted like every request; no latency, faults or rate limits (kept simple).

    async def _answer_create_batch(self, request: web.Request, request_id: str) -> web.Response:
        """Store the batch, count it and run the hook before answering.

        Nothing awaits between storing and answering, so a client that is gone (or a hook
        that fails) cannot undo the creation: the batch exists as it does at the API.
        """
        version = self._check_headers(request, MAX_BATCH_BYTES)
        items = check_create_body(_parse_json(await _read_limited(request, MAX_BATCH_BYTES)))
        try:
            batch = self.batches.create(items, version)
        except QueueFull as exc:  # the API's 429s carry a retry-after
            payload = error_body(exc.error_type, exc.message, request_id)
            headers = {"retry-after": f"{self.config.retry_after:g}"}
            return self._json(exc.status, payload, request_id, headers)
        self.stats.batch_created(item.custom_id for item in items)
        payload = dumps(batch).encode()
        self._batch_created_hook(batch)
        return self._json(200, payload, request_id)

    def _batch_created_hook(self, batch: dict[str, Any]) -> None:
        hook = self.on_batch_created
        if hook is None:
            return
        try:
            hook(batch)
        except Exception:  # a test device: its failure must not change what the client sees
            _log.exception("on_batch_created hook failed; the batch is stored and answered")

    async def _answer_list_batches(self, request: web.Request, request_id: str) -> web.Response:
        self._check_headers(request)
        page = self.batches.list_batches(parse_list_query(request.query))
        return self._json(200, dumps(page).encode(), request_id)

    async def _answer_one_batch(self, request: web.Request, request_id: str) -> web.Response:
        """Retrieve (GET), delete (DELETE) or cancel (POST .../cancel) one batch."""
        self._check_headers(request)
        batch_id = request.match_info["batch_id"]
        if request.method == "DELETE":
            answer = self.batches.delete(batch_id)
        elif request.method == "POST":
            answer = self.batches.cancel(batch_id)
        else:
            answer = self.batches.retrieve(batch_id)
        return self._json(200, dumps(answer).encode(), request_id)

    async def _answer_batch_results(self, request: web.Request, request_id: str) -> web.Response:
        self._check_headers(request)
        results = self.batches.results(request.match_info["batch_id"])
        self.stats.status(200)
        return web.Response(
            status=200,
            body=results,
            content_type="application/x-jsonl",
            headers={"request-id": request_id},
        )

    def _results_url(self, batch_id: str) -> str:
        """Absolute, as the API's ``results_url`` is; the SDK fetches exactly this URL.

        Relative while the simulator is stopped, so ``batches`` stays readable then.
        """
        return f"{self._base_url or ''}/v1/messages/batches/{batch_id}/results"

    # ------------------------------------------------------------------ rate limits

    def _admit(self, model: str, body: Mapping[str, Any]) -> Admission | Refusal | None:
        """Charge the request to its model's buckets (None when no limits are set)."""
        if self._limits is None:
            return None
        return self._limits.admit(model, count_input_tokens(body), int(body["max_tokens"]))

    def _rate_limited(self, refusal: Refusal, model: str, request_id: str) -> web.Response:
        self.stats.limited(refusal.dimension)
        headers = {**self._rate_headers(model), "retry-after": str(refusal.retry_after)}
        payload = error_body("rate_limit_error", refusal.message, request_id)
        return self._json(429, payload, request_id, headers)

    def _end_with_error(self, admission: Admission | None, fault: str) -> None:
        """An error status answers the request: an injected 429 takes nothing, others no output."""
        if admission is None or self._limits is None:
            return
        if fault == "429":
            self._limits.cancel(admission)
        else:
            self._limits.release(admission)

    def _rate_headers(self, model: str) -> dict[str, str]:
        return {} if self._limits is None else self._limits.headers(model)

    # ------------------------------------------------------------------ checks

    def _check_headers(self, request: web.Request, max_bytes: int = MAX_BODY_BYTES) -> str:
        """Size, auth, then version, in the order the real service applies them."""
        length = request.content_length
        if length is not None and length > max_bytes:
            raise _too_large()
        self._check_auth(request)
        return check_version(request.headers.get("anthropic-version"))

    def _check_auth(self, request: web.Request) -> None:
        key = request.headers.get("x-api-key")
        if not key:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        if not key:
            raise InvalidRequest("x-api-key header is required", 401, "authentication_error")
        expected = self.config.api_key
        if expected is not None and not secrets.compare_digest(key, expected):
            raise InvalidRequest("invalid x-api-key", 401, "authentication_error")

    async def _read_json(self, request: web.Request) -> object:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large() from None
        return _parse_json(raw)

    # ------------------------------------------------------------------ timing

    async def _delay(self) -> None:
        """Sleep the configured latency: mean ± uniform jitter, never below zero."""
        mean, jitter = self.config.latency_mean, self.config.latency_jitter
        if jitter:
            mean += self._latency_rng.uniform(-jitter, jitter)
        if mean > 0:
            await asyncio.sleep(mean)

    async def _hang(self) -> bool:
        """Wait ``hang_seconds``; True if the simulator stopped meanwhile (then drop)."""
        assert self._stopping is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.config.hang_seconds)
        return self._stopping.is_set()

    # ------------------------------------------------------------------ responses

    def _request_id(self) -> str:
        return f"req_sim_{self._id_prefix}{next(self._ids):010d}"

    def _json(
        self,
        status: int,
        payload: bytes,
        request_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        self.stats.status(status)
        return web.Response(
            status=status,
            body=payload,
            content_type="application/json",
            headers={"request-id": request_id, **(headers or {})},
        )

    def _sse(
        self, payload: bytes, request_id: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        """A whole event stream in one body: one write, where chunk-by-chunk costs syscalls."""
        self.stats.status(200)
        return web.Response(
            status=200,
            body=payload,
            content_type="text/event-stream",
            charset="utf-8",
            headers={"request-id": request_id, "cache-control": "no-cache", **(headers or {})},
        )

    def _error(self, status: int, error_type: str, message: str, request_id: str) -> web.Response:
        return self._json(status, error_body(error_type, message, request_id), request_id)

    def _status_fault(
        self, fault: str, request_id: str, rate_headers: Mapping[str, str] | None = None
    ) -> web.Response:
        spec = STATUS_FAULTS[fault]
        headers = dict(rate_headers or {})
        if fault == "429":
            headers["retry-after"] = f"{self.config.retry_after:g}"
        payload = error_body(spec.error_type, spec.message, request_id)
        return self._json(spec.status, payload, request_id, headers)

    def _drop(self, request: web.Request) -> web.Response:
        """Close the connection with no response; aiohttp's later write fails quietly."""
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=200)

    async def _deliver(
        self, request: web.Request, response: web.Response, tag: str
    ) -> web.StreamResponse:
        """Write a complete answer now, not after return, so answered_ok counts delivered ones.

        Counted before the body goes out, so a client can never hold an answer the counters
        do not show yet; taken back if the client is gone before it is written.
        """
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            self.stats.answered(tag)
            try:
                await response.write_eof()
            except ConnectionError:
                self.stats.answered(tag, -1)
                raise
        return response

    async def _send_json(
        self,
        request: web.Request,
        request_id: str,
        reply: Reply,
        fault: str | None,
        headers: Mapping[str, str],
    ) -> web.StreamResponse:
        payload = dumps(reply.message).encode()
        if fault == "malformed":
            return self._json(200, payload[: len(payload) // 2], request_id, headers)
        response = self._json(200, payload, request_id, headers)
        return await self._deliver(request, response, reply.tag)

    async def _send_stream(
        self,
        request: web.Request,
        request_id: str,
        reply: Reply,
        fault: str | None,
        headers: Mapping[str, str],
    ) -> web.StreamResponse:
        events = stream_events(reply.message)
        if fault == "cut":
            return await self._cut_stream(request, request_id, events[: len(events) // 2], headers)
        if fault == "sse_error":
            payload = _encode(events[:3]) + encode_event("error", _STREAM_ERROR)
            return self._sse(payload, request_id, headers)
        if fault == "malformed":
            broken = b'event: message_start\ndata: {"type":"message_st\n\n'
            return self._sse(broken, request_id, headers)
        response = self._sse(_encode(events), request_id, headers)
        return await self._deliver(request, response, reply.tag)

    async def _cut_stream(
        self,
        request: web.Request,
        request_id: str,
        events: list[tuple[str, dict[str, Any]]],
        headers: Mapping[str, str],
    ) -> web.StreamResponse:
        """Start a chunked stream, send some events, then drop the connection mid-body."""
        response = web.StreamResponse(
            status=200,
            headers={"request-id": request_id, "cache-control": "no-cache", **headers},
        )
        response.content_type = "text/event-stream"
        self.stats.status(200)
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            await response.write(_encode(events))
        self._drop(request)
        return response


def _too_large() -> InvalidRequest:
    return InvalidRequest("Request exceeds the maximum allowed size", 413, "request_too_large")


def _parse_json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidRequest("There was an error parsing the body: invalid JSON") from None


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The body, read past the app's 32 MB ``client_max_size`` up to ``limit`` (else 413).

    The app's limit stays the Messages one; only the batch route reads its body this way.
    """
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 20):
        body += chunk
        if len(body) > limit:
            raise _too_large()
    return bytes(body)


def _encode(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(encode_event(name, data) for name, data in events)


def _listening_socket(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(
    config: SimulatorConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run a simulator until cancelled; ``on_ready`` gets the base URL once it listens.

    >>> # asyncio.run(serve(SimulatorConfig(), port=8765, on_ready=print))
    """
    simulator = Simulator(config)
    await simulator.start(host, port)
    try:
        if on_ready is not None:
            on_ready(simulator.base_url)
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
