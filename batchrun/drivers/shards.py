"""One job over many processes or machines: shards by the hash of each row's id, each run into
an output of its own, and ``merge_shards`` joining them into the job's output.

A row belongs to shard ``session.shard_of(id, N)`` (SHA-256 of the id, not Python's salted
``hash``), so every worker agrees without talking to the others. Layout for
``-o out/labels.parquet`` and ``--shard 2/4``::

    out/labels.parquet.shards/2-of-4/labels.parquet           the finished shard
    out/labels.parquet.shards/2-of-4/labels.parquet.journal   while it runs
    out/labels.parquet.shards/2-of-4/labels.parquet.state.json, .labels.parquet.lock

A shard runs as any output does (``drivers.online``, restricted to its rows with ``only``):
its journal's ``_index`` is the row's input index, so the resume checks compare each record
with the input row it came from, and rows of other shards are simply not this output's. Once
every row of the shard has a record, the shard's file is written from the journal (in input
order, in the output's format, with the input index as an ``_index`` column, atomically) and
the journal removed. A re-run of a finished shard turns that file back into journal lines
first, so ``--retry-errors`` or a changed job is checked and resumed as for any output.

``merge_shards`` reads the input's ids (the only per-row state it keeps in memory), checks
that each input row is in exactly one finished shard under its own id, and streams the
shards, each already in input order, into the job's output: a chunk of rows at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO

import httpx
import pyarrow as pa
import pyarrow.compute as pc

from batchrun.config.load import RunConfig
from batchrun.core.errors import ConfigError, OutputError
from batchrun.core.wording import option, said
from batchrun.drivers.online import run_holding
from batchrun.drivers.session import Sleep, check_credentials, claim_output, in_shard
from batchrun.drivers.summary import RunSummary
from batchrun.rows.reader import check_input_file, read_rows
from batchrun.store.columns import STATUS_OK
from batchrun.store.dataset import DATASET, replace_folder
from batchrun.store.journal import INDEX, JSON_SLICE_BYTES, journal_line, repair_journal
from batchrun.store.lock import OutputLock
from batchrun.store.partial import clear_mark, read_partial
from batchrun.store.sink import (
    CHUNK_ROWS,
    TMP_JOURNAL_SUFFIX,
    TMP_OUTPUT_SUFFIX,
    FinalCounts,
    fsync_dir,
    journal_path,
    journal_to_arrow,
    open_writer,
    output_batches,
    output_kind,
    output_schema,
    remove_stale_temporaries,
    remove_temporary,
    temporary_path,
)

SHARDS_SUFFIX = ".shards"
_SHARD_FOLDER = re.compile(r"([0-9]+)-of-([0-9]+)")
_SHOWN_IDS = 10


class ShardError(OutputError):
    """The shards cannot be merged: some row is missing, doubled, or in an unfinished shard."""


def shards_folder(output: Path) -> Path:
    """Where the shards of ``output`` live: ``out/labels.parquet.shards``."""
    return output.with_name(output.name + SHARDS_SUFFIX)


def shard_output(output: Path, index: int, count: int) -> Path:
    """Shard ``index`` of ``count``'s own output:
    ``out/labels.parquet.shards/2-of-4/labels.parquet``."""
    name = output.name
    if output.suffix.lower() not in (".parquet", ".jsonl", ".csv"):
        # A dataset folder (by its name alone: the same before and after it is written):
        # its shards are single Parquet files, merged into the folder.
        name += ".parquet"
    return shards_folder(output) / f"{index}-of-{count}" / name


def shard_schema(keep_columns: tuple[str, ...]) -> pa.Schema:
    """A shard file's columns: the output's, then each row's input index."""
    return output_schema(keep_columns).append(pa.field(INDEX, pa.int64()))


