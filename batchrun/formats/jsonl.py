"""JSON lines, in and out: one JSON object per line.

In (``.jsonl``, ``.ndjson``, ``.json-lines``): read line by line, each line decoded on its
own, so one bad line is one bad row; a line longer than the cap is one row too, never held
whole. A row's number is its 1-based line in the file (blank lines are skipped but still
counted). Its rows are counted by one fast pass over the lines.

Out (``.jsonl``): one compact JSON line per output row (``json_line``: timestamps as RFC 3339
UTC with a Z), read back a slice of whole lines at a time through pyarrow's JSON reader,
typed by the schema asked for (``read_json_lines``). The journal is JSON lines too:
``store.journal`` reads it with the same slices. A name no format claims is read as JSON
lines (the ``fallback``).

A JSON array's quick look for keys (``scan_for``) is this module's too: a key is written the
same way in both.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable, Collection, Generator, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from batchrun.core.errors import InputError, Problem
from batchrun.core.jsoncodec import compact
from batchrun.core.timestamps import format_rfc3339
from batchrun.formats.base import (
    ColumnQuery,
    Head,
    InputColumns,
    InputFormat,
    OutputFormat,
    Write,
    WriteOptions,
)
from batchrun.rows.compressed import Compression, open_bytes
from batchrun.rows.raw import RawRow, Skip, guarded, json_record, read_errors, skipped_rows
from batchrun.rows.shape import InputKind
from batchrun.rows.text import (
    MAX_ROW_BYTES,
    LongLine,
    bounded_lines,
    first_piece,
    is_ascii_compatible,
    is_whole,
    not_text_reason,
    open_utf8,
    rest_of_line,
    too_long,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.json as pj

# Bytes of JSON lines parsed at a time. pyarrow's streaming reader (``pj.open_json``) reads
# blocks ahead of its consumer, and their memory grows with the file: over a 200,000-row
# (210 MB) journal its pool peaked at 74 MiB with 2 MiB blocks (24 MiB at 20,000 rows), and
# the process's RSS rose by 131 MiB for good. Parsing whole lines one slice of the file at a
# time keeps it to a few MiB whatever the file's size (RSS +31 MiB at 200,000 rows, +29 at
# 20,000), is no slower, and takes a line of any length (a slice grows to hold it).
JSON_SLICE_BYTES = 2 << 20

_SCAN_CHUNK = 1 << 20


# -- in ---------------------------------------------------------------------------------------


def _jsonl_rows(
    path: Path, kind: InputKind, batch_size: int, skip: Skip, cap: int = MAX_ROW_BYTES
) -> Generator[RawRow, None, None]:
    """One raw row per non-blank line; bytes are decoded per line so one bad line is one bad
    row, and a line longer than ``cap`` bytes is one row too, never held whole. Rows skipped
    one after another come as one (``skipped_rows``), read in a tight loop (the lines of
    ``bounded_lines``, without a generator's step per line): a resume skips millions."""
    del batch_size  # lines are already the unit
    index = 0
    skipped = 0  # skipped rows not given yet
    # ``skip.run(index)``, when the caller gives it: how many rows from ``index`` on it
    # skips, one after another; they are then passed over a megabyte at a time, uncut.
    run: Callable[[int], int] | None = getattr(skip, "run", None)
    with read_errors(str(path)), open_utf8(path, kind) as stream:
        readline, first = stream.readline, first_piece(cap)
        if run is not None and not stream.seekable():
            run = None
        line_number = 0
        while line := readline(first):
            line_number += 1
            data = line if is_whole(line, cap) else rest_of_line(stream, line, cap)
            if not isinstance(data, LongLine) and data.isspace():
                continue
            if skip(index):
                skipped += 1
                index += 1
                if run is not None and (more := run(index)) > 0:
                    rows, lines = skip_lines(stream, more)
                    skipped += rows
                    index += rows
                    line_number += lines
                continue
            if skipped:
                yield skipped_rows(skipped)
                skipped = 0
            if isinstance(data, LongLine):
                problem = Problem(None, too_long("the line", data.size, cap))
                yield RawRow(line_number, None, [problem])
            else:
                yield guarded(line_number, _jsonl_row, data, kind)
            index += 1
        if skipped:
            yield skipped_rows(skipped)


_BLANK_AFTER = re.compile(rb"\n(?=[ \t\r\x0b\x0c]*\n)")  # a newline that a blank line follows
_SKIP_CHUNK = 1 << 20


def skip_lines(stream: IO[bytes], rows: int) -> tuple[int, int]:
    """Pass over the next ``rows`` rows (lines that are not blank) of a seekable ``stream``
    that stands at the start of a line, a megabyte at a time; it is left at the start of the
    line after them. Returns the rows and the lines passed over: fewer rows at the end of
    the file, or before a line longer than a chunk (the caller reads it)."""
    passed = lines = 0
    while passed < rows:
        chunk = stream.read(_SKIP_CHUNK)
        if not chunk:
            break
        cut = chunk.rfind(b"\n") + 1
        body = memoryview(chunk)[:cut]
        if _BLANK_AFTER.search(chunk, 0, cut) is None and not chunk[:1].isspace():
            count = chunk.count(b"\n", 0, cut)  # every line a row
            if passed + count > rows:
                cut = _after_newlines(chunk, rows - passed)
                count = rows - passed
            passed += count
            lines += count
        else:  # blank lines among them (rare): line by line
            start = 0
            while start < cut and passed < rows:
                end = chunk.index(b"\n", start) + 1
                lines += 1
                if not body[start:end].tobytes().isspace():
                    passed += 1
                start = end
            cut = start
        stream.seek(cut - len(chunk), io.SEEK_CUR)  # back to the start of the next line
        if cut == 0:
            break  # a line longer than a chunk: the caller reads it
    return passed, lines


def _after_newlines(chunk: bytes, count: int) -> int:
    """The position just after the ``count``-th newline of ``chunk``."""
    at = -1
    for _ in range(count):
        at = chunk.index(b"\n", at + 1)
    return at + 1


def count_lines(stream: IO[bytes], cap: int = MAX_ROW_BYTES) -> int:
    """The rows of ``stream`` as ``_jsonl_rows`` reads them (lines that are not blank, and
    lines longer than ``cap``), counted a megabyte at a time."""
    rows = 0
    blank = True  # the line under way holds only whitespace so far
    size = 0  # its bytes so far
    while chunk := stream.read(_SKIP_CHUNK):
        first = chunk.find(b"\n")
        if first < 0:
            blank = blank and not chunk.strip()
            size += len(chunk)
            continue
        if not (blank and not chunk[:first].strip()) or size + first + 1 > cap:
            rows += 1  # the line under way ends here
        last = chunk.rfind(b"\n")
        inner = chunk.count(b"\n", first + 1, last + 1)  # lines begun and ended in the chunk
        rows += inner - len(_BLANK_AFTER.findall(chunk, first, last + 1))
        if inner and cap < _SKIP_CHUNK:
            rows += _long_blank_lines(chunk, first, last, cap)
        tail = chunk[last + 1 :]
        blank, size = not tail.strip(), len(tail)
    if not blank or size > cap:
        rows += 1  # a last line with no newline
    return rows


def _long_blank_lines(chunk: bytes, first: int, last: int, cap: int) -> int:
    """Blank lines longer than ``cap`` between ``first`` and ``last`` (rows all the same)."""
    return sum(
        1
        for line in chunk[first + 1 : last + 1].split(b"\n")[:-1]
        if len(line) + 1 > cap and not line.strip()
    )


def _jsonl_row(line_number: int, data: bytes, kind: InputKind | None = None) -> RawRow:
    """Parse one JSONL line (of an input of ``kind``) into a record, or say why it is not one
    (``rows.raw.json_record``; bytes that are not text in the input's encoding, too)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        reason = not_text_reason(data, kind or _UTF8) or "not valid UTF-8"
        return RawRow(line_number, None, [Problem(None, reason)])
    return json_record(line_number, text)


_UTF8 = InputKind("jsonl")


def _blank(data: bytes | object) -> bool:
    return isinstance(data, bytes) and data.isspace()


class JsonLinesInput(InputFormat):
    names = ("jsonl",)
    suffixes = (".jsonl", ".ndjson", ".json-lines")
    rank = 10
    sniff_rank = 20

    def sniff(self, head: Head) -> str | None:
        return self.name if head.text.startswith("{") else None

    def rows(
        self, path: Path, kind: InputKind, batch_size: int, skip: Skip, cap: int = MAX_ROW_BYTES
    ) -> Generator[RawRow, None, None]:
        return _jsonl_rows(path, kind, batch_size, skip, cap)

    def count(self, path: Path, kind: InputKind) -> int | None:
        """Non-blank lines, as the reader counts rows (a line too long to read included),
        decompressing and decoding the file on the way."""
        try:
            with open_utf8(path, kind) as stream:
                return count_lines(stream)
        except (InputError, OSError):
            return None

    def columns(self, query: ColumnQuery) -> InputColumns | None:
        """Quick: one scan of the bytes for each key's JSON text (``scan_for``). Exact: a pass
        over the lines until every name asked is a key of some line; a line is parsed only
        when it may hold one (its JSON text for the name, or any escape), which keeps that
        pass about as fast as counting lines."""
        if query.quick:
            return quick_json_columns(self, query)
        left = dict.fromkeys(query.asked)
        needles = {name: json.dumps(name, ensure_ascii=False).encode() for name in query.asked}
        first: tuple[str, ...] | None = None
        with open_utf8(query.path, query.kind) as stream:
            for data in bounded_lines(stream):
                if not isinstance(data, bytes) or data.isspace():
                    continue
                plain = b"\\" not in data
                if first is not None and plain and not any(needles[m] in data for m in left):
                    continue  # no name still wanted can be a key of this line
                try:
                    record = json.loads(data)
                except ValueError:
                    continue  # a bad line: the reader makes it an error row
                if not isinstance(record, dict):
                    continue
                if first is None:
                    first = tuple(record)
                for name in record.keys() & left.keys():
                    del left[name]
                if not left:
                    break
        found = frozenset(name for name in query.asked if name not in left)
        return InputColumns(first or (), found, declared=False)

    def column_types(self, path: Path, kind: InputKind, names: Collection[str]) -> dict[str, Any]:
        return self.value_types(path, kind, names)


def quick_json_columns(fmt: InputFormat, query: ColumnQuery) -> InputColumns | None:
    """The quick look of the JSON formats: which of ``asked`` some row may hold, by one scan
    of the bytes for each key's JSON text (``"model"``), stopped as soon as ``enough`` says;
    text that merely contains ``"model"`` makes the key look present. The first row's fields
    are found too. None when a scan cannot tell: a name that JSON may write several ways, or
    text in an encoding whose keys are not ASCII bytes (UTF-16)."""
    if not is_ascii_compatible(query.kind.encoding):
        return None  # keys written in UTF-16 or UTF-32: no byte scan finds them
    needles = {name: json_key(name) for name in query.asked}
    wanted = {needle for needle in needles.values() if needle is not None}
    if len(wanted) != len(needles):
        return None  # a key whose JSON text may be written several ways
    first = _first_fields(fmt, query.path, query.kind)
    named = {needle: name for name, needle in needles.items() if needle is not None}
    first_asked = first & frozenset(query.asked)

    def settled(found: set[bytes]) -> bool:
        enough = query.enough
        return enough is not None and enough({named[n] for n in found} | first_asked)

    found = scan_for(query.path, wanted, settled, compression=query.kind.compression)
    present = frozenset(named[needle] for needle in found) | first_asked
    return InputColumns(tuple(sorted(first)), present, declared=False)


def _first_fields(fmt: InputFormat, path: Path, kind: InputKind) -> frozenset[str]:
    """The fields the file's first row has a value for (none when it has no row)."""
    with contextlib.closing(fmt.rows(path, kind, 1, lambda index: index > 0)) as raw:
        first = next(raw, None)
    record = first.record if first is not None else None
    return frozenset(name for name, value in (record or {}).items() if value is not None)


def json_key(name: str) -> bytes | None:
    """``"name"`` as JSON writes it; None unless that is its only likely spelling (plain
    printable ASCII: other characters may come escaped as \\uXXXX)."""
    if not name.isascii() or not name.isprintable() or '"' in name or "\\" in name:
        return None
    return json.dumps(name).encode("ascii")


def scan_for(
    path: Path,
    needles: set[bytes],
    enough: Callable[[set[bytes]], bool] = lambda found: False,
    chunk_size: int = _SCAN_CHUNK,
    *,
    compression: Compression | None = None,
) -> set[bytes]:
    """The ``needles`` that occur in the file (decompressed), read in chunks until
    ``enough`` says stop.

    A needle split across two chunks is found: each chunk is searched with the end of the
    one before."""
    found: set[bytes] = set()
    if not needles:
        return found
    overlap = max(len(needle) for needle in needles) - 1
    tail = b""
    with open_bytes(path, compression) as stream:
        while not enough(found):
            chunk = stream.read(chunk_size)
            if not chunk:
                break
            window = tail + chunk
            found.update(needle for needle in needles - found if needle in window)
            tail = window[-overlap:] if overlap else b""
    return found


# -- out --------------------------------------------------------------------------------------


def json_line(record: dict[str, Any]) -> str:
    """One compact JSON line; timestamps as RFC 3339 UTC with a Z, which pyarrow reads back."""
    finished = record.get("finished_at")
    if isinstance(finished, datetime):
        record["finished_at"] = format_rfc3339(finished)
    return compact(record) + "\n"


def _output_line(record: dict[str, Any]) -> str:
    """One output row as a JSON line: ``json_line``'s, with the values a typed column may
    hold that JSON has no type for (a kept date, timestamp or decimal) as their text."""
    finished = record.get("finished_at")
    if isinstance(finished, datetime):
        record["finished_at"] = format_rfc3339(finished)
    return _TYPED.encode(record) + "\n"


def _text_of(value: Any) -> Any:
    from batchrun.formats.values import value_text

    return value_text(value)


_TYPED = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_text_of)


