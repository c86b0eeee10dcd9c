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

Message Batches (``BatchTwins``): a row whose request is already in a batch (this run's, or a
batch an earlier run left running) is not submitted again. It waits, and once its original's
batch is collected it is filled from that answer (``duplicate_of``, cost 0). A twin whose
original failed or lapsed is left unrecorded, so the next run submits it. Its answers of
earlier runs are read into the engine's bounded table (``remember_prior_answers``), until it
is full: a duplicate whose original was not read is submitted, and paid again.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.config.load import RunConfig
from batchrun.core.wording import option
from batchrun.engine.dedup import KEPT_FOR_TWINS, Dedup, twin_row
from batchrun.engine.outcome import VIA_BATCHES, RowSettings, Work, base_row, prepare
from batchrun.engine.samples import plan_index, sample_requests
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
from batchrun.store.arrow_values import int64_array, int64_scalar, string_scalar
from batchrun.store.columns import STATUS_OK
from batchrun.store.journal import INDEX, read_records
from batchrun.store.provenance import SOURCE_COLUMNS, effective_sources, legacy_source
from batchrun.store.row_state import RowState
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


def remember_prior_answers(
    dedup: Dedup,
    sink: Sink,
    prior: PriorState,
    states: bytearray,
    accepted: Callable[[str | None], bool] = lambda source: True,
) -> None:
    """Feed ``dedup`` the answers of earlier runs, until its table is full; only those whose
    source this run counts as done (``accepted``: ``provenance.SourceRule.accepted``), so
    that a row asked again, or its twin, is never filled from the answer it replaces."""
    if RowState.OK not in states:
        return
    for row in _answered_rows(sink, prior):
        if not accepted(_source_of(row)):
            continue
        dedup.remember(row["request_hash"], row)
        if dedup.full:
            return


def _source_of(row: dict[str, Any]) -> str | None:
    """Where an earlier answer came from, as a resume sees it (``store.provenance``)."""
    source = row.get("source")
    if source is not None:
        return str(source)
    return legacy_source(row.get("message_id"), row.get("request_id"))


def _answered_rows(sink: Sink, prior: PriorState) -> Iterator[dict[str, Any]]:
    """The answered rows of the journal, then of the final file. Journal lines count only
    as the records resume trusts (``prior.journal``): a damaged line, or one for a row the
    input no longer has, fills nothing."""
    schema = pa.schema([sink.schema.field(name) for name in _COLUMNS])
    for batch in read_records(sink.journal, schema):
        indexes = batch.column(INDEX).to_pylist()
        rows = pa.Table.from_batches([batch]).select(list(_COLUMNS)).to_pylist()
        for index, row in zip(indexes, rows, strict=True):
            record = prior.journal.get(index)
            if record is None or record.status != STATUS_OK or row["status"] != STATUS_OK:
                continue
            if row["request_hash"] is not None and record.request_hash == row["request_hash"]:
                yield row
    if prior.final_rows:  # 0 for a partial output, whose rows are all in the journal
        for batch in output_batches(sink.output, sink.schema, _COLUMNS):
            table = pa.Table.from_batches([batch])
            answered = pc.and_(
                pc.equal(table.column("status"), string_scalar(STATUS_OK)),
                pc.is_valid(table.column("request_hash")),
            )
            yield from table.filter(answered).to_pylist()


class BatchTwins:
    """Which rows of a batch run are sent, filled at once, or held for their twin's batch.

    ``running`` maps the request-hash prefixes (``batch_plan.REQUEST_HASH_CHARS``) of the rows
    in batches still running from earlier runs (the journal keeps no more of them) to their
    input index. A row sent again (its batch expired) is its own request, not a twin.
    """

    def __init__(self, dedup: Dedup, running: dict[str, int], prefix_chars: int) -> None:
        self.dedup = dedup
        self._running = running
        self._chars = prefix_chars
        self._submitted: dict[str, int] = {}  # request hash -> the row this run submitted it for
        self.waiting: dict[int, str] = {}  # input index -> request hash, held for its twin
        self._awaited: set[str] = set()  # the request hashes some held twin waits for

    def answer_now(self, work: Work, rows: RowSettings) -> dict[str, Any] | None:
        """The twin row for ``work`` if its request was answered already (earlier run, or a
        batch collected in this one); None otherwise."""
        assert work.request_hash is not None
        answer = self.dedup.answer(work.request_hash)
        if answer is None:
            return None
        return twin_row(base_row(work, rows, VIA_BATCHES), answer)

    def hold(self, work: Work) -> bool:
        """True if ``work``'s request is in a batch already: it waits instead of being sent."""
        request_hash, index = work.request_hash, work.row.index
        assert request_hash is not None
        owner = self._submitted.get(request_hash)
        if owner is None:
            owner = self._running.get(request_hash[: self._chars])
        if owner is not None and owner != index:
            self.waiting[index] = request_hash
            self._awaited.add(request_hash)
            return True
        self._submitted[request_hash] = index
        return False

    def awaited(self, request_hash: str) -> bool:
        """True if a held twin waits for this request's answer: only those answers are kept
        (``remember``); every other twin was found before the batches were sent."""
        return request_hash in self._awaited

    def forget(self) -> None:
        """Drop what the run placed (a request hash per row submitted) once it places no
        more rows: the memory is the final step's. The counts of ``dedup`` stay."""
        self._submitted = {}
        self._running = {}
        self._awaited = set()

    def fill(self, config: RunConfig, record: Callable[[int, dict[str, Any]], None]) -> int:
        """Record each waiting twin whose original has an answer now; how many still wait
        (their original failed or lapsed: the next run submits them)."""
        if not self.waiting:
            return 0
        where, last = self.waiting, max(self.waiting)
        settings = RowSettings.of(config)
        rows = read_rows(
            config.input.path, shape=config.input.shape, skip=lambda i: i <= last and i not in where
        )
        for row in rows:
            if row.index > last:
                break
            work = prepare(row, settings)
            if work.request_hash != where[row.index]:
                continue  # the input changed under the run: the next run sees it afresh
            answer = self.dedup.answer(work.request_hash)
            if answer is not None:
                record(row.index, twin_row(base_row(work, settings, VIA_BATCHES), answer))
                del where[row.index]
        return len(where)
