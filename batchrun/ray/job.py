"""``batchrun run JOB --engine ray``: a job's rows spread over a Ray cluster, its output
written as a local run writes it, and never held by the driver.

The driver reads the input with batchrun's own reader (so ids, duplicates and per-row
problems are found over the whole file, exactly as for a local run) and writes it, as it
reads, into blocks of ``block_rows`` consecutive rows carrying each row's fields as JSON text
(no Arrow type is guessed for them) and its input index: Parquet files under
``<output>.parts/.input-<run>/``, beside the parts, where every worker can read them. The
dataset Ray maps ``BatchrunStage`` over is those files' paths, one block each, and each actor
reads its block's file (``STAGED_COLUMN``): Ray's own Parquet reader packs small files into
one read, which would join blocks (and parts) into a few large ones. Blocks are committed as
parts under
``<output>.parts/`` (``ray.parts``), so a killed run, re-run, sends only the rows no part
holds. Each answered block comes back with its rows' input indexes and goes straight to the
driver's spool on disk (``ray.assemble``); once every block is back, the output is written
from the spool in input order, in the output's format, and put in place as a local run's is
(``store.commit``: built beside it under a name of its own, swapped in whole).

Rows a local run would refuse (an invalid request, a duplicate id) become their error rows
here, in the driver, and go to the spool as they are read: they are never sent. What the
driver keeps per row is the reader's (a 64-bit hash of each id, for duplicates): memory
stays flat as the job grows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.config.load import RunConfig, load_config
from batchrun.core.errors import ConfigError, OutputError
from batchrun.core.extras import require_extra
from batchrun.core.jsoncodec import compact
from batchrun.core.wording import option, said
from batchrun.engine.outcome import RowSettings, error_row, prepare
from batchrun.formats.base import WriteOptions
from batchrun.formats.inputs import read_rows
from batchrun.ray.assemble import OutputSpool
from batchrun.ray.stage import (
    FIELDS_COLUMN,
    INDEX_COLUMN,
    STAGED_COLUMN,
    BatchrunStage,
    absolute_settings,
    indexed_schema,
)
from batchrun.runs.claim import claim_output, output_types
from batchrun.runs.output import output_format_of
from batchrun.runs.summary import RunSummary
from batchrun.store.columns import INVALID_REQUEST
from batchrun.store.commit import Commit, temporary_path
from batchrun.store.sink import (
    FinalCounts,
    new_run_id,
    output_schema,
    remove_stale_temporaries,
)

PARTS_SUFFIX = ".parts"
BLOCK_ROWS = 256  # rows per block: a part per 256 rows; a kill costs at most the blocks in flight
STAGE_CPUS = 0.5  # see batchrun.ray.STAGE_CPUS
STAGED_PREFIX = ".input-"  # a run's input blocks, in the parts folder: .input-<run>/
SPOOL_SUFFIX = ".ray.tmp"  # the driver's spool beside the output (``temporary_path``)

# Told, after each block the driver received, the spool's path and the rows in it: a seam
# for tests that the driver keeps no block (``OutputSpool``).
Observer = Callable[[Path, int], None]


def dedup_scope_notice(config: RunConfig, block_rows: int = BLOCK_ROWS) -> str | None:
    """What a user of ``--engine ray`` is told before anything is sent, when dedup is on
    (the default): each block's engine sends identical requests once, but the blocks are
    answered apart, so identical rows in different blocks are each sent and paid for. (A local
    run, online or via batches, finds them all: ``runs.twins``.) None with ``--no-dedup``."""
    if not config.engine.dedup:
        return None
    return (
        f"batchrun: {_engine()} finds identical requests within each block of {block_rows:,} "
        "rows only: identical rows in different blocks are each sent and paid for (a local "
        "run, online or via batches, finds them all)"
    )


def parts_folder(output: Path) -> Path:
    """Where ``--engine ray`` commits the blocks of ``output``: ``out/labels.parquet.parts``."""
    return output.with_name(output.name + PARTS_SUFFIX)


def run_on_ray(
    source: str | os.PathLike[str],
    flags: Mapping[str, Any],
    *,
    address: str | None = None,
    actors: int | None = None,
    block_rows: int = BLOCK_ROWS,
    environ: Mapping[str, str] | None = None,
    observe: Observer | None = None,
    notify: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run the job ``source`` (with ``flags``, as ``load_config`` takes them) on Ray.

    ``address`` is the cluster's (``ray.init(address=...)``); None starts a local one with
    every CPU of this machine, unless this process is connected to one already. ``actors``:
    stage actors (default: one per CPU of the cluster, each taking ``STAGE_CPUS``). The
    workers read ``ANTHROPIC_API_KEY`` from their own environment. ``observe``: see
    ``Observer``. ``notify`` is told, before anything is sent, what the user should know
    (``dedup_scope_notice``).
    """
    # The optional extra, loaded only here: missing, one line naming the pip install.
    ray = require_extra("ray", "ray", _engine())
    if str(source) == "-":
        raise ConfigError(f"{_engine()} reads the input from a file, not from stdin")
    settings = absolute_settings({k: v for k, v in flags.items() if v is not None})
    job = str(Path(source).expanduser().resolve())
    config = load_config(job, settings, environ)
    _check_runnable(config)
    notice = dedup_scope_notice(config, block_rows)
    if notice is not None and notify is not None:
        notify(notice)
    started = not ray.is_initialized()
    if started:
        if address is not None:
            ray.init(address=address)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False)
    try:
        with claim_output(config):
            return _run(ray, config, job, settings, actors, block_rows, observe)
    finally:
        if started:
            ray.shutdown()


