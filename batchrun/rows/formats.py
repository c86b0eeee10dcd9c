"""The format readers: JSONL line by line, a JSON array element by element, CSV record by
record, Parquet by record batch.

Each turns a file into ``RawRow``s (a record or None, and its problems) and knows nothing of
ids or duplicates, which ``reader`` adds for every format alike. Row numbers follow the rules
in ``reader``'s docstring. What a file is (format, compression, CSV delimiter) is decided once,
by ``reader``, and handed to the reader as an :class:`InputKind`.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import csv
import json
import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.types as pat

from batchrun.core.errors import InputError, Problem
from batchrun.core.wording import on_command_line, option
from batchrun.rows.checks import TooDeep, failure, loads_bounded, surrogate_problems
from batchrun.rows.compressed import Compression, open_bytes, open_text

Format = Literal["jsonl", "json", "csv", "parquet"]
Skip = Callable[[int], bool]  # true for a row the caller has no use for: counted, not parsed


@dataclass(frozen=True)
class InputKind:
    """What an input file is: its format, its compression (None: plain) and, for CSV, the
    field delimiter."""

    format: Format
    compression: Compression | None = None
    delimiter: str = ","


@dataclass
class RawRow:
    """What a format reader found at one position: a record (or None) and its problems."""

    line: int
    record: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)
    skipped: bool = False  # the caller asked not to parse this row


# --- JSONL ---------------------------------------------------------------------------------------


def _jsonl_rows(
    path: Path, kind: InputKind, batch_size: int, skip: Skip
) -> Generator[RawRow, None, None]:
    """One raw row per non-blank line; bytes are decoded per line so one bad line is one bad row."""
    del batch_size  # lines are already the unit
    index = 0
    with open_bytes(path, kind.compression) as stream, _read_errors(str(path)):
        for line_number, data in enumerate(stream, start=1):
            if line_number == 1:
                data = data.removeprefix(codecs.BOM_UTF8)
            if not data.strip():
                continue
            yield _SKIPPED if skip(index) else _guarded(line_number, _jsonl_row, data)
            index += 1


def _jsonl_row(line_number: int, data: bytes) -> RawRow:
    """Parse one JSONL line into a record, or say why it is not one.

    Besides malformed JSON, a line is refused for what JSON can say but a request cannot
    carry: lists and objects nested deeper than ``checks.MAX_JSON_DEPTH``, numbers beyond a
    float (``1e400``), NaN, and lone surrogates (``"\\ud83d"``, half of an emoji), which no
    UTF-8 body can hold. The last names the field; the record is kept, so the id is too.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        return RawRow(line_number, None, [Problem(None, reason)])
    return _json_record(line_number, text)


def _json_record(line_number: int, text: str) -> RawRow:
    """One JSON object's text (a JSONL line, a JSON array's element) as a record."""
    try:
        value = loads_bounded(text)
    except TooDeep as exc:
        return RawRow(line_number, None, [Problem(None, f"unusable JSON: {exc}")])
    except json.JSONDecodeError as exc:
        reason = f"malformed JSON: {exc.msg} (column {exc.colno})"
        return RawRow(line_number, None, [Problem(None, reason)])
    except ValueError as exc:
        return RawRow(line_number, None, [Problem(None, f"malformed JSON: {exc}")])
    if not isinstance(value, dict):
        reason = f"expected a JSON object, got {json_kind(value)}"
        return RawRow(line_number, None, [Problem(None, reason)])
    # Decoded UTF-8 holds no surrogates: only an escape from \uD800 to \uDFFF makes one.
    if "\\ud" in text or "\\uD" in text:
        return RawRow(line_number, value, surrogate_problems(value, skip=("id",)))
    return RawRow(line_number, value)


# --- a JSON array --------------------------------------------------------------------------------

# Characters read at a time. An element longer than this grows the buffer (doubling it, so a
# long element costs a few parses, not one per chunk); the buffer never holds much more than
# the element being read.
_TEXT_CHUNK = 1 << 20
_ELEMENT_END = json.JSONDecoder()  # only finds where an element ends; the row's checks follow
_SPACE = " \t\n\r"
_NEAR_END = 16  # a decode error this close to the buffer's end may just be the chunk's cut


