"""The engine: prepared requests in, outcome rows out, with everything sending takes in between.

It owns the worker pool, retries, rate limits learned from headers, what a 429 costs (a pause
of the model when its bucket is empty, else a slowdown in proportion), the ``--max-cost``
budget and the early stop of a run whose every request fails alike. It knows nothing of
files, journals, progress bars or signals: a driver hands it rows and a place to put each
outcome. The online driver, the ``--finish-online`` pass of Message Batches and the pilot of
``estimate`` all go through it, and so can a notebook::

    import asyncio
    from pathlib import Path
    from batchrun import load_config
    from batchrun.engine.connect import open_client
    from batchrun.engine.engine import Engine
    from batchrun.engine.outcome import prepare
    from batchrun.engine.tally import RowTally
    from batchrun.formats.inputs import read_rows

    async def answer(config):
        rows, tally = [], RowTally()
        async with open_client(config) as client:
            engine = Engine(config, client, tally)
            works = (prepare(row, config) for row in read_rows(config.input))
            await engine.run(works, lambda work, row: rows.append(row))
        return rows, tally

    config = load_config(Path("jobs/label_sentiment.toml"), {"simulate": True})
    rows, tally = asyncio.run(answer(config))   # one output row per input row; tally.ok == 200
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from batchrun.client.messages import MessagesClient
from batchrun.config.layers import CostSettings, EngineSettings
from batchrun.cost.budget import Budget
from batchrun.cost.models import thinking_room_warning
from batchrun.cost.prices import UnknownModels
from batchrun.engine.admission import AdmissionClosed, Gate, SendCheck
from batchrun.engine.answer_cache import AnswerLane
from batchrun.engine.dedup import Dedup, twin_row
from batchrun.engine.fail_fast import FailFast
from batchrun.engine.outcome import RowSettings, Work, base_row, error_row
from batchrun.engine.pool import Pool, Stopped
from batchrun.engine.samples import Samples, plan_index, request_samples
from batchrun.engine.sender import Sender
from batchrun.engine.tally import RowTally
from batchrun.engine.waits import WaitNotices
from batchrun.engine.warmup import Warmup, ttl_seconds
from batchrun.limits.limiter import RateLimiter
from batchrun.limits.tuner import ConcurrencyTuner
from batchrun.rows.request import RequestDefaults
from batchrun.store.columns import INVALID_REQUEST
from batchrun.store.resume import job_fingerprint

if TYPE_CHECKING:
    from batchrun.limits.shared import RedisBuckets

Sleep = Callable[[float], Awaitable[None]]
OnRow = Callable[[Work, dict[str, Any]], None]


def _ignore(message: str) -> None:
    return None


class Engine:
    """Sends prepared requests through the bounded pool; hands each outcome row to ``on_row``.

    ``tally`` receives the counts (a ``RunSummary`` is one); ``sleep`` is the wait between
    retries and during whole-model 429 pauses (tests pass a fake); ``notify`` gets the one-line
    events a person should see (budget stop, unpriced model, a wait of more than a few seconds).
    ``send_check`` is asked before every request whether the run may still send
    (``engine.admission``: an object-store output's lease); once it says no, nothing more
    is sent and ``closed_by`` says why.
    ``job_spent`` is what earlier runs of the job spent, for a driver that owns the job's
    output and its ledger (``store.spend``): ``--max-cost`` caps the job, so this run may spend
    what is left. None (a Ray worker, a notebook): no ledger, the budget is this run's.
    ``answers``: the ``--answer-cache`` lane (``engine.answer_cache``), asked before a row is
    deduplicated or sent, and given every answer this run pays for.
    """

    def __init__(
        self,
        settings: EngineSettings,
        cost: CostSettings,
        rows: RowSettings,
        client: MessagesClient,
        tally: RowTally,
        *,
        api_url: str,
        budget_scope: BudgetScope | None = None,
        sleep: Sleep = asyncio.sleep,
        notify: Callable[[str], None] = _ignore,
        send_check: SendCheck | None = None,
        answers: AnswerLane | None = None,
    ) -> None:
        self.settings = settings
        self.answers = answers
        self.cost = cost
        self.rows = rows
        self._scope = budget_scope
        self.tally = tally
        cache = rows.defaults.cache
        # Rows waiting for their prefix group to warm or for their twin stand aside, so as
        # many more may be read ahead of those sent.
        self.warmup = Warmup(ttl_seconds(cache.control)) if cache is not None else None
        self.dedup = Dedup() if settings.dedup else None
        waiting = self.warmup is not None or self.dedup is not None
        concurrency = settings.concurrency
        self.pool: Pool[Work] = Pool(concurrency, aside=concurrency if waiting else 0)
        self._notify = notify
        # The limiter waits out a bucket-empty 429 in place of the retry loop, so it takes the
        # retry sleep.
        self._store = _shared_store(settings.rate_limit_store, notify)
        self.limiter = RateLimiter(settings.limits, pause_sleep=sleep, store=self._store)
        notices = WaitNotices(notify, capped=settings.max_retry_wait is not None)
        # Told by the sender when the API first answers: until then, quick retries only.
        self._fail_fast = FailFast(api_url)
        self.closed_by: str | None = None  # why send_check stopped the run
        gate = Gate(send_check, self._close) if send_check is not None else None
        self.sender = Sender(
            settings,
            rows,
            client,
            tally,
            sleep,
            self.limiter,
            notices,
            fail_fast=self._fail_fast,
            gate=gate,
        )
        self.pool.on_stop(self.limiter.stop)  # rows waiting for admission are not sent after
        for waiting_room in (self.warmup, self.dedup):
            if waiting_room is not None:
                self.pool.on_stop(waiting_room.release)
        if settings.concurrency_auto:
            self.sender.tuner = ConcurrencyTuner(self.limiter, self.pool.set_limit)
        self.budget_stop: str | None = None  # why the budget stopped admitting rows
        self._budget = self._make_budget()
        self._unpriced = UnknownModels(cost.prices)  # its did-you-mean knows --prices too
        self._sample_copies = 0  # copies of a twin's answer for samples past a row's first
        warning = thinking_room_warning(rows.defaults, cost.prices)
        if warning is not None:  # before anything is sent: a max_tokens thinking may use up
            notify(warning)

    @property
    def in_flight(self) -> int:
        return self.pool.in_flight

    @property
    def budget_refused(self) -> Decimal | None:
        """The worst case of the request the budget could not admit (None: none refused)."""
        return self._budget.refused if self._budget is not None else None

    def stop_admitting(self) -> None:
        """Send no more rows; the ones in flight finish (Ctrl-C, a budget, a caller)."""
        self.pool.stop_admitting()

    def _close(self, reason: str) -> None:
        """``send_check`` said no: admit nothing more; the requests in flight finish."""
        self.closed_by = reason
        self.pool.stop_admitting()
        self._notify(f"batchrun: {reason}; sending nothing more, finishing the requests in flight")

    async def run(self, works: Iterable[Work], on_row: OnRow) -> None:
        """Process every work item (until stopped); only a run-stopping error escapes."""
        samples = None
        if self.settings.samples > 1:  # K requests a row, folded into one row
            samples = Samples(self.settings.samples, on_row, self.tally)
            works, on_row = samples.expand(works), samples.record
        try:
            with _fewer_collections():
                await self.pool.run(iter(works), lambda work: self._handle(work, on_row))
        finally:
            if samples is not None:
                samples.cut()  # rows stopped between their samples: what they cost is kept
            self.sender.report()
            self._report_savings()
            if self._store is not None:
                self._store.close()  # leaves the shared limit's and budget's workers

    def _report_savings(self) -> None:
        """Put what dedup and warming did into the tally, at the end of the run."""
        tally = self.tally
        if self.dedup is not None:
            tally.deduplicated += self.dedup.filled - self._sample_copies  # rows, not samples
            tally.dedup_saved_usd += self.dedup.saved_usd
            tally.dedup_resent += self.dedup.resent
        if self.answers is not None:
            tally.answer_cache_hits += self.answers.hits
            tally.answer_cache_saved_usd += self.answers.saved_usd
            tally.answer_cache_stored += self.answers.stored
            tally.answer_cache_failures += self.answers.failures
        if self.warmup is not None:
            tally.cache_groups_warmed += self.warmup.groups_warmed
            tally.cache_rewarmed += self.warmup.rewarmed

    async def _handle(self, work: Work, on_row: OnRow) -> None:
        """One row to its outcome row; rows the budget refuses are neither sent nor handed on."""
        if work.body is None:
            assert work.problem is not None
            row = error_row(work, self.rows, INVALID_REQUEST, str(work.problem), None, 0)
            self.tally.invalid += 1
        else:
            try:
                answered = await self._answer(work, work.body)
            except (Stopped, AdmissionClosed):
                return  # admission stopped while the row waited: a re-run sends it
            if answered is None:
                return  # not sent, not recorded: the budget is spent and a re-run resumes here
            row = answered
        on_row(work, row)  # first: a result is recorded before anything else can go wrong
        if self.answers is not None:
            await self.answers.keep(work, row)  # an answer this run paid for, for later jobs
        if work.sample is None:  # a sample is counted in its row's voted one (engine.samples)
            self.tally.count(row, work.dropped)
        self._unpriced.check(row, self._notify)
        self._fail_fast.observe(row)

    async def _answer(self, work: Work, body: dict[str, Any]) -> dict[str, Any] | None:
        """The row's outcome: an earlier job's answer (``engine.answer_cache``), a copy of its
        twin's (``engine.dedup``), or sent."""
        dedup, request_hash = self.dedup, work.request_hash
        if dedup is None or request_hash is None:
            return await self._cached_or_sent(work, body)
        member = dedup.member(plan_index(work, self.settings.samples), request_hash)
        if member is None:  # no twin: nothing to wait for, nothing to keep
            return await self._cached_or_sent(work, body)
        answer = await dedup.claim(member, request_hash, self.pool.stand_aside, self._stopping)
        if answer is not None:
            if work.sample:  # a row's later samples: its copy is counted once, as a row
                self._sample_copies += 1
            elif request_samples(body):  # told: a copy stands in for a sample of its own
                self.tally.dedup_sampled += 1
            return twin_row(base_row(work, self.rows), answer)
        row = None
        try:
            row = await self._cached_or_sent(work, body)
        finally:
            dedup.settle(member, row)  # whatever happened: its twins wait for it
        return row

    async def _cached_or_sent(self, work: Work, body: dict[str, Any]) -> dict[str, Any] | None:
        """An earlier job's answer (after dedup: a twin in this run is a twin), or sent."""
        if self.answers is not None:
            cached = await self.answers.lookup(work, lambda: base_row(work, self.rows))
            if cached is not None:
                return cached
        return await self._send_warm(work, body)

    async def _send_warm(self, work: Work, body: dict[str, Any]) -> dict[str, Any] | None:
        """Sent once its prefix group is warm (``engine.warmup``); None: the budget refused it."""
        warmup, key = self.warmup, work.prefix_key
        if warmup is None or key is None:
            return await self._send(work, body)
        await warmup.admit(key, self.pool.stand_aside, self._stopping)
        row = None
        try:
            row = await self._send(work, body, lambda: warmup.started(key))
        finally:
            warmup.answered(key, row)
        return row

    async def _send(
        self,
        work: Work,
        body: dict[str, Any],
        on_answer_start: Callable[[], None] | None = None,
    ) -> dict[str, Any] | None:
        def send() -> Awaitable[dict[str, Any]]:
            return self.sender.send(work, body, on_answer_start)

        if self._budget is None:
            return await send()
        return await self._budget.send(body, send)

    def _stopping(self) -> bool:
        return self.pool.stopping

    def _make_budget(self) -> Budget | None:
        """The --max-cost budget: when it stops, no more rows are admitted and the user is told."""
        if self.cost.max_cost is None:
            return None

        def stop(reason: str) -> None:
            self.budget_stop = reason
            self.pool.stop_admitting()
            self._notify(f"batchrun: budget: {reason}; finishing the requests in flight")

        # With --rate-limit-store, every worker of the job (same fingerprint and source) spends
        # one budget; each adds what its own output's earlier runs spent (store.spend), which
        # Redis may have forgotten since.
        cap = Decimal(repr(self.cost.max_cost))
        prices = self.cost.prices
        scope = self._scope
        before = scope.spent_before if scope is not None else None
        if self._store is None:
            spent_before = before or Decimal(0)
            return Budget(cap, prices, on_stop=stop, spent_before=spent_before)
        job = scope.job if scope is not None else hashlib.sha256(b"unscoped").hexdigest()
        if scope is None or scope.output is None or before is None:
            # no output of its own: its spending is the job's, unattributed
            shared = self._store.budget(job)
        else:  # the output's owner (its lock held): the output's ledger into Redis
            shared = self._store.budget(job, output=scope.output)
            shared.seed(before, reset=scope.reset)
        return Budget(cap, prices, on_stop=stop, store=shared)


@dataclass(frozen=True)
class BudgetScope:
    """Whose money ``--max-cost`` caps: the job's, across its runs and its workers.

    ``job`` keys the job in a shared store (its request defaults and its source: a
    simulated job is another job); ``output`` is the output this run owns, whose ledger
    (``store.spend``) it brings into Redis, None for a worker with none of its own (a Ray
    block); ``spent_before`` what earlier runs of the job spent, from that ledger;
    ``reset``: ``--overwrite`` starts a new job at zero."""

    job: str
    output: str | None = None
    spent_before: Decimal | None = None
    reset: bool = False

    @classmethod
    def of(
        cls,
        defaults: RequestDefaults,
        source: str | None,
        output: str | None,
        spent_before: Decimal | None,
        *,
        reset: bool = False,
    ) -> BudgetScope:
        key = hashlib.sha256(f"{job_fingerprint(defaults)}:{source}".encode()).hexdigest()
        return cls(key, output, spent_before, reset)


def _shared_store(url: str | None, notify: Callable[[str], None]) -> RedisBuckets | None:
    """The Redis store of --rate-limit-store, shared with the other workers; None without one."""
    if url is None:
        return None
    from batchrun.limits.shared import RedisBuckets  # loads redis-py: only when asked for

    return RedisBuckets(url, warn=notify)


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Collect garbage less often while rows stream through.

    Each row allocates a few hundred short-lived objects, so the default first-generation
    threshold (700) runs the collector every couple of rows; measured in bench/throughput.py
    that costs several percent at zero latency. Start-up objects (pyarrow, httpx, aiohttp)
    are frozen so later full collections skip them. Everything is put back afterwards.
    """
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(old[0], _GC_FIRST_GENERATION), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


_GC_FIRST_GENERATION = 20_000