def _engine() -> str:
    """What runs a job on Ray, as the reader names it."""
    return said("--engine ray", "run_on_ray")


def _check_runnable(config: RunConfig) -> None:
    if config.via != "online":
        raise ConfigError(f"{_engine()} sends online: drop {option('via', config.via)}")
    if config.shard is not None:
        raise ConfigError(f"{_engine()} spreads the whole job: drop {option('shard')}")
    if config.output.url is not None:
        raise ConfigError(
            f"{_engine()} writes a local output: give {option('output')} a local path"
        )


def _run(
    ray: Any,
    config: RunConfig,
    job: str,
    settings: Mapping[str, Any],
    actors: int | None,
    block_rows: int,
    observe: Observer | None = None,
) -> RunSummary:
    began = time.monotonic()
    start = datetime.now(timezone.utc)
    schema = output_schema(config.output.keep_columns)
    summary = RunSummary(input=config.input.path, output=config.output.path)
    parts = parts_folder(config.output.path)
    # What runs killed midway left (the output's lock is held): staged blocks, spools.
    _remove_staged_inputs(parts)
    remove_stale_temporaries(config.output.path, (SPOOL_SUFFIX,))
    staged = parts / f"{STAGED_PREFIX}{new_run_id()}"
    try:
        with OutputSpool(temporary_path(config.output.path, SPOOL_SUFFIX), schema) as spool:

            def keep(table: pa.Table) -> None:
                spool.add(table)  # on disk before the next block is taken
                _tally(summary, table, start)
                if observe is not None:
                    observe(spool.path, spool.rows)

            total, blocks = _stage_input(config, staged, block_rows, keep)
            summary.total_rows = summary.todo = total
            if blocks:
                cpus = int(ray.cluster_resources().get("CPU", 1))
                kwargs = {"parts_dir": str(parts), "job": job, "settings": dict(settings)}
                # One path a block: the same blocks, and parts, on a re-run, whatever
                # the size of the files (``STAGED_COLUMN``).
                where = staged.absolute()  # read by the workers, from their own working folders
                paths = [{STAGED_COLUMN: str(where / _block_name(n))} for n in range(blocks)]
                answered = ray.data.from_items(paths, override_num_blocks=blocks)
                answered = answered.map_batches(
                    BatchrunStage,
                    fn_constructor_kwargs=kwargs,
                    batch_format="pyarrow",
                    batch_size=None,  # a block is a batch
                    compute=ray.data.ActorPoolStrategy(size=actors or max(1, cpus)),
                    num_cpus=STAGE_CPUS,
                )
                for block in answered.iter_batches(batch_format="pyarrow", batch_size=None):
                    keep(block)
            summary.final = _write_output(config, spool, total)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    summary.elapsed_s = time.monotonic() - began
    return summary


