"""The output writer: an append-only journal while a run goes, one atomic final file at the end.

The dataset is in one of the output formats (``batchrun.formats``: Parquet, JSON lines, CSV,
...), by the output's name (``formats.registry.output_for``): the same columns in the same
order and types in each. The format writes it and reads it back (``output_batches``,
``row_count``); this module never asks which format it is.

Layout for ``-o out/labels.parquet``::

    out/labels.parquet           the dataset: one row per input row, in input order
    out/labels.parquet.journal   JSON lines, one per finished row, in finishing order
    out/labels.parquet.journal.idx  each journal line's facts, for a quick resume
                                 (``store.journal_index``: written after each fsync)
    out/.labels.parquet.lock     while a run goes: who is writing the output (``store.lock``)

An output that names a folder (``-o out/labels/``) is a Parquet dataset instead: parts and a
``_SUCCESS`` manifest in ``out/labels/``, its journal ``out/labels.journal`` beside it
(``formats.parquet_dataset``). It is built the same way, in a temporary sibling folder
swapped into place whole; every reader here takes it as one file.

Why a journal: a result is worth money the moment it arrives, so it is appended (one line,
written straight to the file) before anything else happens to it; a ``kill -9`` can then cost
at most the requests still in flight. The final file is built from the previous final file
(rows by position) and the journal (rows by ``_index``, the newest record for an index wins),
written under a temporary name unique to the run and swapped in over the old one
(``store.commit``), so a crash never leaves a torn dataset. Only then is the journal removed.
Building the final file streams both sources in chunks through a memory-mapped Arrow file,
so it needs memory for one chunk, not the dataset.

A run that stops early (budget, signal, fatal error) writes the same way the rows finished so
far, marked partial (``formats.marks``), and keeps the journal: a partial file is for reading,
never a source, so the journal holds every row it has and the finishing run builds from it.
The journal's lines are written and read by ``store.journal``; this module owns the files.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import secrets
import time
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from batchrun.core.errors import OutputError
from batchrun.core.memory import give_back_freed_memory
from batchrun.core.wording import option
from batchrun.formats.base import PART_BYTES, PART_ROWS, OutputFormat, WriteOptions
from batchrun.formats.jsonl import JSON_SLICE_BYTES
from batchrun.formats.marks import Partial, partial_metadata
from batchrun.formats.registry import folder_output, output_for
from batchrun.store.arrow_values import (
    int64_array,
    int64_array_of,
    int64_scalar,
    string_scalar,
    whole,
)
from batchrun.store.columns import COLUMN_NAMES, COLUMNS, STATUS_OK
from batchrun.store.commit import (
    Commit,
    Committed,
    free_bytes,
    recover_aside,
    remove_output,
    remove_stale,
    remove_temporary,
    temporary_path,
)
from batchrun.store.journal import (
    ARROW_TYPES,
    INDEX,
    RUN,
    Damage,
    conform,
    int64s,
    journal_bytes,
    journal_schema,
    newest_per_row,
    numbers,
    read_records,
    repair_journal,
)
from batchrun.store.journal_index import (
    Indexed,
    JournalIndexWriter,
    indexed_columns,
    read_index,
    remove_index,
)
from batchrun.store.provenance import (
    SOURCE_COLUMNS,
    UNRECORDED,
    effective_sources,
    intern_sources,
)
from batchrun.store.typed import OutputTypes

JOURNAL_SUFFIX = ".journal"
# The final step's temporary file (``commit.temporary_path``): the journal as Arrow. The new
# output's is the committer's.
TMP_JOURNAL_SUFFIX = ".journal.arrow"
# Output rows per merge step (and per row group): bounds the final step's memory. Measured
# over journals of ~1 KB rows, the step's peak RSS rose by 77 MiB at 20,000 rows and 73 at
# 200,000 with 8,192; by 79 and 108 with 16,384 (the allocator's high-water mark went on
# climbing as the chunks went by).
CHUNK_ROWS = 8_192
# Input rows per bucket of the final step's sorted journal (``SortedJournal``): the index
# column of one, held sorted while its rows are written, takes about 4 MiB (a bucket of 2**20
# rows held a 1M-row job's final step ~25 MB above its 100k-row one). A job of more than
# MAX_BUCKETS buckets gets larger ones: each bucket keeps two files open while it is written.
BUCKET_ROWS = 1 << 18
MAX_BUCKETS = 256
FSYNC_EVERY_S = 2.0
# Journal bytes ``Sink.holding`` gathers before it writes them.
HELD_BYTES = 1 << 18


def output_schema(keep_columns: Sequence[str] = ()) -> pa.Schema:
    """The one explicit schema of every output: the columns of docs/design.md §3.3, then
    the kept input columns."""
    fields = [pa.field(name, ARROW_TYPES[kind]) for name, kind in COLUMNS]
    fields += [pa.field(name, pa.string()) for name in keep_columns if name not in COLUMN_NAMES]
    return pa.schema(fields)


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + JOURNAL_SUFFIX)


def remove_stale_temporaries(output: Path, suffixes: Sequence[str] = ()) -> list[Path]:
    """Remove the temporary files runs killed midway left beside ``output`` (the final step's
    and ``suffixes``: ``commit.remove_stale``); return them. Only under the output's lock."""
    return remove_stale(output, (TMP_JOURNAL_SUFFIX, *suffixes))


@dataclass(frozen=True)
class PriorRecord:
    """What an earlier run recorded for one input row."""

    id: str
    status: str
    request_hash: str | None
    error_type: str | None = None
    # Where its answer came from, as a resume sees it (``provenance.effective_sources``):
    # None for a row never sent.
    source: str | None = None


# What a resume reads of each earlier record: ``PriorRecord``'s fields, and what tells its
# source (``store.provenance``).
_PRIOR_COLUMNS = ("id", "status", "request_hash", "error_type")
_PRIOR_READ = tuple(dict.fromkeys((*_PRIOR_COLUMNS, *SOURCE_COLUMNS)))


@dataclass
class JournalSpend:
    """What the journal's records cost, by the run that answered them and by source: every
    record a run answered (``_run``), and each row's newest record of those with no run
    (copies of rows already counted, or records of an older batchrun)."""

    by_run: dict[str, dict[str, float]]
    unattributed: dict[str, float]


@dataclass(frozen=True)
class FinalCounts:
    """What the output file holds: ``rows`` rows, ``ok`` answered and ``error`` not; ``of``,
    for a partial output (a stopped run's, ``formats.marks``), the input's row count."""

    rows: int
    ok: int
    error: int
    of: int | None = None

    @property
    def partial(self) -> Partial | None:
        return Partial(self.rows, self.of) if self.of is not None else None


