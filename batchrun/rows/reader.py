"""Input files -> rows, lazily: JSONL line by line, a JSON array element by element, Parquet
by record batch, CSV (and TSV) record by record.

A run may read ten million rows, so nothing here holds more than one line, one JSON element,
one CSV record or one Parquet record batch at a time (plus a 64-bit hash of each id seen, to
catch duplicates). Nor more than ``max_row_bytes`` of one (by default the Messages API's
request size limit, ``text.MAX_ROW_BYTES``): a longer line, element or CSV record is skipped
unread and becomes its row's problem, naming its size.

What a file is (:func:`input_kind`): the format comes from ``--format`` (``InputShape``) when
given, else from the name (``.jsonl``/``.ndjson``, ``.json``, ``.csv``, ``.tsv``,
``.parquet``/``.pq``), with a compression suffix (``.gz``, ``.bz2``, ``.zst``) looked through.
Compression is told by the file's first bytes, so ``--format jsonl`` on a gzipped ``.txt``
works too; a compressed Parquet file is refused (Parquet compresses its own pages and needs
random access). A CSV input's delimiter is ``--csv-delimiter``, else a tab for TSV, else a comma.
Its text encoding is its byte-order mark's, else ``--encoding``, else UTF-8, which is checked
on the file's first MiB (``rows.text``).

Two kinds of failure, because they call for different reactions:

* the whole file is unusable (missing, unreadable, unknown extension, no rows, a Parquet file
  that will not open, a CSV without a header or whose one-column header holds another
  delimiter, a ``.gz`` that is not gzip, a compressed Parquet file, a ``.json`` file that is
  no array, a start that is not UTF-8 text with no ``--encoding`` given): :class:`InputError`,
  raised by :func:`read_rows` itself before any row is returned, so a run aborts before it
  sends anything. Damage found further on (a JSON array broken between elements, a truncated
  compressed stream) raises it where it is found;
* one row is unusable (a malformed JSON line, bytes not in the file's encoding, a lone
  surrogate, lists nested deeper than ``checks.MAX_JSON_DEPTH``, a bad id, a duplicate id, a
  cell of the wrong type, a row longer than ``max_row_bytes``, a CSV record whose quoted cell
  is never closed where a cell can end):
  the row is still yielded, with ``problem`` set, so the run records it as an error row and
  goes on. Every problem names the file, the row's line and the field. This is a boundary:
  whatever reading one row raises, foreseen or not, becomes that row's problem.

Row numbers (``InputRow.line``, and ``row`` in every error):

* JSONL: the 1-based line number in the file. Blank lines are skipped but still counted.
* CSV: the 1-based line number in the file where the record starts (the header is line 1; a
  record whose quoted cell holds line breaks spans several lines, and is known by its first).
* JSON array: the 1-based element number (``index + 1``).
* Parquet: the 1-based row number in the file (``index + 1``).

Where values are converted: CSV cells are all strings, so the numeric parameters
(``max_tokens``, ``top_k``, ``temperature``, ``top_p``) are converted here, where the cell and its
row are known. Structured parameters given as JSON text (``messages``, ``tools``, ...) are decoded
in one place only, :func:`batchrun.rows.request.build_request`, for every format alike.

Example::

    for row in read_rows(Path("reviews.jsonl")):
        if row.problem:
            print(row.problem)          # reviews.jsonl:7: malformed JSON: Expecting ',' ...
        else:
            print(row.id, row.fields)   # rev-0001 {'product': ..., 'prompt': ...}
"""

from __future__ import annotations

import contextlib
from array import array
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.core.errors import InputError, InvalidRowError, Problem
from batchrun.core.wording import option
from batchrun.rows.checks import describe, failure, lone_surrogate, surrogate_reason
from batchrun.rows.compressed import compression_of
from batchrun.rows.formats import READERS, Format, InputKind, RawRow, Skip, json_kind
from batchrun.rows.shape import InputShape as InputShape  # re-exported: callers import it here
from batchrun.rows.shape import check_encoding, split_suffix
from batchrun.rows.text import MAX_ROW_BYTES, bounded_lines, check_text, input_encoding, open_utf8

