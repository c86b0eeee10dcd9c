"""Input files -> rows, lazily: JSONL line by line, Parquet by record batch, CSV record by record.

A run may read ten million rows, so nothing here holds more than one line, one CSV record or
one Parquet record batch at a time (plus a 64-bit hash of each id seen, to catch duplicates).

Two kinds of failure, because they call for different reactions:

* the whole file is unusable (missing, unreadable, unknown extension, no rows, a Parquet file
  that will not open, a CSV without a header): :class:`InputError`, raised by :func:`read_rows`
  itself before any row is returned, so a run aborts before it sends anything;
* one row is unusable (a malformed JSON line, non-UTF-8 bytes, a bad id, a duplicate id, a
  cell of the wrong type): the row is still yielded, with ``problem`` set, so the run records it
  as an error row and goes on. Every problem names the file, the row's line and the field.

Row numbers (``InputRow.line``, and ``row`` in every error):

* JSONL: the 1-based line number in the file. Blank lines are skipped but still counted.
* CSV: the 1-based *data-row* number. The header is not counted and neither are blank lines,
  so data row 1 is the first record after the header and ``line == index + 1``.
* Parquet: the 1-based row number in the file (``index + 1``).

Where values are converted: CSV cells are all strings, so the numeric parameters
(``max_tokens``, ``top_k``, ``temperature``, ``top_p``) are converted here, where the cell and its
row are known. Structured parameters given as JSON text (``messages``, ``tools``, ...) are decoded
in one place only, :func:`batchrun.request.build_request`, for every format alike.

Example::

    for row in read_rows(Path("reviews.jsonl")):
        if row.problem:
            print(row.problem)          # reviews.jsonl:7: malformed JSON: Expecting ',' ...
        else:
            print(row.id, row.fields)   # rev-0001 {'product': ..., 'prompt': ...}
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import math
from array import array
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.types as pat

from batchrun.core.errors import InputError, InvalidRowError, Problem

Format = Literal["jsonl", "parquet", "csv"]

_EXTENSIONS: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json-lines": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
}


@dataclass(frozen=True)
class InputRow:
    """One input row, or the reason it cannot be used.

    ``index`` is the 0-based position among rows; ``line`` the 1-based line (JSONL), data-row
    (CSV) or row (Parquet) number used in messages; ``id`` the row's ``id`` as a string, or
    ``row-<index>`` when it has none (or none could be read); ``fields`` every other field, with
    None-valued ones dropped; ``problem`` set when the row must not be sent.

    A row whose id duplicates an earlier one keeps the id as written (so the error row shows
    which id clashed) and carries a problem naming both lines.
    """

    index: int
    line: int
    id: str
    fields: dict[str, Any]
    problem: InvalidRowError | None = None


def input_format(path: Path) -> Format:
    """The input format, from the file extension (case-insensitive)."""
    name = path.name.lower()
    for extension, fmt in _EXTENSIONS.items():
        if name.endswith(extension):
            return fmt
    known = ", ".join(_EXTENSIONS)
    raise InputError(f"unknown input format; use one of the extensions {known}", file=str(path))


Skip = Callable[[int], bool]


def check_input_file(path: Path) -> None:
    """InputError unless ``path`` is a file that exists (checked before any output is made)."""
    if not path.exists():
        raise InputError("no such file", file=str(path))
    if path.is_dir():
        raise InputError("is a directory, not an input file", file=str(path))


def read_rows(
    path: Path,
    *,
    batch_size: int = 1024,
    skip: Skip | None = None,
    known_ids: Iterable[str] = (),
) -> Iterator[InputRow]:
    """The rows of ``path``, lazily, in file order.

    File-level problems raise :class:`InputError` here, before the iterator is returned: this
    opens the file and reads up to the first row (to reject an empty file). ``batch_size`` is
    the number of rows per Parquet record batch.

    ``skip(index)`` true means the caller has no use for that row (an earlier run answered
    it): it is counted but not parsed nor yielded, which is what lets a resumed million-row
    job start sending at once. ``known_ids`` are the ids of those rows, so that a new row
    repeating one is still caught as a duplicate.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    fmt = input_format(path)
    check_input_file(path)

    def reread() -> Generator[_RawRow, None, None]:
        return _READERS[fmt](path, batch_size, skip or _keep_all)

    unit = "line" if fmt == "jsonl" else "row"
    rows = _identified(reread(), str(path), unit, _SeenIds(known_ids, reread))
    first = next(rows, _NO_ROWS)
    if first is _NO_ROWS:
        raise InputError("the file has no rows", file=str(path))
    return _starting_with(first, rows)