def read_json_lines(
    path: Path, schema: pa.Schema, slice_bytes: int = JSON_SLICE_BYTES
) -> Iterator[pa.RecordBatch]:
    """The records of a JSON-lines file as batches of ``schema``; pa.ArrowInvalid if damaged.

    Dates, which pyarrow's JSON reader does not parse, are read as text and cast. A slice
    whose values are not of ``schema``'s types (a typed output's integer id, read as text by
    a reader that does not know the output's types) is read line by line, a text column
    holding each value's text (``formats.values.value_text``)."""
    import pyarrow as pa

    parsed = pa.schema([pa.field(f.name, _parsed_as(f.type)) for f in schema])
    options = json_options(parsed)
    for data in line_slices(path, slice_bytes):
        try:
            batches = parse_slice(data, options)
        except pa.ArrowInvalid:
            batches = [_slice_by_lines(data, schema)]
        yield from (_as_asked(batch, schema) for batch in batches)


def _parsed_as(kind: pa.DataType) -> pa.DataType:
    """The type pyarrow's JSON reader is asked to parse a column of ``kind`` as."""
    import pyarrow as pa

    return pa.string() if pa.types.is_date(kind) else kind


def _slice_by_lines(data: memoryview, schema: pa.Schema) -> pa.RecordBatch:
    import pyarrow as pa

    from batchrun.formats.values import value_text

    texts = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_date(f.type)]
    records = []
    for line in data.tobytes().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:  # a line that is no JSON: the file is damaged
            raise pa.ArrowInvalid(f"a line of a JSON-lines output is no JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise pa.ArrowInvalid("a line of a JSON-lines output is not an object")
        for name in texts:
            record[name] = value_text(record.get(name))
        records.append(record)
    parsed = pa.schema([pa.field(f.name, _parsed_as(f.type)) for f in schema])
    try:
        return pa.RecordBatch.from_pylist(records, schema=parsed)
    except (pa.ArrowTypeError, TypeError, OverflowError) as exc:
        raise pa.ArrowInvalid(f"a JSON-lines output holds a value of another type: {exc}") from exc


def _as_asked(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    import pyarrow as pa

    from batchrun.formats.values import from_text

    if batch.schema.equals(schema):
        return batch
    arrays = []
    for f, column in zip(schema, batch.columns, strict=True):
        arrays.append(column if column.type == f.type else from_text(column, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def json_options(schema: pa.Schema) -> pj.ParseOptions:
    """Parse JSON lines as ``schema`` says; fields it does not name are left out."""
    import pyarrow.json as pj

    return pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")


def parse_slice(data: memoryview, options: pj.ParseOptions) -> list[pa.RecordBatch]:
    """A slice of whole lines (``line_slices``) as record batches, in one block."""
    import pyarrow as pa
    import pyarrow.json as pj

    read = pj.ReadOptions(block_size=data.nbytes + 1, use_threads=False)  # one block
    batches: list[pa.RecordBatch] = pj.read_json(pa.BufferReader(data), read, options).to_batches()
    return batches


def line_slices(path: Path, size: int, span: tuple[int, int] | None = None) -> Iterator[memoryview]:
    """The file in slices of about ``size`` bytes, each made of whole lines; only the bytes
    [start, stop) of ``span`` when given (a journal's stretch no index covers)."""
    with path.open("rb") as fh:
        rest = b""  # the start of a line the last slice cut
        left = -1  # bytes of the span still to read (-1: to the end)
        if span is not None:
            fh.seek(span[0])
            left = max(0, span[1] - span[0])
        while chunk := fh.read(size if left < 0 else min(size, left)):
            if left >= 0:
                left -= len(chunk)
            data = rest + chunk if rest else chunk
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut:
                yield memoryview(data)[:cut]
        if rest.strip():
            yield memoryview(rest)


class JsonLinesOutput(OutputFormat):
    name = "jsonl"
    suffixes = (".jsonl",)
    described = "JSON lines"
    fallback = True
    rank = 20

    @contextlib.contextmanager
    def writer(
        self, path: Path, schema: pa.Schema, options: WriteOptions | None = None
    ) -> Iterator[Write]:
        with path.open("w", encoding="utf-8") as fh:

            def write(table: pa.Table) -> None:
                fh.writelines(_output_line(row) for row in table.to_pylist())

            yield write

    def batches(
        self, path: Path, wanted: pa.Schema, batch_rows: int, slice_bytes: int
    ) -> Iterator[pa.RecordBatch]:
        return read_json_lines(path, wanted, slice_bytes)

    def row_count(self, path: Path) -> int:
        with path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())


FORMATS = (JsonLinesInput(), JsonLinesOutput())