class ShardRows:
    """The input indexes of one shard's rows: one byte per input row, for ``only``."""

    def __init__(self, member: bytearray) -> None:
        self._member = member
        self._count = member.count(1)

    def __contains__(self, index: object) -> bool:
        return (
            isinstance(index, int) and 0 <= index < len(self._member) and self._member[index] == 1
        )

    def __len__(self) -> int:
        return self._count

    @property
    def input_rows(self) -> int:
        return len(self._member)


def shard_rows(config: RunConfig, shard: tuple[int, int]) -> ShardRows:
    """Which input rows are in ``shard``: one pass over the input's ids."""
    member = bytearray()
    for row in read_rows(config.input, shape=config.input_shape):
        member.append(1 if in_shard(row.id, shard) else 0)
    return ShardRows(member)


# -- one shard ------------------------------------------------------------------------------


def _check_shardable(config: RunConfig) -> tuple[int, int]:
    if config.shard is None:
        raise ConfigError("internal error: a shard run needs config.shard")
    if config.via != "online":
        raise ConfigError(
            f"{option('shard')} runs online only: drop {option('via', 'batches')}, or run "
            f"without {option('shard')}"
        )
    if config.output_url is not None:
        raise ConfigError(
            f"{option('shard')} writes a local output: give a local {option('output')}, or run "
            f"without {option('shard')}"
        )
    return config.shard


async def run_shard_async(
    config: RunConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress_stream: IO[str] | None = None,
    retry_sleep: Sleep = asyncio.sleep,
) -> RunSummary:
    """Run the rows of shard ``config.shard`` into the shard's own output (``shard_output``).

    Resumes as any run does; once every row of the shard is done, writes the shard's file
    (``summary.final``; ``summary.output`` is its path). Errors as in ``online.run_async``.
    """
    shard = _check_shardable(config)
    own = replace(config, output=shard_output(config.output, *shard), output_format=None)
    check_credentials(own, transport)
    check_input_file(own.input)
    with claim_output(own) as lock:
        _reopen(own)
        rows = shard_rows(own, shard)
        summary = await run_holding(
            own,
            lock,
            transport=transport,
            progress_stream=progress_stream,
            retry_sleep=retry_sleep,
            only=rows,
        )
        summary.total_rows = len(rows)
        if summary.interrupted is None and summary.budget_stop is None:
            # Every input row in this one shard: the driver wrote a whole output. Made a
            # shard file like any other, with its ``_index``.
            _reopen(own)
            summary.final = _finish(own, rows)
    return summary


def _reopen(config: RunConfig) -> None:
    """A finished shard's file back into journal lines (the journal fsynced before the
    file goes), so the run resumes from the journal: a shard file is no positional output."""
    output = config.output
    if not output.exists() or read_partial(output) is not None:
        return  # nothing finished, or a partial output the sink itself resumes from
    journal = journal_path(output)
    repair_journal(journal)
    try:
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            position = 0
            for batch in output_batches(output, shard_schema(config.keep_columns)):
                lines = []
                for row in batch.to_pylist():
                    index = row.pop(INDEX)
                    # A whole output (no ``_index``) holds every input row, by position.
                    lines.append(journal_line(position if index is None else index, row))
                    position += 1
                data = memoryview("".join(lines).encode())
                while data:
                    data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        output.unlink()
        clear_mark(output)
        fsync_dir(output.parent)
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"cannot resume shard output {output}: {exc}") from exc