def _keep_all(index: int) -> bool:
    return False


# A stand-in for "the file ended": distinct from None, which marks a skipped row.
_NO_ROWS = InputRow(index=-1, line=0, id="", fields={})


def _starting_with(
    first: InputRow | None, rest: Generator[InputRow | None, None, None]
) -> Iterator[InputRow]:
    """``first``, then ``rest``, without skipped rows; closing this closes the file at once."""
    try:
        if first is not None:
            yield first
        for row in rest:
            if row is not None:
                yield row
    finally:
        rest.close()


def count_rows(path: Path) -> int | None:
    """How many rows ``path`` holds, for a progress bar's total; None when not told cheaply.

    Parquet keeps the count in its footer. JSONL is counted by one fast pass over the lines
    (non-blank ones, as :func:`read_rows` counts them). CSV is not counted: a record may span
    lines, so only a full parse would tell. Never raises: a file that cannot be read gives
    None, and :func:`read_rows` reports why.
    """
    try:
        fmt = input_format(path)
        if fmt == "parquet":
            with pq.ParquetFile(path) as parquet:
                return int(parquet.metadata.num_rows)
        if fmt == "jsonl":
            with path.open("rb") as stream:
                return sum(1 for data in stream if data.strip())
    except (InputError, OSError, pa.ArrowException):
        return None
    return None


# --- the common stage: ids, duplicates, None-dropping ------------------------------------------


@dataclass
class _RawRow:
    """What a format reader found at one position: a record (or None) and its problems."""

    line: int
    record: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)
    skipped: bool = False  # the caller asked not to parse this row


def _identified(
    raw_rows: Generator[_RawRow, None, None], file: str, unit: str, seen: _SeenIds
) -> Generator[InputRow | None, None, None]:
    """Give each raw row its index, id and final problem; catch duplicate ids.

    ``unit`` names what ``line`` counts in messages: ``line`` (JSONL) or ``row``. Skipped
    rows come out as None.
    """
    with contextlib.closing(raw_rows):
        for index, raw in enumerate(raw_rows):
            yield None if raw.skipped else _input_row(index, raw, seen, file, unit)


def _input_row(index: int, raw: _RawRow, seen: _SeenIds, file: str, unit: str) -> InputRow:
    """The row at ``index``; its id is recorded in ``seen`` unless it is a duplicate."""
    record = raw.record or {}
    problems = list(raw.problems)
    row_id, id_problem = _row_id(record.get("id"), index)
    if id_problem is not None:
        problems.append(id_problem)
    line = seen.first_line(row_id, index, raw.line)
    if line is not None:
        where = f"first seen on {unit} {line}" if line else "also a row an earlier run answered"
        problems.append(Problem("id", f"duplicate id {row_id!r}: {where}"))
    fields = {k: v for k, v in record.items() if k != "id" and v is not None}
    problem = InvalidRowError(problems, file=file, row=raw.line) if problems else None
    return InputRow(index=index, line=raw.line, id=row_id, fields=fields, problem=problem)


class _SeenIds:
    """The ids of the rows read so far, to catch duplicates, in about 16 bytes a row.

    A dict of every id and its line costs ~120 bytes a row (the string, the line number, the
    slot): 24 MB at 200,000 rows, over a gigabyte at ten million. Only a 64-bit hash of each
    id is kept here. A hash that comes again is rare: a duplicate id (a broken input), or two
    ids whose hashes collide (about n²/2^65 for n ids). Then the rows before are read again
    once, to build the exact {id: first line} map that the rest of the file is checked with;
    so a duplicate is still reported with the line of its first occurrence.

    ``known`` are ids an earlier run answered, reported as "line 0". ``reread`` reads the
    file again from the start, skipping the same rows.
    """

    def __init__(
        self,
        known: Iterable[str],
        reread: Callable[[], Generator[_RawRow, None, None]],
        hash_id: Callable[[str], int] = hash,
    ) -> None:
        self._known = frozenset(known)
        self._reread = reread
        self._hash = hash_id  # a seam: tests make every id collide
        self._hashes: _HashSet | None = _HashSet()
        self._lines: dict[str, int] = {}  # the exact map, once a hash has come twice

    def first_line(self, row_id: str, index: int, line: int) -> int | None:
        """Where ``row_id`` was first seen (0: a row an earlier run answered), or None when
        this row at ``index`` (on ``line``) is its first; it is recorded then."""
        if row_id in self._known:
            return 0
        if self._hashes is not None:
            if self._hashes.add(self._hash(row_id)):
                return None
            self._exact_until(index)
        first = self._lines.get(row_id)
        if first is None:
            self._lines[row_id] = line
        return first

    def _exact_until(self, index: int) -> None:
        """Leave the hashes for the exact map of the rows before ``index``, read again."""
        self._hashes = None
        with contextlib.closing(self._reread()) as raw_rows:
            for i, raw in enumerate(raw_rows):
                if i >= index:
                    break
                if raw.skipped:
                    continue
                row_id, _ = _row_id((raw.record or {}).get("id"), i)
                if row_id not in self._known:
                    self._lines.setdefault(row_id, raw.line)


