"""A JSON array of row objects, in (``.json``): read element by element, streamed.

The array is never held whole: elements are cut from a buffer of about ``_TEXT_CHUNK``
characters, so a file of any size reads in the memory of its longest element, and an element
longer than the cap is skipped through, unread, as its row's problem. A row's number is its
1-based element number. Text that is no JSON array (a malformed element, a missing comma,
text after the closing bracket) makes the rest unreadable: an InputError naming the element.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Generator, Iterator
from pathlib import Path
from typing import IO, Any

from batchrun.core.errors import InputError, Problem
from batchrun.core.wording import option
from batchrun.formats.base import ColumnQuery, Head, InputColumns, InputFormat
from batchrun.formats.jsonl import quick_json_columns
from batchrun.rows.raw import (
    SKIPPED,
    RawRow,
    Skip,
    guarded,
    is_utf8,
    json_record,
    read_errors,
    utf8_size,
)
from batchrun.rows.shape import InputKind
from batchrun.rows.text import MAX_ROW_BYTES, LongLine, not_text_cell, open_text, too_long

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
    with read_errors(file), open_text(path, kind) as stream:
        elements = _array_elements(_TextBuffer(stream, _TEXT_CHUNK, cap), file)
        for number, text in enumerate(elements, start=1):
            if skip(number - 1):
                yield SKIPPED
            elif isinstance(text, LongLine):
                reason = too_long(f"element {number:,}", text.size, cap)
                yield RawRow(number, None, [Problem(None, reason)])
            elif not is_utf8(text):
                yield RawRow(number, None, [Problem(None, not_text_cell(kind))])
            else:
                yield guarded(number, json_record, text)


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
                return LongLine(utf8_size(text))
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
            size += utf8_size(piece)
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


class JsonArrayInput(InputFormat):
    names = ("json",)
    suffixes = (".json",)
    unit = "element"
    rank = 20
    sniff_rank = 10

    def sniff(self, head: Head) -> str | None:
        return self.name if head.text.startswith("[") else None

    def rows(
        self, path: Path, kind: InputKind, batch_size: int, skip: Skip, cap: int = MAX_ROW_BYTES
    ) -> Generator[RawRow, None, None]:
        return _json_rows(path, kind, batch_size, skip, cap)

    def columns(self, query: ColumnQuery) -> InputColumns | None:
        """Quick: JSON lines' scan of the bytes (``jsonl.scan_for``); exact: the elements,
        read until every name asked is a key of one."""
        if query.quick:
            return quick_json_columns(self, query)
        return super().columns(query)

    def column_types(self, path: Path, kind: InputKind, names: Collection[str]) -> dict[str, Any]:
        return self.value_types(path, kind, names)


FORMATS = (JsonArrayInput(),)