def _finish(config: RunConfig, rows: ShardRows) -> FinalCounts | None:
    """The shard's file from its journal, when every row of the shard has a record (None,
    writing nothing, while some have none). Streams the journal as the sink does."""
    output = config.output
    journal = journal_path(output)
    schema = output_schema(config.keep_columns)
    tmp_arrow = temporary_path(output, TMP_JOURNAL_SUFFIX)
    tmp_out = temporary_path(output, TMP_OUTPUT_SUFFIX)
    try:
        records = journal_to_arrow(journal, schema, tmp_arrow, JSON_SLICE_BYTES)
        try:
            if len(records) != len(rows):
                return None
            ok = error = 0
            with open_writer(
                tmp_out, shard_schema(config.keep_columns), output_kind(output)
            ) as write:
                for p0 in range(0, rows.input_rows, CHUNK_ROWS):
                    table, indexes = records.between(p0, p0 + CHUNK_ROWS, schema)
                    foreign = [i for i in indexes if i not in rows]
                    if foreign:
                        raise OutputError(
                            f"{journal} holds records of rows of other shards (input rows "
                            f"{', '.join(map(str, foreign[:_SHOWN_IDS]))}): it is not this "
                            f"shard's journal. Use {option('overwrite', True)} to start this "
                            "shard afresh"
                        )
                    table = table.append_column(
                        pa.field(INDEX, pa.int64()), pa.array(indexes, pa.int64())
                    )
                    n_ok = pc.sum(pc.equal(table.column("status"), STATUS_OK)).as_py() or 0
                    ok += n_ok
                    error += table.num_rows - n_ok
                    if table.num_rows:
                        write(table)
        finally:
            records.close()
        os.replace(tmp_out, output)
        fsync_dir(output.parent)
        journal.unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot write {output}: {exc.strerror or exc}; the journal is kept: re-run the "
            "same command to write it"
        ) from exc
    finally:
        tmp_arrow.unlink(missing_ok=True)
        tmp_out.unlink(missing_ok=True)
    return FinalCounts(ok + error, ok, error)


# -- merge ----------------------------------------------------------------------------------


def shard_count(output: Path) -> int:
    """N, from the shard folders beside ``output`` (ShardError when none, or several Ns)."""
    folder = shards_folder(output)
    counts = set()
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            match = _SHARD_FOLDER.fullmatch(entry.name)
            if match and entry.is_dir():
                counts.add(int(match.group(2)))
    if not counts:
        raise ShardError(
            f"no shards of {output}: {folder} has no I-of-N folder. Run the job with "
            f"{said('`--shard I/N`', '`run_shard(config, I, N)`')} for each I first"
        )
    if len(counts) > 1:
        shown = ", ".join(f"{n}" for n in sorted(counts))
        raise ShardError(
            f"{folder} holds shards of different counts (N = {shown}): remove the folders "
            "of the split you do not want"
        )
    return counts.pop()


def merge_shards(config: RunConfig) -> FinalCounts:
    """Join the finished shards of ``config``'s job into its output, in input order.

    Refuses (ShardError), writing nothing, when a shard has not run or not finished, or
    when an input row is in no shard or in more than one (a shard file copied over
    another), naming the rows' ids. The output is written under a temporary name and
    renamed into place, in its own format; the shards are kept.
    """
    count = shard_count(config.output)
    paths = [shard_output(config.output, i, count) for i in range(count)]
    with contextlib.ExitStack() as locks:
        locks.enter_context(OutputLock(config.output))
        for path in paths:
            locks.enter_context(OutputLock(path))
        _check_finished(config.output, paths, count)
        ids = [row.id for row in read_rows(config.input, shape=config.input_shape)]
        _check_each_row_once(config, paths, ids)
        remove_stale_temporaries(config.output)
        return _write_merged(config, paths, len(ids))


def _check_finished(output: Path, paths: list[Path], count: int) -> None:
    problems = []
    for index, path in enumerate(paths):
        journal = journal_path(path)
        has_journal = journal.exists() and journal.stat().st_size > 0
        if not path.exists():
            what = "is not finished (only its journal)" if has_journal else "has not run"
            problems.append(f"shard {index}/{count} {what}")
        elif has_journal or read_partial(path) is not None:
            problems.append(f"shard {index}/{count} is not finished")
    if problems:
        raise ShardError(
            f"cannot merge the shards of {output}: {'; '.join(problems)}. Run (or re-run) "
            + said(f"`batchrun run JOB --shard I/{count}`", f"`run_shard(config, I, {count})`")
            + " for each, then merge"
        )
    journal = journal_path(output)
    if journal.exists() and journal.stat().st_size > 0:
        raise ShardError(
            f"{journal} is the journal of an unsharded run of this output: finish that run, "
            "or remove the journal, before merging shards into it"
        )


