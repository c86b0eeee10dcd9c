"""The simulator's Message Batches: a store of batches that progress on a clock; no I/O.

Modelled on the Message Batches API (docs/api-facts.md §8):

* ``check_create_body`` does what the API checks before it answers a create: the envelope,
  the number of requests, each ``custom_id`` (pattern, unique within the batch) and that
  ``params`` is an object. The params themselves are checked only when the request is
  processed, so a bad one becomes an ``errored`` result, as with the API.
* Time, not tasks, drives a batch: request ``i`` of ``n`` is processed at
  ``created + processing_s * (i + 1) / n`` and the batch ends at ``created + processing_s``.
  The store catches a batch up to its clock whenever it is looked at, so nothing runs in the
  background and a fake clock makes every state reachable in unit tests.
* ``request_counts`` shows everything as ``processing`` until the batch ends, then the final
  tally, as the API documents.
* ``queue_limit`` caps the requests queued over all batches not yet ended, as the
  organisation's batch queue does (docs/api-facts.md §8.5): a create that would go past it
  is refused with a 429 ``rate_limit_error`` (``QueueFull``) and stores nothing.
* A cancel puts the batch in ``canceling`` and ends it ``cancel_s`` seconds later (or at its
  natural end, if sooner); requests not processed by the moment of the cancel come back
  ``canceled``. The API lets the requests in progress finish before a cancel ends (docs/
  api-facts.md §8.3): how long that takes depends on one request, not on the batch, so the
  delay is a fixed time (``DEFAULT_CANCEL_S``, about one request), not a share of the
  batch's processing time.
* Which valid requests come back ``errored`` (a retryable server error) or ``expired`` is
  drawn from the seed, the ``custom_id`` and how many times that ``custom_id`` was
  submitted before: deterministic, yet a resubmitted request gets a fresh draw, as a retry
  against the API does.
* A succeeded result is the Message the online endpoint gives for the same params (the
  ``reply`` function the store is built with), except that ``usage.service_tier`` is
  ``"batch"``.
* Results come in a shuffled order, seeded and deterministic, never the input order (for two
  or more requests), so clients must match them by ``custom_id``.
* A batch's requests are processed ``CACHE_WAVE`` at a time for the prompt cache: a request
  reads only what requests of earlier waves wrote (``on_wave`` is told, with the batch's id,
  when a wave is done; ``processing`` names the batch whose request is being answered), so a
  cold prefix is written by every request of the wave that first reaches it, as the API's
  best-effort caching in batches allows (docs/api-facts.md §8.4, §10).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from batchrun.core.frozen import frozen
from batchrun.simulator.checks import InvalidRequest, check_messages_body
from batchrun.simulator.events import dumps
from batchrun.simulator.models import Models
from batchrun.simulator.replies import make_reply

MAX_BATCH_REQUESTS = 100_000
"""Most requests in one batch (SPEC ``CreateMessageBatchParams.requests.maxItems``)."""

MAX_BATCH_BYTES = 256 * 1024 * 1024
"""The API's size limit for a batch create body (docs/api-facts.md §8.2)."""

BATCH_LIFETIME_S = 24 * 3600.0
"""A batch expires this long after creation (``expires_at``)."""

DEFAULT_CANCEL_S = 1.0
"""How long a canceled batch stays ``canceling``: about the time of one request in progress."""

LIST_DEFAULT_LIMIT = 20
LIST_MAX_LIMIT = 1000

CUSTOM_ID_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
_CUSTOM_ID = re.compile(CUSTOM_ID_PATTERN)

RETRYABLE_ERRORS: tuple[tuple[str, str], ...] = (
    ("api_error", "Internal server error"),
    ("overloaded_error", "Overloaded"),
)
"""The errors a valid request may come back with at ``error_rate`` (type, message)."""

CACHE_WAVE = 32
"""Requests of a batch processed together, for the prompt cache (see the module's doc)."""

Clock = Callable[[], float]
ReplyFn = Callable[[Mapping[str, Any]], dict[str, Any]]


def default_reply(body: Mapping[str, Any]) -> dict[str, Any]:
    """The online endpoint's Message for a checked body, with the default reply lengths."""
    return make_reply(body).message


