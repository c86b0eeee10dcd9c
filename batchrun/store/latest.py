"""An output read as a run would resume it: the rows of its final file, except those a newer
journal record replaces, then the journal's newest record per row.

So a run stopped by its budget or interrupted (journal only) reads just as well as a finished
one. A partial output (``formats.marks``) is read from its journal, which holds all its rows;
the file itself only when that journal is gone. ``batchrun report`` and ``batchrun estimate``
read outputs this way, streamed in record batches: nothing held grows with the row count but
8 bytes per journal record.

    found: list[Source] = []
    for batch in latest_batches(Path("out/a.parquet"), ("status", "cost_usd"), found=found):
        ...  # an ``_index`` column, then the columns asked for
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.core.errors import OutputError
from batchrun.formats.jsonl import JSON_SLICE_BYTES
from batchrun.formats.marks import Partial
from batchrun.formats.registry import output_for
from batchrun.store.arrow_values import int64_array
from batchrun.store.journal import Newest, journal_schema
from batchrun.store.sink import JOURNAL_SUFFIX, journal_path, output_batches, output_schema

# Rows per batch read from a final file: big, since the readers fold whole batches at once.
BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Source:
    """One output as read: where its rows came from."""

    path: Path | str  # a URL where the output was pulled from object storage (cli.report)
    rows: int
    final: bool  # a final file was read
    journal: bool  # a journal was read (the run had not finished, or is running)
    damaged: int = 0  # damaged journal lines skipped (``store.journal``)
    partial: Partial | None = None  # the output is a stopped run's, with the rows it finished


def latest_batches(
    path: Path,
    columns: Sequence[str],
    *,
    found: list[Source] | None = None,
    batch_rows: int = BATCH_ROWS,
    slice_bytes: int = JSON_SLICE_BYTES,
) -> Iterator[pa.RecordBatch]:
    """Record batches of ``path``'s rows with an ``_index`` column, newest record per row.

    ``path`` is an output (any output format), with or without its journal,
    or a journal itself. The final file's rows come first, in input order, then the
    journal's in the order they finished. Appends a ``Source`` describing what was read to
    ``found``. Raises OutputError when there is no such output or it cannot be read.
    """
    output, journal = _locate(path)
    partial = output_for(output).read_mark(output) if output is not None else None
    if partial is not None and journal is not None:
        output = None  # the journal holds each of its rows, by input index
    schema = _schema(columns)
    newest = None
    if journal is not None:
        try:
            newest = Newest.read(journal, slice_bytes)
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"cannot read {journal}: {exc}") from exc
    rows = 0
    if output is not None:
        position = 0
        final = output_batches(output, schema, None, batch_rows, slice_bytes)
        for batch in _guarded_iter(output, final):
            stop = position + batch.num_rows
            indexes = int64_array(range(position, stop))
            out = _with_index(batch, indexes)
            replaced = newest.between(position, stop) if newest is not None else ()
            if replaced:  # rows a newer journal record replaces come from it
                value_set = int64_array(replaced)
                out = out.filter(pc.invert(pc.is_in(indexes, value_set=value_set)))
            position = stop
            rows += out.num_rows
            if out.num_rows:
                yield out
    if newest is not None:
        for batch in _guarded_iter(newest.path, newest.records(schema, slice_bytes)):
            rows += batch.num_rows
            yield batch
    if found is not None:
        damaged = newest.damaged if newest is not None else 0
        found.append(Source(path, rows, output is not None, journal is not None, damaged, partial))


def _locate(path: Path) -> tuple[Path | None, Path | None]:
    if path.name.endswith(JOURNAL_SUFFIX):
        if not path.exists():
            raise OutputError(f"{path}: no such journal")
        return None, path
    journal = journal_path(path)
    has_journal = journal.exists() and journal.stat().st_size > 0
    if path.exists():
        if not output_for(path).exists(path):  # a folder with no output written in it
            raise OutputError(f"{path} is a folder with no output in it")
        return path, journal if has_journal else None
    if has_journal:
        return None, journal
    raise OutputError(f"{path}: no such output (and no {journal.name} beside it)")


def _schema(columns: Sequence[str]) -> pa.Schema:
    full = output_schema()
    return pa.schema([full.field(name) for name in columns])


def _with_index(batch: pa.RecordBatch, indexes: pa.Array) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [indexes, *batch.columns], schema=journal_schema(batch.schema)
    )


def _guarded_iter(path: Path, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"cannot read {path}: {exc}") from exc