def _stage_input(
    config: RunConfig, folder: Path, size: int, refused: Callable[[pa.Table], None]
) -> tuple[int, int]:
    """The input's sendable rows into block files of ``size`` rows in ``folder``; the rows
    a local run would refuse, as their error rows, to ``refused`` (with their index). Returns
    the input's rows and the blocks written."""
    settings = RowSettings.of(config)
    indexed = indexed_schema(output_schema(config.output.keep_columns))
    ids: list[str] = []
    indexes: list[int] = []
    fields: list[str] = []
    errors: list[dict[str, Any]] = []
    rows = blocks = 0
    folder.mkdir(parents=True, exist_ok=True)
    for row in read_rows(config.input.path, shape=config.input.shape):
        rows = row.index + 1
        text, reason = _as_json(row.fields)
        if row.problem is not None or text is None:
            work = prepare(row, settings)
            why = str(work.problem) if work.problem is not None else str(reason)
            error = error_row(work, settings, INVALID_REQUEST, why, None, 0)
            errors.append({**error, INDEX_COLUMN: row.index})
        else:
            ids.append(row.id)
            indexes.append(row.index)
            fields.append(text)
        wrote = len(ids) == size
        if wrote:
            pq.write_table(_block(ids, indexes, fields), folder / _block_name(blocks))
            blocks += 1
            ids, indexes, fields = [], [], []
        # Refused rows go with the blocks around them: a few spool batches, not one a row.
        if errors and (wrote or len(errors) == size):
            refused(pa.Table.from_pylist(errors, schema=indexed))
            errors = []
    if ids:
        pq.write_table(_block(ids, indexes, fields), folder / _block_name(blocks))
        blocks += 1
    if errors:
        refused(pa.Table.from_pylist(errors, schema=indexed))
    return rows, blocks


def _block_name(number: int) -> str:
    return f"block-{number:08d}.parquet"


def _remove_staged_inputs(parts: Path) -> None:
    """The blocks earlier runs staged and left (killed midway)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in parts.iterdir():
            if entry.name.startswith(STAGED_PREFIX) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)


def _as_json(fields: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The row's fields as JSON text for the workers, or why they have none (a Parquet
    input's bytes or timestamp value, say: the row is refused as a local run's would be)."""
    try:
        return compact(fields), None
    except (TypeError, ValueError) as exc:
        return None, f"a value cannot be sent to the Ray workers as JSON ({exc})"


def _block(ids: list[str], indexes: list[int], fields: list[str]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            INDEX_COLUMN: pa.array(indexes, pa.int64()),
            FIELDS_COLUMN: pa.array(fields, pa.string()),
        }
    )


def _tally(summary: RunSummary, rows: pa.Table, start: datetime) -> None:
    """Count the rows this run finished; those an earlier run committed are ``skipped``
    (a committed row keeps the time it was first finished)."""
    for row in rows.to_pylist():
        finished = row["finished_at"]
        if finished is not None and finished < start:
            summary.skipped += 1
        else:
            summary.count(row)


def _write_output(config: RunConfig, spool: OutputSpool, total: int) -> FinalCounts:
    """The output from ``spool``, in input order and its format, put in place by the
    committer (``store.commit``): built beside it and swapped in whole; what it holds. Its
    free space is not checked first: its size is not known before it is written (Parquet
    compresses, JSON lines spell out every key), and a full disk leaves the old output in
    place all the same."""
    output = config.output.path
    fmt = output_format_of(config.output)
    schema = output_schema(config.output.keep_columns)
    commit = Commit(output, fmt, types=output_types(config))  # the spool holds text
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        options = WriteOptions(part_rows=config.output.part_rows)
        with commit.building() as tmp, commit.writer(tmp, schema, options) as write:
            ok = spool.write_into(lambda table: write(table.cast(schema)), total)
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"cannot write {output}: {exc}") from exc
    return FinalCounts(rows=total, ok=ok, error=total - ok)