class _Shared:
    """A column whose values repeat (statuses, sources, error types: a million records hold
    a handful of strings), as a code per record into its distinct values (None last)."""

    def __init__(self, values: pa.Array | pa.ChunkedArray | None = None) -> None:
        self.values: list[Any] = [None]
        self.codes = np.zeros(0, dtype=np.int32)
        if values is None or len(values) == 0:
            return  # (combining no chunks would import pandas)
        encoded = values if pa.types.is_dictionary(values.type) else pc.dictionary_encode(values)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.unify_dictionaries().combine_chunks()
        self.values = [*encoded.dictionary.to_pylist(), None]
        indices = encoded.indices.cast(pa.int64())
        self.codes = numbers(indices).astype(np.int32)
        if indices.null_count:
            self.codes[~_valid_mask(indices)] = len(self.values) - 1

    def __getitem__(self, k: int) -> Any:
        return self.values[self.codes[k]]

    def __iter__(self) -> Iterator[Any]:
        return map(self.values.__getitem__, self.codes.tolist())


class JournalRecords(Mapping[int, PriorRecord]):
    """Each row's newest journal record, by input index: a read-only mapping held as
    columns (an ``array('q')`` of sorted indexes, the ids, a code per record for the fields
    whose values repeat, the request hashes as Arrow), not as a million ``PriorRecord``
    objects in a dict, so that a resume takes a big journal in a fraction of the time.
    ``PriorRecord``s are made on demand; ``rows`` gives the fields in index order, ``fill``
    the states of every record at once. ``pop`` forgets a record (damage:
    ``PriorState.drop``).

    ``table``: the newest records (``journal.newest_per_row``), sorted by ``_index``, with
    the ``PriorRecord`` columns and the effective source (``_SOURCE``), and the request hash
    as bytes where the journal's index gave it (``_HASH``)."""

    def __init__(self, table: pa.Table | None = None) -> None:
        self._indexes: array[int] = array("q")
        self._ids: list[str] = []
        self._statuses = _Shared()  # (null for a row never sent, as before)
        self._hashes: pa.Array = pa.nulls(0, pa.string())
        self._raw_hashes: pa.Array = pa.nulls(0, pa.binary(32))
        self._errors = _Shared()
        self._sources = _Shared()
        if table is not None:
            self._indexes = int64s(table.column(INDEX))
            self._ids = table.column("id").to_pylist()
            self._statuses = _Shared(table.column("status"))
            self._hashes = whole(table.column("request_hash"))
            self._raw_hashes = whole(table.column(_HASH))
            self._errors = _Shared(table.column("error_type"))
            self._sources = _Shared(table.column(_SOURCE))
        self._gone: set[int] = set()  # positions popped
        self._len = len(self._indexes)

    def _position(self, index: int) -> int | None:
        k = bisect.bisect_left(self._indexes, index)
        if k < len(self._indexes) and self._indexes[k] == index and k not in self._gone:
            return k
        return None

    def __getitem__(self, index: int) -> PriorRecord:
        k = self._position(index)
        if k is None:
            raise KeyError(index)
        return self._record(k)

    def get(  # type: ignore[override]  # one signature: misses raise no KeyError
        self, index: int, default: PriorRecord | None = None
    ) -> PriorRecord | None:
        k = self._position(index)
        return default if k is None else self._record(k)

    def _record(self, k: int) -> PriorRecord:
        return PriorRecord(
            self._ids[k], self._statuses[k], self._hash(k), self._errors[k], self._sources[k]
        )

    def _hash(self, k: int) -> str | None:
        text: str | None = self._hashes[k].as_py()
        if text is None:
            raw = self._raw_hashes[k].as_py()
            text = raw.hex() if raw is not None else None
        return text

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and self._position(index) is not None

    def __iter__(self) -> Iterator[int]:
        if not self._gone:
            return iter(self._indexes)
        return (i for k, i in enumerate(self._indexes) if k not in self._gone)

    def __len__(self) -> int:
        return self._len

    def __reversed__(self) -> Iterator[int]:
        return (
            self._indexes[k] for k in range(len(self._indexes) - 1, -1, -1) if k not in self._gone
        )

    def first(self) -> int:
        """The lowest index with a record; -1 when none has."""
        return next(iter(self), -1)

    def last(self) -> int:
        """The highest index with a record; -1 when none has."""
        return next(reversed(self), -1)

    def from_index(self, start: int) -> list[int]:
        """The indexes with a record at ``start`` or past it, in order."""
        k = bisect.bisect_left(self._indexes, start)
        return [self._indexes[j] for j in range(k, len(self._indexes)) if j not in self._gone]

    def pop(self, index: int, default: PriorRecord | None = None) -> PriorRecord | None:
        """Forget the record of ``index``; it, or ``default`` when there is none."""
        k = self._position(index)
        if k is None:
            return default
        record = self[index]
        self._gone.add(k)
        self._len -= 1
        return record

    def rows(self) -> Iterator[tuple[int, str, str, str | None, str | None]]:
        """Each record's index, id, status, error type and source, in index order."""
        fields = zip(
            self._indexes, self._ids, self._statuses, self._errors, self._sources, strict=True
        )
        if not self._gone:
            return fields
        return (f for k, f in enumerate(fields) if k not in self._gone)

    def fill(
        self,
        states: bytearray,
        ids: list[str],
        start: int,
        state: Callable[[str | None, str | None, str | None, int], int],
    ) -> None:
        """For each record of a row at ``start`` or past it: its id into ``ids`` and its
        state into ``states`` (both by input index), ``state(status, error type, source,
        rows)`` asked once for each distinct (status, error type, source), with how many
        records have it: a million records are taken in a fraction of a second."""
        indexes = np.frombuffer(self._indexes, dtype=np.int64) if self._len else None
        if indexes is None:
            return
        keep = indexes >= start
        if self._gone:
            keep[list(self._gone)] = False
        errors, sources = len(self._errors.values), len(self._sources.values)
        key = (
            self._statuses.codes.astype(np.int64) * errors + self._errors.codes
        ) * sources + self._sources.codes
        distinct, inverse, counts = np.unique(key[keep], return_inverse=True, return_counts=True)
        table = np.zeros(len(distinct), dtype=np.uint8)
        for j, (combined, rows) in enumerate(zip(distinct.tolist(), counts.tolist(), strict=True)):
            rest, source = divmod(combined, sources)
            status, error = divmod(rest, errors)
            table[j] = state(
                self._statuses.values[status],
                self._errors.values[error],
                self._sources.values[source],
                rows,
            )
        kept = indexes[keep]
        np.frombuffer(states, dtype=np.uint8)[kept] = table[inverse]
        id_list = self._ids
        if bool(keep.all()):
            for index, row_id in zip(kept.tolist(), id_list, strict=True):
                ids[index] = row_id
        else:
            for k in np.flatnonzero(keep).tolist():
                ids[self._indexes[k]] = id_list[k]

    def answered_digests(
        self, accepted: Callable[[str | None], bool], among: bytes | None = None
    ) -> tuple[array[int], bytes, list[tuple[int, str]]]:
        """The answered records (status ok, a request hash) whose source ``accepted``
        takes: as input rows and their request hashes' first 16 bytes where the journal's
        index gave them (``twin_plan.TwinFinder.answered_digests``), and as (row, request
        hash) for the others (an older journal's lines, to digest one by one). With
        ``among`` (16-byte digests, one after another), only those whose digest is one of
        them come from the index."""
        rows = array("I")
        if not self._len:
            return rows, b"", []
        ok = (
            self._statuses.codes == self._statuses.values.index(STATUS_OK)
            if (STATUS_OK in self._statuses.values)
            else np.zeros(self._len, dtype=bool)
        )
        taken = np.array([accepted(v) for v in self._sources.values], dtype=bool)
        keep = ok & taken[self._sources.codes]
        if self._gone:
            keep[list(self._gone)] = False
        raw = self._raw_hashes
        has_raw = _valid_mask(raw)
        indexes = np.frombuffer(self._indexes, dtype=np.int64)
        from_index = keep & has_raw
        digests = b""
        if bool(from_index.any()):
            data = np.frombuffer(raw.buffers()[1], dtype=np.uint8)[
                raw.offset * 32 : (raw.offset + len(raw)) * 32
            ].reshape(len(raw), 32)
            picked = np.ascontiguousarray(data[from_index, :16]).view("S16").reshape(-1)
            kept = indexes[from_index]
            if among is not None:
                wanted = np.isin(picked, np.frombuffer(among, dtype="S16"))
                picked, kept = picked[wanted], kept[wanted]
            rows.frombytes(kept.astype(np.uint32).tobytes())
            digests = picked.tobytes()
        others = []
        for k in np.flatnonzero(keep & ~has_raw).tolist():
            text = self._hashes[k].as_py()
            if text:
                others.append((self._indexes[k], text))
        return rows, digests, others