@dataclass(frozen=True)
class BatchSettings:
    """How batches behave: processing time, error and expiry rates, and the seed for both."""

    processing_s: float = 0.5
    error_rate: float = 0.0
    expire_rate: float = 0.0
    seed: int = 0
    cancel_s: float = DEFAULT_CANCEL_S
    queue_limit: int | None = None  # requests queued over all unended batches (None: no cap)

    def __post_init__(self) -> None:
        if self.queue_limit is not None and self.queue_limit < 1:
            raise ValueError(f"batch_queue_limit must be >= 1, got {self.queue_limit}")
        if not (math.isfinite(self.processing_s) and 0 <= self.processing_s <= BATCH_LIFETIME_S):
            raise ValueError(
                f"batch_processing_s must be between 0 and {BATCH_LIFETIME_S:g} seconds, "
                f"got {self.processing_s}"
            )
        if not (math.isfinite(self.cancel_s) and self.cancel_s >= 0):
            raise ValueError(f"batch_cancel_s must be seconds >= 0, got {self.cancel_s}")
        for name in ("error_rate", "expire_rate"):
            rate = getattr(self, name)
            if not 0 <= rate <= 1:
                raise ValueError(f"batch_{name} must be between 0 and 1, got {rate}")
        if self.error_rate + self.expire_rate > 1:
            raise ValueError("batch_error_rate + batch_expire_rate must not exceed 1")


class QueueFull(InvalidRequest):
    """A create refused because the organisation's batch queue would overflow (a 429)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 429, "rate_limit_error")


@frozen  # made for every request: frozen to the type checker, quick to make
class BatchItem:
    """One checked entry of a create body."""

    custom_id: str
    params: dict[str, Any]


@dataclass(frozen=True)
class ListQuery:
    """The checked query of ``GET /v1/messages/batches``."""

    limit: int = LIST_DEFAULT_LIMIT
    after_id: str | None = None
    before_id: str | None = None


# --------------------------------------------------------------------------- request checks


def check_create_body(body: object) -> list[BatchItem]:
    """The items of a create body, or InvalidRequest for what the API rejects at once."""
    if not isinstance(body, dict):
        raise InvalidRequest("Input should be a valid dictionary or object")
    for name in body:
        if name != "requests":
            raise InvalidRequest(f"{name}: Extra inputs are not permitted")
    if "requests" not in body:
        raise InvalidRequest("requests: Field required")
    requests = body["requests"]
    if not isinstance(requests, list):
        raise InvalidRequest("requests: Input should be a valid list")
    if not requests:
        raise InvalidRequest("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > MAX_BATCH_REQUESTS:
        raise InvalidRequest(
            f"requests: List should have at most {MAX_BATCH_REQUESTS} items after validation, "
            f"not {len(requests)}"
        )
    items = [_check_item(index, item) for index, item in enumerate(requests)]
    _check_unique(items)
    return items


def _check_item(index: int, item: object) -> BatchItem:
    where = f"requests.{index}"
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where}: Input should be a valid dictionary or object")
    for name in item:
        if name not in ("custom_id", "params"):
            raise InvalidRequest(f"{where}.{name}: Extra inputs are not permitted")
    for name in ("custom_id", "params"):
        if name not in item:
            raise InvalidRequest(f"{where}.{name}: Field required")
    custom_id, params = item["custom_id"], item["params"]
    if not isinstance(custom_id, str):
        raise InvalidRequest(f"{where}.custom_id: Input should be a valid string")
    if not _CUSTOM_ID.fullmatch(custom_id):
        raise InvalidRequest(
            f"{where}.custom_id: String should match pattern '{CUSTOM_ID_PATTERN}'"
        )
    if not isinstance(params, dict):
        raise InvalidRequest(f"{where}.params: Input should be a valid dictionary or object")
    return BatchItem(custom_id, params)


def _check_unique(items: Sequence[BatchItem]) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.custom_id in seen:
            raise InvalidRequest(
                f"requests.{index}.custom_id: Duplicate custom_id {item.custom_id!r}; "
                "custom_id must be unique within a Message Batch"
            )
        seen.add(item.custom_id)


def parse_list_query(query: Mapping[str, str]) -> ListQuery:
    """The list endpoint's query string; ``BatchStore.list_batches`` checks the values."""
    raw = query.get("limit")
    try:
        limit = LIST_DEFAULT_LIMIT if raw is None else int(raw)
    except ValueError:
        raise InvalidRequest("limit: Input should be a valid integer") from None
    return ListQuery(limit, query.get("after_id") or None, query.get("before_id") or None)


