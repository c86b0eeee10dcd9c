"""Delimited text, in and out: CSV (``.csv``) and TSV (``.tsv``, CSV with tabs) in, CSV out.

In: record by record, through the csv module, each record numbered by the line it starts on
(the header is line 1; a record whose quoted cell holds line breaks spans several lines, and
is known by its first). Empty cells are absent fields; the numeric parameters (``max_tokens``,
``top_k``, ``temperature``, ``top_p``) are converted here, where the cell and its row are
known. ``--csv-delimiter`` gives another delimiter; a header that reads as one column holding
another common one is refused, naming the flag. The file declares its columns: its header.
CSV rows are not counted cheaply (a record may span lines: only a full parse would tell).

Out: a header row with the output's columns; every text quoted and a null an empty unquoted
cell, so an empty text and a null read back apart; numbers and timestamps
(``2026-11-22 03:00:00.123Z``) are typed again on reading, by the schema.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import functools
import math
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from batchrun.core.errors import InputError, Problem
from batchrun.core.wording import on_command_line, option
from batchrun.formats.base import (
    ColumnQuery,
    Head,
    InputColumns,
    InputFormat,
    OutputFormat,
    Write,
    WriteOptions,
)
from batchrun.rows.raw import SKIPPED, RawRow, Skip, guarded, is_utf8, read_errors, utf8_size
from batchrun.rows.shape import InputKind
from batchrun.rows.text import MAX_ROW_BYTES, not_text_cell, open_text, too_long

if TYPE_CHECKING:
    import pyarrow as pa

_UTF8 = InputKind("csv")

# -- in ---------------------------------------------------------------------------------------

# Cells are strings; these parameter columns are numbers. (JSON-valued parameters are decoded by
# request.build_request, for every format, so they are left as text here.)
_CSV_CONVERTERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "max_tokens": (int, "an integer"),
    "top_k": (int, "an integer"),
    "temperature": (float, "a number"),
    "top_p": (float, "a number"),
}


def _csv_rows(
    path: Path, kind: InputKind, batch_size: int, skip: Skip, cap: int = MAX_ROW_BYTES
) -> Generator[RawRow, None, None]:
    """One raw row per CSV record after the header, numbered by the line it starts on; empty
    cells are absent fields.

    The file is decoded with ``surrogateescape`` so that bytes not in its encoding do not stop
    the reader; a record containing them becomes a row problem instead. ``kind.delimiter``
    separates the fields (a TSV file's is a tab). Records are read by :class:`_CsvRecords`: a
    record longer than ``cap``, or whose quoted cell does not close where a cell can end, is
    its row's problem, and the rows after it are read on (see there for where and why).
    """
    del batch_size  # records are already the unit
    file = str(path)
    opener = functools.partial(open_text, path, kind)
    with read_errors(file), _CsvRecords(opener, kind.delimiter, cap, path.is_file()) as records:
        header = _csv_header(iter([_header_cells(records, file)]), file, kind.delimiter)
        index = 0
        while (record := records.next(file)) is not None:
            if record.cells == [] and record.problem is None:
                continue  # a blank line
            if skip(index):
                yield SKIPPED
            elif record.problem is None:
                yield guarded(record.first, _csv_row, header, record.cells, kind)
            else:
                yield _broken_record(record, header, kind)
            index += 1


def _broken_record(record: _Record, header: list[str], kind: InputKind) -> RawRow:
    """A record that cannot be used: its problem, and its id when its cells tell one, so that
    the error row says which row it was (its other cells are not kept: they may be merged)."""
    kept: dict[str, Any] | None = None
    if record.cells is not None:
        cells = guarded(record.first, _csv_row, header, record.cells, kind).record or {}
        kept = {"id": cells["id"]} if "id" in cells else None
    return RawRow(record.first, kept, [Problem(None, record.problem or "unreadable")])


def _header_cells(records: _CsvRecords, file: str) -> list[str]:
    """The header record's cells; InputError when it cannot be read."""
    header = records.next(file)
    if header is not None and header.problem is not None:
        raise InputError(f"unreadable CSV header: {header.problem}", file=file)
    return header.cells if header is not None and header.cells is not None else []


def csv_columns(path: Path, kind: InputKind) -> list[str]:
    """A CSV input's column names, as its header row gives them ([] when it has none or it
    cannot be read)."""
    with _CsvRecords(lambda: open_text(path, kind), kind.delimiter, MAX_ROW_BYTES) as records:
        header = records.next(str(path))
    if header is None or header.problem is not None or header.cells is None:
        return []
    return header.cells


class _TooLong(Exception):
    """Raised through the csv reader when the record it reads grows past the cap."""


@dataclass
class _Record:
    """One CSV record: the line it starts on, its cells (when they could be read) and, when
    it cannot be used, why."""

    first: int
    cells: list[str] | None
    problem: str | None = None


class _CsvRecords:
    """The records of a CSV text, read by the csv module from lines of bounded size.

    The csv module (lenient, as Excel writes and reads files) splits each record. What it does
    not guard against is checked here:

    * A record longer than ``cap`` characters is never held: once its lines pass the cap, the
      rest is skipped by following its quotes (:class:`_QuoteScan`) to where the csv module
      would end it, and the record is a problem naming its size.
    * A quoted cell left open. The csv module, not strict, reads on across line breaks and
      takes the next quote for the cell's end, so one stray quote silently merges the next
      line(s) into a cell. A record that spans lines is therefore parsed again, strictly:
      a quoted cell may hold line breaks only when it ends where a cell can (a quote then the
      delimiter or the line's end). If it does not, which of its quotes is the stray one
      cannot be told (``b,"open`` then ``c,"x"``: b's quote left open, or a quote inside b's
      cell written without doubling?), so no line of the record is used: it is one error row
      naming its lines, and reading goes on after it, where both readings agree a record
      starts. A record on one line is read leniently as before (``a,"x"y`` is ``xy``): it
      cannot take another row with it.
    * A quoted cell never closed at all: the file ends inside it. Then the quote cannot have
      opened a cell with line breaks (none closes it), so only its own line is the error
      row, and the lines after it are read again as records of their own, which is what they
      are when one closing quote is missing: from memory, or, when they were too long to
      keep, by opening the file again (``reopenable``: not a pipe).
    """

    def __init__(
        self,
        open_stream: Callable[[], IO[str]],
        delimiter: str,
        cap: int,
        reopenable: bool = True,
    ) -> None:
        _allow_cells_up_to(cap)
        self._open = open_stream
        self._reopenable = reopenable
        self._stream = open_stream()
        self._again: collections.deque[str] = collections.deque()  # lines to read again
        self._delimiter = delimiter
        self._cap = cap
        self._lines: list[str] = []  # the lines of the record being read
        self._size = 0  # their characters
        self._ended = 0  # line breaks read so far
        self._after_cr = False  # the last piece ended with "\r": a "\n" next is its half
        self._at_end = False
        self._reader = csv.reader(self, delimiter=delimiter)

    def __iter__(self) -> _CsvRecords:
        return self

    def __next__(self) -> str:
        """The next line for the csv reader, read in pieces when long: a line that would take
        the record past the cap is not read further, nor ever held twice."""
        room = self._cap + 1 - self._size
        if self._again:  # whole lines, of a record no longer than the cap
            line = self._again.popleft()
        else:
            line = self._stream.readline(min(_CSV_PIECE, room))
        if not line:
            self._at_end = True
            raise StopIteration
        pieces = [line]
        if len(line) == _CSV_PIECE and line[-1] not in "\r\n":
            got = len(line)
            while got < room and (piece := self._stream.readline(min(_CSV_PIECE, room - got))):
                pieces.append(piece)
                got += len(piece)
                if piece[-1] in "\r\n":
                    break
        self._count_break(pieces[-1])
        self._size += sum(map(len, pieces))
        if self._size > self._cap:
            self._lines.extend(pieces)  # for _skip_long to follow its quotes through
            raise _TooLong
        if len(pieces) > 1:
            line = "".join(pieces)
        self._lines.append(line)
        return line

    def __enter__(self) -> _CsvRecords:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()

    def _count_break(self, piece: str) -> None:
        if piece == "\n" and self._after_cr:
            self._after_cr = False  # "\r\n" read in two pieces: one line break
            return
        self._after_cr = piece.endswith("\r")
        if piece.endswith(("\n", "\r")):
            self._ended += 1

    def next(self, file: str) -> _Record | None:
        """The next record (a blank line is one with no cells); None at the end of the file."""
        self._lines.clear()
        self._size = 0
        first = self._ended + 1
        try:
            cells = next(self._reader, None)
        except _TooLong:
            return self._skip_long(first)
        except csv.Error as exc:
            # Not strict, the csv module raises for little; its state is then unknown.
            raise InputError(f"unreadable CSV: {exc}", file=file, row=first) from exc
        if cells is None:
            return None
        if len(self._lines) > 1 or self._at_end:
            problem, never_closed = self._strict_problem(first, self._last_line())
            if never_closed:
                self._read_again_after(first)
            if problem is not None:
                return _Record(first, cells, problem)
        return _Record(first, cells)

    def _last_line(self) -> int:
        """The line the record read last ends on (the file's last line may have no break)."""
        ended = self._lines and self._lines[-1].endswith(("\n", "\r"))
        return self._ended if ended else self._ended + 1

    def _strict_problem(self, first: int, last: int) -> tuple[str | None, bool]:
        """Why the record's lines, parsed strictly, are not one record (None if they are), and
        whether reading must go on from the line after ``first`` (a quote never closed)."""
        strict = csv.reader(self._lines, delimiter=self._delimiter, strict=True)
        try:
            for _ in strict:
                pass
        except csv.Error as exc:
            if "end of data" in str(exc):
                return _never_closed(first), True
            if len(self._lines) > 1:
                bad = first + strict.line_num - 1
                return (
                    f"a quoted cell opened on line {first:,} does not close where a cell can end "
                    f"(line {bad:,} has a quote followed by neither {self._delimiter!r} nor the "
                    f"line's end), so lines {first:,}-{last:,} would read as one row: none of "
                    'them is used. Inside a quoted cell, write a quote twice ("")',
                    False,
                )
        return None, False

    def _skip_long(self, first: int) -> _Record:
        """Skip the rest of a record longer than the cap, following its quotes."""
        scan = _QuoteScan(self._delimiter)
        size = 0
        ended = False
        for piece in self._lines:
            size += utf8_size(piece)
            ended = scan.feed(piece)
        self._lines.clear()
        self._size = 0
        while not ended:
            piece = self._stream.readline(_CSV_PIECE)
            if not piece:
                self._at_end = True
                break
            self._count_break(piece)
            size += utf8_size(piece)
            ended = scan.feed(piece)
        if ended:  # its size, as a line's, without the line break it ends with
            size -= len(piece) - len(piece.rstrip("\r\n"))
        self._reader = csv.reader(self, delimiter=self._delimiter)
        if not ended and scan.quoted:
            if not self._reopenable:
                return _Record(first, None, _never_closed(first, again=False))
            self._reopen_after(first)
            return _Record(first, None, _never_closed(first))
        last = self._ended if ended else self._ended + 1
        where = f"line {first:,}" if last == first else f"lines {first:,}-{last:,}"
        return _Record(first, None, too_long(f"the record on {where}", size, self._cap))

    def _read_again_after(self, line: int) -> None:
        """Read the record's lines after its first (``line``) again, as records of their own."""
        self._again.extend(self._lines[1:])
        self._ended = line
        self._after_cr = self._lines[0].endswith("\r")
        self._at_end = False
        self._reader = csv.reader(self, delimiter=self._delimiter)

    def _reopen_after(self, line: int) -> None:
        """Read on from the line after ``line``: open the file again and pass over the lines
        up to it (the lines after a quote never closed were read as part of it)."""
        self._stream.close()
        self._stream = self._open()
        self._ended = 0
        self._after_cr = False
        while self._ended < line and (piece := self._stream.readline(_CSV_PIECE)):
            self._count_break(piece)
        self._at_end = False
        self._lines.clear()
        self._size = 0
        self._reader = csv.reader(self, delimiter=self._delimiter)


_CSV_PIECE = 1 << 20  # characters read at a time while skipping


def _never_closed(first: int, again: bool = True) -> str:
    then = (
        "the lines after it are read as rows of their own"
        if again
        else "nor are the lines after it, read as part of it: the input cannot be read twice"
    )
    return (
        f"a quoted cell opened on line {first:,} is never closed: the file ends inside it. This "
        f"line is not used; {then}"
    )


def _allow_cells_up_to(cap: int) -> None:
    """Let the csv module read a cell as long as a record may be (its limit is 128 KiB by
    default, and process-wide: it only ever grows here)."""
    if csv.field_size_limit() < cap + 1:
        csv.field_size_limit(cap + 1)


class _QuoteScan:
    """Where the csv module (not strict) is within a record, followed through pieces of its
    lines: to find where a record too long to hold ends, without holding it. A piece holds a
    line break at its end only (``readline`` cuts them so)."""

    _START, _FIELD, _QUOTED, _QUOTE = range(4)  # a cell's start, in one, in quotes, after one

    def __init__(self, delimiter: str) -> None:
        self._delimiter = delimiter
        self._state = self._START

    @property
    def quoted(self) -> bool:
        """Whether the scan is inside a quoted cell."""
        return self._state == self._QUOTED

    def feed(self, piece: str) -> bool:
        """Follow ``piece``; True when the record ends with it (at its line break)."""
        breaks = len(piece) - len(piece.rstrip("\r\n"))
        end = len(piece) - breaks
        at, state = 0, self._state
        while at < end:
            if state in (self._QUOTED, self._FIELD):
                # Inside quotes only a quote matters; in a cell only the delimiter.
                char = '"' if state == self._QUOTED else self._delimiter
                found = piece.find(char, at, end)
                if found < 0:
                    break
                state = self._QUOTE if state == self._QUOTED else self._START
                at = found + 1
                continue
            char = piece[at]
            if char == self._delimiter:
                state = self._START
            elif char == '"':
                state = self._QUOTED  # a cell's opening quote, or the second of ""
            else:
                state = self._FIELD  # after a closing quote too: the csv module reads on
            at += 1
        if breaks and state != self._QUOTED:
            self._state = self._START
            return True
        self._state = state
        return False


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
        if not is_utf8(name):
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


def _csv_row(
    line: int, header: list[str], cells: list[str], kind: InputKind | None = None
) -> RawRow:
    """Pair cells with column names, convert numeric parameters, report bad cells."""
    problems: list[Problem] = []
    if len(cells) > len(header):
        reason = f"the row has {len(cells)} cells but the header has {len(header)} columns"
        problems.append(Problem(None, reason))
    record: dict[str, Any] = {}
    for name, cell in zip(header, cells, strict=False):  # short rows: missing = absent
        if cell == "":
            continue
        if not is_utf8(cell):
            problems.append(Problem(name, not_text_cell(kind or _UTF8)))
            continue
        value, problem = _csv_cell(name, cell)
        record[name] = value
        if problem is not None:
            problems.append(problem)
    return RawRow(line, record, problems)


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


class CsvInput(InputFormat):
    names = ("csv", "tsv")
    suffixes = (".csv", ".tsv")
    delimiters: ClassVar[Mapping[str, str]] = {"tsv": "\t", ".tsv": "\t"}
    rank = 30
    sniff_rank = 100  # the last asked: what no other format takes is read as CSV

    def sniff(self, head: Head) -> str:
        first_line = head.text.split("\n", 1)[0]
        if "\t" in first_line and "," not in first_line:
            return "tsv"
        return "csv"

    def rows(
        self, path: Path, kind: InputKind, batch_size: int, skip: Skip, cap: int = MAX_ROW_BYTES
    ) -> Generator[RawRow, None, None]:
        return _csv_rows(path, kind, batch_size, skip, cap)

    def columns(self, query: ColumnQuery) -> InputColumns | None:
        """The header's names, as the reader reads them. A quick look does not trust a
        header of one column holding another common delimiter (``id;prompt;model``: most
        likely read with the wrong one)."""
        header = csv_columns(query.path, query.kind)
        if query.quick:
            if not header:
                return None
            others = [d for d in _OTHER_DELIMITERS if d != query.kind.delimiter]
            if len(header) == 1 and any(d in header[0] for d in others):
                return None
        found = frozenset(name for name in query.asked if name in header)
        return InputColumns(tuple(header), found, declared=True)


# -- out --------------------------------------------------------------------------------------

# Bytes of CSV parsed at a time. pyarrow's reader cannot split a record between blocks, so a
# record longer than this (a very long answer) makes the read start again with blocks four
# times larger, skipping the rows already returned.
CSV_BLOCK_BYTES = 8 << 20


def csv_batches(
    path: Path, wanted: pa.Schema, block_bytes: int = CSV_BLOCK_BYTES
) -> Iterator[pa.RecordBatch]:
    """A CSV output's ``wanted`` columns (those it lacks come null), typed by ``wanted``.

    Only an unquoted empty cell is null: the writer quotes every string, so ``""`` reads back
    as the empty string and ``"NA"`` as the text NA.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from batchrun.formats.values import from_text, is_nested

    if path.stat().st_size == 0:
        return
    # Lists and structs are JSON text in a CSV cell (``CsvOutput``): read so, then parsed.
    nested = [f for f in wanted if is_nested(f.type)]
    if nested:
        as_read = pa.schema([pa.field(f.name, pa.string()) if is_nested(f.type) else f
                             for f in wanted])  # fmt: skip
        for batch in csv_batches(path, as_read, block_bytes):
            arrays = [
                from_text(column, f.type) if is_nested(f.type) else column
                for column, f in zip(batch.columns, wanted, strict=True)
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=wanted)
        return
    convert = pcsv.ConvertOptions(
        column_types={f.name: f.type for f in wanted},
        include_columns=list(wanted.names),
        include_missing_columns=True,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    parse = pcsv.ParseOptions(newlines_in_values=True)
    done = 0  # rows already returned, skipped when a read starts again
    while True:
        read = pcsv.ReadOptions(block_size=block_bytes, use_threads=False)
        seen = 0
        try:
            for batch in pcsv.open_csv(path, read, parse, convert):
                start, seen = seen, seen + batch.num_rows
                if seen > done:
                    yield batch.slice(max(0, done - start))
                    done = seen
            return
        except pa.ArrowInvalid as exc:
            # "straddles two block boundaries", or a header longer than the first block.
            straddles = "straddl" in str(exc) or "Empty CSV file or block" in str(exc)
            if not straddles or block_bytes >= 1 << 31:
                raise
            block_bytes *= 4


class CsvOutput(OutputFormat):
    name = "csv"
    suffixes = (".csv",)
    described = "CSV"
    # batchrun.run(rows) returns the Table read back from Parquet or JSON lines only, as it
    # did when CSV outputs could not be read back; they can now (csv_batches), if asked.
    from_python = False
    rank = 30

    @contextlib.contextmanager
    def writer(
        self, path: Path, schema: pa.Schema, options: WriteOptions | None = None
    ) -> Iterator[Write]:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        from batchrun.formats.values import as_text, is_nested

        # Strings always quoted (pyarrow's "needed"), nulls as empty cells: see csv_batches.
        # Lists and structs (typed output columns) are their JSON text: a cell holds one value.
        cells = pa.schema([pa.field(f.name, pa.string()) if is_nested(f.type) else f
                           for f in schema.remove_metadata()])  # fmt: skip
        write_options = pcsv.WriteOptions(include_header=True, quoting_style="needed")
        with pcsv.CSVWriter(str(path), cells, write_options=write_options) as w:

            def write(table: pa.Table) -> None:
                if cells != table.schema.remove_metadata():
                    columns = [
                        as_text(column) if is_nested(column.type) else column
                        for column in table.columns
                    ]
                    table = pa.Table.from_arrays(columns, schema=cells)
                w.write_table(table)

            yield write

    def batches(
        self, path: Path, wanted: pa.Schema, batch_rows: int, slice_bytes: int
    ) -> Iterator[pa.RecordBatch]:
        return csv_batches(path, wanted)

    def row_count(self, path: Path) -> int:
        """Records, by parsing: a cell may hold line breaks. One column is kept."""
        import pyarrow as pa

        return sum(b.num_rows for b in csv_batches(path, pa.schema([("id", pa.string())])))


FORMATS = (CsvInput(), CsvOutput())