def _valid_mask(values: pa.Array) -> np.ndarray:
    """Where ``values`` is not null, as booleans (from its validity bitmap)."""
    bitmap = values.buffers()[0]
    if bitmap is None or not values.null_count:
        return np.ones(len(values), dtype=bool)
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    return bits[values.offset : values.offset + len(values)].astype(bool)


class PriorState:
    """What earlier runs left for an output: the final file's rows and the journal's.

    ``lookup`` must be called with non-decreasing indexes (the input is read in order), so
    the final file is streamed once instead of held in memory.
    """

    def __init__(
        self,
        final_rows: int,
        final_batches: Iterator[pa.RecordBatch],
        journal: JournalRecords,
        damaged: int = 0,
        *,
        spend: JournalSpend | None = None,
        final_spend: Callable[[], dict[str, float]] = dict,
    ) -> None:
        self.final_rows = final_rows
        self.journal = journal
        self.damaged = damaged  # damaged journal lines skipped (``store.journal``)
        self.spend = spend or JournalSpend({}, {})
        self._final_spend = final_spend
        self._batches = final_batches
        self._start = 0  # index of the first row of the current batch
        self._cols: tuple[list[Any], ...] = ([], [], [], [], [])

    def final_spend(self) -> dict[str, float]:
        """What the rows of the final file cost, by source: one more pass over it, for a
        resume that finds no record of what the job spent (``store.spend``)."""
        return self._final_spend() if self.final_rows else {}

    def __len__(self) -> int:
        """How many input rows have a record (an upper bound when journal and file overlap)."""
        return max(self.final_rows, self.journal.last() + 1)

    def drop(self, indexes: Sequence[int]) -> None:
        """Forget the journal's records for ``indexes``: they are damage (an ``_index`` past
        any row the input had), counted in ``damaged``."""
        for index in indexes:
            if self.journal.pop(index, None) is not None:
                self.damaged += 1

    def lookup(self, index: int) -> PriorRecord | None:
        from_journal = self.journal.get(index)
        if from_journal is not None:
            self._advance(index)
            return from_journal
        if index >= self.final_rows:
            return None
        self._advance(index)
        ids, statuses, hashes, error_types, sources = self._cols
        k = index - self._start
        return PriorRecord(ids[k], statuses[k], hashes[k], error_types[k], sources[k])

    def _advance(self, index: int) -> None:
        while index >= self._start + len(self._cols[0]) and index < self.final_rows:
            self._start += len(self._cols[0])
            batch = next(self._batches)
            columns = [batch.column(name).to_pylist() for name in _PRIOR_COLUMNS]
            sources = intern_sources(effective_sources(batch).to_pylist())
            self._cols = (*columns, sources)


_SOURCE = "_source"  # the effective source column of ``_prior_records``


def _prior_records(
    journal: Path,
    schema: pa.Schema,
    slice_bytes: int,
    damage: Damage,
    indexed: Indexed | None = None,
) -> pa.Table:
    """Every journal record (in journal order) with what a resume needs of it: the
    ``PriorRecord`` columns, its cost, its run, its source as a resume sees it (and its
    request hash as bytes, ``_HASH``, where the journal's index gives it). With ``indexed``
    (``journal_index.read_index``), the records it covers are taken from it, and only the
    journal's bytes it does not cover are parsed."""
    if indexed is None:
        return _parsed_prior(journal, schema, slice_bytes, damage)
    parts = []
    for start, stop, k0, k1 in indexed.pieces():
        if k0 == k1:
            parts.append(_parsed_prior(journal, schema, slice_bytes, damage, (start, stop)))
        else:
            parts.append(pa.table(indexed_columns(indexed, k0, k1, journal), schema=_PRIOR_SCHEMA))
    if not parts:
        return _parsed_prior(journal, schema, slice_bytes, damage, (0, 0))
    return pa.concat_tables(parts).unify_dictionaries()