def check_list_query(query: ListQuery) -> None:
    """The API's bounds: ``limit`` from 1 to 1000, and at most one cursor."""
    if query.limit < 1:
        raise InvalidRequest("limit: Input should be greater than or equal to 1")
    if query.limit > LIST_MAX_LIMIT:
        raise InvalidRequest(f"limit: Input should be less than or equal to {LIST_MAX_LIMIT}")
    if query.after_id and query.before_id:
        raise InvalidRequest("Only one of after_id and before_id may be given")


# --------------------------------------------------------------------------- the store


@frozen  # made for every request: frozen to the type checker, quick to make
class _Request:
    custom_id: str
    params: dict[str, Any]
    attempt: int  # how many times this custom_id was submitted before, in any batch


@dataclass
class _Batch:
    id: str
    requests: list[_Request]
    version: str
    created: float  # on the store's clock
    created_wall: float  # epoch seconds, for the RFC 3339 fields
    cancel_at: float | None = None
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # results, input order
    tally: Counter[str] = field(default_factory=Counter)
    results: bytes | None = None  # the JSONL, set once the batch has ended


class BatchStore:
    """Every batch of one simulator, kept in memory; thread-safe; clocks injectable.

    ``clock`` (monotonic) drives processing; ``wall`` (epoch seconds) dates the timestamps.
    ``results_url`` makes a batch's absolute results URL from its id.
    """

    def __init__(
        self,
        settings: BatchSettings | None = None,
        reply: ReplyFn = default_reply,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        results_url: Callable[[str], str] | None = None,
        id_prefix: str | None = None,
        models: Models | None = None,
        on_wave: Callable[[str], None] = lambda batch_id: None,
    ) -> None:
        self.settings = settings or BatchSettings()
        self._models = models  # the names served (None: the packaged table's)
        self._reply = reply
        self._on_wave = on_wave  # a batch's wave of requests has been answered
        self.processing: str | None = None  # the batch whose request ``reply`` answers
        self._clock = clock
        self._wall = wall
        self._results_url = results_url or (
            lambda batch_id: f"/v1/messages/batches/{batch_id}/results"
        )
        self._id_prefix = id_prefix if id_prefix is not None else secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._batches: dict[str, _Batch] = {}  # in creation order
        self._submissions: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.queued_peak = 0  # most requests queued at once over unended batches

    # ------------------------------------------------------------------ operations

    def create(self, items: Sequence[BatchItem], version: str) -> dict[str, Any]:
        """Store a batch of checked items (``check_create_body``); return its MessageBatch.

        ``version`` is the create call's ``anthropic-version``: params are checked under it.
        """
        with self._lock:
            now = self._clock()
            queued = self._queued(now)
            limit = self.settings.queue_limit
            if limit is not None and queued + len(items) > limit:
                raise QueueFull(
                    f"Creating this batch of {len(items):,} requests would put "
                    f"{queued + len(items):,} requests in the batch queue, past the "
                    f"organization's limit of {limit:,} queued over all message batches "
                    f"({queued:,} queued now); retry once some batches have ended"
                )
            requests = [self._submitted(item) for item in items]
            batch_id = f"msgbatch_sim_{self._id_prefix}{next(self._ids):010d}"
            batch = _Batch(batch_id, requests, version, now, self._wall())
            self._batches[batch_id] = batch
            self.queued_peak = max(self.queued_peak, queued + len(requests))
            return self._view(batch, now)

    def _queued(self, now: float) -> int:
        """Requests in batches that have not ended by ``now`` (the lock held)."""
        queued = 0
        for batch in self._batches.values():
            self._advance(batch, now)
            if batch.results is None:
                queued += len(batch.requests)
        return queued

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        """The MessageBatch as of now; InvalidRequest 404 for an unknown id."""
        with self._lock:
            now = self._clock()
            return self._view(self._find(batch_id), now)

    def list_batches(self, query: ListQuery | None = None) -> dict[str, Any]:
        """A page of batches, newest first: ``{data, has_more, first_id, last_id}``.

        ``after_id`` pages towards older batches, ``before_id`` towards newer ones; ``has_more``
        says whether more lie in that direction. An unknown cursor is a 404, like an unknown id.
        """
        query = query or ListQuery()
        check_list_query(query)
        with self._lock:
            ids = list(reversed(self._batches))
            page, has_more = _page(ids, query, self._position)
            now = self._clock()
            return {
                "data": [self._view(self._batches[i], now) for i in page],
                "has_more": has_more,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """Start canceling; a batch that is already canceling is returned as it is.

        An ended batch cannot be canceled (400), as the API allows canceling only "before
        processing ends".
        """
        with self._lock:
            batch, now = self._current(batch_id)
            if batch.results is not None:
                raise InvalidRequest(
                    f"Message Batch {batch_id} has already ended and can no longer be canceled"
                )
            if batch.cancel_at is None:
                batch.cancel_at = now
            return self._view(batch, now)

    def results(self, batch_id: str) -> bytes:
        """The results JSONL of an ended batch; InvalidRequest (400) while it still runs."""
        with self._lock:
            return self._results(
                batch_id,
                lambda status: (
                    f"Message Batch {batch_id} is still {status}; its results are "
                    "available once processing_status is 'ended' (see results_url)"
                ),
            )

    def delete(self, batch_id: str) -> dict[str, Any]:
        """Forget an ended batch; InvalidRequest (400) while it still runs."""
        with self._lock:
            self._results(
                batch_id,
                lambda status: (
                    f"Message Batch {batch_id} cannot be deleted while it is "
                    f"{status}; cancel it and wait for it to end first"
                ),
            )
            del self._batches[batch_id]
            return {"id": batch_id, "type": "message_batch_deleted"}

    # ------------------------------------------------------------------ progress

    def _submitted(self, item: BatchItem) -> _Request:
        attempt = self._submissions[item.custom_id]
        self._submissions[item.custom_id] += 1
        return _Request(item.custom_id, item.params, attempt)

    def _current(self, batch_id: str) -> tuple[_Batch, float]:
        """The batch (404 for an unknown id) with what is due by now processed, and now."""
        now = self._clock()
        batch = self._find(batch_id)
        self._advance(batch, now)
        return batch, now

    def _results(self, batch_id: str, while_running: Callable[[str], str]) -> bytes:
        """An ended batch's results; while it still runs, InvalidRequest (400) saying
        ``while_running(its processing status)``."""
        batch, _ = self._current(batch_id)
        if batch.results is None:
            raise InvalidRequest(while_running(_status(batch)))
        return batch.results

    def _find(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise InvalidRequest(
                f"No Message Batch with id {batch_id!r}", status=404, error_type="not_found_error"
            )
        return batch

    def _position(self, ids: Sequence[str], batch_id: str) -> int:
        self._find(batch_id)  # the 404 for an unknown cursor
        return ids.index(batch_id)

    def _end_time(self, batch: _Batch) -> float:
        natural = batch.created + self.settings.processing_s
        if batch.cancel_at is None:
            return natural
        return min(natural, batch.cancel_at + self.settings.cancel_s)

    def _processed_count(self, batch: _Batch, now: float) -> int:
        """How many requests (in input order) were processed by ``now``; a cancel freezes it."""
        moment = now if batch.cancel_at is None else min(now, batch.cancel_at)
        total = len(batch.requests)
        if moment >= batch.created + self.settings.processing_s:
            return total
        elapsed = max(moment - batch.created, 0.0)
        return min(total, int(elapsed * total / self.settings.processing_s))

    def _advance(self, batch: _Batch, now: float) -> None:
        """Process what is due by ``now`` and, once the end time has come, end the batch."""
        if batch.results is not None:
            return
        due = self._processed_count(batch, now)
        for request in batch.requests[len(batch.outcomes) : due]:
            if batch.outcomes and len(batch.outcomes) % CACHE_WAVE == 0:
                self._on_wave(batch.id)
            self.processing = batch.id
            try:
                batch.outcomes.append(self._process(request, batch.version))
            finally:
                self.processing = None
        if now >= self._end_time(batch):
            self._finish(batch)

    def _process(self, request: _Request, version: str) -> dict[str, Any]:
        """One request's result object: params checked now, as the API does asynchronously."""
        try:
            body = check_messages_body(request.params, version, self._models, batch=True)
            if body.get("stream") is True:
                raise InvalidRequest("stream: streaming is not supported for batch requests")
        except InvalidRequest as exc:
            return errored(exc.error_type, exc.message)
        draw = _unit(self.settings.seed, "fate", request.custom_id, request.attempt)
        if draw < self.settings.error_rate:
            pick = _unit(self.settings.seed, "error", request.custom_id, request.attempt)
            return errored(*RETRYABLE_ERRORS[int(pick * len(RETRYABLE_ERRORS))])
        if draw < self.settings.error_rate + self.settings.expire_rate:
            return {"type": "expired"}
        return {"type": "succeeded", "message": batch_message(self._reply(body))}

    def _finish(self, batch: _Batch) -> None:
        """Cancel what was never processed, tally, and fix the shuffled results file."""
        self._on_wave(batch.id)
        batch.outcomes.extend({"type": "canceled"} for _ in batch.requests[len(batch.outcomes) :])
        batch.tally = Counter(outcome["type"] for outcome in batch.outcomes)
        lines = [
            dumps({"custom_id": request.custom_id, "result": outcome}) + "\n"
            for request, outcome in zip(batch.requests, batch.outcomes, strict=True)
        ]
        custom_ids = [request.custom_id for request in batch.requests]
        order = shuffled_order(len(lines), f"{self.settings.seed}:{':'.join(custom_ids)}")
        batch.results = "".join(lines[i] for i in order).encode()
        batch.outcomes = []  # the JSONL holds them now; keep one copy only

    # ------------------------------------------------------------------ views

    def _view(self, batch: _Batch, now: float) -> dict[str, Any]:
        """The MessageBatch JSON object, after catching the batch up to ``now``."""
        self._advance(batch, now)
        ended = batch.results is not None
        total = len(batch.requests)
        counts = {
            "processing": 0 if ended else total,
            **{kind: batch.tally[kind] for kind in ("succeeded", "errored", "canceled", "expired")},
        }
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": _status(batch),
            "request_counts": counts,
            "ended_at": self._stamp(batch, self._end_time(batch)) if ended else None,
            "created_at": timestamp(batch.created_wall),
            "expires_at": timestamp(batch.created_wall + BATCH_LIFETIME_S),
            "cancel_initiated_at": (
                None if batch.cancel_at is None else self._stamp(batch, batch.cancel_at)
            ),
            "archived_at": None,
            "results_url": self._results_url(batch.id) if ended else None,
        }

    def _stamp(self, batch: _Batch, moment: float) -> str:
        """A moment on the store's clock as an RFC 3339 time, relative to the batch's creation."""
        return timestamp(batch.created_wall + (moment - batch.created))


# --------------------------------------------------------------------------- helpers


def errored(error_type: str, message: str) -> dict[str, Any]:
    """An ``errored`` result: the API's error envelope nested under ``error`` (§7)."""
    return {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": None,
        },
    }