class _HashSet:
    """A set of 64-bit integers in one ``array('q')``: open addressing, linear probing.

    8 bytes a slot, at most half of them used: 16 bytes or less per member, where a Python
    set of ints takes ~60. 0 marks an empty slot, so 0 is stored as 1 (the caller's exact
    check makes that harmless).
    """

    def __init__(self) -> None:
        self._slots = array("q", bytes(8 * 1024))
        self._used = 0

    def add(self, value: int) -> bool:
        """Add ``value``; False if it was there already."""
        value = value or 1
        slots = self._slots
        mask = len(slots) - 1
        i = value & mask
        while True:
            found = slots[i]
            if found == value:
                return False
            if found == 0:
                break
            i = (i + 1) & mask
        slots[i] = value
        self._used += 1
        if 2 * self._used > len(slots):
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("q", bytes(16 * len(old)))
        self._used = 0
        for value in old:
            if value:
                self.add(value)


def _row_id(value: Any, index: int) -> tuple[str, Problem | None]:
    """The row's id as a string, defaulting to ``row-<index>`` when absent, null or empty."""
    default = f"row-{index}"
    if value is None or value == "":
        return default, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    return default, Problem("id", f"must be a string or an integer, not {_kind(value)}")


def _kind(value: Any) -> str:
    """A short, JSON-flavoured name for a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


# --- JSONL ---------------------------------------------------------------------------------------


def _jsonl_rows(path: Path, batch_size: int, skip: Skip) -> Generator[_RawRow, None, None]:
    """One raw row per non-blank line; bytes are decoded per line so one bad line is one bad row."""
    del batch_size  # lines are already the unit
    index = 0
    with _open_binary(path) as stream, _read_errors(str(path)):
        for line_number, data in enumerate(stream, start=1):
            if line_number == 1:
                data = data.removeprefix(codecs.BOM_UTF8)
            if not data.strip():
                continue
            yield _SKIPPED if skip(index) else _jsonl_row(line_number, data)
            index += 1


def _jsonl_row(line_number: int, data: bytes) -> _RawRow:
    """Parse one JSONL line into a record, or say why it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        return _RawRow(line_number, None, [Problem(None, reason)])
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        reason = f"malformed JSON: {exc.msg} (column {exc.colno})"
        return _RawRow(line_number, None, [Problem(None, reason)])
    except ValueError as exc:
        return _RawRow(line_number, None, [Problem(None, f"malformed JSON: {exc}")])
    if not isinstance(value, dict):
        reason = f"expected a JSON object, got {_kind(value)}"
        return _RawRow(line_number, None, [Problem(None, reason)])
    return _RawRow(line_number, value)


_SKIPPED = _RawRow(0, None, skipped=True)


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON; accepting them would make request bodies unhashable."""
    raise ValueError(f"{name} is not allowed in JSON")


# Built once: json.loads(..., parse_constant=...) would build a decoder for every line.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


@contextlib.contextmanager
def _read_errors(file: str) -> Iterator[None]:
    """An OS error while reading (a disk or network file system failing) names the file."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"read failed: {exc.strerror or exc}", file=file) from exc


def _open_binary(path: Path) -> IO[bytes]:
    """Open for reading, turning OS errors into an InputError naming the file."""
    try:
        return path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", file=str(path)) from exc


# --- CSV -----------------------------------------------------------------------------------------

