"""The composition root: input rows -> requests -> pool(client, retries) -> sink -> summary.

from batchrun import load_config, run
summary = run(load_config(Path("jobs/label_sentiment.toml"), {"simulate": True}))
print(summary.final)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Container,
    Iterator,
    Mapping,
    Sized,
)
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from batchrun.api.client import MessagesClient, Reply
from batchrun.api.retry import RETRYABLE_STATUSES, is_fatal, send_with_retries
from batchrun.config.load import RunConfig
from batchrun.core.errors import (
    CONNECTION_ERROR,
    TIMEOUT,
    ApiError,
    ApiStatusError,
    ConfigError,
    FatalRunError,
    OutputError,
)
from batchrun.cost.budget import Budget, projected_total
from batchrun.cost.prices import UnknownModels
from batchrun.drivers.interrupt import run_interruptibly
from batchrun.drivers.progress import Progress
from batchrun.engine.outcome import LAPSED_REASONS, Work, error_row, ok_row, prepare
from batchrun.engine.pool import Pool
from batchrun.limits.ratelimit import (
    RATE_LIMIT_STATUS,
    ConcurrencyTuner,
    Limits,
    RateLimiter,
    Reservation,
    itpm_tokens,
)
from batchrun.rows.files import folder_stamp
from batchrun.rows.reader import InputRow, check_input_file, count_rows, read_rows
from batchrun.rows.tokens import estimate_input_tokens
from batchrun.store.batch_journal import running_batches
from batchrun.store.columns import INVALID_REQUEST, STATUS_OK
from batchrun.store.resume import (
    RunState,
    job_fingerprint,
    read_state,
    stamp_input,
    state_path,
    unchanged_since,
    write_state,
)
from batchrun.store.sink import FinalCounts, PriorRecord, PriorState, Sink

Sleep = Callable[[float], Awaitable[None]]

# The SDK refuses non-streaming requests above this many output tokens, since they can
# outlast a 10-minute timeout (API-FACTS §5); we stream them instead.
STREAM_ABOVE_MAX_TOKENS = 21_333

# Latency of the built-in simulator behind `--simulate`: enough to look like a real API.
SIMULATE_LATENCY_S = 0.05
SIMULATE_JITTER_S = 0.03


@dataclass
class RunSummary:
    """What a run did: this run's rows and tokens, and the state of the whole output."""

    input: Path
    output: Path
    total_rows: int = 0
    skipped: int = 0  # done by an earlier run (ok, or error without --retry-errors)
    ok: int = 0
    error: int = 0
    invalid: int = 0  # of `error`: rows never sent because they break an API rule
    retries: int = 0
    stop_reasons: Counter[str] = field(default_factory=Counter)
    error_types: Counter[str] = field(default_factory=Counter)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    elapsed_s: float = 0.0
    final: FinalCounts | None = None  # set when the final dataset was written
    rate_limited_429s: int = 0  # responses answered 429 rate_limit_error, retried or not
    rate_pauses: int = 0  # admission pauses after 429s (429s during a pause extend it)
    rate_wait_s: float = 0.0  # wall seconds rate limits held admission back, pauses included
    rate_limits: dict[str, Limits] = field(default_factory=dict)  # per model, as enforced
    concurrency_chosen: int | None = None  # what --concurrency auto settled on
    interrupted: str | None = None  # the signal that stopped the run early
    cost_usd: float = 0.0  # this run's answers, from their own usage
    unpriced: int = 0  # answers whose model has no price (cost_usd null)
    todo: int | None = None  # rows this run set out to process, when known
    max_cost: float | None = None  # --max-cost
    budget_stop: str | None = None  # why the budget stopped admitting rows
    via: str = "online"  # or "batches" (batch_run)
    batches_created: int = 0  # Message Batches this run created
    batches_collected: int = 0  # ... and whose results it wrote
    batches_running: list[str] = field(default_factory=list)  # left running when it stopped

    @property
    def finished(self) -> int:
        return self.ok + self.error

    @property
    def rows_per_second(self) -> float:
        return self.finished / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """DESIGN §2: 0 every row ok, 3 finished with some rows in error, 1 not finished,
        130 interrupted by a signal (the shell's convention for Ctrl-C)."""
        if self.interrupted is not None:
            return 130
        if self.budget_stop is not None and self.final is None:
            return 4  # stopped by --max-cost; re-running resumes
        if self.final is None:
            return 1
        return 0 if self.final.error == 0 else 3

    def count(self, row: Mapping[str, Any]) -> None:
        if row["status"] == STATUS_OK:
            self.ok += 1
        else:
            self.error += 1
            self.error_types[row["error_type"] or "unknown"] += 1
        if row["stop_reason"]:
            self.stop_reasons[row["stop_reason"]] += 1
        self.input_tokens += row["input_tokens"] or 0
        self.output_tokens += row["output_tokens"] or 0
        self.cache_creation_input_tokens += row["cache_creation_input_tokens"] or 0
        self.cache_read_input_tokens += row["cache_read_input_tokens"] or 0
        if row["cost_usd"] is not None:
            self.cost_usd += row["cost_usd"]
        elif row["status"] == STATUS_OK:
            self.unpriced += 1