# Name endings and --format choices: the format each means, and the CSV delimiter it implies.
_EXTENSIONS: dict[str, tuple[Format, str | None]] = {
    ".jsonl": ("jsonl", None),
    ".ndjson": ("jsonl", None),
    ".json-lines": ("jsonl", None),
    ".json": ("json", None),
    ".parquet": ("parquet", None),
    ".pq": ("parquet", None),
    ".csv": ("csv", None),
    ".tsv": ("csv", "\t"),
}
_FORMATS: dict[str, tuple[Format, str | None]] = {
    "jsonl": ("jsonl", None),
    "json": ("json", None),
    "csv": ("csv", None),
    "tsv": ("csv", "\t"),
    "parquet": ("parquet", None),
}


@dataclass(frozen=True)
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


def input_format(path: Path, shape: InputShape | None = None) -> Format:
    """The input format: ``shape.format`` when given, else from the name (case-insensitive,
    through a compression suffix). Reads nothing; InputError for a name that says nothing."""
    return _named_format(path, shape)[0]


def _named_format(path: Path, shape: InputShape | None) -> tuple[Format, str | None]:
    """The format and the delimiter it implies (a tab for TSV), from ``shape`` or the name."""
    if shape is not None and shape.format is not None:
        if shape.format not in _FORMATS:
            known = ", ".join(_FORMATS)
            raise InputError(
                f"unknown {option('input_format')} {shape.format!r}; use one of {known}"
            )
        return _FORMATS[shape.format]
    name, _ = split_suffix(path.name.lower())
    for extension, named in _EXTENSIONS.items():
        if name.endswith(extension):
            return named
    known = ", ".join(_EXTENSIONS)
    raise InputError(
        f"unknown input format; use one of the extensions {known} (optionally compressed: "
        f".gz, .bz2, .zst), or give it with {option('input_format')}",
        file=str(path),
    )


def input_kind(path: Path, shape: InputShape | None = None) -> InputKind:
    """What ``path`` is: format, compression (from its first bytes), CSV delimiter and text
    encoding (a byte-order mark's, else ``shape.encoding``, else UTF-8).

    InputError for a name that says no format (and no ``--format``), for a compression
    suffix the bytes belie, and for a compressed Parquet file.
    """
    fmt, implied = _named_format(path, shape)
    given = shape is not None and shape.format is not None
    # With --format the name is not trusted for anything: only the bytes tell compression.
    compression = compression_of(path, None if given else split_suffix(path.name)[1])
    if fmt == "parquet" and compression is not None:
        raise InputError(
            f"a {compression}-compressed Parquet file cannot be read: Parquet compresses its "
            "own pages and is read by seeking, so decompress it first (it is no bigger)",
            file=str(path),
        )
    delimiter = (shape.delimiter if shape is not None else None) or implied or ","
    if fmt == "parquet":
        return InputKind(fmt, compression, delimiter)
    named = shape.encoding if shape is not None else None
    if named is not None:
        try:
            check_encoding(named)
        except ValueError as exc:
            raise InputError(f"{option('encoding')}: {exc}", file=str(path)) from None
    encoding, given = input_encoding(path, compression, named)
    return InputKind(fmt, compression, delimiter, encoding, given)


def check_input_text(path: Path, shape: InputShape | None = None) -> None:
    """``text.UndecodableInputError`` when ``path``, with no encoding told, does not start as
    UTF-8 text: a mistake every row would share, told once before anything is sent. Silent
    when the file cannot be read at all: the reader says why."""
    try:
        kind = input_kind(path, shape)
    except InputError:
        return
    check_text(path, kind)


