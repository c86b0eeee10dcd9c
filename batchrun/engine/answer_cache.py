"""The engine's side of ``--answer-cache``: a row whose request was answered by an earlier job is
filled from that answer instead of being sent, and each answer this run pays for is kept.

A cached row is built like a dedup twin (``engine.dedup.twin_row``): the answer's columns as
the run that paid recorded them (``source`` included: where the answer really came from), its
own id, kept columns and time, its cost and token counts 0, and ``cached_from`` naming the
output and row that paid (``OUTPUT#ID``). Nothing is sent and nothing is taken from the
``--max-cost`` budget.

What is reused (``reusable``):
- the request's answer from the same source only (``remote.answer_cache.entry_name``);
- not a request naming a file by URL: the API fetches it, its bytes are not in the request
  hash, and what the URL serves may have changed;
- not a sampled request unless asked: with ``--no-dedup`` the user wants identical requests
  answered apart, so one at a temperature above 0 (the API's default is 1) is sent again,
  unless ``--answer-cache-samples``. With dedup on, identical requests share an answer in a
  run already, and across runs alike.
Only ok rows are stored (never an error, never a row filled from the cache or a twin).

The store blocks, so lookups and writes go to a worker thread. A cache that cannot be read
or written never fails a row: the row is sent (or its answer simply not kept), the user is
told once, and the failures are counted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from batchrun.core.errors import BatchrunError
from batchrun.engine.dedup import ANSWER_COLUMNS, filled_row, plain_value
from batchrun.engine.outcome import Work
from batchrun.engine.samples import request_samples
from batchrun.store.columns import STATUS_OK, USAGE_COLUMNS

if TYPE_CHECKING:  # the storage layer is loaded only by a job with an answer cache
    from batchrun.remote.answer_cache import AnswerCache, Entry

# What an entry keeps of the row that paid: its answer, and what it cost then (for the
# savings a run reports), never its id (``paid_by`` says whose it was) or its time.
KEPT = (*ANSWER_COLUMNS, *USAGE_COLUMNS)
_URL_SOURCE = b'"type":"url"'  # in a request's canonical JSON: a file the API fetches itself


def cached_row(own: Mapping[str, Any], entry: Entry) -> dict[str, Any]:
    """``own`` (the row's base row) with ``entry``'s answer, ``cached_from`` its payer, and
    nothing paid."""
    return filled_row(own, entry.answer, duplicate_of=None, cached_from=entry.paid_by)


class AnswerLane:
    """Looks rows up in an ``AnswerCache`` and keeps the answers a run pays for.

    ``source`` is where this run's answers come from (``store.provenance``); ``paid_by`` names
    this run's output in ``cached_from`` (``OUTPUT#ID``); ``dedup`` and ``samples`` decide
    whether sampled requests are reused (see the module's docstring); ``notify`` is told of
    the first failure of the store.
    """

    def __init__(
        self,
        cache: AnswerCache,
        source: str | None,
        paid_by: str,
        *,
        dedup: bool,
        samples: bool = False,
        notify: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.cache = cache
        self._source = source
        self._paid_by = paid_by
        self._dedup = dedup
        self._samples = samples
        self._notify = notify
        self._warned = False
        self.hits = 0  # rows filled from the cache
        self.saved_usd = 0.0  # what those answers cost the runs that paid for them
        self.stored = 0  # answers this run added
        self.failures = 0  # reads or writes the store refused

    def reusable(self, work: Work) -> bool:
        """Whether ``work``'s answer may come from, and go to, the cache."""
        body = work.body
        if body is None or work.request_hash is None or self._source is None:
            return False
        if not (self._dedup or self._samples) and request_samples(body):
            return False  # sampled apart: each row its own draw
        content = work.content
        if content is None:  # a Work made by hand: the body's compact JSON says the same
            content = json.dumps(body, separators=(",", ":"), default=str).encode()
        return _URL_SOURCE not in content

    async def lookup(self, work: Work, own: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """The row filled from the cache (``own`` makes its base row), or None: send it."""
        return self._hit(await self._answered(work, count_failure=True), own)

    def lookup_blocking(
        self, work: Work, own: Callable[[], dict[str, Any]]
    ) -> dict[str, Any] | None:
        """``lookup`` for a caller on a worker thread already (a Message Batches run builds
        its batches on one): the store is read on this thread."""
        if not self.reusable(work):
            return None
        assert work.request_hash is not None and self._source is not None
        try:
            entry = self.cache.get(self._source, work.request_hash)
        except BatchrunError as exc:
            self._failed("read", exc)
            return None
        return self._hit(_ok(entry), own)

    def _hit(self, entry: Entry | None, own: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        if entry is None:
            return None
        self.hits += 1
        self.saved_usd += float(entry.answer.get("cost_usd") or 0.0)
        return cached_row(own(), entry)

    async def has(self, work: Work) -> bool:
        """Whether ``work`` would be filled from the cache (``estimate``), counted nowhere."""
        return await self._answered(work, count_failure=False) is not None

    async def _answered(self, work: Work, *, count_failure: bool) -> Entry | None:
        """The cache's ok answer to ``work``, if it may be reused; a store that cannot be read
        is a miss (told and counted with ``count_failure``: the run sends the row)."""
        if not self.reusable(work):
            return None
        assert work.request_hash is not None and self._source is not None
        try:
            entry = await asyncio.to_thread(self.cache.get, self._source, work.request_hash)
        except BatchrunError as exc:
            if count_failure:
                self._failed("read", exc)
            return None
        return _ok(entry)

    async def keep(self, work: Work, row: Mapping[str, Any]) -> None:
        """Store ``row``'s answer if this run paid for it and it is ok."""
        if self.reusable(work):
            assert work.request_hash is not None
            await self.keep_answer(work.request_hash, row)

    async def keep_answer(self, request_hash: str, row: Mapping[str, Any]) -> None:
        """``keep`` for a caller that found the request reusable already (``reusable``: a
        Message Batches run decides it when it builds the batch, and keeps the answer when
        it collects it, with no request left to look at)."""
        if (
            row.get("status") != STATUS_OK
            or row.get("duplicate_of") is not None
            or row.get("cached_from") is not None
            or row.get("source") != self._source
            or self._source is None
        ):
            return
        from batchrun.remote.answer_cache import Entry  # loaded already: the cache is one

        entry = Entry(
            request_hash=request_hash,
            source=self._source,
            answer={name: plain_value(row.get(name)) for name in KEPT},
            paid_by=f"{self._paid_by}#{row['id']}",
            stored_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        )
        try:
            await asyncio.to_thread(self.cache.put, entry)
        except BatchrunError as exc:
            self._failed("write", exc)
            return
        self.stored += 1

    def _failed(self, action: str, exc: BatchrunError) -> None:
        self.failures += 1
        if not self._warned:
            self._warned = True
            self._notify(
                f"batchrun: answer cache {self.cache.shown}: cannot {action} ({exc}); rows are "
                "sent as without a cache, and the failures counted"
            )


def _ok(entry: Entry | None) -> Entry | None:
    """``entry`` if it holds an ok answer (only those are reused)."""
    if entry is None or entry.answer.get("status") != STATUS_OK:
        return None
    return entry