# A request hash as its 32 bytes, where the journal's index gives it (its ``request_hash``
# is null then: 64 characters of hex a row are made only for the rows that need them).
_HASH = "_hash"
_REPEATED = pa.dictionary(pa.int32(), pa.string())  # values that repeat from record to record
_CODED = (RUN, "status", "error_type")  # held as _REPEATED (and the source)
_PRIOR_SCHEMA = pa.schema(
    [
        pa.field(INDEX, pa.int64()),
        *(
            pa.field(name, _REPEATED if name in _CODED else ARROW_TYPES[dict(COLUMNS)[name]])
            for name in _PRIOR_COLUMNS
        ),
        pa.field("cost_usd", pa.float64()),
        pa.field(RUN, _REPEATED),
        pa.field(_SOURCE, _REPEATED),
        pa.field(_HASH, pa.binary(32)),
    ]
)


def _parsed_prior(
    journal: Path,
    schema: pa.Schema,
    slice_bytes: int,
    damage: Damage,
    span: tuple[int, int] | None = None,
) -> pa.Table:
    """``_prior_records`` of the journal's lines (of bytes [start, stop) of ``span``), parsed."""
    read = pa.schema(
        [schema.field(name) for name in (*_PRIOR_READ, "cost_usd")] + [pa.field(RUN, pa.string())]
    )
    kept = [INDEX, *_PRIOR_COLUMNS, "cost_usd", RUN]
    parts = []
    for batch in read_records(journal, read, slice_bytes, damage=damage, span=span):
        arrays = [
            pc.dictionary_encode(batch.column(name)) if name in _CODED else batch.column(name)
            for name in kept
        ]
        sources = effective_sources(batch)
        digests = pa.nulls(batch.num_rows, pa.binary(32))
        parts.append(pa.RecordBatch.from_arrays([*arrays, sources, digests], schema=_PRIOR_SCHEMA))
    return pa.Table.from_batches(parts, schema=_PRIOR_SCHEMA).unify_dictionaries()


def _journal_spend(records: pa.Table) -> JournalSpend:
    """What ``records`` (``_prior_records``) cost: by run, and each row's newest of those
    with no run. Summed with NumPy over the columns' codes: a million records in a blink,
    and no pandas (which Arrow's group-by imports)."""
    runs = _Shared(records.column(RUN))
    sources = _Shared(records.column(_SOURCE))
    costs = _costs(records.column("cost_usd"))
    none = len(runs.values) - 1
    has_run = runs.codes != none
    # Every run there, one that spent nothing all the same.
    by_run: dict[str, dict[str, float]] = {run: {} for run in _present(runs, has_run)}
    width = len(sources.values)
    key = runs.codes[has_run].astype(np.int64) * width + sources.codes[has_run]
    sums = np.bincount(key, weights=costs[has_run], minlength=none * width)
    for k in np.flatnonzero(sums).tolist():
        run, source = divmod(k, width)
        spent = by_run[runs.values[run]]
        name = sources.values[source] or UNRECORDED
        spent[name] = spent.get(name, 0.0) + float(sums[k])
    unattributed: dict[str, float] = {}
    if not bool(has_run.all()):
        copied = records.filter(_arrow_bools(~has_run))
        positions, _ = newest_per_row(copied.column(INDEX))
        _add_costs(unattributed, copied.take(positions))
    return JournalSpend(by_run, unattributed)


def _present(codes: _Shared, where: np.ndarray) -> set[str]:
    """The values ``codes`` holds at ``where`` (a dictionary may hold values no row has)."""
    return {codes.values[k] for k in np.unique(codes.codes[where]).tolist()}


