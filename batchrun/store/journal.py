"""The output journal, read and written in one place: JSON lines, one per finished row.

Each line is one record: ``{"_index": <input row>, "_run": <run>, <output columns>...}``,
appended in the order rows finish. A row may have several records (an error, then a retry's
answer; a resumed run sending it again): the newest record for an index wins, everywhere the
journal is read (``newest_per_row``). A crash can leave a torn last line and a power loss a damaged
one: readers skip what is not a record rather than fail.

A record is verified as it is read, never trusted: a line is a record only when it is a JSON
object whose ``_index`` is an integer in [0, ``MAX_INDEX``], whose ``id`` is a string, whose
``status`` is ``ok``, ``error`` or null (a row never sent), and whose other columns have
their type in the output schema (``CHECKED``: what a resume relies on, and the numbers). Any
other line that is not blank is damaged: skipped like a torn line (its row is sent again
unless an older record answers it), and counted (``Damage``; ``Newest.damaged``) so that a
run can say so. The same lines are records whichever columns are read, and whichever path
parsed them. The other columns (the text, ``finished_at``, kept input columns, ...) are not
grounds for damage: a value of the wrong type there reads as null.

    newest = Newest.read(path)            # one pass over the index column
    for batch in newest.records(schema):  # a second pass: each row's newest record
        ...
    table = newest_table(path, schema)    # or one pass, for a few small columns

Memory stays bounded whatever the journal's size: lines are parsed a slice of the file at a
time, and what is held per record is 8 bytes of index or position (``array('q')``).
"""

from __future__ import annotations

import bisect
import functools
import json
import os
from array import array
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchrun.core.jsoncodec import flat_line
from batchrun.core.timestamps import format_rfc3339, parse_rfc3339_or_none
from batchrun.formats.jsonl import (
    JSON_SLICE_BYTES,
    json_line,
    json_options,
    line_slices,
    parse_slice,
)
from batchrun.formats.values import as_text
from batchrun.store.arrow_values import bool_scalar, bools, int64_array, int64_scalar, strings
from batchrun.store.columns import COLUMNS, STATUS_ERROR, STATUS_OK, Kind

INDEX = "_index"
# Which run wrote a record (``Sink.run_id``): a journal-only field, like ``_index``. What a
# job spent is summed by run (``store.spend``); records a run copied rather than answered (a
# stopped run's copy of the old final file, a shard's file taken back) have none.
RUN = "_run"

# The Arrow type of each column kind (``columns.COLUMNS``): the output schema's and the
# journal's (``sink.output_schema``).
ARROW_TYPES: dict[Kind, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "timestamp": pa.timestamp("ms", tz="UTC"),
}

# No job has this many rows (a billion: months at the highest rate limits); an ``_index``
# beyond it is damage, whatever the input. Callers that know the input's row count check
# records against that too (``runs.resume``).
MAX_INDEX = 10**9 - 1

# What every read parses and checks, whichever columns it returns, so that the same lines
# are records for every reader (the index pass and the record pass of ``Newest``, a resume's
# read and the final step's): what a resume relies on and the numbers (tokens, cost) that
# reports add up. Other columns (text, names, ids of requests, ``finished_at``, kept input
# columns) are not checked: costly to parse on every read (the text above all) and relied
# on by nothing; a value of the wrong type there reads as null. Parsing these adds about a
# third to a read of the index column alone (200,000 records of ~1.5 KB: 2.2 s, not 1.6).
_CHECKED_STRINGS = ("id", "status", "request_hash", "error_type")
CHECKED = pa.schema(
    [pa.field(INDEX, pa.int64())]
    + [
        pa.field(name, ARROW_TYPES[kind])
        for name, kind in COLUMNS
        if name in _CHECKED_STRINGS or kind in ("int", "float")
    ]
)


@functools.lru_cache(maxsize=1)
def _statuses() -> pa.Array:
    # From bytes, on first use: a list given to pa.array() imports pandas (store.arrow_values).
    return strings([STATUS_OK, STATUS_ERROR])


_INT64 = (-(2**63), 2**63 - 1)
_FLOAT_MAX = 2**1023  # a JSON integer past it is no float64


class Damage:
    """A count of damaged journal lines seen by a read (``read_records(..., damage=)``)."""

    def __init__(self) -> None:
        self.lines = 0


# -- writing --------------------------------------------------------------------------------


