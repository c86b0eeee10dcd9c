"""Duplicates of a run's rows (``engine.dedup``): answers earlier runs recorded, and the twins
a Message Batches run holds back until their original's batch is collected.

With ``--dedup`` (the default) a row whose request is identical to one answered in an earlier
run of the same output is filled from that answer instead of being sent (``engine.dedup``).
Before such a run sends anything, the answered rows of the journal and of the final file are
streamed once, a batch of a few columns at a time, into the engine's table of answers. The
table is bounded in bytes, so the reading stops once it is full: a duplicate whose original
was not read is sent (and counted in the summary as sent again).

Message Batches (``BatchTwins``): a row whose request is already in a batch (this run's, or a
batch an earlier run left running) is not submitted again. It waits, and once its original's
batch is collected it is filled from that answer (``duplicate_of``, cost 0). A twin whose
original failed or lapsed is left unrecorded, so the next run submits it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.config.load import RunConfig
from batchrun.engine.dedup import KEPT_FOR_TWINS, Dedup, twin_row
from batchrun.engine.outcome import VIA_BATCHES, RowSettings, Work, base_row, prepare
from batchrun.formats.inputs import read_rows
from batchrun.store.arrow_values import string_scalar
from batchrun.store.columns import STATUS_OK
from batchrun.store.journal import INDEX, read_records
from batchrun.store.provenance import legacy_source
from batchrun.store.row_state import RowState
from batchrun.store.sink import PriorState, Sink, output_batches

_COLUMNS = ("request_hash", *KEPT_FOR_TWINS)


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