# Cells are strings; these parameter columns are numbers. (JSON-valued parameters are decoded by
# request.build_request, for every format, so they are left as text here.)
_CSV_CONVERTERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "max_tokens": (int, "an integer"),
    "top_k": (int, "an integer"),
    "temperature": (float, "a number"),
    "top_p": (float, "a number"),
}


def _csv_rows(path: Path, batch_size: int, skip: Skip) -> Generator[_RawRow, None, None]:
    """One raw row per CSV record after the header; empty cells are absent fields.

    The file is decoded with ``surrogateescape`` so that non-UTF-8 bytes do not stop the
    reader; a record containing them becomes a row problem instead.
    """
    del batch_size  # records are already the unit
    file = str(path)
    try:
        stream = path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", file=file) from exc
    with stream, _read_errors(file):
        reader = csv.reader(stream)
        header = _csv_header(reader, file)
        data_row = 0
        while True:
            try:
                cells = next(reader, None)
            except csv.Error as exc:
                # The parser's state is unknown after this, so the rest of the file is too.
                raise _csv_error(exc, file, data_row + 1) from exc
            if cells is None:
                return
            if not cells:
                continue
            data_row += 1
            yield _SKIPPED if skip(data_row - 1) else _csv_row(data_row, header, cells)


def _csv_error(exc: csv.Error, file: str, row: int) -> InputError:
    """An unparseable record; the csv module's cell size limit gets a hint, as it is likely."""
    hint = ""
    if "field limit" in str(exc):
        limit = csv.field_size_limit()
        hint = f"; cells are limited to {limit:,} characters, keep longer texts in JSONL or Parquet"
    return InputError(f"unreadable CSV: {exc}{hint}", file=file, row=row)


def _csv_header(reader: Iterator[list[str]], file: str) -> list[str]:
    """The column names; a missing, blank, duplicated or non-UTF-8 name makes the file unusable."""
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InputError(f"unreadable CSV header: {exc}", file=file) from exc
    if not header:
        raise InputError("the CSV file has no header row", file=file)
    for position, name in enumerate(header, start=1):
        if not name.strip():
            raise InputError(f"CSV header: column {position} has no name", file=file)
        if not _is_utf8(name):
            raise InputError(f"CSV header: column {position} is not valid UTF-8", file=file)
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        names = ", ".join(repr(name) for name in duplicates)
        raise InputError(f"CSV header: duplicate column names {names}", file=file)
    return header


def _csv_row(data_row: int, header: list[str], cells: list[str]) -> _RawRow:
    """Pair cells with column names, convert numeric parameters, report bad cells."""
    problems: list[Problem] = []
    if len(cells) > len(header):
        reason = f"the row has {len(cells)} cells but the header has {len(header)} columns"
        problems.append(Problem(None, reason))
    record: dict[str, Any] = {}
    for name, cell in zip(header, cells, strict=False):  # short rows: missing = absent
        if cell == "":
            continue
        if not _is_utf8(cell):
            problems.append(Problem(name, "not valid UTF-8"))
            continue
        value, problem = _csv_cell(name, cell)
        record[name] = value
        if problem is not None:
            problems.append(problem)
    return _RawRow(data_row, record, problems)


def _csv_cell(name: str, cell: str) -> tuple[Any, Problem | None]:
    """A cell's value: converted when the column is a numeric parameter, else the string."""
    if name not in _CSV_CONVERTERS:
        return cell, None
    convert, expected = _CSV_CONVERTERS[name]
    try:
        value = convert(cell.strip())
    except ValueError:
        return cell, Problem(name, f"expected {expected}, got {cell!r}")
    if isinstance(value, float) and not math.isfinite(value):
        return cell, Problem(name, f"expected a finite number, got {cell!r}")
    return value, None


