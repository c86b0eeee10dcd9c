"""The format readers: JSONL line by line, a JSON array element by element, CSV record by
record, Parquet by record batch.

Each turns a file into ``RawRow``s (a record or None, and its problems) and knows nothing of
ids or duplicates, which ``reader`` adds for every format alike. Row numbers follow the rules
in ``reader``'s docstring. What a file is (format, compression, CSV delimiter, encoding) is
decided once, by ``reader``, and handed to the reader as an :class:`InputKind`. The text
formats read the file as UTF-8 through ``rows.text``, whatever its encoding, and hold no more
than ``cap`` bytes of a line, element or record (plus a piece of the next): a longer one is
skipped and is its row's problem.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import functools
import json
import math
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.types as pat

from batchrun.core.errors import InputError, Problem
from batchrun.core.wording import on_command_line, option
from batchrun.rows.checks import TooDeep, failure, loads_bounded, surrogate_problems
from batchrun.rows.shape import Format as Format  # re-exported for the readers' callers
from batchrun.rows.shape import InputKind as InputKind
from batchrun.rows.text import (
    MAX_ROW_BYTES,
    LongLine,
    bounded_lines,
    not_text_cell,
    not_text_reason,
    open_text,
    open_utf8,
    too_long,
)

Skip = Callable[[int], bool]  # true for a row the caller has no use for: counted, not parsed


@dataclass
class RawRow:
    """What a format reader found at one position: a record (or None) and its problems."""

    line: int
    record: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)
    skipped: bool = False  # the caller asked not to parse this row


# --- JSONL ---------------------------------------------------------------------------------------


def _jsonl_rows(
    path: Path, kind: InputKind, batch_size: int, skip: Skip, cap: int = MAX_ROW_BYTES
) -> Generator[RawRow, None, None]:
    """One raw row per non-blank line; bytes are decoded per line so one bad line is one bad
    row, and a line longer than ``cap`` bytes is one row too, never held whole."""
    del batch_size  # lines are already the unit
    index = 0
    with _read_errors(str(path)), open_utf8(path, kind) as stream:
        for line_number, data in enumerate(bounded_lines(stream, cap), start=1):
            if isinstance(data, LongLine):
                problem = Problem(None, too_long("the line", data.size, cap))
                yield _SKIPPED if skip(index) else RawRow(line_number, None, [problem])
            elif data.isspace():
                continue
            else:
                yield _SKIPPED if skip(index) else _guarded(line_number, _jsonl_row, data, kind)
            index += 1


def _jsonl_row(line_number: int, data: bytes, kind: InputKind | None = None) -> RawRow:
    """Parse one JSONL line (of an input of ``kind``) into a record, or say why it is not one.

    Besides malformed JSON, a line is refused for what JSON can say but a request cannot
    carry: lists and objects nested deeper than ``checks.MAX_JSON_DEPTH``, numbers beyond a
    float (``1e400``), NaN, and lone surrogates (``"\\ud83d"``, half of an emoji), which no
    UTF-8 body can hold. The last names the field; the record is kept, so the id is too.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        reason = not_text_reason(data, kind or _UTF8) or "not valid UTF-8"
        return RawRow(line_number, None, [Problem(None, reason)])
    return _json_record(line_number, text)


_UTF8 = InputKind("jsonl")


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
# long element costs a few parses, not one per chunk), up to the cap; the buffer never holds
# much more than the element being read, and never much more than the cap.
_TEXT_CHUNK = 1 << 20
_ELEMENT_END = json.JSONDecoder()  # only finds where an element ends; the row's checks follow
_SPACE = " \t\n\r"
_NEAR_END = 16  # a decode error this close to the buffer's end may just be the chunk's cut
# What matters to where a JSON value ends, outside a string and inside one; and what ends a
# bare number or literal.
_STRUCTURE = re.compile(r'["\[\]{}]')
_SCALAR_END = re.compile(r"[\s,\]}]")


