"""What a format is: an input format reads a file into raw rows; an output format writes the
output table and reads it back.

A format module (``batchrun.formats.jsonl``, ``.parquet``, ...) subclasses these and lists
its objects in ``FORMATS``; ``formats.registry`` finds them. A module imports nothing heavy
at its top (Arrow is imported inside the methods that read or write): the registry imports
every format module to learn their names, and ``batchrun --help`` lists them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from batchrun.formats.marks import Partial, read_mark_beside
from batchrun.rows.raw import RawRow, Skip
from batchrun.rows.shape import Compression, InputKind
from batchrun.rows.text import MAX_ROW_BYTES, decoded_head

# -- input formats ----------------------------------------------------------------------------


class Head:
    """A file's first bytes (decompressed), to tell its format by; ``text`` is them decoded
    (as a byte-order mark says, else as ``encoding``, else as UTF-8), from its first
    character that is not white space."""

    def __init__(self, data: bytes, encoding: str | None = None) -> None:
        self.data = data
        self._encoding = encoding

    @functools.cached_property
    def text(self) -> str:
        return decoded_head(self.data, self._encoding).lstrip(" \t\r\n")


@dataclass(frozen=True)
class InputColumns:
    """What an input tells of its columns.

    ``known``: the columns it declares (``declared``: a Parquet schema, a CSV header), else its
    first row's fields. ``found``: of the names asked, those some row has (for a quick look,
    those some row may have; ``InputFormat.columns``).
    """

    known: tuple[str, ...]
    found: frozenset[str]
    declared: bool


Enough = Callable[[set[str]], bool]
"""Told the names found so far: whether the look may stop there."""


@dataclass(frozen=True)
class ColumnQuery:
    """A look at an input's columns (``InputFormat.columns``): which of the names ``asked``
    some row of the file at ``path`` (read as ``kind``) has.

    Exact by default. ``quick`` is the pre-flight's look: as cheap as the format allows, it
    may find a name no row holds a value for (JSON text that merely contains the key) and
    never misses one that some row holds; ``enough`` (told the names found so far) may stop
    it early.
    """

    path: Path
    kind: InputKind
    asked: Collection[str]
    quick: bool = False
    enough: Enough | None = None


class InputFormat:
    """One format an input may be in.

    ``names`` are what ``--format`` takes (the first is the format's own name, ``InputKind
    .format``); ``suffixes`` the name endings that say it (lowercase, looked at under a
    compression suffix); ``delimiters`` the names or suffixes among them that imply a CSV
    field delimiter (``tsv``: a tab). ``unit`` is what a row's number counts in messages
    (``line``, ``element``, ``row``). A format that is not ``text`` is read as bytes: it is
    never decompressed or decoded (``compressed`` says why a compressed one is refused).
    Formats are listed by ``rank``, and asked to recognise a file's first bytes by
    ``sniff_rank``.
    """

    names: ClassVar[tuple[str, ...]]
    suffixes: ClassVar[tuple[str, ...]]
    delimiters: ClassVar[Mapping[str, str]] = {}
    unit: ClassVar[str] = "line"
    text: ClassVar[bool] = True
    rank: ClassVar[int] = 100
    sniff_rank: ClassVar[int] = 50

    @property
    def name(self) -> str:
        return self.names[0]

    def suffix_for(self, name: str) -> str:
        """The suffix a file of this format, said by ``name`` (a ``--format`` name, or the
        name ``sniff`` told), is given when batchrun names it (standard input's copy)."""
        own = f".{name}"
        return own if own in self.suffixes else self.suffixes[0]

    def sniff(self, head: Head) -> str | None:
        """The name of this format when ``head`` is the start of a file in it, else None."""
        return None

    def compressed(self, compression: Compression) -> str | None:
        """Why a file of this format compressed with ``compression`` cannot be read; None
        when it can (a text format: the codec is a layer under it)."""
        return None

    def rows(
        self, path: Path, kind: InputKind, batch_size: int, skip: Skip, cap: int = MAX_ROW_BYTES
    ) -> Generator[RawRow, None, None]:
        """The file's rows, lazily, in file order (``rows.raw``): a skipped row is counted,
        not parsed; no more than ``cap`` bytes of one row are held (a longer one is its
        row's problem); ``batch_size`` rows at a time where the format reads in batches.
        InputError for a file that cannot be read at all."""
        raise NotImplementedError

    def count(self, path: Path, kind: InputKind) -> int | None:
        """How many rows the file holds when that is cheap to tell (a footer, a count of
        lines); None when only reading every row would tell. Never raises for a file that
        cannot be read: None (the reader says why)."""
        return None

    def columns(self, query: ColumnQuery) -> InputColumns | None:
        """The input's columns, and which of the names asked some row has; None when it
        cannot tell (the reader, when the run opens the file, says why).

        Exact by default: rows are read until every name asked is found (a name no row has
        costs a pass over the file); a quick look is as cheap as the format allows
        (``ColumnQuery``). Here, for a format with no cheap look: exact, by reading its
        rows; none for a quick look.
        """
        if query.quick:
            return None
        left = dict.fromkeys(query.asked)
        first: tuple[str, ...] | None = None
        with contextlib.closing(self.rows(query.path, query.kind, 1024, keep_all)) as raw:
            for row in raw:
                if row.record is None:
                    continue
                if first is None:
                    first = tuple(row.record)
                for name in row.record.keys() & left.keys():
                    del left[name]
                if not left:
                    break
        if first is None:
            return None  # no row to tell by: the reader says the file has none
        found = frozenset(name for name in query.asked if name not in left)
        return InputColumns(first, found, declared=False)

    def column_types(self, path: Path, kind: InputKind, names: Collection[str]) -> dict[str, Any]:
        """The types (Arrow's) the input gives the columns ``names``, for a final output to
        keep (``store.typed``); a name it leaves out stays text, as it does here: a format
        whose values are text (CSV). ``id`` is given a type only when every row's id has it
        (a row without one is named ``row-<index>``, which only text holds)."""
        return {}

    def value_types(self, path: Path, kind: InputKind, names: Collection[str]) -> dict[str, Any]:
        """``column_types`` told from the values (``formats.values.JsonKinds``), for a format
        that declares none (JSON): rows are read until no value to come could change a
        type (a column of text is text whatever follows), at worst the whole file."""
        from batchrun.formats.values import JsonKinds

        kinds = {name: JsonKinds() for name in names}
        broken = False  # a row that could not be read: it is named row-<index>
        with contextlib.closing(self.rows(path, kind, 1024, keep_all)) as raw:
            for row in raw:
                if row.record is None:
                    broken = True
                for name, found in kinds.items():
                    found.observe(None if row.record is None else row.record.get(name))
                if all(
                    found.settled or (name == "id" and (broken or found.missing > 0))
                    for name, found in kinds.items()
                ):
                    break
        types = {name: k.arrow_type() for name, k in kinds.items()}
        ids = kinds.get("id")
        if ids is not None and (broken or ids.missing or ids.kind != "integer"):
            del types["id"]
        return types

    def mistyped_columns(self, path: Path) -> dict[str, str]:
        """Row fields whose column has a type no value of it could be sent as, told from the
        file's schema before a row is read: name -> reason (a typed format's; else none)."""
        return {}


def keep_all(index: int) -> bool:
    """A skip that keeps every row."""
    return False


# -- output formats ---------------------------------------------------------------------------

# A folder output's parts: a million ~1 KB rows make a part of a few hundred MB of Parquet,
# the size Spark and DuckDB split work by; PART_BYTES bounds parts of long answers (Arrow
# bytes, before compression: a part on disk is smaller).
PART_ROWS = 1_000_000
PART_BYTES = 1 << 30


@dataclass(frozen=True)
class WriteOptions:
    """How an output is written beyond its rows: a folder format's parts hold at most
    ``part_rows`` rows and about ``part_bytes`` bytes; ``open_part`` opens one (a seam: tests
    make the disk fail mid-dataset). A single file's format takes none of them."""

    part_rows: int = PART_ROWS
    part_bytes: int = PART_BYTES
    open_part: Callable[[Path, Any], Any] | None = None


Write = Callable[[Any], None]
"""Writes a ``pyarrow.Table`` of output rows, the next in input order."""


class OutputFormat:
    """One format an output may be written in.

    ``suffixes`` are the name endings that say it (a single file's); a ``folder`` format is
    said by a name that ends with a slash or ``--output-format`` instead, and is what a
    folder on disk is unless its suffix says a file format (``folder_suffixes``: suffixes a
    folder of this format may have, ``labels.parquet/``); its ``parts`` are files of that
    format (a shard of such an output is one). ``described`` says it in help texts.

    A partial output (``formats.marks``) carries its mark in the schema's metadata when
    ``marks_itself``; otherwise the mark lives beside it (``store.commit`` writes it). An
    output ``from_python`` may be what ``batchrun.run(rows, output=...)`` writes and reads
    back into the Table it returns. The ``fallback`` format reads a name no format claims.
    Formats are listed by ``rank``.
    """

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()
    described: ClassVar[str] = ""
    folder: ClassVar[bool] = False
    folder_suffixes: ClassVar[tuple[str, ...]] = ()
    parts: ClassVar[str | None] = None
    marks_itself: ClassVar[bool] = False
    from_python: ClassVar[bool] = True
    fallback: ClassVar[bool] = False
    rank: ClassVar[int] = 100

    def writer(
        self, path: Path, schema: Any, options: WriteOptions | None = None
    ) -> AbstractContextManager[Write]:
        """A write(table) for a new output at ``path`` with ``schema`` (whose metadata may
        hold a partial mark: ``formats.marks``), written whole when the ``with`` ends
        cleanly. Syncing it to disk and putting it in place are ``store.commit``'s: ``path``
        is a temporary name beside the output."""
        raise NotImplementedError

    def batches(self, path: Path, wanted: Any, batch_rows: int, slice_bytes: int) -> Iterator[Any]:
        """The output's record batches, in input order, with those of ``wanted``'s columns
        (a ``pyarrow.Schema``) the file has; the caller conforms them to ``wanted``. About
        ``batch_rows`` rows at a time (or ``slice_bytes`` of text, for a text format)."""
        raise NotImplementedError

    def row_count(self, path: Path) -> int:
        """How many rows the output holds (OSError or ArrowException when it cannot be read)."""
        raise NotImplementedError

    def exists(self, path: Path) -> bool:
        """Whether an output of this format (complete or partial) is at ``path``."""
        return path.exists()

    def size(self, path: Path) -> int:
        """The bytes the output takes on disk (0 when there is none)."""
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def modified_ns(self, path: Path) -> int | None:
        """When the output was last written (its file's mtime); None when there is none."""
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return None

    def read_mark(self, path: Path) -> Partial | None:
        """The output's partial mark; None for a complete output, or no output at all."""
        return read_mark_beside(path)

    def remove(self, path: Path) -> None:
        """Remove the output at ``path`` (``--overwrite``), if there is one."""
        path.unlink(missing_ok=True)