def _is_utf8(text: str) -> bool:
    """False when ``surrogateescape`` decoding had to smuggle undecodable bytes into ``text``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- Parquet -------------------------------------------------------------------------------------


def _value_type(t: pa.DataType) -> pa.DataType:
    """The value type of a dictionary-encoded column (common for repeated strings)."""
    return t.value_type if pat.is_dictionary(t) else t


def _is_text(t: pa.DataType) -> bool:
    t = _value_type(t)
    return bool(pat.is_string(t) or pat.is_large_string(t) or pat.is_string_view(t))


def _is_integer(t: pa.DataType) -> bool:
    return bool(pat.is_integer(_value_type(t)))


def _is_number(t: pa.DataType) -> bool:
    t = _value_type(t)
    return bool(pat.is_integer(t) or pat.is_floating(t))


def _is_list(t: pa.DataType) -> bool:
    t = _value_type(t)
    return bool(
        pat.is_list(t) or pat.is_large_list(t) or pat.is_fixed_size_list(t) or pat.is_list_view(t)
    )


def _is_text_or_list(t: pa.DataType) -> bool:
    return _is_text(t) or _is_list(t)


def _is_text_or_struct(t: pa.DataType) -> bool:
    return _is_text(t) or bool(pat.is_struct(t))


# The Arrow types each known field may have. Text is accepted for structured parameters because
# DESIGN §2 allows JSON strings there (request.build_request decodes them). ``id`` is checked per
# value by the common stage, like the other formats.
_PARQUET_TYPES: dict[str, tuple[Callable[[pa.DataType], bool], str]] = {
    "prompt": (_is_text, "a string"),
    "model": (_is_text, "a string"),
    "service_tier": (_is_text, "a string"),
    "max_tokens": (_is_integer, "an integer"),
    "top_k": (_is_integer, "an integer"),
    "temperature": (_is_number, "a number"),
    "top_p": (_is_number, "a number"),
    "system": (_is_text_or_list, "a string or a list of text blocks"),
    "messages": (_is_text_or_list, "a list of messages or its JSON text"),
    "stop_sequences": (_is_text_or_list, "a list of strings or its JSON text"),
    "tools": (_is_text_or_list, "a list of tools or its JSON text"),
    "metadata": (_is_text_or_struct, "a struct or its JSON text"),
    "tool_choice": (_is_text_or_struct, "a struct or its JSON text"),
    "thinking": (_is_text_or_struct, "a struct or its JSON text"),
}


def _parquet_rows(path: Path, batch_size: int, skip: Skip) -> Generator[_RawRow, None, None]:
    """One raw row per Parquet row, read one record batch at a time."""
    file = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"not a readable Parquet file: {exc}", file=file) from exc
    with parquet:
        mistyped = _mistyped_columns(parquet.schema_arrow)
        line = 0
        for batch in _batches(parquet, batch_size, file):
            if all(skip(i) for i in range(line, line + batch.num_rows)):
                # Converting to Python is the cost; a batch nobody wants is never converted.
                line += batch.num_rows
                yield from [_SKIPPED] * batch.num_rows
                continue
            for record in batch.to_pylist():
                line += 1
                yield _SKIPPED if skip(line - 1) else _parquet_row(line, record, mistyped)


def _batches(parquet: pq.ParquetFile, batch_size: int, file: str) -> Iterator[pa.RecordBatch]:
    """The file's record batches; a corrupt page makes the rest of the file unusable."""
    batches = parquet.iter_batches(batch_size=batch_size)
    while True:
        try:
            batch = next(batches, None)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"unreadable Parquet data: {exc}", file=file) from exc
        if batch is None:
            return
        yield batch


def _mistyped_columns(schema: pa.Schema) -> dict[str, str]:
    """Known fields whose column type can never hold a valid value: name -> reason."""
    mistyped: dict[str, str] = {}
    for column in schema:
        rule = _PARQUET_TYPES.get(column.name)
        if rule is not None and not rule[0](column.type):
            mistyped[column.name] = f"expected {rule[1]}, but the column has type {column.type}"
    return mistyped


def _parquet_row(line: int, record: dict[str, Any], mistyped: dict[str, str]) -> _RawRow:
    """A record with nested nulls removed and a problem for each set, mistyped known field."""
    problems = [
        Problem(name, reason) for name, reason in mistyped.items() if record.get(name) is not None
    ]
    cleaned = {name: _without_null_keys(value) for name, value in record.items()}
    return _RawRow(line, cleaned, problems)


def _without_null_keys(value: Any) -> Any:
    """Drop null-valued keys from nested structs.

    An Arrow struct has every key of its type in every row, so a list of content blocks of
    different kinds comes back with ``"source": None`` on text blocks and so on. Dropping them
    turns the value back into what the user meant.
    """
    if isinstance(value, dict):
        return {k: _without_null_keys(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_null_keys(item) for item in value]
    return value


_READERS: dict[Format, Callable[[Path, int, Skip], Generator[_RawRow, None, None]]] = {
    "jsonl": _jsonl_rows,
    "csv": _csv_rows,
    "parquet": _parquet_rows,
}