def _json_rows(
    path: Path, kind: InputKind, batch_size: int, skip: Skip, cap: int = MAX_ROW_BYTES
) -> Generator[RawRow, None, None]:
    """One raw row per element of the file's one top-level array, streamed.

    The array is never held whole: elements are cut from a buffer of about ``_TEXT_CHUNK``
    characters, so a file of any size reads in the memory of its longest element, and an
    element longer than ``cap`` is skipped through, unread, as its row's problem. A skipped
    element is still scanned (its end must be found) but not checked. An element that is no
    object is a row problem; text that is no JSON array (a malformed element, a missing
    comma, text after the closing bracket) makes the rest unreadable: an InputError naming
    the element.
    """
    del batch_size  # elements are already the unit
    file = str(path)
    with _read_errors(file), open_text(path, kind) as stream:
        elements = _array_elements(_TextBuffer(stream, _TEXT_CHUNK, cap), file)
        for number, text in enumerate(elements, start=1):
            if skip(number - 1):
                yield _SKIPPED
            elif isinstance(text, LongLine):
                reason = too_long(f"element {number:,}", text.size, cap)
                yield RawRow(number, None, [Problem(None, reason)])
            elif not _is_utf8(text):
                yield RawRow(number, None, [Problem(None, not_text_cell(kind))])
            else:
                yield _guarded(number, _json_record, text)


def _array_elements(buffer: _TextBuffer, file: str) -> Iterator[str | LongLine]:
    """The JSON text of each element of the array ``buffer`` holds, in order (the size of
    one too long to hold)."""
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
    """A window on a text stream: ``text[pos:]`` is what is read and not yet used: about a
    chunk, and no more than ``cap`` characters of an element longer than that."""

    def __init__(self, stream: IO[str], chunk: int, cap: int = MAX_ROW_BYTES) -> None:
        self._stream = stream
        self._chunk = chunk
        self._cap = cap
        self.text = ""
        self.pos = 0

    def more(self) -> bool:
        """Read on, a chunk; False at the end of the file."""
        data = self._stream.read(self._chunk)
        if not data:
            return False
        if self.pos:
            self.text = self.text[self.pos :]  # the used text let go before the new is added
            self.pos = 0
        self.text += data
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

    def element(self, number: int, file: str) -> str | LongLine:
        """The JSON text of the value at ``pos``, which moves past it; for a value longer than
        the cap, its size (it is skipped, unread)."""
        while True:
            try:
                _, end = _ELEMENT_END.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                long = len(self.text) - self.pos >= min(self._chunk, self._cap)
                if self._maybe_cut(exc) and long:
                    # Long: found by its brackets and quotes, not parsed again for every chunk
                    # read (nor its strings built, only to be cut short).
                    return self._long_element(number, file)
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
            if len(text) > self._cap:  # whole in the buffer, which may hold more than the cap
                return LongLine(_utf8_size(text))
            return text

    def _long_element(self, number: int, file: str) -> str | LongLine:
        """The value at ``pos``, read on until it ends, kept while it is no longer than the
        cap (its size given when it is). Only its strings and brackets are followed; what is
        kept is checked to be the one JSON value it looks like."""
        scan = _ValueScan(self.text[self.pos])
        kept: list[str] | None = []
        size = chars = 0
        while True:
            end = scan.feed(self.text, self.pos)
            piece = self.text[self.pos : len(self.text) if end is None else end]
            size += _utf8_size(piece)
            chars += len(piece)
            if kept is not None and chars <= self._cap:
                kept.append(piece)
            else:
                kept = None  # too long: let go of what was kept, count the rest
            if end is not None:
                self.pos = end
                break
            self.text, self.pos = "", 0
            if not self.more():
                reason = f"the file ends inside element {number:,}, which is never closed"
                raise InputError(reason, file=file, row=number)
        if kept is None:
            return LongLine(size)
        text = "".join(kept)
        del kept
        try:
            _, end = _ELEMENT_END.raw_decode(text)
        except json.JSONDecodeError as exc:
            reason = f"element {number:,} is malformed JSON: {exc.msg}"
            raise InputError(reason, file=file, row=number) from exc
        except RecursionError as exc:
            reason = f"element {number:,} nests lists and objects too deep to read"
            raise InputError(reason, file=file, row=number) from exc
        if end != len(text):
            raise InputError(f"element {number:,} is malformed JSON", file=file, row=number)
        return text

    def _maybe_cut(self, exc: json.JSONDecodeError) -> bool:
        """Whether the error may come from the buffer ending inside the element."""
        return exc.msg.startswith("Unterminated string") or exc.pos >= len(self.text) - _NEAR_END