class ResumeMismatchError(ConfigError):
    """The output holds answers to requests that the input no longer makes."""


def run(
    config: RunConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress_stream: IO[str] | None = None,
    retry_sleep: Sleep = asyncio.sleep,
    only: Container[int] | None = None,
) -> RunSummary:
    """Run a job to the end and return its summary. See ``run_async``.

    A job with ``via = "batches"`` goes through the Message Batches API (``batch_run``).
    """
    if config.via == "batches":
        from batchrun.drivers.batches import run_batches_async

        return asyncio.run(
            run_batches_async(
                config, transport=transport, progress_stream=progress_stream, sleep=retry_sleep
            )
        )
    return asyncio.run(
        run_async(
            config,
            transport=transport,
            progress_stream=progress_stream,
            retry_sleep=retry_sleep,
            only=only,
        )
    )


async def run_async(
    config: RunConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress_stream: IO[str] | None = None,
    retry_sleep: Sleep = asyncio.sleep,
    only: Container[int] | None = None,
    redo_lapsed: bool = False,
) -> RunSummary:
    """Send every row not yet answered, journal each result, write the final dataset.

    Raises ConfigError / OutputError / FatalRunError (exit 1) before or instead of
    finishing; a row's own failure never raises, it becomes an error row. ``transport``
    replaces the HTTP transport and ``retry_sleep`` the wait between retries (tests).
    ``only`` restricts the run to those input indexes (a pilot sample): their answers are
    journaled, and the final dataset is written by the run that answers the rest.
    ``redo_lapsed`` also sends the rows a Message Batch expired or cancelled (--finish-online).
    """
    check_credentials(config, transport)
    check_input_file(config.input)
    _check_no_running_batches(config)
    summary = RunSummary(input=config.input, output=config.output)
    sink = Sink(config.output, config.keep_columns)
    prior = sink.open(overwrite=config.overwrite)
    done, known_ids = load_prior(config, prior)

    async with open_client(config, transport) as client:
        pool: Pool[Work] = Pool(config.concurrency)
        summary.todo = (
            len(only) if isinstance(only, Sized) else count_hint(config, done, redo_lapsed)
        )
        progress = Progress(
            summary.todo,
            lambda: _status_line(summary, pool),
            quiet=config.quiet,
            stream=progress_stream,
        )
        counter = RowCounter()
        # The limiter waits out a 429 in place of the retry loop, so it takes the retry sleep.
        limiter = RateLimiter(config.limits, pause_sleep=retry_sleep)
        sender = _Sender(config, client, summary, retry_sleep, limiter)
        pool.on_stop(limiter.stop)  # rows still waiting for admission are not sent after a stop
        if config.concurrency_auto:
            sender.tuner = ConcurrencyTuner(limiter, pool.set_limit)
        started = time.perf_counter()
        try:
            work = plan(config, done, known_ids, counter, only, redo_lapsed=redo_lapsed)
            fail_fast = _FailFast(config.base_url)
            budget = _budget(config, summary, pool, progress)
            unpriced = UnknownModels()
            with _fewer_collections():
                summary.interrupted = await run_interruptibly(
                    pool.run(
                        work,
                        lambda w: _handle(
                            w, config, sender, sink, summary, progress, fail_fast, budget, unpriced
                        ),
                    ),
                    stop_admitting=pool.stop_admitting,
                    grace=config.grace,
                    notify=progress.log,
                )
        finally:
            summary.elapsed_s = time.perf_counter() - started
            sender.report()
            progress.close()
            await sink.close()
    summary.total_rows = counter.rows
    summary.skipped = counter.skipped
    if summary.interrupted is None and summary.skipped + summary.finished == counter.rows:
        summary.final = sink.finalize(counter.rows)
    # Otherwise (a pilot sample) the answers stay in the journal for the run that finishes.
    return summary