def _json_rows(
    path: Path, kind: InputKind, batch_size: int, skip: Skip
) -> Generator[RawRow, None, None]:
    """One raw row per element of the file's one top-level array, streamed.

    The array is never held whole: elements are cut from a buffer of about ``_TEXT_CHUNK``
    characters, so a file of any size reads in the memory of its longest element. A skipped
    element is still scanned (its end must be found) but not checked. An element that is no
    object is a row problem; text that is no JSON array (a malformed element, a missing
    comma, text after the closing bracket) makes the rest unreadable: an InputError naming
    the element, as the CSV reader does for a quote never closed.
    """
    del batch_size  # elements are already the unit
    file = str(path)
    with open_text(path, kind.compression) as stream, _read_errors(file):
        elements = _array_elements(_TextBuffer(stream, _TEXT_CHUNK), file)
        for number, text in enumerate(elements, start=1):
            if skip(number - 1):
                yield _SKIPPED
            elif not _is_utf8(text):
                yield RawRow(number, None, [Problem(None, "not valid UTF-8")])
            else:
                yield _guarded(number, _json_record, text)


def _array_elements(buffer: _TextBuffer, file: str) -> Iterator[str]:
    """The JSON text of each element of the array ``buffer`` holds, in order."""
    first = buffer.next_char()
    if first != "[":
        shown = "nothing" if first is None else repr(first)
        raise InputError(
            f"a .json input must hold one JSON array of row objects ([{{...}}, {{...}}]), but "
            f"this one starts with {shown}; for one object per line (JSON lines) name it "
            f".jsonl or use {option('input_format', 'jsonl')}",
            file=file,
        )
    buffer.pos += 1
    number = 0
    if buffer.next_char() == "]":
        buffer.pos += 1
    else:
        while True:
            number += 1
            yield buffer.element(number, file)
            after = buffer.next_char()
            buffer.pos += 1
            if after == "]":
                break
            where = f"after element {number:,}"
            if after is None:
                raise InputError(f"the array is never closed: the file ends {where}", file=file)
            if after != ",":
                reason = f"expected ',' or ']' {where}, found {after!r}"
                raise InputError(reason, file=file, row=number)
            if buffer.next_char() == "]":
                raise InputError(f"a comma {where} and then the array's end", file=file, row=number)
    if buffer.next_char() is not None:
        raise InputError(f"text after the array's closing ] (after element {number:,})", file=file)


class _TextBuffer:
    """A window on a text stream: ``text[pos:]`` is what is read and not yet used."""

    def __init__(self, stream: IO[str], chunk: int) -> None:
        self._stream = stream
        self._chunk = chunk
        self.text = ""
        self.pos = 0

    def more(self) -> bool:
        """Read on (at least doubling what is unused); False at the end of the file."""
        data = self._stream.read(max(self._chunk, len(self.text) - self.pos))
        if not data:
            return False
        self.text = self.text[self.pos :] + data
        self.pos = 0
        return True

    def next_char(self) -> str | None:
        """The next character that is not white space (``pos`` moved to it); None at the end."""
        while True:
            end = len(self.text)
            while self.pos < end and self.text[self.pos] in _SPACE:
                self.pos += 1
            if self.pos < end:
                return self.text[self.pos]
            if not self.more():
                return None

    def element(self, number: int, file: str) -> str:
        """The JSON text of the value at ``pos``, which moves past it."""
        while True:
            try:
                _, end = _ELEMENT_END.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                if self._maybe_cut(exc) and self.more():
                    continue
                reason = f"element {number:,} is malformed JSON: {exc.msg}"
                raise InputError(reason, file=file, row=number) from exc
            except RecursionError as exc:
                reason = f"element {number:,} nests lists and objects too deep to read"
                raise InputError(reason, file=file, row=number) from exc
            if end == len(self.text) and self.more():
                continue  # a number may go on in the next chunk
            text = self.text[self.pos : end]
            self.pos = end
            return text

    def _maybe_cut(self, exc: json.JSONDecodeError) -> bool:
        """Whether the error may come from the buffer ending inside the element."""
        return exc.msg.startswith("Unterminated string") or exc.pos >= len(self.text) - _NEAR_END


def _guarded(line: int, parse: Callable[[int, Any], RawRow], data: Any) -> RawRow:
    """``parse(line, data)``; whatever it raises makes this one row unusable, not the file."""
    try:
        return parse(line, data)
    except Exception as exc:  # the per-row boundary: one bad row must never stop a run
        return RawRow(line, None, [Problem(None, unreadable_reason(exc))])