def _costs(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A float column as NumPy, null as 0."""
    column = whole(values)
    data = column.buffers()[1]
    if data is None:
        return np.zeros(len(column))
    out = np.frombuffer(data, dtype=np.float64)[column.offset : column.offset + len(column)]
    if column.null_count:
        out = np.where(_valid_mask(column), out, 0.0)
    return out


def _arrow_bools(values: np.ndarray) -> pa.Array:
    bitmap = pa.py_buffer(np.packbits(values, bitorder="little"))
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, bitmap])


def journal_spend(journal: Path, slice_bytes: int = JSON_SLICE_BYTES) -> JournalSpend:
    """What the records of ``journal`` cost, by run and source (``store.spend``)."""
    records = _prior_records(journal, output_schema(), slice_bytes, Damage())
    return _journal_spend(records)


def _add_costs(spent: dict[str, float], table: pa.Table) -> None:
    """Add ``table``'s ``cost_usd`` by its ``_source`` (no source: ``UNRECORDED``) to ``spent``."""
    table = table.select(["cost_usd", _SOURCE])
    table = table.set_column(1, _SOURCE, table.column(1).cast(pa.string()))
    for row in table.group_by([_SOURCE]).aggregate([("cost_usd", "sum")]).to_pylist():
        if row["cost_usd_sum"]:
            source = row[_SOURCE] or UNRECORDED
            spent[source] = spent.get(source, 0.0) + row["cost_usd_sum"]


def new_run_id(now: Callable[[], float] = time.time) -> str:
    """A name for one run: its start (UTC) and a random part, ``20261202T031500Z-a1b2c3d4``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now()))
    return f"{stamp}-{secrets.token_hex(4)}"


class Sink:
    """Owns the output files: the journal while a run goes, the final dataset after it.

    Example::

        sink = Sink(Path("out/labels.parquet"), keep_columns=["product"])
        prior = sink.open(overwrite=False)
        sink.submit(0, row)
        await sink.close()
        counts = sink.finalize(total_rows=200)

    ``chunk_rows``, ``bucket_rows`` and ``json_slice_bytes`` bound the memory of the final step
    and of reading JSON lines (see ``CHUNK_ROWS``, ``BUCKET_ROWS`` and
    ``journal.JSON_SLICE_BYTES``); tests make them small.
    ``output_format`` is the output's format (``formats.registry.output_for`` its name when
    None: a folder output whose name ends in ``.parquet`` needs it said); a folder's parts hold
    at most ``part_rows`` rows and about ``part_bytes`` bytes (``formats.parquet_dataset``).
    ``types``: the final output's typed columns (``store.typed``); the journal and every read
    here are text.
    """

    def __init__(
        self,
        output: Path,
        keep_columns: Sequence[str] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[int, memoryview], int] = os.write,
        chunk_rows: int = CHUNK_ROWS,
        json_slice_bytes: int = JSON_SLICE_BYTES,
        bucket_rows: int = BUCKET_ROWS,
        free_space: Callable[[Path], int] = free_bytes,
        output_format: OutputFormat | None = None,
        part_rows: int = PART_ROWS,
        part_bytes: int = PART_BYTES,
        open_part: Callable[[Path, pa.Schema], Any] | None = None,
        types: OutputTypes | None = None,
    ) -> None:
        self.output = output
        self.types = types
        self.format = output_format or output_for(output)
        # open_part: a seam, tests make the final step fail midway
        self._write_options = WriteOptions(part_rows, part_bytes, open_part)
        self.journal = journal_path(output)
        self.keep_columns = tuple(keep_columns)
        self.schema = output_schema(self.keep_columns)
        self._clock = clock
        self._write = write  # a seam: tests make the disk fill up
        self._chunk_rows = chunk_rows
        self._bucket_rows = bucket_rows
        self._slice_bytes = json_slice_bytes
        self._free_space = free_space  # a seam: tests make the disk small
        self._fd: int | None = None
        # Notes on each journal line for the next resume (``store.journal_index``), written
        # after each fsync; None: none kept (the output is not open, or it cannot be).
        self._index: JournalIndexWriter | None = None
        self._last_fsync = 0.0
        # Inside ``holding``: the journal lines not written yet, their size, and what the
        # rows among them cost (source, cost).
        self._held: list[tuple[bytes, int, Mapping[str, Any]]] | None = None
        self._held_bytes = 0
        self._held_costs: list[tuple[Any, Any]] = []
        self._partial: Partial | None = None  # the output's partial mark, read by ``open``
        # Told after each row is journaled: an output on object storage seals and uploads
        # the journal in segments from it (``remote.mirror.Segmenter.noticed``).
        self.on_append: Callable[[], None] | None = None
        # Keep the journal after the final file is written, until ``drop_journal``: an output
        # on object storage is final only once uploaded.
        self.keep_journal = False
        # The final output the last final step put in place (``store.commit``): what a remote
        # output uploads.
        self.committed: Committed | None = None
        # This run, in each record it journals (``journal.RUN``), and what those records cost
        # by source: what the job spent is kept by run (``store.spend``).
        self.run_id = new_run_id()
        self.spent: dict[str, float] = {}

    # -- before the run -------------------------------------------------------------------

    def open(self, *, overwrite: bool = False) -> PriorState:
        """Check the output can be written and read what earlier runs left.

        Raises OutputError before any request is sent when the location is unusable.
        """
        folder = self.format.folder
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            if folder:
                recover_aside(self.output)
            if overwrite:
                remove_output(self.output)
                self.journal.unlink(missing_ok=True)
                remove_index(self.journal)
            if folder and self.output.exists() and not self.output.is_dir():
                raise OutputError(f"output {self.output} is a file, not a dataset folder")
            self._partial = self.format.read_mark(self.output)
            if self._partial is not None and not _has_bytes(self.journal):
                raise OutputError(
                    f"{self.output} is a partial output ({self._partial}) and the journal that "
                    f"holds its rows, {self.journal}, is missing: put the journal back, or use "
                    f"{option('overwrite', True)} to start afresh (every row is sent again)"
                )
            repair_journal(self.journal)
            self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot write output {self.output}: {exc.strerror or exc}") from exc
        if not folder and self.output.exists() and self.output.is_dir():
            raise OutputError(
                f"output {self.output} is a directory: end it with a slash (or give "
                f"{option('output_format', folder_output().name)}) to write a dataset folder "
                "there"
            )
        return self._read_prior()

    def _final_exists(self) -> bool:
        """Whether a final output (complete or partial) is in place."""
        return self.format.exists(self.output)

    def _read_prior(self) -> PriorState:
        damage = Damage()
        indexed = read_index(self.journal)
        records = _prior_records(self.journal, self.schema, self._slice_bytes, damage, indexed)
        self._index = JournalIndexWriter.start(self.journal, indexed)
        # The index file's whole body (128 bytes a row) is let go before the records are
        # sorted and kept: held, it was the largest part of a resume's peak (opening a
        # million-row journal with its index peaked at 600 MB with it, 402 MB without).
        del indexed
        positions, _ = newest_per_row(records.column(INDEX))
        journal = JournalRecords(records.take(positions))
        spend = _journal_spend(records)
        if not self._final_exists() or self._partial is not None:
            # A partial output is no source: the journal holds each of its rows.
            return PriorState(0, iter(()), journal, damage.lines, spend=spend)
        rows = row_count(self.output, self.format)
        batches = self._final_batches(_PRIOR_READ)
        return PriorState(
            rows, batches, journal, damage.lines, spend=spend, final_spend=self._final_spend
        )

    def _final_spend(self) -> dict[str, float]:
        spent: dict[str, float] = {}
        for batch in self._final_batches(("cost_usd", *SOURCE_COLUMNS)):
            table = pa.table({"cost_usd": batch.column(0), _SOURCE: effective_sources(batch)})
            _add_costs(spent, table)
        return spent

    def _final_batches(self, columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
        return output_batches(
            self.output,
            self.schema,
            columns,
            self._chunk_rows,
            self._slice_bytes,
            self.format,
            self.types,
        )

    # -- during the run -------------------------------------------------------------------

    def submit(self, index: int, row: Mapping[str, Any]) -> None:
        """Append a finished row to the journal before anything else happens to it.

        Written straight to the file (no buffer of ours), so once this returns a ``kill -9``
        cannot lose the row; only a power loss can, between two fsyncs. Inside ``holding``,
        rows are written a few hundred kilobytes at a time instead.
        """
        if self._fd is None:
            raise OutputError("the output is not open")
        line = journal_bytes(index, row, self.run_id)
        cost = row.get("cost_usd")
        held = self._held
        if held is not None:
            held.append((line, index, row))
            self._held_bytes += len(line)
            if cost:
                self._held_costs.append((row.get("source"), cost))
            if self._held_bytes >= HELD_BYTES:
                self._write_held()
            return
        self._append(line, [(row.get("source"), cost)] if cost else [], [(line, index, row)])

    def _append(
        self,
        data: bytes,
        costs: Sequence[tuple[Any, Any]],
        lines: Sequence[tuple[bytes, int, Mapping[str, Any]]],
    ) -> None:
        """Write ``data``, the journal lines ``lines`` (each its bytes, input row and row),
        to the journal; ``costs``: (source, cost) of each that cost anything. Each line is
        noted in the index (``store.journal_index``) at its offset, the notes written after
        the next fsync; the journal is synced when the last sync is old."""
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[self._write(self._fd, view) :]
            if self._index is not None:
                offset = os.lseek(self._fd, 0, os.SEEK_CUR) - len(data)
                for line, index, row in lines:
                    self._index.add(offset, line, index, row, self.run_id)
                    offset += len(line)
            for source, cost in costs:
                source = source or UNRECORDED
                self.spent[source] = self.spent.get(source, 0.0) + float(cost)
            now = self._clock()
            if now - self._last_fsync >= FSYNC_EVERY_S:
                os.fsync(self._fd)
                self._last_fsync = now
                if self._index is not None:
                    self._index.flush()
        except OSError as exc:
            raise OutputError(
                f"cannot append to {self.journal}: {exc.strerror or exc}; the rows finished "
                "before this are kept and a re-run resumes after them"
            ) from exc
        if self.on_append is not None:
            for _ in range(len(lines)):
                self.on_append()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Rows submitted inside are written to the journal ``HELD_BYTES`` at a time
        (and all of them on leaving, or at ``sync``), in the same lines and order, with one
        write for many rows instead of one each.

        Only for rows a ``kill -9`` may lose: rows that can be had again for nothing, such
        as a Message Batch's results, which the API keeps until the batch is recorded as
        collected (``batches.run``); the run that follows collects them again."""
        if self._held is not None:  # already holding: the outer one writes them
            yield
            return
        self._held = []
        try:
            yield
        finally:
            try:
                self._write_held()
            finally:
                self._held = None

    def _write_held(self) -> None:
        held = self._held
        if not held:
            return
        lines = list(held)
        costs = self._held_costs
        held.clear()
        self._held_bytes = 0
        self._held_costs = []
        self._append(b"".join(line for line, _, _ in lines), costs, lines)

    def sync(self) -> None:
        """Force the journal to disk now (before recording that rows are safely written)."""
        if self._fd is not None:
            self._write_held()
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise OutputError(f"cannot sync {self.journal}: {exc.strerror or exc}") from exc
            self._last_fsync = self._clock()
            if self._index is not None:
                self._index.flush()

    async def close(self) -> None:
        """Flush the journal to disk and close it."""
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            self._write_held()
            synced = True
            try:
                os.fsync(self._fd)
            except OSError:
                synced = False
            os.close(self._fd)
            self._fd = None
            if self._index is not None:
                if synced:
                    self._index.flush()
                self._index.stop()
                self._index = None

    # -- after the run --------------------------------------------------------------------

    def finalize(self, total_rows: int) -> FinalCounts:
        """Write the final dataset (rows 0..total_rows-1 in input order) and drop the journal."""
        counts = self._write_output(total_rows, stopped=False)
        assert counts is not None  # only a stopped run's may write nothing
        return counts

    def drop_journal(self) -> None:
        """Remove the journal ``keep_journal`` kept after the final file was written."""
        self.journal.unlink(missing_ok=True)
        remove_index(self.journal)

    def write_finished(self, total_rows: int) -> FinalCounts | None:
        """After a stop: write the rows finished so far, in input order, as a partial output.

        The rows with no record yet (of rows 0..total_rows-1) are left out, the file is marked
        partial (``formats.marks``) and the journal is kept; rows only the old final file had
        are copied into the journal first, so it still holds every row. When every row has a
        record after all, this is ``finalize``. Returns None, writing nothing, when the
        journal holds nothing the output lacks.
        """
        return self._write_output(total_rows, stopped=True)

    def _write_output(self, total_rows: int, *, stopped: bool) -> FinalCounts | None:
        self._close_fd()
        if stopped and not self._journal_is_newer():
            return None  # the output already shows every row the journal holds
        give_back_freed_memory()  # what the run freed, before the final step's own peak
        partial = self._partial if self._final_exists() else None
        old_rows = 0 if partial is not None else self._old_rows()
        commit = Commit(self.output, self.format, free_space=self._free_space, types=self.types)
        commit.check_space(
            self._space_needed(copy_old=stopped),
            needs="twice the journal, plus the existing output until it is replaced",
            then="Free some space and re-run the same command: the journal is kept and nothing "
            "is sent again",
        )
        tmp_arrow = temporary_path(self.output, TMP_JOURNAL_SUFFIX)
        try:
            journal = journal_to_arrow(
                self.journal,
                self.schema,
                tmp_arrow,
                self._slice_bytes,
                bucket_rows_for(total_rows, self._bucket_rows),
            )
            try:
                if stopped and not len(journal):
                    return None  # only damaged lines: nothing to show
                covered = journal.count_from(old_rows, total_rows) + min(old_rows, total_rows)
                if stopped and covered == total_rows:
                    stopped = False  # every row has its record: the output is complete
                mark = Partial(covered, total_rows) if stopped else None
                with commit.building(mark) as tmp_out:
                    counts = self._merge(total_rows, old_rows, journal, commit, tmp_out, mark)
            finally:
                journal.close()
            self._partial = mark
            self.committed = commit.committed
            if mark is None and not self.keep_journal:
                self.journal.unlink(missing_ok=True)
                remove_index(self.journal)
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.output}: {exc.strerror or exc}{commit.short_of_space(exc)};"
                " the journal is kept: re-run the same command to write it"
            ) from exc
        except pa.ArrowException as exc:  # a file changed under us; the journal is kept
            raise OutputError(f"cannot write {self.output}: {exc}") from exc
        return counts

    def _journal_is_newer(self) -> bool:
        """Whether the journal holds rows the output does not show: it has any, and the
        output is not a partial one written after the journal's last change."""
        try:
            journal = self.journal.stat()
        except FileNotFoundError:
            return False
        if journal.st_size == 0:
            return False
        if self._partial is None:
            return True
        written = self.format.modified_ns(self.output)
        return written is None or written < journal.st_mtime_ns

    def _old_rows(self) -> int:
        return row_count(self.output, self.format) if self._final_exists() else 0

    def _space_needed(self, *, copy_old: bool = False) -> int:
        """Bytes the final step writes before it removes anything: the journal as Arrow and
        the new dataset, each about the journal's size at most, while the old dataset stays
        until the rename (and, after a stop, the old dataset's rows copied to the journal)."""
        journal = self.journal.stat().st_size if self.journal.exists() else 0
        old = self.format.size(self.output)
        return 2 * journal + old * (2 if copy_old else 1)

    def _merge(
        self,
        total_rows: int,
        old_rows: int,
        journal: SortedJournal,
        commit: Commit,
        tmp_out: Path,
        mark: Partial | None,
    ) -> FinalCounts:
        """Write rows 0..total_rows-1 from the old final file (by position, its first
        ``old_rows``) and the journal (by index, winning); with ``mark``, leave out rows
        neither has and copy the old file's rows into the journal (it must hold them all)."""
        old = _Positional(self._final_batches() if old_rows else iter(()))
        schema = self.schema.with_metadata(partial_metadata(mark)) if mark else self.schema
        ok = error = 0
        with (
            commit.writer(tmp_out, schema, self._write_options) as write,
            self._appending(copy=mark is not None and old_rows > 0) as append,
        ):
            for p0 in range(0, total_rows, self._chunk_rows):
                p1 = min(p0 + self._chunk_rows, total_rows)
                old_chunk = old.read(max(0, min(p1, old_rows) - p0), self.schema)
                new_chunk, positions = journal.between(p0, p1, self.schema)
                src: list[int | None] = list(range(old_chunk.num_rows))
                src += [None] * (p1 - p0 - len(src))
                for k, pos in enumerate(positions):
                    src[pos - p0] = old_chunk.num_rows + k
                if None in src and mark is None:
                    missing = p0 + src.index(None)
                    raise OutputError(f"internal error: no result recorded for row {missing}")
                if append is not None:
                    append(p0, old_chunk, [i for i in src if i is not None and i < len(old_chunk)])
                taken = int64_array([i for i in src if i is not None])
                table = pa.concat_tables([old_chunk, new_chunk]).take(taken)
                n_ok = (
                    pc.sum(pc.equal(table.column("status"), string_scalar(STATUS_OK))).as_py() or 0
                )
                ok += n_ok
                error += table.num_rows - n_ok
                if table.num_rows:
                    write(table)
        rows = ok + error
        return FinalCounts(rows, ok, error, total_rows if mark is not None else None)

    @contextlib.contextmanager
    def _appending(
        self, *, copy: bool
    ) -> Iterator[Callable[[int, pa.Table, Sequence[int]], None] | None]:
        """With ``copy``, an append(p0, chunk, rows) that journals those rows of a chunk of
        the old final file (its row k is input row p0 + k); synced before the output is
        replaced. Without, None."""
        if not copy:
            yield None
            return
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:

            def append(p0: int, chunk: pa.Table, rows: Sequence[int]) -> None:
                if not rows:
                    return
                picked = chunk.take(int64_array(rows)).to_pylist()
                lines = b"".join(
                    journal_bytes(p0 + k, r) for k, r in zip(rows, picked, strict=True)
                )
                data = memoryview(lines)
                while data:
                    data = data[self._write(fd, data) :]

            yield append
            os.fsync(fd)
        finally:
            os.close(fd)


