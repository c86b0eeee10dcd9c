"""Answers earlier runs recorded, for the duplicates a resumed run still has to do.

With ``--dedup`` (the default) a row whose request is identical to one answered in an earlier
run of the same output is filled from that answer instead of being sent (``engine.dedup``).
Before such a run sends anything, the answered rows of the journal and of the final file are
streamed once, a batch of a few columns at a time, into the engine's table of answers. The
table is bounded in bytes, so the reading stops once it is full: a duplicate whose original
was not read is sent (and counted in the summary as sent again).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.engine.dedup import KEPT_FOR_TWINS, Dedup
from batchrun.store.columns import STATUS_OK
from batchrun.store.journal import INDEX, read_records
from batchrun.store.row_state import RowState
from batchrun.store.sink import PriorState, Sink, output_batches

_COLUMNS = ("request_hash", *KEPT_FOR_TWINS)


def remember_prior_answers(dedup: Dedup, sink: Sink, prior: PriorState, states: bytearray) -> int:
    """Feed ``dedup`` the answers of earlier runs; how many were read (0 with none answered)."""
    if RowState.OK not in states:
        return 0
    read = 0
    for row in _answered_rows(sink, prior):
        dedup.remember(row["request_hash"], row)
        read += 1
        if dedup.full:
            break
    return read


def _answered_rows(sink: Sink, prior: PriorState) -> Iterator[dict[str, Any]]:
    """The answered rows of the journal, then of the final file. Journal lines count only
    as the records resume trusts (``prior.journal``): a damaged line, or one for a row the
    input no longer has, fills nothing."""
    schema = pa.schema([sink.schema.field(name) for name in _COLUMNS])
    for batch in read_records(sink.journal, schema):
        indexes = batch.column(INDEX).to_pylist()
        for index, row in zip(indexes, _ok_rows(batch, keep_empty=True), strict=True):
            record = prior.journal.get(index)
            if row is None or record is None or record.status != STATUS_OK:
                continue
            if record.request_hash == row["request_hash"]:
                yield row
    if prior.final_rows:  # 0 for a partial output, whose rows are all in the journal
        for batch in output_batches(sink.output, sink.schema, _COLUMNS):
            yield from (row for row in _ok_rows(batch) if row is not None)


def _ok_rows(batch: pa.RecordBatch, *, keep_empty: bool = False) -> Iterator[dict[str, Any] | None]:
    """The batch's rows as dicts where answered with a request hash; None for the others
    when ``keep_empty`` (so they line up with the batch), else left out."""
    table = pa.Table.from_batches([batch]).select(list(_COLUMNS))
    answered = pc.and_(
        pc.equal(table.column("status"), STATUS_OK), pc.is_valid(table.column("request_hash"))
    ).to_pylist()
    if not keep_empty:
        yield from table.filter(pa.array(answered, pa.bool_())).to_pylist()
        return
    for row, ok in zip(table.to_pylist(), answered, strict=True):
        yield row if ok else None