def check_input_file(path: Path) -> None:
    """InputError unless ``path`` is a file that exists (checked before any output is made)."""
    if not path.exists():
        raise InputError("no such file", file=str(path))
    if path.is_dir():
        raise InputError("is a directory, not an input file", file=str(path))


def read_rows(
    path: Path,
    *,
    shape: InputShape | None = None,
    batch_size: int = 1024,
    skip: Skip | None = None,
    known_ids: Iterable[str] = (),
    max_row_bytes: int = MAX_ROW_BYTES,
) -> Iterator[InputRow]:
    """The rows of ``path``, lazily, in file order.

    File-level problems raise :class:`InputError` here, before the iterator is returned: this
    opens the file and reads up to the first row (to reject an empty file). ``batch_size`` is
    the number of rows per Parquet record batch.

    ``skip(index)`` true means the caller has no use for that row (an earlier run answered
    it): it is counted but not parsed nor yielded, which is what lets a resumed million-row
    job start sending at once. ``known_ids`` are the ids of those rows, so that a new row
    repeating one is still caught as a duplicate. A row longer than ``max_row_bytes`` is not
    read: it comes with a problem naming its size.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    input_format(path, shape)  # an unknown format is told first, even for a missing file
    check_input_file(path)
    kind = input_kind(path, shape)
    check_text(path, kind)

    def reread() -> Generator[RawRow, None, None]:
        return READERS[kind.format](path, kind, batch_size, skip or _keep_all, max_row_bytes)

    unit = _UNITS[kind.format]
    rows = _identified(reread(), str(path), unit, _SeenIds(known_ids, reread))
    first = next(rows, _NO_ROWS)
    if first is _NO_ROWS:
        raise InputError("the file has no rows", file=str(path))
    return _starting_with(first, rows)


def _keep_all(index: int) -> bool:
    return False


def _blank(data: bytes | object) -> bool:
    return isinstance(data, bytes) and data.isspace()


# What ``InputRow.line`` counts, by format, for messages ("first seen on line 3").
_UNITS: dict[Format, str] = {"jsonl": "line", "json": "element", "csv": "line", "parquet": "row"}


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


def count_rows(path: Path, shape: InputShape | None = None) -> int | None:
    """How many rows ``path`` holds, for a progress bar's total; None when not told cheaply.

    Parquet keeps the count in its footer. JSONL is counted by one fast pass over the lines
    (non-blank ones, as :func:`read_rows` counts them, a line too long to read included),
    decompressing and decoding the file on the way. CSV and JSON arrays are not counted: a CSV
    record may span lines and a JSON element may hold any text, so only a full parse would
    tell. Never raises: a file that cannot be
    read gives None, and :func:`read_rows` reports why.
    """
    try:
        kind = input_kind(path, shape)
        if kind.format == "parquet":
            with pq.ParquetFile(path) as parquet:
                return int(parquet.metadata.num_rows)
        if kind.format == "jsonl":
            with open_utf8(path, kind) as stream:
                return sum(1 for data in bounded_lines(stream) if not _blank(data))
    except (InputError, OSError, pa.ArrowException):
        return None
    return None


# --- the common stage: ids, duplicates, None-dropping ------------------------------------------


def _identified(
    raw_rows: Generator[RawRow, None, None], file: str, unit: str, seen: _SeenIds
) -> Generator[InputRow | None, None, None]:
    """Give each raw row its index, id and final problem; catch duplicate ids.

    ``unit`` names what ``line`` counts in messages: ``line`` (JSONL) or ``row``. Skipped
    rows come out as None.
    """
    with contextlib.closing(raw_rows):
        for index, raw in enumerate(raw_rows):
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
        at = lone_surrogate(value)
        if at is None:
            return value, None
        # Such an id cannot be written to the output: the row goes by its default id.
        reason = surrogate_reason("", f"\\u{ord(value[at]):04x}")
        return default, Problem("id", f"{describe(value)} {reason}")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    return default, Problem("id", f"must be a string or an integer, not {json_kind(value)}")