def batch_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """The online Message as a batch returns it: the same, billed in the ``batch`` tier."""
    return {**message, "usage": {**message["usage"], "service_tier": "batch"}}


def shuffled_order(count: int, seed: str) -> list[int]:
    """A seeded permutation of ``range(count)`` that is never the identity (for count >= 2)."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    if count >= 2 and order == sorted(order):
        order = order[1:] + order[:1]
    return order


def timestamp(epoch_seconds: float) -> str:
    """RFC 3339 with microseconds, as the API dates batches: ``2024-08-20T18:37:24.100435Z``."""
    moment = datetime.fromtimestamp(epoch_seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _status(batch: _Batch) -> str:
    if batch.results is not None:
        return "ended"
    return "in_progress" if batch.cancel_at is None else "canceling"


def _unit(seed: int, *parts: object) -> float:
    """A number in [0, 1) fixed by the seed and the parts (stable across runs and machines)."""
    text = ":".join(str(part) for part in (seed, *parts))
    return int(hashlib.sha256(text.encode()).hexdigest()[:13], 16) / 16**13


def _page(
    ids: Sequence[str], query: ListQuery, position: Callable[[Sequence[str], str], int]
) -> tuple[list[str], bool]:
    """The ids of one page of ``ids`` (newest first) and whether more lie beyond it."""
    limit = query.limit
    if query.after_id:
        start = position(ids, query.after_id) + 1
        return list(ids[start : start + limit]), start + limit < len(ids)
    if query.before_id:
        end = position(ids, query.before_id)
        start = max(end - limit, 0)
        return list(ids[start:end]), start > 0
    return list(ids[:limit]), limit < len(ids)
