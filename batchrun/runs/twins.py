"""Duplicates of a run's rows (``engine.dedup``): the twins an online run finds before
sending, the answers earlier runs recorded, and the twins a Message Batches run holds back
until their original's batch is collected.

Online (``find_twins``): before anything is sent, the rows the run will send are read once
more and each request's digest taken, with the digests of the answers earlier runs of the
output recorded (the journal's and the final file's that this run counts as done), so that
the engine knows which rows have a twin and how many of each group are still to come
(``engine.twin_plan``). The earlier answers the groups hold are then read from the journal
and the final file (``load_answered``): a row whose request was answered before is filled
from that answer instead of being sent, however long ago it was answered.

Message Batches (``BatchTwins``): the same pass, each round before its batches are built, and
the same exact keeping of answers by group. A row whose request is already in a batch (this
run's, whichever batch, or a batch an earlier run left running) is not submitted again. It
waits, and once its original's batch is collected it is filled from that answer
(``duplicate_of``, cost 0). A twin whose original failed or lapsed is left unrecorded, so the
next run submits it.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.config.load import RunConfig
from batchrun.core.wording import option
from batchrun.engine.answer_cache import AnswerLane
from batchrun.engine.dedup import KEPT_FOR_TWINS, UNKNOWN, Dedup, Member, twin_row
from batchrun.engine.outcome import VIA_BATCHES, RowSettings, Work, base_row, prepare
from batchrun.engine.samples import plan_index, sample_requests
from batchrun.engine.tally import RowTally
from batchrun.engine.twin_plan import (
    CHUNK_ENTRIES,
    DIGEST_BYTES,
    IN_FINAL,
    IN_JOURNAL,
    TwinFinder,
    TwinPlan,
    digest_of,
)
from batchrun.formats.inputs import read_rows
from batchrun.store.arrow_values import int64_array, int64_scalar
from batchrun.store.columns import STATUS_OK
from batchrun.store.journal import INDEX, read_records
from batchrun.store.provenance import SOURCE_COLUMNS, effective_sources
from batchrun.store.scratch import Scratch
from batchrun.store.sink import PriorState, Sink, output_batches

_COLUMNS = KEPT_FOR_TWINS  # with the status and the request hash
Accepted = Callable[[str | None], bool]
# The pass that finds twins reads every row to send before the first is sent: from this many
# rows (or an input whose rows cannot be counted cheaply) the user is told why nothing is sent
# yet.
TELL_TWIN_PASS_ROWS = 100_000


def twin_pass_notice(todo: int | None) -> str | None:
    """What the user is told before the twin-finding pass reads ``todo`` rows to send (None:
    an input whose rows cannot be counted cheaply); None for a job too small to notice it."""
    if todo is not None and todo < TELL_TWIN_PASS_ROWS:
        return None
    return (
        "batchrun: finding identical requests among the rows to send, before sending any "
        f"({option('dedup', False)} skips this)"
    )


def find_twins(
    works: Iterable[Work],
    sink: Sink,
    prior: PriorState,
    accepted: Accepted,
    scratch: Scratch,
    samples: int = 1,
) -> TwinPlan:
    """Which of the rows this run sends (``works``: the run's plan, read once more) have a
    twin among them, or an answer an earlier run recorded whose source this run counts as
    done (``accepted``: ``provenance.SourceRule.accepted``): a row asked again, or its twin,
    is never filled from the answer it replaces. With ``samples`` K (``--samples``) each row
    is its K requests, keyed as the engine sends them (``engine.samples``): the i-th samples
    of identical rows are twins, a row's own samples never are, and an earlier run's answer
    (one row's vote) fills no sample."""
    finder = TwinFinder(scratch)
    # The rows to send first: while they are few, their digests pick out the only earlier
    # answers that can fill one (a group with no row to send is nobody's twin), so a resume
    # of a million answered rows does not sort a million entries to send a thousand.
    sending: bytearray | None = bytearray()
    for work in works:
        for request in sample_requests(work, samples):
            if request.request_hash is not None:
                finder.to_send(plan_index(request, samples), request.request_hash)
                if sending is not None:
                    sending += digest_of(request.request_hash) or b""
                    if len(sending) > CHUNK_ENTRIES * DIGEST_BYTES:
                        sending = None  # many: every earlier answer goes in, as before
    # Each row's newest record: digests straight from the journal's index where it has them.
    among = bytes(sending) if sending is not None else None
    indexes, digests, others = prior.journal.answered_digests(accepted, among)
    finder.answered_digests(indexes, digests, in_final=False)
    for index, request_hash in others:
        finder.answered(index, request_hash, in_final=False)
    if prior.final_rows:  # 0 for a partial output, whose rows are all in the journal
        position = 0
        columns = ("request_hash", *SOURCE_COLUMNS)
        for batch in output_batches(sink.output, sink.schema, columns):
            rows = zip(
                batch.column("request_hash").to_pylist(),
                batch.column("status").to_pylist(),
                effective_sources(batch).to_pylist(),
                strict=True,
            )
            for k, (request_hash, status, source) in enumerate(rows):
                if status == STATUS_OK and request_hash and accepted(source):
                    finder.answered(position + k, request_hash, in_final=True)
            position += batch.num_rows
    return finder.finish()


def load_answered(dedup: Dedup, plan: TwinPlan, sink: Sink, prior: PriorState) -> None:
    """Give ``dedup`` the earlier answers ``plan``'s groups hold, each by its group: read from
    the journal (a row's newest record, as a resume counts it) and the final file."""
    schema = pa.schema([sink.schema.field(name) for name in _COLUMNS])
    for needed in plan.answered():
        kinds = needed.column("kind")
        in_journal = needed.filter(pc.equal(kinds, int64_scalar(IN_JOURNAL)))
        if in_journal.num_rows:
            for batch in read_records(sink.journal, schema):
                _load(dedup, batch, batch.column(INDEX), in_journal, prior)
        in_final = needed.filter(pc.equal(kinds, int64_scalar(IN_FINAL)))
        if in_final.num_rows:
            position = 0
            for batch in output_batches(sink.output, sink.schema, _COLUMNS):
                rows = array("q", range(position, position + batch.num_rows))
                _load(dedup, batch, int64_array(rows), in_final, None)
                position += batch.num_rows


def _load(
    dedup: Dedup,
    batch: pa.RecordBatch,
    indexes: pa.Array,
    needed: pa.Table,
    prior: PriorState | None,
) -> None:
    """The rows of ``batch`` (at ``indexes``) that ``needed`` names, into ``dedup`` by slot;
    with ``prior``, a journal record only when it is its row's newest answer."""
    at = pc.index_in(indexes, value_set=needed.column("index").cast(pa.int64()))
    picked = pc.is_valid(at)
    if not pc.any(picked).as_py():
        return
    slots = needed.column("slot").take(at.filter(picked)).to_pylist()
    rows = pa.Table.from_batches([batch.filter(picked)]).select(list(_COLUMNS)).to_pylist()
    for index, slot, row in zip(indexes.filter(picked).to_pylist(), slots, rows, strict=True):
        if prior is not None:
            record = prior.journal.get(index)
            if record is None or record.request_hash != row["request_hash"]:
                continue
        dedup.remember(slot, row)


class BatchTwins:
    """Which rows of a batch run are submitted, filled at once, or held for their twin's batch:
    exactly, whatever the job's size (``engine.twin_plan``, ``engine.dedup``'s plan).

    Each round (``find``) first reads the rows it will submit once more and finds their twins
    and the earlier answers their groups hold, as an online run does (``find_twins``); those
    answers are loaded by group (spilled past a bound). Then, as batches are built: a row
    whose group holds an answer is filled from it (``answer_now``); the first row of a group
    is submitted, and its later twins wait for it (``hold``), whichever batch of the run they
    fall in. A row whose request is in a batch an earlier run left running (``running``:
    ``RunningRows``) waits for that batch. As batches are collected (``collected``), the
    answer of a row that twins wait for is kept by its group, in memory up to a bound and on
    disk past it, so no twin is ever submitted again because a table forgot its original;
    ``fill`` then records the waiting twins from those answers. A twin whose original failed
    or lapsed is left unrecorded, so the next run submits it. Memory: 16 bytes per row held,
    per group's first row submitted and per row of a batch left running, and a byte per
    group.
    """

    def __init__(
        self,
        dedup: Dedup,
        running: RunningRows,
        prefix_chars: int,
        *,
        sink: Sink,
        prior: PriorState,
        accepted: Accepted,
    ) -> None:
        self.dedup = dedup
        self._running = running
        self._chars = prefix_chars
        self._sink = sink
        self._prior = prior
        self._accepted = accepted
        self._scratch = Scratch(sink.output)  # made only if something spills
        self._groups = 0
        self._submitted = bytearray()  # per group: 1 once its first row is submitted
        self._first_index = array("q")  # the rows submitted that twins wait for, in order
        self._first_slot = array("q")  # ... and their groups
        self._running_slots: dict[str, int] = {}  # a running row's prefix -> its group
        self._wait_index = array("q")  # the rows held for their twin's answer, in order
        self._wait_slot = array("q")  # ... and the group each waits on
        self._member: tuple[int, Member | None] | None = None  # the row last asked of

    def find(self, works: Iterable[Work]) -> None:
        """Find the twins of the rows this round submits (``works``: its plan, read once
        more) and load the earlier answers their groups hold."""
        plan = find_twins(works, self._sink, self._prior, self._accepted, self._scratch)
        self.dedup.follow(plan, self._scratch)
        load_answered(self.dedup, plan, self._sink, self._prior)
        self._groups = plan.groups
        self._submitted = bytearray(plan.groups)
        self._first_index, self._first_slot = array("q"), array("q")
        self._running_slots = {}
        self._wait_index, self._wait_slot = array("q"), array("q")
        self._member = None

    def _role(self, work: Work) -> Member | None:
        """``work``'s part in dedup, asked of the plan once (rows come in input order)."""
        index = work.row.index
        if self._member is None or self._member[0] != index:
            assert work.request_hash is not None
            self._member = (index, self.dedup.member(index, work.request_hash))
        return self._member[1]

    def answer_now(self, work: Work, rows: RowSettings) -> dict[str, Any] | None:
        """The twin row for ``work`` if its group holds an answer already (an earlier run's);
        None otherwise."""
        member = self._role(work)
        if member is None:
            return None
        assert work.request_hash is not None
        answer = self.dedup.copy(member, work.request_hash)
        if answer is None:
            return None
        return twin_row(base_row(work, rows, VIA_BATCHES), answer)

    def hold(self, work: Work) -> bool:
        """True if ``work``'s request is in a batch already (this run's, or one an earlier
        run left running): it waits instead of being submitted."""
        request_hash, index = work.request_hash, work.row.index
        assert request_hash is not None
        owner = self._running.owner(request_hash[: self._chars])
        if owner is not None and owner != index:
            prefix = request_hash[: self._chars]
            slot = self._running_slots.setdefault(prefix, self._groups + len(self._running_slots))
            self._wait(index, slot)
            return True
        member = self._role(work)
        if member is None:
            return False  # no twin to send: nothing waits for it
        slot = int(member.key)
        if self._submitted[slot]:
            self._wait(index, slot)
            return True
        self._submitted[slot] = 1
        if member.after:  # twins to come: its answer is kept when collected
            self._first_index.append(index)
            self._first_slot.append(slot)
        return False

    def _wait(self, index: int, slot: int) -> None:
        self._wait_index.append(index)
        self._wait_slot.append(slot)

    @property
    def waiting(self) -> int:
        """How many rows wait for their twin's answer."""
        return len(self._wait_index)

    def collected(self, index: int, row: dict[str, Any]) -> None:
        """A row recorded: its answer is kept if twins wait for it (by its group)."""
        slot = _at(self._first_index, self._first_slot, index)
        if slot is None and self._running_slots:
            request_hash = row.get("request_hash")
            if request_hash is not None:
                slot = self._running_slots.get(request_hash[: self._chars])
        if slot is not None:
            self.dedup.remember(slot, row)

    def forget(self) -> None:
        """Drop what the run placed once it places no more rows, and the scratch folder: the
        memory is the final step's. The counts of ``dedup`` stay."""
        self._running = RunningRows([])
        self._running_slots = {}
        self._submitted = bytearray()
        self._first_index, self._first_slot = array("q"), array("q")
        self._wait_index, self._wait_slot = array("q"), array("q")
        self.dedup.close()
        self._scratch.close()

    def fill(self, config: RunConfig, record: Callable[[int, dict[str, Any]], None]) -> int:
        """Record each waiting twin whose original has an answer now; how many still wait
        (their original failed or lapsed: the next run submits them)."""
        if not self._wait_index:
            return 0
        where, slots = self._wait_index, self._wait_slot
        last = where[-1]
        settings = RowSettings.of(config)
        rows = read_rows(
            config.input.path,
            shape=config.input.shape,
            skip=lambda i: i <= last and _at(where, slots, i) is None,
        )
        left = len(where)
        for row in rows:
            if row.index > last:
                break
            slot = _at(where, slots, row.index)
            if slot is None:
                continue
            work = prepare(row, settings)
            if work.request_hash is None:
                continue  # the input changed under the run: the next run sees it afresh
            # A request other than the one held finds no answer (``Dedup.copy`` checks it).
            answer = self.dedup.copy(Member(slot, UNKNOWN), work.request_hash)
            if answer is not None:
                record(row.index, twin_row(base_row(work, settings, VIA_BATCHES), answer))
                left -= 1
        self._wait_index, self._wait_slot = array("q"), array("q")
        return left


class RunningRows:
    """The rows of batches an earlier run left running: each one's request-hash prefix (16
    hex characters, ``batches.plan.REQUEST_HASH_CHARS``, as the batch journal keeps it) and
    input index, in two sorted arrays: 16 bytes a row, however many batches run."""

    def __init__(self, rows: Iterable[tuple[str, int]]) -> None:
        pairs = []
        for prefix, index in rows:
            try:
                pairs.append((int(prefix, 16), index))
            except ValueError:
                continue  # not a request hash's: no request of this run has it
        pairs.sort()
        self._prefixes = array("Q", (prefix for prefix, _ in pairs))
        self._indexes = array("q", (index for _, index in pairs))

    def __len__(self) -> int:
        return len(self._prefixes)

    def owner(self, prefix: str) -> int | None:
        """The first input index (lowest) of a running row whose request has ``prefix``."""
        if not self._prefixes:
            return None
        try:
            key = int(prefix, 16)
        except ValueError:
            return None
        at = bisect.bisect_left(self._prefixes, key)
        if at < len(self._prefixes) and self._prefixes[at] == key:
            return self._indexes[at]
        return None


def _at(indexes: array[int], values: array[int], index: int) -> int | None:
    """The value kept for ``index`` in ``indexes`` (ascending), or None."""
    at = bisect.bisect_left(indexes, index)
    if at < len(indexes) and indexes[at] == index:
        return values[at]
    return None


class BatchCache:
    """``--answer-cache`` in a Message Batches run (``engine.answer_cache``, its lane reused).

    A row is looked up as its batch is built (``fill``, on the builder's thread): found, it is
    recorded at once, its answer the cache's (``cached_from``, cost 0), and never submitted.
    Each ok answer the run paid for is stored as its batch is collected (``keep``). A result
    carries no request to judge, so whether a request may be reused is decided where it is
    built (``fill``, or ``note`` for a batch an earlier run created): the few that may not be
    (sampled apart, a file by URL) are remembered by hash and never stored.
    """

    def __init__(self, lane: AnswerLane) -> None:
        self.lane = lane
        self._apart: set[str] = set()  # request hashes whose answers are not to be kept

    def fill(self, work: Work, rows: RowSettings) -> dict[str, Any] | None:
        """The row filled from the cache, or None: it is submitted."""
        if not self.note(work):
            return None
        return self.lane.lookup_blocking(work, lambda: base_row(work, rows, VIA_BATCHES))

    def note(self, work: Work) -> bool:
        """Whether ``work``'s answer may come from, and go to, the cache; remembered when not."""
        if self.lane.reusable(work):
            return True
        if work.request_hash is not None:
            self._apart.add(work.request_hash)
        return False

    async def keep(self, row: dict[str, Any]) -> None:
        """Store a collected row's answer, if this run paid for it and it is ok."""
        request_hash = row.get("request_hash")
        if request_hash is not None and request_hash not in self._apart:
            await self.lane.keep_answer(request_hash, row)

    def report(self, tally: RowTally) -> None:
        """What the cache did, into the run's tally (as ``engine.Engine`` does online)."""
        lane = self.lane
        tally.answer_cache_hits += lane.hits
        tally.answer_cache_saved_usd += lane.saved_usd
        tally.answer_cache_stored += lane.stored
        tally.answer_cache_failures += lane.failures