def unreadable_reason(exc: BaseException) -> str:
    """The problem of a row that failed in a way nothing foresaw (kept short and printable)."""
    return f"cannot be read ({failure(exc)})"


_SKIPPED = RawRow(0, None, skipped=True)


@contextlib.contextmanager
def _read_errors(file: str) -> Iterator[None]:
    """An OS error while reading (a disk or network file system failing) names the file."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"read failed: {exc.strerror or exc}", file=file) from exc


# --- CSV -----------------------------------------------------------------------------------------

# Cells are strings; these parameter columns are numbers. (JSON-valued parameters are decoded by
# request.build_request, for every format, so they are left as text here.)
_CSV_CONVERTERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "max_tokens": (int, "an integer"),
    "top_k": (int, "an integer"),
    "temperature": (float, "a number"),
    "top_p": (float, "a number"),
}


def _csv_rows(
    path: Path, kind: InputKind, batch_size: int, skip: Skip
) -> Generator[RawRow, None, None]:
    """One raw row per CSV record after the header; empty cells are absent fields.

    The file is decoded with ``surrogateescape`` so that non-UTF-8 bytes do not stop the
    reader; a record containing them becomes a row problem instead. ``kind.delimiter``
    separates the fields (a TSV file's is a tab).
    """
    del batch_size  # records are already the unit
    file = str(path)
    with open_text(path, kind.compression) as stream, _read_errors(file):
        lines = _RecordLines(stream, kind.delimiter)
        reader = csv.reader(lines, delimiter=kind.delimiter)
        header = _csv_header(reader, file, kind.delimiter)
        data_row = 0
        while True:
            lines.start_record()
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
            lines.check_closed(file, data_row, reader.line_num)
            if skip(data_row - 1):
                yield _SKIPPED
            else:
                yield _guarded(data_row, lambda n, c: _csv_row(n, header, c), cells)


def csv_columns(path: Path, kind: InputKind) -> list[str]:
    """A CSV input's column names, as its header row gives them ([] when it has none)."""
    with open_text(path, kind.compression) as stream:
        return next(csv.reader(stream, delimiter=kind.delimiter), [])


class _RecordLines:
    """The CSV file's lines, remembering those of the record being parsed.

    Python's csv reader, at the end of the file inside a quoted cell, returns the cell instead
    of failing: one stray quote would silently turn the rest of the file into one cell. A
    record that spans lines (rare: a cell with a line break) is parsed again, strictly, from
    its own lines, which tells a closed quote from one left open.
    """

    def __init__(self, stream: Iterator[str], delimiter: str = ",") -> None:
        self._stream = stream
        self._delimiter = delimiter
        self._lines: list[str] = []

    def __iter__(self) -> _RecordLines:
        return self

    def __next__(self) -> str:
        line = next(self._stream)
        self._lines.append(line)
        return line

    def start_record(self) -> None:
        self._lines.clear()

    def check_closed(self, file: str, data_row: int, last_line: int) -> None:
        if len(self._lines) < 2:
            return
        try:
            for _ in csv.reader(self._lines, delimiter=self._delimiter, strict=True):
                pass
        except csv.Error as exc:
            if "end of data" not in str(exc):
                return  # closed, with something only strict parsing minds (a "x"y cell)
            first = last_line - len(self._lines) + 1
            raise InputError(
                f"a quoted cell opened on line {first} is never closed ({exc}): lines "
                f"{first}-{last_line}, the rest of the file, would be read as one cell",
                file=file,
                row=data_row,
            ) from exc


def _csv_error(exc: csv.Error, file: str, row: int) -> InputError:
    """An unparseable record; the csv module's cell size limit gets a hint, as it is likely."""
    hint = ""
    if "field limit" in str(exc):
        limit = csv.field_size_limit()
        hint = f"; cells are limited to {limit:,} characters, keep longer texts in JSONL or Parquet"
    return InputError(f"unreadable CSV: {exc}{hint}", file=file, row=row)


def _csv_header(reader: Iterator[list[str]], file: str, delimiter: str = ",") -> list[str]:
    """The column names; a missing, blank, duplicated or non-UTF-8 name makes the file unusable,
    and so does a header of one column that another delimiter would split (``id;prompt``)."""
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InputError(f"unreadable CSV header: {exc}", file=file) from exc
    if not header:
        raise InputError("the CSV file has no header row", file=file)
    if len(header) == 1:
        _check_delimiter(header[0], file, delimiter)
    for position, name in enumerate(header, start=1):
        if not name.strip():
            raise InputError(f"CSV header: column {position} has no name", file=file)
        if not _is_utf8(name):
            raise InputError(f"CSV header: column {position} is not valid UTF-8", file=file)
    # Counted once: header.count(name) per name took 20 s for 40,000 columns (quadratic).
    duplicates = sorted(name for name, n in collections.Counter(header).items() if n > 1)
    if duplicates:
        names = ", ".join(repr(name) for name in duplicates)
        raise InputError(f"CSV header: duplicate column names {names}", file=file)
    return header


# The delimiters files are commonly written with.
_OTHER_DELIMITERS = (",", ";", "\t", "|")


def _ask_for(delimiter: str) -> str:
    """How to read a file separated by ``delimiter``, for whoever reads the message."""
    asked = option("csv_delimiter", delimiter)
    if delimiter == ",":
        return f"{asked} (the default for a .csv file)"
    if delimiter == "\t":
        return f"{asked} (or {option('input_format', 'tsv')})"
    return asked


def _check_delimiter(name: str, file: str, delimiter: str) -> None:
    """InputError for a one-column header that holds another common delimiter: every row
    would otherwise be refused for the same unknown field (``id;prompt``), one by one."""
    found = [d for d in _OTHER_DELIMITERS if d != delimiter and d in name]
    if not found:
        return
    likely = max(found, key=name.count)
    raise InputError(
        f"the CSV header is one column, {name[:60]!r}, which holds {_shown(likely)}: the file "
        f"looks separated by {_shown(likely)}, not by {_shown(delimiter)}. Read it with "
        f"{_ask_for(likely)}{' (`csv_delimiter` in a job file)' if on_command_line() else ''}",
        file=file,
    )


def _shown(delimiter: str) -> str:
    return "tabs" if delimiter == "\t" else repr(delimiter)


def _csv_row(data_row: int, header: list[str], cells: list[str]) -> RawRow:
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
    return RawRow(data_row, record, problems)


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


def _parquet_rows(
    path: Path, kind: InputKind, batch_size: int, skip: Skip
) -> Generator[RawRow, None, None]:
    """One raw row per Parquet row, read one record batch at a time (``kind`` is always plain:
    Parquet compresses its own pages, and ``reader`` refuses a compressed Parquet file)."""
    del kind
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
            for record in _records(batch):
                line += 1
                if skip(line - 1):
                    yield _SKIPPED
                elif isinstance(record, BaseException):
                    yield RawRow(line, None, [Problem(None, unreadable_reason(record))])
                else:
                    yield _guarded(line, lambda n, r: _parquet_row(n, r, mistyped), record)


def _records(batch: pa.RecordBatch) -> list[dict[str, Any] | BaseException]:
    """The batch's rows as dicts; a row Arrow cannot convert (invalid UTF-8 in a string
    column, say) comes as the exception, and the batch's other rows are still read."""
    try:
        return list(batch.to_pylist())
    except (ValueError, pa.ArrowException):
        pass
    records: list[dict[str, Any] | BaseException] = []
    for i in range(batch.num_rows):
        try:
            records.append(batch.slice(i, 1).to_pylist()[0])
        except (ValueError, pa.ArrowException) as exc:
            records.append(exc)
    return records


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


def _parquet_row(line: int, record: dict[str, Any], mistyped: dict[str, str]) -> RawRow:
    """A record with nested nulls removed and a problem for each set, mistyped known field."""
    problems = [
        Problem(name, reason) for name, reason in mistyped.items() if record.get(name) is not None
    ]
    cleaned = {name: _without_null_keys(value) for name, value in record.items()}
    return RawRow(line, cleaned, problems)


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


READERS: dict[Format, Callable[[Path, InputKind, int, Skip], Generator[RawRow, None, None]]] = {
    "jsonl": _jsonl_rows,
    "json": _json_rows,
    "csv": _csv_rows,
    "parquet": _parquet_rows,
}


def json_kind(value: Any) -> str:
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