def check_credentials(config: RunConfig, transport: httpx.AsyncBaseTransport | None) -> None:
    """Refuse to start without a key, before anything is read or sent."""
    if not config.simulate and config.credentials == type(config.credentials)() and not transport:
        raise ConfigError(
            "no credentials: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN for a gateway), "
            "or try the job against the built-in simulator with --simulate"
        )


def _check_no_running_batches(config: RunConfig) -> None:
    """Rows waiting in a Message Batch must not be paid for again online."""
    running = running_batches(config.output)
    if running:
        raise ConfigError(
            f"{len(running)} Message Batch(es) of {config.output} are still running "
            f"({', '.join(running[:5])}): collect them with `--via batches`, or cancel them "
            "with `batchrun batches cancel` and then collect, before sending rows online"
        )


@contextlib.asynccontextmanager
async def open_client(
    config: RunConfig, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[MessagesClient]:
    """The run's one client: to the API, or to an in-process simulator for ``--simulate``."""
    async with contextlib.AsyncExitStack() as stack:
        base_url = config.base_url
        if config.simulate and transport is None:
            from batchrun.simulator import Simulator, SimulatorConfig

            sim = Simulator(
                SimulatorConfig(latency_mean=SIMULATE_LATENCY_S, latency_jitter=SIMULATE_JITTER_S)
            )
            base_url = await sim.start()
            stack.push_async_callback(sim.stop)
        client = MessagesClient(
            base_url,
            config.credentials,
            api_version=config.api_version,
            betas=config.betas,
            timeout=config.timeout,
            max_connections=config.concurrency,
            backend=config.http_backend,
            transport=transport,
        )
        stack.push_async_callback(client.aclose)
        yield client


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


class RowCounter:
    """How many rows the input has, as far as it has been read."""

    rows = 0
    skipped = 0  # done by an earlier run, not read again


# What earlier runs recorded for a row: nothing, an answer, an error, or an error that says
# only that a Message Batch ran out of time (or was cancelled) before reaching the row.
_NOTHING, _DONE_OK, _DONE_ERROR, _DONE_LAPSED = 0, 1, 2, 3


def _flag(record: PriorRecord) -> int:
    if record.status == STATUS_OK:
        return _DONE_OK
    if record.error_type == INVALID_REQUEST:
        # Never sent: the row broke an API rule. Every run checks it again, so a row that a
        # fix to the job (a --model forgotten) or to the input made valid is sent; one still
        # invalid costs nothing and is recorded again.
        return _NOTHING
    return _DONE_LAPSED if record.error_type in LAPSED_REASONS else _DONE_ERROR


def load_prior(config: RunConfig, prior: PriorState) -> tuple[bytearray, list[str]]:
    """What earlier runs answered, checked against the requests the input makes now.

    Returns one flag per earlier row (nothing recorded, ok, error, lapsed batch request) and
    each row's id ("" where
    nothing was recorded). Before anything is sent, records this run's job fingerprint and
    input stamp, which lets the next resume skip the row-by-row check (see ``resume``).
    """
    # Rows may embed local files: a changed file must send resume down the row-by-row check.
    fingerprint = job_fingerprint(config.defaults) + folder_stamp(config.input.parent)
    state = None if config.overwrite else read_state(config.output)
    if not len(prior):
        flags, ids = bytearray(), list[str]()
    elif (
        state is not None
        and state.fingerprint == fingerprint
        and unchanged_since(config.input, state.input)
    ):
        flags, ids = _trusted_prior(prior)
    else:
        flags, ids = _check_prior(config, prior)
    try:
        write_state(config.output, RunState(fingerprint, stamp_input(config.input)))
    except OSError as exc:
        raise OutputError(f"cannot write {state_path(config.output)}: {exc}") from exc
    return flags, ids


def _trusted_prior(prior: PriorState) -> tuple[bytearray, list[str]]:
    """Flags and ids straight from the records: neither the job nor those rows changed."""
    flags = bytearray(len(prior))
    ids = [""] * len(prior)
    for index in range(len(prior)):
        record = prior.lookup(index)
        if record is not None:
            flags[index] = _flag(record)
            ids[index] = record.id
    return flags, ids


def _check_prior(config: RunConfig, prior: PriorState) -> tuple[bytearray, list[str]]:
    """Compare each earlier answer's request hash with the request its row makes now."""
    done = bytearray(len(prior))
    ids = [""] * len(prior)
    mismatched: list[str] = []
    seen = 0
    for row in read_rows(config.input):
        if row.index >= len(done):
            break
        seen += 1
        record = prior.lookup(row.index)
        if record is None:
            continue
        if _differs(record, prepare(row, config), row):
            mismatched.append(row.id)
        done[row.index] = _flag(record)
        ids[row.index] = row.id
    if seen < prior.final_rows:
        raise ResumeMismatchError(
            f"{config.output} holds {prior.final_rows} rows but {config.input} now has only "
            f"{seen}: use --overwrite to start afresh, or write to a new output with -o"
        )
    if mismatched:
        shown = ", ".join(mismatched[:10]) + (" ..." if len(mismatched) > 10 else "")
        raise ResumeMismatchError(
            f"{config.output} was made from different requests for {len(mismatched)} row(s) "
            f"(ids {shown}): the input or the job's parameters changed. Use --overwrite to "
            "start afresh, or write to a new output with -o"
        )
    return done, ids


def _differs(record: PriorRecord, work: Work, row: InputRow) -> bool:
    if record.id != row.id:
        return True
    return (
        record.request_hash is not None
        and work.request_hash is not None
        and record.request_hash != work.request_hash
    )


def plan(
    config: RunConfig,
    done: bytearray,
    known_ids: list[str],
    counter: RowCounter,
    only: Container[int] | None,
    *,
    redo_lapsed: bool = False,
    pending: bytearray | None = None,
) -> Iterator[Work]:
    """The rows this run must process, read lazily.

    Rows earlier runs finished are skipped by the reader itself, unparsed: a resumed
    million-row job starts sending as soon as it reaches the first row left to do.
    ``redo_lapsed`` sends again the rows a Message Batch expired or cancelled before
    answering; ``pending`` flags rows that sit in a batch still running (not sent again).
    """
    waiting = pending or bytearray()

    def finished(index: int) -> bool:
        flag = done[index] if index < len(done) else _NOTHING
        if flag == _DONE_OK:
            return True
        if flag == _DONE_LAPSED and not redo_lapsed:
            return not config.retry_errors
        return flag == _DONE_ERROR and not config.retry_errors

    def in_batch(index: int) -> bool:
        return index < len(waiting) and waiting[index] == 1

    skipped = [i for i in range(len(done)) if finished(i) and not in_batch(i)]
    counter.skipped = len(skipped)
    counter.rows = len(done)

    def skip(index: int) -> bool:
        # Called for every row, read or not: the only place that sees them all.
        if index >= counter.rows:
            counter.rows = index + 1
        return finished(index) or in_batch(index)

    # Ids of rows skipped here that an earlier run recorded, to catch a read row reusing one.
    # ``known_ids`` may be shorter than ``done`` (or empty): a later round of a batch run
    # reads again rows whose ids were all checked in its first round.
    known = (known_ids[i] for i in skipped if i < len(known_ids))
    rows = read_rows(config.input, skip=skip, known_ids=known)
    for row in rows:
        counter.rows = max(counter.rows, row.index + 1)
        if only is not None and row.index not in only:
            continue
        yield prepare(row, config)


async def _handle(
    work: Work,
    config: RunConfig,
    sender: _Sender,
    sink: Sink,
    summary: RunSummary,
    progress: Progress,
    fail_fast: _FailFast,
    budget: Budget | None,
    unpriced: UnknownModels,
) -> None:
    """Process one row to its result row; only a run-stopping error escapes."""
    if work.body is None:
        assert work.problem is not None
        row = error_row(work, config, INVALID_REQUEST, str(work.problem), None, 0)
        summary.invalid += 1
    elif budget is None:
        row = await sender.send(work, work.body)
    else:
        body = work.body
        sent = await budget.send(body, lambda: sender.send(work, body))
        if sent is None:
            return  # not sent, not journaled: the budget is spent and a re-run resumes here
        row = sent
    sink.submit(work.row.index, row)
    summary.count(row)
    progress.advance()
    unpriced.check(row, progress.log)
    fail_fast.observe(row)


def _budget(
    config: RunConfig, summary: RunSummary, pool: Pool[Work], progress: Progress
) -> Budget | None:
    """The --max-cost budget: when it stops, no more rows are admitted and the user is told."""
    if config.max_cost is None:
        return None
    summary.max_cost = config.max_cost

    def stop(reason: str) -> None:
        summary.budget_stop = reason
        pool.stop_admitting()
        progress.log(f"batchrun: budget: {reason}; finishing the requests in flight")

    return Budget(Decimal(repr(config.max_cost)), config.prices, on_stop=stop)


# Error types of a row that got no answer at all: the API was never heard from.
UNREACHABLE_TYPES = frozenset({CONNECTION_ERROR, TIMEOUT})


class _FailFast:
    """Stops a run whose first requests all fail the same way, before it fails them all.

    A model name that does not exist (404) or a parameter the API refuses for every row
    would otherwise fail a million rows one by one; so would an API that cannot be reached
    (a wrong --base-url, no network, a proxy in the way), each row after minutes of retries.
    Once any row succeeds, per-row errors are just per-row errors.
    """

    LIMIT = 5

    def __init__(self, base_url: str = "") -> None:
        self._armed = True
        self._last: tuple[Any, ...] | None = None
        self._count = 0
        self._base_url = _without_secrets(base_url)

    def observe(self, row: Mapping[str, Any]) -> None:
        if not self._armed:
            return
        if row["status"] == STATUS_OK:
            self._armed = False
            return
        key = self._kind(row)
        if key is None:
            return
        self._count = self._count + 1 if key == self._last else 1
        self._last = key
        if self._count >= self.LIMIT:
            raise FatalRunError(self._message(row))

    @staticmethod
    def _kind(row: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """What a failure says of the rows to come, or None when it says nothing."""
        status = row["http_status"]
        if status is None:
            # No answer at all, retries spent: every row would go the same way. Messages vary
            # (refused, reset, timed out), so only the kind is compared.
            return ("unreachable",) if row["error_type"] in UNREACHABLE_TYPES else None
        if status in RETRYABLE_STATUSES or status >= 500:
            return None  # a transient failure: says nothing of the rest
        if status < 300:
            return None  # answered, but the answer broke the job's json_schema: a per-row error
        return (status, row["error_type"], row["error_message"])

    def _message(self, row: Mapping[str, Any]) -> str:
        if self._last == ("unreachable",):
            return (
                f"stopping early: the first {self._count} requests all got no answer from "
                f"{self._base_url or 'the API'} ({row['error_type']} after {row['attempts']} "
                f"attempt(s) each: {row['error_message']}). Check the network and --base-url; "
                "the rows in error are kept: run again with --retry-errors to send them"
            )
        return (
            f"stopping early: the first {self._count} requests all failed with HTTP "
            f"{row['http_status']} {row['error_type']}: {row['error_message']}"
        )


def _without_secrets(url: str) -> str:
    """``url`` as it may be shown: no user, password or query (gateways put keys there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _Sender:
    """Sends one request with retries and turns the outcome into an output row.

    Every attempt passes rate-limit admission first and reports its usage and the response's
    rate-limit headers after (``ratelimit``). A 429 pauses admission for the model, for every
    worker at once; that pause stands in for the retry loop's own wait for the 429, which is
    skipped, so the two never add up.
    """

    def __init__(
        self,
        config: RunConfig,
        client: MessagesClient,
        summary: RunSummary,
        sleep: Sleep,
        limiter: RateLimiter,
    ) -> None:
        self._config = config
        self._client = client
        self._summary = summary
        self._sleep = sleep
        self._limiter = limiter
        self.tuner: ConcurrencyTuner | None = None  # --concurrency auto

    async def send(self, work: Work, body: dict[str, Any]) -> dict[str, Any]:
        config = self._config
        stream = config.stream or body.get("max_tokens", 0) > STREAM_ABOVE_MAX_TOKENS
        started = time.perf_counter()
        waits = _RetryWaits(self, str(body.get("model") or ""))
        estimate = estimate_input_tokens(body)
        try:
            reply, attempts = await send_with_retries(
                lambda: self._attempt(body, work.content, stream, waits, estimate),
                max_retries=config.max_retries,
                sleep=waits.sleep,
                on_retry=waits.on_retry,
            )
        except ApiError as exc:
            if is_fatal(exc):
                raise FatalRunError(f"the API refused the run: {exc}") from exc
            row = error_row(work, config, exc.error_type, exc.message, exc.status, exc.attempts)
            row.update(request_id=exc.request_id, elapsed_ms=(time.perf_counter() - started) * 1000)
            return row
        row = ok_row(work, config, reply.message)
        row.update(
            attempts=attempts,
            latency_ms=reply.latency_ms,
            elapsed_ms=(time.perf_counter() - started) * 1000,
            request_id=reply.request_id,
            http_status=reply.status,
        )
        return row

    async def _attempt(
        self,
        body: dict[str, Any],
        content: bytes | None,
        stream: bool,
        waits: _RetryWaits,
        estimate: int,
    ) -> Reply:
        """One send: admission, the request, then usage and headers back to the limiter."""
        limiter, model = self._limiter, waits.model
        reservation = await limiter.acquire(model, estimate, int(body.get("max_tokens") or 0))
        waits.sent = reservation
        self._summary.rate_wait_s = limiter.stats.held_s
        try:
            reply = await self._client.create(body, stream=stream, content=content)
        except BaseException as exc:
            limiter.settle_failure(reservation, exc if isinstance(exc, ApiError) else None)
            if isinstance(exc, ApiStatusError) and exc.status == RATE_LIMIT_STATUS:
                self._summary.rate_limited_429s += 1
                limiter.observe(model, exc.rate_limit_headers)
            raise
        usage = reply.message.get("usage") or {}
        limiter.settle(reservation, itpm_tokens(usage, model), int(usage.get("output_tokens") or 0))
        limiter.observe(model, reply.headers)
        if self.tuner is not None:
            self.tuner.observe(model, reply.latency_ms / 1000.0)
        return reply

    def pause_for(
        self, model: str, exc: BaseException, wait: float, sent: Reservation | None
    ) -> bool:
        """Count a retry; a (retryable) 429 pauses admission instead. True for a 429."""
        self._summary.retries += 1
        if not (isinstance(exc, ApiError) and exc.status == RATE_LIMIT_STATUS):
            return False
        self._limiter.pause(model, wait, sent)
        self._summary.rate_pauses = self._limiter.stats.pauses
        return True

    async def retry_sleep(self, seconds: float) -> None:
        await self._sleep(seconds)

    def report(self) -> None:
        """Put what admission did into the summary, at the end of the run."""
        summary, limiter = self._summary, self._limiter
        summary.rate_wait_s = limiter.stats.held_s
        summary.rate_pauses = limiter.stats.pauses
        summary.rate_limits = {model: limiter.limits(model) for model in limiter.models()}
        if self.tuner is not None:
            summary.concurrency_chosen = self.tuner.chosen


class _RetryWaits:
    """The retry loop's waits for one row: skipped after a 429, which paused admission instead.

    The next attempt then waits in the limiter's queue, in order with every other request,
    until the pause (the server's retry-after) is over.
    """

    def __init__(self, sender: _Sender, model: str) -> None:
        self.model = model
        self.sent: Reservation | None = None  # the latest attempt's admission
        self._sender = sender
        self._skip_next = False

    def on_retry(self, exc: BaseException, wait: float) -> None:
        self._skip_next = self._sender.pause_for(self.model, exc, wait, self.sent)

    async def sleep(self, seconds: float) -> None:
        if self._skip_next:
            self._skip_next = False
            return
        await self._sender.retry_sleep(seconds)


def _status_line(summary: RunSummary, pool: Pool[Work]) -> str:
    return (
        f"ok={summary.ok} err={summary.error} retries={summary.retries} "
        f"in_flight={pool.in_flight} tok_in={summary.input_tokens} "
        f"tok_out={summary.output_tokens} 429s={summary.rate_limited_429s} "
        f"rl_wait={summary.rate_wait_s:.0f}s"
    ) + _cost_status(summary)


def _cost_status(summary: RunSummary) -> str:
    """Spent so far, the projected total if the rest costs alike, and the budget."""
    text = f" cost=${summary.cost_usd:.4f}"
    projected = projected_total(summary.cost_usd, summary.ok, summary.todo)
    if projected is not None:
        text += f" proj=${projected:.4f}"
    if summary.max_cost is not None:
        text += f" max=${summary.max_cost:g}"
    return text


def count_hint(config: RunConfig, done: bytearray, redo_lapsed: bool = False) -> int | None:
    """Rows left to do, for the progress bar's total; None when it cannot be told cheaply."""
    total = count_rows(config.input)
    if total is None:
        return None
    skip = done.count(_DONE_OK)
    if not config.retry_errors:
        skip += done.count(_DONE_ERROR) + (0 if redo_lapsed else done.count(_DONE_LAPSED))
    return max(total - skip, 0)
