"""Input files -> rows, lazily, through the input's format (``registry``): what a file is
(``input_kind``), its rows (``read_rows``), how many it has (``count_rows``).

What a file is: the format comes from ``--format`` (``InputShape``) when given, else from the
name (each format's suffixes: ``.jsonl``, ``.json``, ``.csv``, ``.tsv``, ``.parquet`` ...),
with a compression suffix (``.gz``, ``.bz2``, ``.zst``) looked through. Compression is told by
the file's first bytes, so ``--format jsonl`` on a gzipped ``.txt`` works too; a format that
is not text (Parquet) refuses to be compressed, saying why. A CSV input's delimiter is
``--csv-delimiter``, else the one its name implies (a tab for TSV), else a comma. Its text
encoding is its byte-order mark's, else ``--encoding``, else UTF-8, which is checked on the
file's first MiB (``rows.text``).

Two kinds of failure, because they call for different reactions:

* the whole file is unusable (missing, unreadable, unknown extension, no rows, a Parquet file
  that will not open, a CSV without a header or whose one-column header holds another
  delimiter, a ``.gz`` that is not gzip, a compressed Parquet file, a ``.json`` file that is
  no array, a start that is not UTF-8 text with no ``--encoding`` given): :class:`InputError`,
  raised by :func:`read_rows` itself before any row is returned, so a run aborts before it
  sends anything. Damage found further on (a JSON array broken between elements, a truncated
  compressed stream) raises it where it is found;
* one row is unusable: the row is still yielded with its problem (``rows.reader``).

Example::

    for row in read_rows(Path("reviews.jsonl")):
        if row.problem:
            print(row.problem)          # reviews.jsonl:7: malformed JSON: Expecting ',' ...
        else:
            print(row.id, row.fields)   # rev-0001 {'product': ..., 'prompt': ...}
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

from batchrun.core.errors import InputError
from batchrun.core.wording import option
from batchrun.formats.base import InputFormat, keep_all
from batchrun.formats.registry import input_by_suffix, input_named, input_names, input_suffixes
from batchrun.rows.compressed import compression_of
from batchrun.rows.raw import RawRow, Skip
from batchrun.rows.reader import InputRow as InputRow  # re-exported: what read_rows yields
from batchrun.rows.reader import check_input_file, identified_rows
from batchrun.rows.shape import InputKind, check_encoding, split_suffix
from batchrun.rows.shape import InputShape as InputShape  # re-exported: read_rows takes it
from batchrun.rows.text import MAX_ROW_BYTES, check_text, input_encoding


def input_format(path: Path, shape: InputShape | None = None) -> str:
    """The input format's name: ``shape.format``'s when given, else the one the file's name
    says (case-insensitive, through a compression suffix). Reads nothing; InputError for a
    name that says nothing."""
    return _said(path, shape)[0].name


def format_of(kind: InputKind) -> InputFormat:
    """The format an ``InputKind`` (``input_kind``) was found to be in."""
    fmt = input_named(kind.format)
    if fmt is None:
        raise InputError(f"internal error: no input format {kind.format!r}")
    return fmt


def _said(path: Path, shape: InputShape | None) -> tuple[InputFormat, str | None]:
    """The format ``shape`` or the name says, and the delimiter that implies (a tab for
    TSV)."""
    if shape is not None and shape.format is not None:
        fmt = input_named(shape.format)
        if fmt is None:
            known = ", ".join(input_names())
            raise InputError(
                f"unknown {option('input_format')} {shape.format!r}; use one of {known}"
            )
        return fmt, fmt.delimiters.get(shape.format)
    name, _ = split_suffix(path.name)
    found = input_by_suffix(name)
    if found is None:
        known = ", ".join(input_suffixes())
        raise InputError(
            f"unknown input format; use one of the extensions {known} (optionally compressed: "
            f".gz, .bz2, .zst), or give it with {option('input_format')}",
            file=str(path),
        )
    fmt, suffix = found
    return fmt, fmt.delimiters.get(suffix)


def input_kind(path: Path, shape: InputShape | None = None) -> InputKind:
    """What ``path`` is: format, compression (from its first bytes), CSV delimiter and text
    encoding (a byte-order mark's, else ``shape.encoding``, else UTF-8).

    InputError for a name that says no format (and no ``--format``), for a compression
    suffix the bytes belie, and for a compressed file of a format that cannot be (Parquet).
    """
    fmt, implied = _said(path, shape)
    given = shape is not None and shape.format is not None
    # With --format the name is not trusted for anything: only the bytes tell compression.
    compression = compression_of(path, None if given else split_suffix(path.name)[1])
    refused = fmt.compressed(compression) if compression is not None else None
    if refused is not None:
        raise InputError(refused, file=str(path))
    delimiter = (shape.delimiter if shape is not None else None) or implied or ","
    if not fmt.text:
        return InputKind(fmt.name, compression, delimiter, text=False)
    named = shape.encoding if shape is not None else None
    if named is not None:
        try:
            check_encoding(named)
        except ValueError as exc:
            raise InputError(f"{option('encoding')}: {exc}", file=str(path)) from None
    encoding, given = input_encoding(path, compression, named)
    return InputKind(fmt.name, compression, delimiter, encoding, given)


def check_input_text(path: Path, shape: InputShape | None = None) -> None:
    """``text.UndecodableInputError`` when ``path``, with no encoding told, does not start as
    UTF-8 text: a mistake every row would share, told once before anything is sent. Silent
    when the file cannot be read at all: the reader says why."""
    try:
        kind = input_kind(path, shape)
    except InputError:
        return
    check_text(path, kind)


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
    the number of rows per record batch, for a format read in batches (Parquet).

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
    fmt = format_of(kind)

    def read() -> Generator[RawRow, None, None]:
        return fmt.rows(path, kind, batch_size, skip or keep_all, max_row_bytes)

    return identified_rows(read, str(path), fmt.unit, known_ids)


def count_rows(path: Path, shape: InputShape | None = None) -> int | None:
    """How many rows ``path`` holds, for a progress bar's total; None when not told cheaply.

    Each format says whether it can (``InputFormat.count``): Parquet keeps the count in its
    footer, JSON lines are counted by one fast pass over the lines; CSV and JSON arrays are
    not (a CSV record may span lines and a JSON element may hold any text, so only a full
    parse would tell). Never raises: a file that cannot be read gives None, and
    :func:`read_rows` reports why.
    """
    try:
        kind = input_kind(path, shape)
    except (InputError, OSError):
        return None
    return format_of(kind).count(path, kind)


def column_types(
    path: Path, names: Iterable[str], shape: InputShape | None = None
) -> dict[str, Any]:
    """The types ``path`` gives the columns ``names`` (``InputFormat.column_types``: Arrow
    types, for a final output to keep); a column it gives none stays text. Never raises: an
    input that cannot be read gives none, and :func:`read_rows` reports why."""
    wanted = list(dict.fromkeys(names))
    try:
        kind = input_kind(path, shape)
        return format_of(kind).column_types(path, kind, wanted)
    except (InputError, OSError, ValueError, TypeError, NotImplementedError):  # Arrow's too
        return {}
