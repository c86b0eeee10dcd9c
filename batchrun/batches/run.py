"""``--via batches``: the same job through the Message Batches API, at half the price.

    summary = run(load_config(Path("jobs/estimate_costs.toml"), {"via": "batches"}))

The input, the row checks and the output are the online run's: rows are read and checked
the same way (a row the API would refuse is recorded at once, not after a day's wait), and
each result becomes the same output row, with ``via = "batches"``, its ``batch_id`` and the
batch price. Steps, each durable before the next (``batch_journal``):

1. reconcile: intents a crash left without a batch id are looked for among the API's batches
2. submit: rows not done and not in a running batch, split by count and size
   (``batch_plan``); intent journaled, then ``create``, then the id journaled. A create
   refused with 429 while this run's batches fill the organisation's queue waits for them
   (step 3) and is journaled and sent again (``_send``)
3. wait: poll every running batch, backing off while nothing changes
4. collect: an ended batch's results become output rows as they download, each journaled to
   the output as it is made (``batch_results``); then the batch is marked collected. What the
   rows need of the input was kept when the batch was built (``batch_sent``), so collecting
   reads the input again only for a batch an earlier run created

Ctrl-C while waiting leaves the batches running; re-running the same command collects them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Sized
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from batchrun.batches.deadline import BatchReserve, DeadlineWatch
from batchrun.batches.plan import REQUEST_HASH_CHARS, BatchItem, Chunk, batch_size, chunks
from batchrun.batches.planned import PlannedRows
from batchrun.batches.priming import (
    GroupCounts,
    Priming,
    shared_groups,
    warm_groups,
)
from batchrun.batches.results import processing_ms, result_row
from batchrun.batches.sent import SentRows
from batchrun.client.batch_endpoints import BatchesApi, BatchStatus, Upload, is_ambiguous
from batchrun.client.retry import is_fatal, send_with_retries
from batchrun.config.load import RunConfig
from batchrun.core.errors import ApiError, ConfigError, FatalRunError
from batchrun.core.timestamps import utc_now
from batchrun.core.wording import option, place, said
from batchrun.cost.models import thinking_room_warning
from batchrun.engine.admission import AdmissionClosed, Gate, SendCheck
from batchrun.engine.dedup import Dedup
from batchrun.engine.outcome import (
    VIA_BATCHES,
    RowSettings,
    Work,
    error_row,
    kept_texts,
    prepare,
)
from batchrun.formats.inputs import read_rows
from batchrun.live.frames import BatchView, Snapshot
from batchrun.remote.batch_mirror import BatchJournalMirror
from batchrun.rows.files import FileCache
from batchrun.rows.reader import check_input_file
from batchrun.runs.claim import Claim, check_credentials, claim_output
from batchrun.runs.compose import answer_lane, job_client
from batchrun.runs.finish import record_spend, write_output
from batchrun.runs.interrupt import run_interruptibly
from batchrun.runs.online import run_holding
from batchrun.runs.plan import RowCounter, count_hint, plan
from batchrun.runs.preflight import check_every_row_can_be_built
from batchrun.runs.resume import Resume, ResumeMismatchError, Sleep, take_over
from batchrun.runs.runtime import DEFAULT, ProgressView, Runtime
from batchrun.runs.summary import RunSummary
from batchrun.runs.twins import BatchCache, BatchTwins, RunningRows, twin_pass_notice
from batchrun.store.batch_journal import (
    BatchEntry,
    BatchJournal,
    IntentRows,
    batch_journal_path,
)
from batchrun.store.columns import INVALID_REQUEST
from batchrun.store.commit import remove_temporary, temporary_path
from batchrun.store.row_state import LAPSED_REASONS, RowState, state_of
from batchrun.store.sink import PriorState, Sink, remove_stale_temporaries

# A batch's created_at (server clock) may precede our intent's timestamp (local clock)
# by this much and still be taken for it when reconciling after a crash.
CLOCK_SKEW = timedelta(minutes=10)
# The wait between polls grows by a fifth while nothing changes (and the API's counts do not
# change until a batch ends: docs/api-facts.md §8.1), so a batch is seen ended at most about a
# fifth of its running time late; a few more polls early on than a steeper growth would make.
POLL_GROWTH = 1.2
POLL_CEILING_S = 300.0  # most batches end within an hour; a 5-minute poll is plenty then
MAX_ROUNDS = 3  # --resubmit-expired: new batches per run for rows that lapsed again
# A batch's SentRows on disk from its creation to its collection (``batch_sent``); the suffix
# of the spools of older versions is still cleared away at start.
SENT_SUFFIX = ".sent"
BODY_SUFFIX = ".body"  # a batch's create body, written as it is built, until it is sent
PLANNED_SUFFIX = ".planned"  # a round's rows as its first pass prepared them (batches.planned)
_OLD_SPOOL_SUFFIX = ".results"


async def run_batches_async(
    config: RunConfig,
    runtime: Runtime = DEFAULT,
) -> RunSummary:
    """Run the job through Message Batches to the end (or to Ctrl-C); see the module doc.

    ``runtime.sleep`` is the wait between retries of one API call (tests pass a no-op);
    polling waits ``config.batches.poll_interval`` and more, in real time, and wakes up at
    once on Ctrl-C.
    """
    return await run_batches_holding(config, None, runtime)


async def run_batches_holding(
    config: RunConfig,
    claim: Claim | None,
    runtime: Runtime = DEFAULT,
    *,
    only: Container[int] | None = None,
    watch: DeadlineWatch | None = None,
) -> RunSummary:
    """``run_batches_async`` under ``claim``, the output's lock (and lease) the caller holds
    already; None takes it. ``only`` restricts the run to those input indexes (a shard's
    rows, ``shards.run``): their answers are journaled, and the caller writes the final
    file from the journal (this run writes none). ``watch``: the batch lane of ``--via
    auto`` (``batches.auto``), which moves the rows online when the deadline asks; its
    caller finishes the job online and writes the final file (this run writes none)."""
    check_credentials(config.client, runtime.transport)
    check_input_file(config.input.path)
    check_every_row_can_be_built(config)
    if config.cost.max_cost is not None and watch is None:  # --via auto: ``BatchReserve``
        raise ConfigError(
            f"{option('max_cost')} stops admitting rows as they are answered, which a batch "
            "cannot do: price the job first with "
            f"{said('`batchrun estimate`', '`batchrun.estimate(config)`')} (it shows the batch "
            "price)"
        )
    with claim_output(config, claim) as held:
        if held.lock.after_kill:  # only a run killed midway leaves temporary files
            remove_stale_temporaries(
                config.output.path,
                (SENT_SUFFIX, BODY_SUFFIX, PLANNED_SUFFIX, _OLD_SPOOL_SUFFIX),
            )
        return await _run_claimed(config, held, runtime, only, watch)


async def _run_claimed(
    config: RunConfig,
    claim: Claim,
    runtime: Runtime,
    only: Container[int] | None = None,
    watch: DeadlineWatch | None = None,
) -> RunSummary:
    """``run_batches_async``, the output claimed (its lock held: ``claim``)."""
    journal = _open_journal(config)
    summary = RunSummary(input=config.input.path, output=config.output.path, via=VIA_BATCHES)
    output, prior, resume = take_over(config, claim, summary)
    sink = output.sink
    done, known_ids = resume.states, resume.ids
    counter = RowCounter()
    lapsed_online = False
    sleep = runtime.sleep
    async with job_client(config, runtime) as client:
        api = BatchesApi(client, max_retries=config.engine.max_retries, sleep=sleep)
        summary.todo = (
            len(only)
            if isinstance(only, Sized)
            else count_hint(config, done, config.batches.resubmit_expired)
        )
        twins = _batch_twins(config, journal, sink, prior, resume)
        job = _BatchJob(
            config,
            api,
            journal,
            sink,
            summary,
            done,
            counter,
            sleep,
            twins,
            output.lease,
            only,
            files=resume.files,
            watch=watch,
        )
        progress = runtime.progress(summary.todo, job.snapshot, quiet=config.run.quiet)
        job.progress = progress
        warning = thinking_room_warning(config.defaults, config.cost.prices)
        if warning is not None:  # before any batch is created
            progress.log(warning)
        started = time.perf_counter()
        fatal: FatalRunError | None = None
        try:
            summary.interrupted = await run_interruptibly(
                job.run(known_ids),
                stop_admitting=job.stop,
                grace=config.run.grace,
                notify=progress.log,
                stopping="no new batches; the batches created keep running on the API; "
                "finishing what is under way",
            )
        except FatalRunError as exc:
            fatal = exc  # raised once what is collected is written
        finally:
            summary.elapsed_s = time.perf_counter() - started
            if twins is not None:
                summary.deduplicated += twins.dedup.filled
                summary.dedup_saved_usd += twins.dedup.saved_usd
            if job.answers is not None:
                job.answers.report(summary)
            summary.batches_running = [
                e.batch_id or e.key for e in journal.open_entries() if e.open
            ]
            progress.close()
            await output.close()
        lapsed_online = (
            config.batches.finish_online
            and RowState.LAPSED in done
            and summary.interrupted is None
            and fatal is None
        )
    summary.total_rows = counter.rows
    summary.skipped = counter.skipped
    record_spend(config, sink, summary)  # before the final step may remove the journal
    if lapsed_online:
        return await finish_online(config, summary, claim, runtime, only)
    every_row_recorded = len(done) >= counter.rows and 0 not in done[: counter.rows]
    complete = (
        fatal is None
        and summary.interrupted is None
        and not summary.batches_running
        and every_row_recorded
    )
    lost = output.lease_lost(job.closed_by)
    if lost is not None:
        raise lost  # another run owns the output now: nothing of this run is written there
    # A shard's file is its driver's to write (``shards.run``); --via auto's too, unless
    # the run stops here (its online lane then never runs).
    stopped_here = summary.interrupted is not None or fatal is not None
    if only is None and (watch is None or stopped_here):
        write_output(config, output, summary, counter.rows, complete=complete)
    if fatal is not None:
        raise fatal
    return summary


def _batch_twins(
    config: RunConfig, journal: BatchJournal, sink: Sink, prior: PriorState, resume: Resume
) -> BatchTwins | None:
    """With --dedup: the answers earlier runs recorded, and the requests in batches still
    running, so that no request is submitted twice (``runs.twins``)."""
    if not config.engine.dedup:
        return None

    def running() -> Iterator[tuple[str, int]]:
        for entry in journal.open_entries():
            rows = journal.rows(entry)
            yield from zip(rows.hashes, rows.indexes, strict=True)

    return BatchTwins(
        Dedup(),
        RunningRows(running()),
        REQUEST_HASH_CHARS,
        sink=sink,
        prior=prior,
        accepted=resume.sources.accepted,
    )


def _open_journal(config: RunConfig) -> BatchJournal:
    """The batch journal; for a remote output, first brought in step with its copy on the
    store, and mirrored there after every step (an intent before its create)."""
    path = batch_journal_path(config.output.path)
    mirror = _journal_mirror(config)
    if mirror is not None:
        mirror.pull(path)
    journal = BatchJournal.load(path, mirror.push if mirror is not None else None)
    if config.resume.overwrite:
        running = [e.batch_id or e.key for e in journal.open_entries()]
        if running:
            raise ConfigError(
                f"{option('overwrite', True)} would forget {len(running)} batch(es) still "
                f"running for {config.output.shown} ({', '.join(running[:5])}): re-run without "
                f"{option('overwrite', True)} to "
                "collect them, or cancel them first with `batchrun batches cancel`"
            )
        journal.remove()
        if mirror is not None:
            mirror.remove()
        journal = BatchJournal(journal.path, journal.mirror)
    return journal


def _journal_mirror(config: RunConfig) -> BatchJournalMirror | None:
    if config.output.url is None:
        return None
    # Imported here: a local output has no use for the storage layer (pyarrow.fs).
    from batchrun.remote.objects import Storage

    return BatchJournalMirror(Storage(config.storage), config.output.url)


async def finish_online(
    config: RunConfig,
    summary: RunSummary,
    claim: Claim,
    runtime: Runtime,
    only: Container[int] | None = None,
    *,
    retry_errors: bool = False,
) -> RunSummary:
    """--finish-online (and ``--via auto``'s online lane): send the rows batches left
    expired or cancelled, and the rows not sent, as online requests; with ``retry_errors``
    the rows that came back errored too. ``summary`` (the batch run's) becomes the job's."""
    resume = replace(
        config.resume, overwrite=False, retry_errors=config.resume.retry_errors or retry_errors
    )
    online = await run_holding(  # under this run's lock: no other run may come in between
        replace(config, via="online", resume=resume),
        claim,
        runtime,
        only=only,
        redo_lapsed=True,
    )
    # The rows batches left expired or cancelled are answered again online: each row is
    # counted once, as it ended. The online pass skips the rows the batches answered, done by
    # this run and not earlier. With ``retry_errors`` every error row is sent again too.
    redone = {*LAPSED_REASONS, *(summary.error_types if retry_errors else ())}
    for kind in redone:
        summary.uncount_error(kind, summary.error_types.get(kind, 0))
    summary.skipped = max(0, online.skipped - summary.finished)
    summary.add(online)
    summary.final, summary.interrupted = online.final, online.interrupted
    summary.max_cost, summary.budget_stop = online.max_cost, online.budget_stop
    summary.budget_refused_usd = online.budget_refused_usd
    summary.total_rows = online.total_rows
    summary.job_cost_usd = online.job_cost_usd  # the job's, the online pass's spend included
    return summary


class _BatchJob:
    """One batch run's steps over shared state: journal, output, summary, row flags."""

    def __init__(
        self,
        config: RunConfig,
        api: BatchesApi,
        journal: BatchJournal,
        sink: Sink,
        summary: RunSummary,
        done: bytearray,
        counter: RowCounter,
        sleep: Sleep,
        twins: BatchTwins | None = None,
        send_check: SendCheck | None = None,
        only: Container[int] | None = None,
        *,
        files: FileCache | None = None,
        watch: DeadlineWatch | None = None,
    ) -> None:
        self.config = config
        self.watch = watch  # --via auto: when to stop, cancel and leave the rest online
        # Rows into requests (their files read through the run's ``files``: recorded for
        # its resume), answers into output rows.
        self.rows = RowSettings.of(config, files)
        # An object-store output's lease, asked before each batch is created: a run whose
        # lease another run took over creates none (``engine.admission``, as online).
        self._gate = Gate(send_check, self._close) if send_check is not None else None
        self.closed_by: str | None = None
        self.twins = twins  # --dedup: identical requests go in one batch once
        lane = answer_lane(config, self.rows, self.log)  # --answer-cache: earlier jobs' answers
        self.answers = BatchCache(lane) if lane is not None else None
        self.api = api
        self.journal = journal
        self.sink = sink
        self.summary = summary
        self.done = done  # a RowState per row, kept current as rows are recorded
        self.counter = counter
        self.sleep = sleep
        self.progress: ProgressView | None = None
        self.statuses: dict[str, BatchStatus] = {}
        self.only = only  # a shard's rows (``run_batches_holding``): no others are sent
        self._stopping = asyncio.Event()
        # Rows of each running batch recorded so far: the display counts a batch's rows the
        # API reports finished, less these, so that no row is counted twice while collecting.
        self._recorded_from: Counter[str] = Counter()
        self._lapsed_now: dict[int, str] = {}  # rows this run recorded as expired/cancelled
        # The SentRows of each batch this run created, spilled beside the output until the
        # batch is collected (``batch_sent``): by intent key.
        self._sent_files: dict[str, Path] = {}
        self._halted = False  # set while ``submit`` waits for its builder thread to stop
        self._warned_late = False  # --via auto: said once that cancels end past the deadline
        self._budget_note: str | None = None  # --via auto: --max-cost held rows back
        self._priming: Priming | None = None  # the round's cache priming (--cache auto)
        self._said_queue_full = False  # said once that creates wait for the queue to drain

    def stop(self) -> None:
        """Ctrl-C: no new batches, no more waiting; running batches keep running."""
        self._stopping.set()

    def _close(self, reason: str) -> None:
        """The lease is lost: no new batches; those created keep running on the API."""
        self.closed_by = reason
        self.log(f"batchrun: {reason}; creating no more batches")
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def log(self, message: str) -> None:
        if self.progress is not None:
            self.progress.log(message)

    async def run(self, known_ids: list[str]) -> None:
        try:
            await self._rounds(known_ids)
        finally:
            if self.twins is not None:
                self.twins.forget()
            # Batches left running (a stop): the next run reads their rows from the input.
            for spilled in self._sent_files.values():
                remove_temporary(spilled)
            self._sent_files.clear()

    async def _rounds(self, known_ids: list[str]) -> None:
        await self.reconcile()
        redo_lapsed = self.config.batches.resubmit_expired
        for round_number in range(MAX_ROUNDS):
            pending = self.journal.pending_flags(len(self.done))
            works = partial(
                self._plan, known_ids if round_number == 0 else [], redo_lapsed, pending
            )
            counter = self.counter if round_number == 0 else RowCounter()
            planned = self._planned_rows()
            try:
                await self._read_ahead(round_number, works, counter, planned)
                if planned is None:
                    await self.submit(self._within_budget(works(counter)))
                else:
                    # The rows past those kept, if any: counted by the first pass already.
                    await self.submit(planned.works(partial(works, RowCounter())))
            finally:
                if planned is not None:
                    planned.remove()
            if self._budget_note is not None:
                self.log(self._budget_note)
            await self.wait_and_collect()
            if self.twins is not None and not self.stopping:
                left = self.twins.fill(self.config, self._record)
                if left:
                    self.log(
                        f"batchrun: {left:,} duplicate row(s) not filled: the row with the same "
                        "request got no answer; a re-run submits them"
                    )
            if self.stopping or not redo_lapsed or RowState.LAPSED not in self.done:
                return
            if round_number + 1 < MAX_ROUNDS:
                self.log("batchrun: resubmitting the rows that expired or were cancelled")
        self.log(f"batchrun: rows still lapsed after {MAX_ROUNDS} rounds; re-run to try again")

    def _plan(
        self,
        known_ids: list[str],
        redo_lapsed: bool,
        pending: bytearray,
        counter: RowCounter,
        past: int = -1,
    ) -> Iterator[Work]:
        """The rows of a round to send (``runs.plan.plan``), read lazily; those past index
        ``past`` alone (the rows a round's first pass did not keep: ``batches.planned``)."""
        return plan(
            self.config,
            self.done,
            known_ids,
            counter,
            self.only,
            redo_lapsed=redo_lapsed,
            pending=pending,
            files=self.rows.files,
            past=past,
        )

    def _primes(self) -> bool:
        """Whether a round primes the prompt cache of the groups it sends more than once
        (``batches.priming``): not in the batch lane of ``--via auto``, whose deadline did
        not plan for a warming batch's turnaround."""
        return self.config.defaults.cache is not None and self.watch is None

    def _planned_rows(self) -> PlannedRows | None:
        """Where a round's first pass keeps the rows it prepares, for its batches to be built
        from (``batches.planned``); None when no such pass runs, or when building needs more
        of a row than is kept: the answer cache checks each whole body, and ``--via auto``'s
        budget prices it. The round removes the file once its batches are built."""
        if self.twins is None and not self._primes():
            return None
        if self.answers is not None or (
            self.watch is not None and self.config.cost.max_cost is not None
        ):
            return None
        return PlannedRows(temporary_path(self.config.output.path, PLANNED_SUFFIX), self.rows)

    async def _read_ahead(
        self,
        round_number: int,
        works: Callable[[RowCounter], Iterator[Work]],
        counter: RowCounter,
        planned: PlannedRows | None,
    ) -> None:
        """Before any batch of the round is built, its rows are read once more: twins are
        found, so that each request is submitted once wherever its twins fall
        (``runs.twins.BatchTwins``), and the rows of each prefix group counted, to prime the
        groups the round sends more than once (``_primes``).

        The rows as this pass prepares them are kept in ``planned`` when given, and the
        batches built from them; this pass then counts the round's rows (``counter``, the
        display's), as the builder would."""
        counts = GroupCounts() if self._primes() else None
        if self.twins is None and counts is None:
            return
        again = works(counter if planned is not None else RowCounter())
        if planned is not None:
            again = planned.keeping(again)
        if counts is not None:
            again = counts.counting(again)
        if self.twins is not None:
            notice = twin_pass_notice(self.summary.todo) if round_number == 0 else None
            if notice is not None:
                self.log(notice)
            self.twins.find(again)
        else:
            for _ in again:
                pass
        if counts is not None:
            warm = warm_groups(self.journal, utc_now())
            self._priming = Priming(shared_groups(counts.counts), warm)
            for entry in self.journal.open_entries():  # a warming batch a stop left
                if entry.warms and entry.batch_id is not None and not self.stopping:
                    await self._warmed(entry)

    # -- 1. reconcile ---------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Find the batch of every intent a crash left without an id, or abandon the intent.

        The API cannot tag a batch, so a batch is taken for an intent when it was created
        after the intent (less clock skew), holds as many requests, and belongs to no other
        intent of this job. Two such batches make it impossible to tell: stop and say so.
        """
        unresolved = [e for e in self.journal.open_entries() if e.batch_id is None]
        if not unresolved:
            return
        since = min(e.at for e in unresolved) - CLOCK_SKEW
        listed = await self.api.created_since(since)
        known = self.journal.known_ids()
        for entry in unresolved:
            found = [
                b
                for b in listed
                if b.id not in known
                and b.total == entry.count
                and b.created_at >= entry.at - CLOCK_SKEW
            ]
            if len(found) > 1:
                raise FatalRunError(
                    f"cannot tell which of the batches {', '.join(b.id for b in found)} holds "
                    f"the {entry.count} rows batchrun was submitting when it stopped (intent "
                    f"{entry.key} in {self.journal.path}); check them with `batchrun batches list`"
                )
            if found:
                self.journal.created(entry, found[0].id, reconciled=True)
                known.add(found[0].id)
                self.log(
                    f"batchrun: batch {found[0].id} was created before the last run stopped; "
                    f"collecting it instead of submitting its {entry.count:,} rows again"
                )
            else:
                self.journal.abandoned(entry)
                self.log(
                    f"batchrun: batch {entry.key} was never created; its {entry.count:,} rows "
                    "will be submitted"
                )

    # -- 2. submit ------------------------------------------------------------------------

    async def submit(self, works: Iterable[Work]) -> None:
        """Record invalid rows at once; send the rest in batches within the size limits."""
        config = self.config
        bodies: list[Path] = []  # every body file begun; each removed once sent, or here

        def body_path() -> Path:
            bodies.append(temporary_path(config.output.path, BODY_SUFFIX))
            return bodies[-1]

        built = chunks(
            self._sendable(works),
            batch_size(self._rows_waiting() or None, config.batches.max_requests),
            config.batches.max_bytes,
            self.rows.keep_columns,
            body_path,
        )
        # Each batch is built in a worker thread while the one before it uploads (building is
        # work for the processor, an upload mostly waits on the network); journaling and
        # creating stay on this thread, one batch after the other.
        building = asyncio.ensure_future(asyncio.to_thread(next, built, None))
        try:
            # Shielded: a cancel must not end the task while its thread goes on building.
            while (chunk := await asyncio.shield(building)) is not None:
                building = asyncio.ensure_future(asyncio.to_thread(next, built, None))
                try:
                    if not await self._send(chunk, building):
                        return
                finally:
                    chunk.body.remove()
        finally:
            await self._stop_building(building)
            built.close()
            for path in bodies:
                remove_temporary(path)

    async def _stop_building(self, building: asyncio.Future[Chunk | None]) -> None:
        """Let the builder thread end at its next row and wait for it: a thread cannot be
        cancelled, and no row may be recorded once ``submit`` is over. A cancel that comes
        meanwhile is passed on once the thread is done."""
        self._halted = True
        cancelled = False
        try:
            while not building.done():
                try:
                    await asyncio.wait({building})
                except asyncio.CancelledError:
                    cancelled = True
        finally:
            self._halted = False
        if not building.cancelled():
            building.exception()  # retrieved: what the thread built then is never sent
        if cancelled:
            raise asyncio.CancelledError

    async def _send(self, chunk: Chunk, building: asyncio.Future[Chunk | None]) -> bool:
        """Journal the chunk's intent and create its batch; False when no more may be.

        While the organisation's batch queue is full (``_QueueFull``), the batches of this
        run are waited for and collected, then the chunk is journaled and created again.
        ``building`` (the next chunk, in the builder thread) is let finish first: the thread
        records rows too, and collecting must not record beside it."""
        rows: IntentRows | None = IntentRows(
            array("q", chunk.indexes), chunk.custom_ids, chunk.hashes
        )
        content_hash = chunk.content_hash()
        refused: BatchEntry | None = None  # the intent the queue refused last (abandoned)
        sent_file: Path | None = None
        try:
            while True:
                if self.stopping or self._deadline_near():
                    return False
                if self._gate is not None:
                    try:
                        await self._gate.admit()
                    except AdmissionClosed:
                        return False  # its rows stay unsent, for the run that holds the output
                # Spilled before the intent: the batch may exist from the create on.
                if sent_file is None:
                    sent_file = temporary_path(self.config.output.path, SENT_SUFFIX)
                    chunk.sent.save(sent_file)
                if rows is None:
                    assert refused is not None
                    rows = self.journal.rows(refused)  # the same rows, journaled again
                entry = self.journal.intend(
                    datetime.now(timezone.utc), chunk.size, content_hash, rows
                )
                rows = None
                chunk.forget_rows()  # journaled and spilled: while it uploads, the next is built
                try:
                    created = await self._create(entry, Upload(chunk.size, chunk.body.slices))
                    break
                except _QueueFull as full:
                    refused = entry
                    self._queue_full_notice(full.queued)
                    await asyncio.wait({building})  # a cancel of this task leaves it running
                    # Until the first of them ends: its room is taken at once, not once the
                    # slowest has ended (as a round's wait: Ctrl-C, deadline, lease).
                    await self.wait_and_collect(until_one_ends=True)
            self._sent_files[created.key] = sent_file
            sent_file = None
        finally:
            if sent_file is not None:
                remove_temporary(sent_file)
        if chunk.warms:
            # Collecting the warming batch records rows: the builder thread, which records
            # rows too (invalid ones, twins, cached answers), is let finish its chunk first.
            await asyncio.wait({building})  # a cancel of this task leaves it running
            await self._warm(created, chunk.warms)
        return True

    def _queue_full_notice(self, queued: int) -> None:
        if not self._said_queue_full:
            self._said_queue_full = True
            self.log(
                "batchrun: the organisation's batch queue is full "
                f"({queued:,} requests of this run queued): the next batches are created as "
                "these end"
            )

    async def _warm(self, entry: BatchEntry, groups: list[str]) -> None:
        """A warming batch (``batches.priming``): journaled as one, waited for and collected
        before the next batch is created, so its cache entries are written first."""
        assert entry.batch_id is not None
        self.journal.warmed(entry, groups)
        self.summary.cache_groups_warmed += len(groups)
        self.log(
            f"batchrun: warming the prompt cache of {len(groups)} prefix group(s) with batch "
            f"{entry.batch_id} ({entry.count:,} row(s)) before the batches that read it"
        )
        await self._warmed(entry)

    async def _warmed(self, entry: BatchEntry) -> None:
        """Wait for a warming batch to end, and collect it: its groups' entries are written."""
        await self.wait_and_collect(only={entry.key})

    def _sendable(self, works: Iterable[Work]) -> Iterator[BatchItem]:
        """The rows to send, as batch items; invalid rows and twins recorded on the way.
        Runs in ``submit``'s builder thread."""
        for work in works:
            if self.stopping or self._halted:
                return
            if work.body is None or work.request_hash is None:
                problem = str(work.problem)
                self._record(
                    work.row.index,
                    error_row(work, self.rows, INVALID_REQUEST, problem, None, 0, VIA_BATCHES),
                )
                self.summary.invalid += 1
                continue
            if self.twins is not None:
                twin = self.twins.answer_now(work, self.rows)
                if twin is not None:
                    self._record(work.row.index, twin)  # answered before: nothing to send
                    continue
            if self.answers is not None:
                cached = self.answers.fill(work, self.rows)
                if cached is not None:
                    self._record(work.row.index, cached)  # an earlier job's: nothing to send
                    continue
            if self.twins is not None and self.twins.hold(work):
                continue  # its request is in a batch already: filled once that is collected
            priming = self._priming
            primed = priming.primed(work) if priming is not None else None
            yield BatchItem(
                work.row.index,
                work.row.id,
                work.request_hash,
                work.body,
                kept_texts(work, self.rows) if self.rows.keep_columns else [],
                work.content if primed is None else primed,
                work.dropped,
                work.prefix_key if priming is not None and priming.warms(work) else None,
            )

    async def _create(self, entry: BatchEntry, content: Upload) -> BatchEntry:
        """Create the intent's batch, never twice, retried as any request is (``client.retry``);
        return the intent the batch is journaled under.

        After a failure that may hide a created batch (``is_ambiguous``), the next attempt
        first looks for it (``reconcile``); found, it is taken, otherwise a fresh intent is
        journaled before sending again.

        A 429 while batches of this run are running most likely means the organisation's
        batch queue is full (docs/api-facts.md §8.5; how the API words it is not documented):
        retries would only wait out their backoff while those batches take up to an hour, so
        the intent is abandoned (never created) and ``_QueueFull`` raised for ``_send``.
        """
        current = entry
        look_first = False

        async def attempt() -> BatchStatus | None:
            nonlocal current, look_first
            if look_first:
                look_first = False
                await self.reconcile()
                if current.batch_id is not None:
                    return None  # the failed attempt had created it after all
                current = self.journal.intend(
                    datetime.now(timezone.utc),
                    current.size,
                    current.content_hash,
                    self.journal.rows(current),
                )
            try:
                return await self.api.create(content)
            except ApiError as exc:
                queued = self._queued_here()
                if exc.status == 429 and not is_fatal(exc) and queued:
                    raise _QueueFull(queued) from exc
                look_first = is_ambiguous(exc)
                raise

        def count_retry(exc: BaseException, wait: float) -> None:
            self.summary.retries += 1

        try:
            status, _ = await send_with_retries(
                attempt,
                max_retries=self.config.engine.max_retries,
                sleep=self.sleep,
                on_retry=count_retry,
            )
        except _QueueFull:
            self.journal.abandoned(current)  # refused, so never created: its rows are sent later
            raise
        except ApiError as exc:
            if not is_ambiguous(exc):
                self.journal.abandoned(current)  # certainly not created: free its rows
            if exc.status == 429 and not is_fatal(exc):
                raise FatalRunError(
                    f"could not create batch {current.key} ({current.count:,} rows): {exc}. "
                    "The organisation's batch queue is most likely full (each tier allows "
                    "200,000 to 500,000 requests queued over all its batches), with batches "
                    "of other jobs: this run had none of its own running to wait for. "
                    "Re-run once some have ended; re-running resumes"
                ) from exc
            raise FatalRunError(
                f"could not create batch {current.key} ({current.count:,} rows): {exc}. "
                "Re-running resumes; batchrun first checks whether the batch exists"
            ) from exc
        if status is None:
            return current
        self.journal.created(current, status.id)
        self.statuses[current.key] = status
        self.summary.batches_created += 1
        self.log(f"batchrun: created batch {status.id} ({current.count:,} rows)")
        return current

    def _queued_here(self) -> int:
        """Requests in this job's batches that are running (created, not yet collected)."""
        return sum(e.count for e in self.journal.open_entries() if e.batch_id is not None)

    # -- 3. wait --------------------------------------------------------------------------

    async def wait_and_collect(
        self, only: Container[str] | None = None, *, until_one_ends: bool = False
    ) -> None:
        """Poll the running batches, backing off while nothing changes, and collect each as it
        ends, until none runs (or a stop); ``only``: the batches of those intent keys alone
        (a warming batch, ``batches.priming``); ``until_one_ends``: only until a poll finds one
        or more ended (collected, or gone from the API), for the room it leaves in a full queue."""
        interval = self.config.batches.poll_interval
        while not self.stopping:
            running = [
                e
                for e in self.journal.open_entries()
                if e.batch_id is not None and (only is None or e.key in only)
            ]
            if not running:
                return
            if self._deadline_near():
                await self._cancel_for_deadline(running)
            moved = ended = False
            for entry in running:
                assert entry.batch_id is not None
                try:
                    status = await self.api.retrieve(entry.batch_id)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    self._gone(entry)
                    ended = True
                    continue
                before = self.statuses.get(entry.key)
                moved = moved or before is None or before.counts != status.counts
                self.statuses[entry.key] = status
                if status.ended:
                    await self.collect(entry, status)
                    moved = ended = True
                if self.stopping:
                    return
            if until_one_ends and ended:
                return
            if not any(e.open for e in running):
                continue
            first = self.config.batches.poll_interval
            interval = first if moved else min(interval * POLL_GROWTH, POLL_CEILING_S)
            await self._pause(self._until_deadline_step(interval))

    def _gone(self, entry: BatchEntry) -> None:
        """The API no longer knows the batch (deleted by hand, or in another workspace).

        Its answers cannot be had; its rows are freed, so the next run submits them again.
        """
        self.journal.abandoned(entry)
        self.log(
            f"batchrun: batch {entry.batch_id} is not found on the API (deleted?); its "
            f"{entry.count:,} rows are sent again by the next run"
        )

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once on Ctrl-C."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # -- --via auto: the deadline (``batches.deadline``, ``batches.auto``) ------------------

    def _rows_waiting(self) -> int:
        """Rows of this lane without an answer yet: in running batches, or not submitted."""
        todo = self.summary.todo
        if todo is None:
            todo = self.watch.rows if self.watch is not None else 0
        return max(todo - self.summary.finished, 0)

    def _deadline_near(self) -> bool:
        """Whether the rows must leave this lane now (always, once they began to)."""
        watch = self.watch
        if watch is None:
            return False
        if watch.fell_back_at is None and watch.due(self._rows_waiting()):
            watch.fall_back()
        return watch.fell_back_at is not None

    def _until_deadline_step(self, interval: float) -> float:
        """The poll's wait, cut short at the fallback moment (not after it: a cancelled
        batch is polled at the first interval until it ends)."""
        watch = self.watch
        if watch is None:
            return interval
        if watch.fell_back_at is not None:
            if not self._warned_late and watch.past_online_start(self._rows_waiting()):
                self._warned_late = True
                watch.late_cancels = sum(1 for e in self.journal.open_entries() if e.open)
                self.log(
                    f"batchrun: {watch.late_cancels:,} cancelled batch(es) have not ended yet; "
                    "waiting for them, although the deadline may be missed: sending their rows "
                    "online now could pay twice for the ones they still answer"
                )
            return min(interval, self.config.batches.poll_interval)
        return min(interval, max(watch.seconds_until(self._rows_waiting()), 0.01))

    def _within_budget(self, works: Iterable[Work]) -> Iterable[Work]:
        """--via auto with --max-cost: the rows whose worst cases at the batch price fit what
        the budget leaves (``BatchReserve``); the rest are left to the online lane."""
        max_cost = self.config.cost.max_cost
        if self.watch is None or max_cost is None:
            yield from works
            return
        room = Decimal(repr(max_cost)) - Decimal(repr(self.summary.job_cost_before or 0.0))
        reserve = BatchReserve(max(room, Decimal(0)), self.config.cost.prices)
        for work in works:
            if work.body is not None and not reserve.take(work.body):
                # Told once the builder thread is done (``_rounds``), from the event loop.
                self._budget_note = (
                    f"batchrun: {option('max_cost')} leaves no room for more rows in batches "
                    f"(${reserve.reserved:.4f} reserved at their worst case at the batch "
                    "price); the rest go online, admitted within the budget as they are "
                    "answered"
                )
                return
            yield work

    async def _cancel_for_deadline(self, running: list[BatchEntry]) -> None:
        """Cancel every running batch this lane has not cancelled yet: what they finished is
        collected once they end (paid once), the rest goes online."""
        assert self.watch is not None
        for entry in running:
            batch_id = entry.batch_id
            if batch_id is None or batch_id in self.watch.cancelled:
                continue
            status = self.statuses.get(entry.key)
            if status is not None and status.ended:
                continue
            try:
                status = await self.api.cancel(batch_id)
            except ApiError as exc:
                if exc.status not in (400, 404):
                    raise
                continue  # ended meanwhile (400), or gone (404): the poll tells which
            self.watch.cancel_asked(batch_id)
            self.statuses[entry.key] = status
            self.log(
                f"batchrun: cancelled batch {batch_id} ({entry.count:,} rows) to meet the "
                "deadline: the rows it finished are collected, the others are sent online"
            )

    # -- 4. collect -----------------------------------------------------------------------

    async def collect(self, entry: BatchEntry, status: BatchStatus) -> None:
        """Write the ended batch's results as output rows as they download, then mark it
        collected.

        Each result line becomes its output row at once, in the order the API sends them;
        a download cut off midway is retried, and the rows already recorded from it are not
        recorded twice.
        """
        batch_id = entry.batch_id
        assert batch_id is not None
        rows = self.journal.rows(entry)
        sent = self._sent_rows(entry, rows)
        positions = rows.positions()
        indexes = rows.indexes
        recorded = bytearray(len(indexes))  # 1 once the row at that position is recorded
        took = processing_ms(status.created_at, status.ended_at)
        unknown = 0
        if self.watch is not None:
            self.watch.batch_ended(entry.count, status)  # for the next run's plan

        async def take_results() -> None:
            nonlocal unknown
            unknown = 0
            async for record in self.api.results(batch_id):
                position = positions.get(str(record.get("custom_id")))
                if position is None or sent.ids[position] is None:
                    unknown += 1
                    continue
                if recorded[position]:
                    continue  # sent again by a download retried after a break
                recorded[position] = 1
                index = indexes[position]
                if index < len(self.done) and self.done[index] == RowState.OK:
                    continue  # recorded by a run that stopped while collecting this batch
                work = sent.work(position, index)
                row = result_row(work, self.rows, record, batch_id, took)
                self._record(index, row, from_batch=entry.key)
                if work.dropped:
                    self.summary.dropped.update(work.dropped)
                if self.answers is not None:
                    await self.answers.keep(row)  # paid for by this run: for later jobs

        # Held and written many rows at a time: a kill loses none of them, since the batch
        # is recorded as collected only after they are synced (``Sink.holding``).
        with self.sink.holding():
            await send_with_retries(
                take_results, max_retries=self.config.engine.max_retries, sleep=self.sleep
            )
        self.sink.sync()
        self.journal.collected(entry)
        spilled = self._sent_files.pop(entry.key, None)
        if spilled is not None:
            remove_temporary(spilled)
        self.summary.batches_collected += 1
        found = recorded.count(1)
        missing = sum(
            1
            for position, index in enumerate(indexes)
            if not recorded[position]
            and not (index < len(self.done) and self.done[index] == RowState.OK)
        )
        if unknown or missing:
            self.log(
                f"batchrun: batch {batch_id}: {missing:,} row(s) had no result and "
                f"{unknown:,} result(s) matched no row; a re-run submits the missing rows"
            )
        self.log(
            f"batchrun: collected batch {batch_id}: {found:,} results "
            + _counts_text(status.counts)
        )

    def _sent_rows(self, entry: BatchEntry, rows: IntentRows) -> SentRows:
        """What the batch's output rows need of its rows: kept since this run built the
        batch, or else read again from the input, each row's request checked against the
        hash its intent recorded (an input changed since would not match its answers)."""
        spilled = self._sent_files.get(entry.key)
        if spilled is not None:
            return SentRows.load(spilled)
        sent = SentRows.blank(len(rows.indexes), self.rows.keep_columns)
        where = {index: k for k, index in enumerate(rows.indexes)}
        # The first row past the batch is read (not skipped) only to end the pass there.
        rows_read = read_rows(
            self.config.input.path,
            shape=self.config.input.shape,
            skip=lambda i: i <= entry.last and i not in where,
        )
        for row in rows_read:
            if row.index > entry.last:
                break
            position = where[row.index]
            work = prepare(row, self.rows)
            request_hash = work.request_hash or ""
            if request_hash[:REQUEST_HASH_CHARS] != rows.hashes[position]:
                raise ResumeMismatchError(
                    f"row {row.id} ({place(str(self.config.input.path), row.line)}) changed "
                    f"after batch {entry.batch_id} was submitted: its answer would not match "
                    f"it. Restore the input, or start afresh with {option('overwrite', True)}"
                )
            if self.answers is not None:
                self.answers.note(work)  # a request not to be kept is known by its build
            model = (work.body or {}).get("model")
            sent.put(
                position, row.id, request_hash, model, kept_texts(work, self.rows), work.dropped
            )
        return sent

    def _record(self, index: int, row: dict[str, Any], *, from_batch: str | None = None) -> None:
        self.sink.submit(index, row)
        if self.twins is not None:
            self.twins.collected(index, row)  # kept if twins wait for it
        if from_batch is not None:
            self._recorded_from[from_batch] += 1
        earlier = self._lapsed_now.pop(index, None)
        if earlier is not None:  # resubmitted in this run: count the row once, as it is now
            self.summary.uncount_error(earlier)
        self.summary.count(row)
        if row["error_type"] in LAPSED_REASONS:
            self._lapsed_now[index] = row["error_type"]
        if index >= len(self.done):
            self.done.extend(bytes(index + 1 - len(self.done)))
        # Recorded by this run: an invalid row too is done with (ERROR), not left NOTHING.
        self.done[index] = state_of(row["status"], row["error_type"]) or RowState.ERROR
        self.counter.rows = max(self.counter.rows, index + 1)

    # -- display --------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The counts the display shows: each row once, whether recorded already or only
        reported finished by its running batch (``request_counts``)."""
        running = []
        reported = 0
        for key, status in self.statuses.items():
            if not self.journal.entries[key].open:
                continue
            view = BatchView(status.id, status.processing_status, dict(status.counts))
            running.append(view)
            reported += max(0, view.finished - self._recorded_from[key])
        return self.summary.snapshot(
            reported=reported, batches=running, batches_collected=self.summary.batches_collected
        )


class _QueueFull(Exception):
    """A create refused with 429 while this run's own batches fill the queue: they are
    waited for, not the retries' backoff (``_BatchJob._create``)."""

    def __init__(self, queued: int) -> None:
        super().__init__(f"the batch queue is full ({queued:,} requests of this run queued)")
        self.queued = queued


def _counts_text(counts: dict[str, int]) -> str:
    return "(" + ", ".join(f"{n:,} {name}" for name, n in counts.items() if n) + ")"