# -- the journal, sorted by index ---------------------------------------------------------


class _SortedJournal:
    """One bucket of the journal (``SortedJournal``) on disk as an Arrow file, read a few
    small batches at a time.

    Only the index column is held in memory (sorted, newest record per index); the rows
    themselves are read from the file when their output chunk is written. Batches are read
    with plain file reads, not a memory map, so pages already written out do not stay
    counted in the process's memory.
    """

    def __init__(
        self, tmp: Path, order: Sequence[int], indexes: Sequence[int], starts: list[int]
    ) -> None:
        self._file = pa.OSFile(str(tmp), "rb")
        self._reader = ipc.open_file(self._file)
        self._order = order  # journal position of the k-th record in index order
        self._indexes = indexes  # the input index of the k-th record in index order
        self._starts = starts  # journal position of each Arrow batch's first row

    def close(self) -> None:
        self._file.close()

    def __len__(self) -> int:
        return len(self._indexes)

    def count_from(self, p0: int, p1: int) -> int:
        """How many rows in [p0, p1) have a record."""
        if p1 <= p0:
            return 0
        return bisect.bisect_left(self._indexes, p1) - bisect.bisect_left(self._indexes, p0)

    def between(self, p0: int, p1: int) -> tuple[pa.Table, Sequence[int]]:
        """The records for indexes in [p0, p1) (with ``_index``) and those indexes."""
        j0 = bisect.bisect_left(self._indexes, p0)
        j1 = bisect.bisect_left(self._indexes, p1)
        wanted = self._order[j0:j1]
        # The wanted records of each batch, by their place in ``wanted``. Only those rows of
        # a batch are kept once it is read: a Message Batch's results come in no particular
        # order, so one chunk of output may draw on every batch that holds that batch's
        # records, and holding those whole would hold the batch's every record at once.
        of_batch: dict[int, list[int]] = {}
        for k, pos in enumerate(wanted):
            of_batch.setdefault(bisect.bisect_right(self._starts, pos) - 1, []).append(k)
        pieces = []
        placed: list[int] = []  # the place in ``wanted`` of each row of the pieces, in turn
        for b in sorted(of_batch):
            ks = of_batch[b]
            start = self._starts[b]
            rows = int64_array([wanted[k] - start for k in ks])
            pieces.append(self._reader.get_batch(b).take(rows))
            placed += ks
        table = pa.Table.from_batches(pieces, schema=self._reader.schema)
        back = [0] * len(placed)  # row of the pieces holding wanted[k], for each k
        for row, k in enumerate(placed):
            back[k] = row
        return table.take(int64_array(back)), self._indexes[j0:j1]