def _id_batches(path: Path, keep: tuple[str, ...]) -> Iterator[pa.RecordBatch]:
    return output_batches(path, shard_schema(keep), columns=[INDEX, "id"])


def _check_each_row_once(config: RunConfig, paths: list[Path], ids: list[str]) -> None:
    """Every input row in exactly one shard, under its own id, each shard in input order."""
    seen = bytearray(len(ids))
    strays: list[str] = []  # ids that are no input row's at the recorded index
    for number, path in enumerate(paths):
        last = -1
        for batch in _id_batches(path, config.keep_columns):
            for index, row_id in zip(
                batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True
            ):
                if index is None or not 0 <= index < len(ids) or ids[index] != row_id:
                    strays.append(f"{row_id} (shard {number})")
                    continue
                if index <= last:
                    raise ShardError(
                        f"{path} is not in input order (row {index}): re-run the shard"
                    )
                last = index
                seen[index] = min(seen[index] + 1, 2)
    missing = [ids[i] for i, times in enumerate(seen) if times == 0]
    doubled = [ids[i] for i, times in enumerate(seen) if times > 1]
    problems = []
    for what, found in (
        ("in no shard", missing),
        ("in more than one shard", doubled),
        ("in a shard but not in the input at that row", strays),
    ):
        if found:
            shown = ", ".join(found[:_SHOWN_IDS]) + (" ..." if len(found) > _SHOWN_IDS else "")
            problems.append(f"{len(found)} row(s) {what} (ids {shown})")
    if problems:
        raise ShardError(
            f"cannot merge the shards of {config.output}: {'; '.join(problems)}. Re-run the "
            f"shards concerned with {option('overwrite', True)} (a shard folder copied or left "
            "from another "
            "job or input), then merge"
        )


class _ShardStream:
    """One shard's rows, read in input order, handed out up to a given input index."""

    def __init__(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> None:
        self._batches = batches
        self._schema = schema
        self._pending = schema.empty_table()

    def until(self, end: int) -> pa.Table:
        """The rows whose ``_index`` is below ``end`` not handed out yet."""
        parts = []
        while True:
            if not self._pending.num_rows:
                batch = next(self._batches, None)
                if batch is None:
                    break
                self._pending = pa.Table.from_batches([batch], schema=self._schema)
            below = pc.sum(pc.less(self._pending.column(INDEX), end)).as_py() or 0
            parts.append(self._pending.slice(0, below))
            self._pending = self._pending.slice(below)
            if self._pending.num_rows:
                break
        return pa.concat_tables(parts) if parts else self._schema.empty_table()


def _write_merged(config: RunConfig, paths: list[Path], rows: int) -> FinalCounts:
    output = config.output
    schema = output_schema(config.keep_columns)
    with_index = shard_schema(config.keep_columns)
    streams = [_ShardStream(output_batches(p, with_index), with_index) for p in paths]
    tmp_out = temporary_path(output, TMP_OUTPUT_SUFFIX)
    kind = config.output_format or output_kind(output)
    ok = 0
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with open_writer(tmp_out, schema, kind, part_rows=config.part_rows) as write:
            for p0 in range(0, rows, CHUNK_ROWS):
                chunk = pa.concat_tables([s.until(p0 + CHUNK_ROWS) for s in streams])
                chunk = chunk.take(pc.sort_indices(chunk.column(INDEX))).drop_columns([INDEX])
                ok += pc.sum(pc.equal(chunk.column("status"), STATUS_OK)).as_py() or 0
                if chunk.num_rows:
                    write(chunk.cast(schema))
        if kind == DATASET:
            replace_folder(tmp_out, output)
        else:
            os.replace(tmp_out, output)
            fsync_dir(output.parent)
        clear_mark(output)
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"cannot write {output}: {exc}; the shards are kept") from exc
    finally:
        remove_temporary(tmp_out)
    return FinalCounts(rows, ok, rows - ok)
