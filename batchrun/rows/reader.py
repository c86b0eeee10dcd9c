"""Rows, whatever their format: the common stage every input format's raw rows go through.

An input format (``batchrun.formats``: ``formats.inputs.read_rows`` picks it) reads a file
into raw rows (``rows.raw``); this gives each its index, its id and its final problem, and
catches duplicate ids, for every format alike. A run may read ten million rows, so nothing
here holds more than one row at a time, plus a 64-bit hash of each id seen.

One row is unusable (a malformed JSON line, bytes not in the file's encoding, a lone
surrogate, lists nested deeper than ``checks.MAX_JSON_DEPTH``, a bad id, a duplicate id, a
cell of the wrong type, a row longer than the cap, a CSV record whose quoted cell is never
closed where a cell can end): the row is still yielded, with ``problem`` set, so the run
records it as an error row and goes on. Every problem names the file, the row's number (what
it counts is the format's ``unit``: a line, an element, a row) and the field. This is a
boundary: whatever reading one row raises, foreseen or not, becomes that row's problem.
"""

from __future__ import annotations

import contextlib
from array import array
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

from batchrun.core.errors import InputError, InvalidRowError, Problem
from batchrun.core.frozen import frozen
from batchrun.rows.checks import describe, failure, lone_surrogate, surrogate_reason
from batchrun.rows.raw import RawRow, json_kind


@frozen  # made for every row: frozen to the type checker, quick to make
class InputRow:
    """One input row, or the reason it cannot be used.

    ``index`` is the 0-based position among rows; ``line`` the 1-based line (JSONL, CSV: where
    the record starts), element (JSON array) or row (Parquet) number used in messages; ``id``
    the row's ``id`` as a string, or ``row-<index>`` when it has none (or none could be read);
    ``fields`` every other field, with None-valued ones dropped; ``problem`` set when the row
    must not be sent.

    A row whose id duplicates an earlier one keeps the id as written (so the error row shows
    which id clashed) and carries a problem naming both lines.
    """

    index: int
    line: int
    id: str
    fields: dict[str, Any]
    problem: InvalidRowError | None = None


def check_input_file(path: Path) -> None:
    """InputError unless ``path`` is a file that exists (checked before any output is made)."""
    if not path.exists():
        raise InputError("no such file", file=str(path))
    if path.is_dir():
        raise InputError("is a directory, not an input file", file=str(path))


def identified_rows(
    read: Callable[[], Generator[RawRow, None, None]],
    file: str,
    unit: str,
    known_ids: Iterable[str] = (),
) -> Iterator[InputRow]:
    """The rows ``read()`` gives, each with its index, id and problem, without skipped rows.

    Reads up to the first row before returning: InputError when the file has none. ``read``
    is called again (from the start, skipping the same rows) only when an id's hash comes
    twice (``_SeenIds``). ``known_ids`` are the ids of the rows an earlier run answered (the
    skipped ones), so that a new row repeating one is still caught as a duplicate. ``unit``
    names what a row's number counts, in messages.
    """
    rows = _identified(read(), file, unit, _SeenIds(known_ids, read))
    first = next(rows, _NO_ROWS)
    if first is _NO_ROWS:
        raise InputError("the file has no rows", file=file)
    return _starting_with(first, rows)


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


# --- the common stage: ids, duplicates, None-dropping ------------------------------------------


def _identified(
    raw_rows: Generator[RawRow, None, None], file: str, unit: str, seen: _SeenIds
) -> Generator[InputRow | None, None, None]:
    """Give each raw row its index, id and final problem; catch duplicate ids.

    ``unit`` names what ``line`` counts in messages: ``line`` (JSONL) or ``row``. Skipped
    rows come out as None.
    """
    with contextlib.closing(raw_rows):
        next_index = 0
        for raw in raw_rows:
            index = next_index
            next_index += raw.count  # a run of skipped rows may come as one
            if raw.skipped:
                yield None
                continue
            try:
                row = _input_row(index, raw, seen, file, unit)
            except InputError:
                raise  # reading the file again failed (the duplicate check): the file is unusable
            except Exception as exc:  # the per-row boundary: this row is unusable, not the file
                problem = InvalidRowError(
                    [Problem(None, f"cannot be read ({failure(exc)})")], file=file, row=raw.line
                )
                row = InputRow(index, raw.line, f"row-{index}", {}, problem)
            yield row


def _input_row(index: int, raw: RawRow, seen: _SeenIds, file: str, unit: str) -> InputRow:
    """The row at ``index``; its id is recorded in ``seen`` unless it is a duplicate."""
    record = raw.record or {}
    problems = list(raw.problems) if raw.problems else []
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
        reread: Callable[[], Generator[RawRow, None, None]],
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
            next_index = 0
            for raw in raw_rows:
                i = next_index
                next_index += raw.count  # a run of skipped rows may come as one
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
    if type(value) is str and value and value.isascii():
        return value, None  # the usual id, decided at once (ASCII holds no surrogate)
    default = f"row-{index}"
    if value is None or value == "":
        return default, None
    if isinstance(value, str):
        at = lone_surrogate(value)
        if at is None:
            return value, None
        # Such an id cannot be written to the output: the row goes by its default id.
        reason = surrogate_reason("", f"\\u{ord(value[at]):04x}")
        return default, Problem("id", f"{describe(value)} {reason}")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    return default, Problem("id", f"must be a string or an integer, not {json_kind(value)}")