class SortedJournal:
    """The journal's records sorted by input index, each row's newest only, in a folder of
    temporary files: what the final step reads, one chunk of rows at a time (``between``).

    The records are split by input index into buckets of ``bucket_rows`` rows, each an Arrow
    file with its index column beside it as plain integers. Only one bucket's index column is
    held sorted at a time (about 16 bytes a row of it), so the memory of the final step grows
    little with the job (``bench/final_step.py``: 155 MB at a million rows, 213 MB at ten
    million; sorted whole, 684 MB); a job within one bucket reads as one file. Chunks are
    asked for in input order (``between``), as both final steps do.
    """

    def __init__(self, folder: Path, buckets: dict[int, list[int]], bucket_rows: int) -> None:
        self.folder = folder
        self._buckets = buckets  # bucket -> journal position of each Arrow batch's first row
        self._bucket_rows = bucket_rows
        self._open: tuple[int, _SortedJournal] | None = None  # the bucket read last
        self._counts: dict[int, int] = {}  # rows with a record, of each bucket read so far
        self._len: int | None = None

    def close(self) -> None:
        """Close the file read last and remove the folder."""
        self._drop()
        remove_temporary(self.folder)

    def __len__(self) -> int:
        """How many rows have a record."""
        if self._len is None:
            end = (max(self._buckets, default=-1) + 1) * self._bucket_rows
            self._len = self.count_from(0, end)
        return self._len

    def count_from(self, p0: int, p1: int) -> int:
        """How many rows in [p0, p1) have a record."""
        count = 0
        for b in self._overlapping(p0, p1):
            inside = p0 <= b * self._bucket_rows and (b + 1) * self._bucket_rows <= p1
            if inside and b in self._counts:
                count += self._counts[b]  # (counted when it was last read)
            else:
                count += self._bucket(b).count_from(p0, p1)
        return count

    def between(self, p0: int, p1: int, schema: pa.Schema) -> tuple[pa.Table, Sequence[int]]:
        """The records for indexes in [p0, p1) (without ``_index``) and those indexes."""
        tables: list[pa.Table] = []
        indexes: array[int] = array("q")
        for b in self._overlapping(p0, p1):
            table, found = self._bucket(b).between(p0, p1)
            tables.append(table)
            indexes.extend(found)
        if not tables:
            empty = pa.Table.from_batches([], schema=journal_schema(schema))
            return empty.drop_columns([INDEX]).cast(schema), indexes
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        return table.drop_columns([INDEX]).cast(schema), indexes

    def _overlapping(self, p0: int, p1: int) -> list[int]:
        """The buckets with records, of those holding rows in [p0, p1)."""
        if p1 <= p0:
            return []
        first, last = p0 // self._bucket_rows, (p1 - 1) // self._bucket_rows
        return [b for b in range(first, last + 1) if b in self._buckets]

    def _bucket(self, b: int) -> _SortedJournal:
        if self._open is not None and self._open[0] == b:
            return self._open[1]
        self._drop()  # one bucket's indexes held at a time
        raw = (self.folder / f"{b}{_INDEXES}").read_bytes()
        positions, indexes = newest_per_row(int64_array_of(raw))
        bucket = _SortedJournal(
            self.folder / f"{b}{_RECORDS}", int64s(positions), int64s(indexes), self._buckets[b]
        )
        self._open = (b, bucket)
        self._counts[b] = len(bucket)
        return bucket

    def _drop(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None


def bucket_rows_for(total_rows: int, least: int = BUCKET_ROWS) -> int:
    """Input rows per bucket for the final step of a job of ``total_rows`` rows: ``least``,
    or more, so that there are at most ``MAX_BUCKETS`` buckets.

        >>> bucket_rows_for(1_000_000), bucket_rows_for(100_000_000)
        (262144, 390625)
    """
    return max(least, -(-total_rows // MAX_BUCKETS))


def journal_to_arrow(
    path: Path, schema: pa.Schema, tmp: Path, slice_bytes: int, bucket_rows: int = BUCKET_ROWS
) -> SortedJournal:
    """Stream the journal into a folder ``tmp`` of Arrow files of small batches, a file for
    each ``bucket_rows`` input rows (``SortedJournal``); removed again if this fails."""
    jschema = journal_schema(schema)
    tmp.mkdir()
    try:
        buckets = _write_buckets(tmp, jschema, read_records(path, schema, slice_bytes), bucket_rows)
    except BaseException:
        remove_temporary(tmp)
        raise
    return SortedJournal(tmp, buckets, bucket_rows)


_RECORDS = ".arrow"  # a bucket's records, in journal order
_INDEXES = ".indexes"  # its index column, as native int64s


def _write_buckets(
    folder: Path, jschema: pa.Schema, batches: Iterator[pa.RecordBatch], bucket_rows: int
) -> dict[int, list[int]]:
    """Write ``batches`` to their buckets in small pieces; return each bucket's pieces'
    starts (journal order is kept within a bucket: the newest record of a row is its last)."""
    starts: dict[int, list[int]] = {}
    written: dict[int, int] = {}
    with contextlib.ExitStack() as stack:
        writers: dict[int, tuple[ipc.RecordBatchFileWriter, Any]] = {}

        def write(b: int, batch: pa.RecordBatch) -> None:
            if b not in writers:
                sink = stack.enter_context(pa.OSFile(str(folder / f"{b}{_RECORDS}"), "wb"))
                writer = stack.enter_context(ipc.new_file(sink, jschema))
                indexes = stack.enter_context((folder / f"{b}{_INDEXES}").open("wb"))
                writers[b] = (writer, indexes)
                starts[b], written[b] = [], 0
            writer, indexes = writers[b]
            for offset in range(0, batch.num_rows, _JOURNAL_BATCH_ROWS):
                piece = batch.slice(offset, _JOURNAL_BATCH_ROWS)
                writer.write_batch(piece)
                indexes.write(numbers(piece.column(0).cast(pa.int64())).tobytes())
                starts[b].append(written[b])
                written[b] += piece.num_rows

        for batch in batches:
            if not batch.num_rows:
                continue
            bucket_of = pc.divide(batch.column(0).cast(pa.int64()), int64_scalar(bucket_rows))
            low, high = pc.min_max(bucket_of).values()
            if low.as_py() == high.as_py():  # the usual: the whole batch in one bucket
                write(int(low.as_py()), batch)
                continue
            for b in pc.unique(bucket_of).to_pylist():
                write(int(b), batch.filter(pc.equal(bucket_of, int64_scalar(b))))
    return starts


# Rows per batch in the temporary Arrow file: small, so a chunk of output reads little.
_JOURNAL_BATCH_ROWS = 4096


# -- final files ----------------------------------------------------------------------------


def output_kind(path: Path | str) -> str:
    """The name of the output's format, by its name (``formats.registry.output_for``)."""
    return output_for(path).name


def row_count(path: Path, fmt: OutputFormat | None = None) -> int:
    """How many rows the output at ``path`` holds (in ``fmt``: by its name when None)."""
    try:
        return (fmt or output_for(path)).row_count(path)
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"cannot read existing output {path}: {exc}") from exc


def output_batches(
    path: Path,
    schema: pa.Schema,
    columns: Sequence[str] | None = None,
    batch_rows: int = CHUNK_ROWS,
    slice_bytes: int = JSON_SLICE_BYTES,
    fmt: OutputFormat | None = None,
    types: OutputTypes | None = None,
) -> Iterator[pa.RecordBatch]:
    """Batches of an existing final file, conformed to ``schema`` (older runs may differ).

    Read by its format (``fmt``; by its name when None), about ``batch_rows`` rows at a
    time (a slice of ``slice_bytes`` for JSON lines: see the format). ``types``: the columns'
    types as the file was written (``store.typed``), which a text format reads it by; they
    are then conformed to ``schema``.
    """
    # In the order asked for: callers read the columns by position.
    wanted = schema if columns is None else pa.schema([schema.field(n) for n in columns])
    written = wanted if types is None or types.plain else types.schema(wanted)
    written = pa.schema([written.field(f.name) for f in wanted])
    for batch in (fmt or output_for(path)).batches(path, written, batch_rows, slice_bytes):
        yield conform(batch, wanted)


class _Positional:
    """Reads exactly n rows at a time from a batch iterator."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self._batches = batches
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def read(self, n: int, schema: pa.Schema) -> pa.Table:
        while self._pending_rows < n:
            batch = next(self._batches, None)
            if batch is None:
                break
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
        table = pa.Table.from_batches(self._pending, schema=schema)
        head, rest = table.slice(0, n), table.slice(n)
        self._pending = rest.to_batches()
        self._pending_rows = rest.num_rows
        return head


def _has_bytes(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False
