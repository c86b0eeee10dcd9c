"""What an input format's reader yields (``RawRow``), and what every reader shares.

A reader (``batchrun.formats``: JSON lines, a JSON array, CSV, Parquet, ...) turns a file
into ``RawRow``s (a record or None, and its problems) and knows nothing of ids or
duplicates, which ``rows.reader`` adds for every format alike. Whatever reading one row
raises, foreseen or not, is that row's problem (``guarded``); an OS error while reading is
the file's (``read_errors``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from batchrun.core.errors import InputError, Problem
from batchrun.rows.checks import TooDeep, failure, loads_bounded, surrogate_problems

Skip = Callable[[int], bool]  # true for a row the caller has no use for: counted, not parsed


@dataclass
class RawRow:
    """What a format reader found at one position: a record (or None) and its problems."""

    line: int
    record: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)
    skipped: bool = False  # the caller asked not to parse this row
    # How many rows this stands for: more than one only for a run of skipped rows, which a
    # reader may give as one (``skipped_rows``): a resume skips millions.
    count: int = 1


SKIPPED = RawRow(0, None, skipped=True)  # a row the caller asked to skip: counted, not parsed


def skipped_rows(count: int) -> RawRow:
    """``count`` rows in a row that the caller asked to skip, given as one."""
    return SKIPPED if count == 1 else RawRow(0, None, skipped=True, count=count)


def guarded(line: int, parse: Callable[..., RawRow], data: Any, *more: Any) -> RawRow:
    """``parse(line, data, *more)``; whatever it raises makes this one row unusable, not the
    file."""
    try:
        return parse(line, data, *more)
    except Exception as exc:  # the per-row boundary: one bad row must never stop a run
        return RawRow(line, None, [Problem(None, unreadable_reason(exc))])


def unreadable_reason(exc: BaseException) -> str:
    """The problem of a row that failed in a way nothing foresaw (kept short and printable)."""
    return f"cannot be read ({failure(exc)})"


@contextlib.contextmanager
def read_errors(file: str) -> Iterator[None]:
    """An OS error while reading (a disk or network file system failing) names the file."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"read failed: {exc.strerror or exc}", file=file) from exc


def utf8_size(text: str) -> int:
    """How many bytes ``text`` (decoded with surrogate escapes) was as UTF-8."""
    return len(text.encode("utf-8", "surrogateescape"))


def is_utf8(text: str) -> bool:
    """False when ``surrogateescape`` decoding had to smuggle undecodable bytes into ``text``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_record(line_number: int, text: str) -> RawRow:
    """One JSON object's text (a JSONL line, a JSON array's element) as a record.

    Besides malformed JSON, a text is refused for what JSON can say but a request cannot
    carry: lists and objects nested deeper than ``checks.MAX_JSON_DEPTH``, numbers beyond a
    float (``1e400``), NaN, and lone surrogates (``"\\ud83d"``, half of an emoji), which no
    UTF-8 body can hold. The last names the field; the record is kept, so the id is too.
    """
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