class _ValueScan:
    """Where a JSON value ends, followed through pieces of text by its quotes and brackets
    alone (a bare number or literal: by what may follow it)."""

    def __init__(self, first: str) -> None:
        self._scalar = first not in '"[{'
        self._depth = 0
        self._in_string = self._escaped = False

    def feed(self, text: str, at: int) -> int | None:
        """Follow ``text`` from ``at``: where in it the value ends, or None if it goes on."""
        quote = backslash = -1  # the next of each in a string (str.find: regex is 100x slower)
        while at < len(text):
            if self._escaped:
                at, self._escaped = at + 1, False
            elif self._scalar:
                match = _SCALAR_END.search(text, at)
                return None if match is None else match.start()
            elif self._in_string:
                if quote < at:
                    quote = _find(text, '"', at)
                if backslash < at:
                    backslash = _find(text, "\\", at)
                if backslash < quote:
                    at, self._escaped = backslash + 1, True
                elif quote == len(text):
                    return None
                else:
                    at, self._in_string = quote + 1, False
                    if self._depth == 0:
                        return at  # the value was a string
            else:
                match = _STRUCTURE.search(text, at)
                if match is None:
                    return None
                at, mark = match.end(), match.group()
                if mark == '"':
                    self._in_string = True
                else:
                    self._depth += 1 if mark in "[{" else -1
                    if self._depth == 0:
                        return at
        return None


def _find(text: str, char: str, at: int) -> int:
    """Where ``char`` is next in ``text`` from ``at``; ``len(text)`` when nowhere."""
    found = text.find(char, at)
    return len(text) if found < 0 else found


def _guarded(line: int, parse: Callable[..., RawRow], data: Any, *more: Any) -> RawRow:
    """``parse(line, data, *more)``; whatever it raises makes this one row unusable, not the
    file."""
    try:
        return parse(line, data, *more)
    except Exception as exc:  # the per-row boundary: one bad row must never stop a run
        return RawRow(line, None, [Problem(None, unreadable_reason(exc))])


def _utf8_size(text: str) -> int:
    """How many bytes ``text`` (decoded with surrogate escapes) was as UTF-8."""
    return len(text.encode("utf-8", "surrogateescape"))


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
    with _read_errors(file), _CsvRecords(opener, kind.delimiter, cap, path.is_file()) as records:
        header = _csv_header(iter([_header_cells(records, file)]), file, kind.delimiter)
        index = 0
        while (record := records.next(file)) is not None:
            if record.cells == [] and record.problem is None:
                continue  # a blank line
            if skip(index):
                yield _SKIPPED
            elif record.problem is None:
                yield _guarded(record.first, _csv_row, header, record.cells, kind)
            else:
                yield _broken_record(record, header, kind)
            index += 1


def _broken_record(record: _Record, header: list[str], kind: InputKind) -> RawRow:
    """A record that cannot be used: its problem, and its id when its cells tell one, so that
    the error row says which row it was (its other cells are not kept: they may be merged)."""
    kept: dict[str, Any] | None = None
    if record.cells is not None:
        cells = _guarded(record.first, _csv_row, header, record.cells, kind).record or {}
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
            size += _utf8_size(piece)
            ended = scan.feed(piece)
        self._lines.clear()
        self._size = 0
        while not ended:
            piece = self._stream.readline(_CSV_PIECE)
            if not piece:
                self._at_end = True
                break
            self._count_break(piece)
            size += _utf8_size(piece)
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
        if not _is_utf8(cell):
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
# docs/design.md §3.1 allows JSON strings there (request.build_request decodes them). ``id`` is
# checked per value by the common stage, like the other formats.
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
    path: Path, kind: InputKind, batch_size: int, skip: Skip, cap: int = MAX_ROW_BYTES
) -> Generator[RawRow, None, None]:
    """One raw row per Parquet row, read one record batch at a time (``kind`` is always plain:
    Parquet compresses its own pages, and ``reader`` refuses a compressed Parquet file; its
    values come typed and sized, so ``cap`` is not the reader's: request building's)."""
    del kind, cap
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


# A reader: (path, kind, batch size, skip, cap) -> raw rows.
Reader = Callable[[Path, InputKind, int, Skip, int], Generator[RawRow, None, None]]
READERS: dict[Format, Reader] = {
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