def journal_line(index: int, row: Mapping[str, Any], run: str | None = None) -> str:
    """The journal line recording that input row ``index`` finished as ``row`` (in ``run``)."""
    record = _record(index, row, run)
    line = flat_line(record)
    return json_line(record) if line is None else line.decode()


def journal_bytes(index: int, row: Mapping[str, Any], run: str | None = None) -> bytes:
    """``journal_line``, encoded as it is written: by orjson where it writes the same values
    (``core.jsoncodec.flat_line``, a tenth of the stdlib's time), and every row writes one."""
    record = _record(index, row, run)
    line = flat_line(record)
    return json_line(record).encode() if line is None else line


def _record(index: int, row: Mapping[str, Any], run: str | None) -> dict[str, Any]:
    record = {INDEX: index, **row} if run is None else {INDEX: index, RUN: run, **row}
    finished = record.get("finished_at")
    if isinstance(finished, datetime):  # as json_line writes it
        record["finished_at"] = format_rfc3339(finished)
    return record


def repair_journal(path: Path) -> None:
    """Cut a torn last line (a crash mid-write), so new lines start on a line of their own."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with path.open("rb+") as fh:
        tail = 1 << 16
        end = size
        while end > 0:
            start = max(0, end - tail)
            fh.seek(start)
            chunk = fh.read(end - start)
            nl = chunk.rfind(b"\n")
            if nl != -1:
                cut = start + nl + 1
                if cut != size:
                    fh.truncate(cut)
                return
            end = start
        fh.truncate(0)


# -- reading JSON lines ---------------------------------------------------------------------


def journal_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the ``_index`` column first: the shape of the batches read here."""
    return pa.schema([pa.field(INDEX, pa.int64()), *(f for f in schema if f.name != INDEX)])


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with exactly ``schema``'s columns (outputs of older versions may lack some).

    A typed column read as text (an output's typed id or kept column, ``store.typed``) is
    its text (``formats.values.as_text``), as the run that wrote it kept it."""
    arrays = []
    for f in schema:
        i = batch.schema.get_field_index(f.name)
        col = batch.column(i) if i >= 0 else pa.nulls(batch.num_rows, f.type)
        if col.type != f.type:
            col = as_text(col) if pa.types.is_string(f.type) else col.cast(f.type)
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def read_records(
    path: Path,
    schema: pa.Schema,
    slice_bytes: int = JSON_SLICE_BYTES,
    *,
    damage: Damage | None = None,
    span: tuple[int, int] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The journal's records in journal order, as batches of ``journal_schema(schema)``;
    only those on the lines of bytes [start, stop) of ``span`` when given.

    A missing or empty journal has none. pyarrow parses a slice of whole lines at a time
    (the columns asked for and ``CHECKED``); a slice it refuses (a crash or a power loss
    left a damaged line in it, or a value has the wrong type) is parsed again line by line,
    checking each record's types, so one bad line slows one slice, not the file. Both paths
    then check ``_index``, ``id`` and ``status`` (see the module's docstring), so a record's
    position (its number among the records) is the same whichever path read it. Damaged
    lines are counted in ``damage``.
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    jschema = journal_schema(schema)
    parsed = _parsed_schema(jschema)
    options = json_options(parsed)
    for data, parsed_batches in _parsed_slices(path, slice_bytes, options, span):
        if parsed_batches is not None:
            batches = parsed_batches
            lines = sum(batch.num_rows for batch in batches)  # a row per line not blank
        else:
            batch, lines = _tolerant_slice(data, parsed)
            batches = [batch]
        kept = 0
        for batch in batches:
            valid = batch.filter(_valid(batch)) if batch.num_rows else batch
            kept += valid.num_rows
            if valid.num_rows:
                yield conform(valid, jschema)
        if damage is not None:
            damage.lines += lines - kept


# Slices parsed at once: pyarrow parses without the interpreter's lock, so a big journal (a
# resume's first step) is read about as many times faster as there are cores, up to this.
_PARSERS = min(4, os.cpu_count() or 1)


def _parse_or_none(data: memoryview, options: Any) -> list[pa.RecordBatch] | None:
    try:
        return parse_slice(data, options)
    except pa.ArrowInvalid:
        return None  # damaged: parsed again line by line (``_tolerant_slice``)


def _parsed_slices(
    path: Path, slice_bytes: int, options: Any, span: tuple[int, int] | None = None
) -> Iterator[tuple[memoryview, list[pa.RecordBatch] | None]]:
    """Each slice of ``path`` (``line_slices``) and its batches, None where pyarrow refused
    it; in file order, up to ``_PARSERS`` slices parsed at a time (memory: that many)."""
    slices = line_slices(path, slice_bytes, span)
    if _PARSERS < 2:
        yield from ((data, _parse_or_none(data, options)) for data in slices)
        return
    with ThreadPoolExecutor(_PARSERS, thread_name_prefix="batchrun-journal") as pool:
        ahead: deque[tuple[memoryview, Future[list[pa.RecordBatch] | None]]] = deque()
        try:
            for data in slices:
                ahead.append((data, pool.submit(_parse_or_none, data, options)))
                if len(ahead) >= _PARSERS:
                    data, done = ahead.popleft()
                    yield data, done.result()
            while ahead:
                data, done = ahead.popleft()
                yield data, done.result()
        finally:
            for _, left in ahead:
                left.cancel()


def _parsed_schema(jschema: pa.Schema) -> pa.Schema:
    """What a read parses: the columns asked for, and those every read checks."""
    extra = [f for f in jschema if CHECKED.get_field_index(f.name) < 0]
    return pa.schema([*CHECKED, *extra])


def _valid(batch: pa.RecordBatch) -> pa.Array:
    """Which rows of a parsed batch are records: a plausible ``_index``, an id, a status."""
    index, status = batch.column(INDEX), batch.column("status")
    mask = pc.and_kleene(
        pc.and_kleene(
            pc.greater_equal(index, int64_scalar(0)),
            pc.less_equal(index, int64_scalar(MAX_INDEX)),
        ),
        pc.and_kleene(
            pc.is_valid(batch.column("id")),
            pc.or_kleene(pc.is_null(status), pc.is_in(status, _statuses())),
        ),
    )
    return pc.fill_null(mask, bool_scalar(False))


def _tolerant_slice(data: memoryview, parsed: pa.Schema) -> tuple[pa.RecordBatch, int]:
    """Line-by-line fallback when pyarrow will not parse a slice: each line is parsed and
    its checked columns' types verified; a line that fails is left out. Returns the records
    and how many lines were not blank."""
    checked = [f for f in parsed if CHECKED.get_field_index(f.name) >= 0]
    checks = [(f.name, _type_check(f.type)) for f in checked]
    lenient = [(f.name, f.type) for f in parsed if CHECKED.get_field_index(f.name) < 0]
    rows: list[dict[str, Any]] = []
    lines = 0
    for line in data.tobytes().split(b"\n"):
        if not line.strip():
            continue
        lines += 1
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not all(
            check(record.get(name)) for name, check in checks
        ):
            continue
        row = {name: record.get(name) for name, _ in checks}
        for name, kind in lenient:
            row[name] = _lenient_value(record.get(name), kind)
        rows.append(row)
    return pa.RecordBatch.from_pylist(rows, schema=parsed), lines


def _type_check(kind: pa.DataType) -> Any:
    """A test that a JSON value can be a column of ``kind`` (null can be any)."""
    if pa.types.is_integer(kind):
        return lambda v: (
            v is None
            or (isinstance(v, int) and not isinstance(v, bool) and _INT64[0] <= v <= _INT64[1])
        )
    if pa.types.is_floating(kind):
        return lambda v: (
            v is None
            or isinstance(v, float)
            or (isinstance(v, int) and not isinstance(v, bool) and -_FLOAT_MAX < v < _FLOAT_MAX)
        )
    return lambda v: v is None or isinstance(v, str)


def _lenient_value(value: Any, kind: pa.DataType) -> Any:
    """A value of an unchecked column, or None when it has the wrong type."""
    if pa.types.is_timestamp(kind):
        # Timestamps are RFC 3339 text in the journal; one that cannot be read becomes null.
        return parse_rfc3339_or_none(value) if isinstance(value, str) else None
    if pa.types.is_string(kind):
        return value if isinstance(value, str) else None
    return value if _type_check(kind)(value) else None


# -- the newest record per row --------------------------------------------------------------


def newest_per_row(indexes: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """The one rule for a row with several records: the newest wins.

    ``indexes`` is a journal's ``_index`` column in journal order. Returns, in index order,
    the journal position of each row's newest record and that row's index (once each).
    """
    order = pc.sort_indices(indexes)  # stable: equal indexes keep journal (time) order
    sorted_index = indexes.take(order)
    if isinstance(sorted_index, pa.ChunkedArray):
        sorted_index = sorted_index.combine_chunks()
    n = len(sorted_index)
    if n > 1:
        # Keep the last record of each run of equal indexes: the newest answer wins.
        differs = pc.not_equal(sorted_index.slice(0, n - 1), sorted_index.slice(1))
        keep = pa.concat_arrays([differs, bools([True])])
        order = order.filter(keep)
        sorted_index = sorted_index.filter(keep)
    return order, sorted_index


def int64s(values: pa.Array | pa.ChunkedArray) -> array[int]:
    """Integers as a compact ``array('q')`` (8 bytes each, not a list's ~36): bisect works."""
    packed = array("q")
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    for chunk in chunks:  # through NumPy: no Python int per value, even briefly
        packed.frombytes(numbers(chunk.cast(pa.int64())).tobytes())
    return packed


def numbers(values: pa.Array) -> np.ndarray:
    """An int64 Arrow array as NumPy, from its buffer (``to_numpy`` would import pandas);
    where it is null, whatever the buffer holds."""
    data = values.buffers()[1]
    if data is None:
        return np.zeros(len(values), dtype=np.int64)
    return np.frombuffer(data, dtype=np.int64)[values.offset : values.offset + len(values)]


def newest_table(
    path: Path,
    schema: pa.Schema,
    slice_bytes: int = JSON_SLICE_BYTES,
    *,
    damage: Damage | None = None,
) -> pa.Table:
    """Each row's newest record (columns ``journal_schema(schema)``, in index order), in one
    pass. Every record's columns are held on the way, so this is for a few small columns (a
    resume reads four); ``Newest`` reads any number in bounded memory, in two passes.
    Damaged lines are counted in ``damage``."""
    jschema = journal_schema(schema)
    batches = list(read_records(path, schema, slice_bytes, damage=damage))
    table = pa.Table.from_batches(batches, schema=jschema)
    positions, _ = newest_per_row(table.column(0))
    return table.take(positions)


class Newest:
    """Which record of a journal is each row's newest, found from the index column alone.

    ``read`` makes one pass over the journal's ``_index`` column; ``records`` a second pass
    that keeps each row's newest record. A journal still being written may have grown in
    between: records past the first pass's end are not returned (a later read sees them).
    ``damaged`` is how many damaged lines the first pass skipped.
    """

    def __init__(
        self, path: Path, positions: Sequence[int], indexes: Sequence[int], damaged: int = 0
    ) -> None:
        self.path = path
        self.indexes = indexes  # the rows with a record, ascending, once each
        self.damaged = damaged
        self._positions = positions  # journal positions of their newest records, ascending

    @classmethod
    def read(cls, path: Path, slice_bytes: int = JSON_SLICE_BYTES) -> Newest:
        damage = Damage()
        records = read_records(path, pa.schema([]), slice_bytes, damage=damage)
        parts = [batch.column(0) for batch in records]
        positions, indexes = newest_per_row(pa.chunked_array(parts, pa.int64()))
        in_journal_order = positions.take(pc.sort_indices(positions))
        return cls(path, int64s(in_journal_order), int64s(indexes), damage.lines)

    def between(self, start: int, stop: int) -> Sequence[int]:
        """The rows in [start, stop) that have a record, ascending."""
        j0 = bisect.bisect_left(self.indexes, start)
        j1 = bisect.bisect_left(self.indexes, stop)
        return self.indexes[j0:j1]

    def records(
        self, schema: pa.Schema, slice_bytes: int = JSON_SLICE_BYTES
    ) -> Iterator[pa.RecordBatch]:
        """Each row's newest record (batches of ``journal_schema(schema)``), in journal order."""
        position = 0
        for batch in read_records(self.path, schema, slice_bytes):
            j0 = bisect.bisect_left(self._positions, position)
            j1 = bisect.bisect_left(self._positions, position + batch.num_rows)
            if j1 - j0 == batch.num_rows:
                yield batch
            elif j1 > j0:
                picked = [p - position for p in self._positions[j0:j1]]
                yield batch.take(int64_array(picked))
            position += batch.num_rows
