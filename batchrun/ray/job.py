"""``batchrun run JOB --engine ray``: a job's rows spread over a Ray cluster, its output
written as a local run writes it.

The driver reads the input with batchrun's own reader (so ids, duplicates and per-row
problems are found over the whole file, exactly as for a local run), makes blocks of
``block_rows`` rows carrying each row's fields as JSON text (no Arrow type is guessed for
them), and maps ``BatchrunStage`` over them. Blocks are committed as parts under
``<output>.parts/`` (``ray.parts``), so a killed run, re-run, sends only the rows no part
holds. When every block is back, the output is written in input order, in the output's
format, and put in place as a local run's is (``store.commit``: built beside it under a name
of its own, swapped in whole).

Rows a local run would refuse (an invalid request, a duplicate id) become their error rows
here, in the driver: they are never sent. The output is assembled in the driver's memory:
meant for jobs whose output fits in it (a local run streams; shards and ``merge`` scale
further).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.config.load import RunConfig, load_config
from batchrun.core.errors import ConfigError, OutputError
from batchrun.core.extras import require_extra
from batchrun.core.jsoncodec import compact
from batchrun.core.wording import option, said
from batchrun.engine.outcome import RowSettings, error_row, prepare
from batchrun.formats.base import WriteOptions
from batchrun.formats.inputs import read_rows
from batchrun.ray.stage import (
    FIELDS_COLUMN,
    INDEX_COLUMN,
    BatchrunStage,
    absolute_settings,
)
from batchrun.runs.claim import claim_output, output_types
from batchrun.runs.output import output_format_of
from batchrun.runs.summary import RunSummary
from batchrun.store.columns import INVALID_REQUEST, STATUS_OK
from batchrun.store.commit import Commit
from batchrun.store.sink import FinalCounts, output_schema

PARTS_SUFFIX = ".parts"
BLOCK_ROWS = 256  # rows per block: a part per 256 rows; a kill costs at most the blocks in flight
STAGE_CPUS = 0.5  # see batchrun.ray.STAGE_CPUS


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
) -> RunSummary:
    """Run the job ``source`` (with ``flags``, as ``load_config`` takes them) on Ray.

    ``address`` is the cluster's (``ray.init(address=...)``); None starts a local one with
    every CPU of this machine, unless this process is connected to one already. ``actors``:
    stage actors (default: one per CPU of the cluster, each taking ``STAGE_CPUS``). The
    workers read ``ANTHROPIC_API_KEY`` from their own environment.
    """
    # The optional extra, loaded only here: missing, one line naming the pip install.
    ray = require_extra("ray", "ray", _engine())
    if str(source) == "-":
        raise ConfigError(f"{_engine()} reads the input from a file, not from stdin")
    settings = absolute_settings({k: v for k, v in flags.items() if v is not None})
    job = str(Path(source).expanduser().resolve())
    config = load_config(job, settings, environ)
    _check_runnable(config)
    started = not ray.is_initialized()
    if started:
        if address is not None:
            ray.init(address=address)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False)
    try:
        with claim_output(config):
            return _run(ray, config, job, settings, actors, block_rows)
    finally:
        if started:
            ray.shutdown()


def _engine() -> str:
    """What runs a job on Ray, as the reader names it."""
    return said("--engine ray", "run_on_ray")


def _check_runnable(config: RunConfig) -> None:
    if config.via == "batches":
        raise ConfigError(f"{_engine()} sends online: drop {option('via', 'batches')}")
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
) -> RunSummary:
    began = time.monotonic()
    start = datetime.now(timezone.utc)
    schema = output_schema(config.output.keep_columns)
    refused: list[tuple[int, dict[str, Any]]] = []  # rows never sent: invalid, as locally
    index_of: dict[str, int] = {}
    blocks = list(_blocks(config, refused, index_of, block_rows))
    total = len(index_of) + len(refused)
    tables: list[pa.Table] = []
    if blocks:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        kwargs = {
            "parts_dir": str(parts_folder(config.output.path)),
            "job": job,
            "settings": dict(settings),
        }
        answered = ray.data.from_arrow(blocks).map_batches(
            BatchrunStage,
            fn_constructor_kwargs=kwargs,
            batch_format="pyarrow",
            batch_size=None,  # a block is a batch: the same blocks, and parts, on a re-run
            compute=ray.data.ActorPoolStrategy(size=actors or max(1, cpus)),
            num_cpus=STAGE_CPUS,
        )
        tables = list(answered.iter_batches(batch_format="pyarrow", batch_size=None))
    sent = pa.concat_tables([schema.empty_table(), *(t.select(schema.names) for t in tables)])
    order = [index_of[row_id] for row_id in sent.column("id").to_pylist()]
    order += [index for index, _ in refused]
    rows = pa.concat_tables([sent, pa.Table.from_pylist([r for _, r in refused], schema=schema)])
    rows = rows.take(pc.sort_indices(pa.array(order, pa.int64())))
    summary = RunSummary(
        input=config.input.path, output=config.output.path, total_rows=total, todo=total
    )
    _tally(summary, rows, start)
    summary.final = _write_output(config, rows, schema)
    summary.elapsed_s = time.monotonic() - began
    return summary


def _blocks(
    config: RunConfig,
    refused: list[tuple[int, dict[str, Any]]],
    index_of: dict[str, int],
    size: int,
) -> Iterator[pa.Table]:
    """The input's sendable rows in blocks of ``size``; refused rows go to ``refused``."""
    ids: list[str] = []
    indexes: list[int] = []
    fields: list[str] = []
    settings = RowSettings.of(config)
    for row in read_rows(config.input.path, shape=config.input.shape):
        text, reason = _as_json(row.fields)
        if row.problem is not None or text is None:
            work = prepare(row, settings)
            why = str(work.problem) if work.problem is not None else str(reason)
            refused.append((row.index, error_row(work, settings, INVALID_REQUEST, why, None, 0)))
            continue
        index_of[row.id] = row.index
        ids.append(row.id)
        indexes.append(row.index)
        fields.append(text)
        if len(ids) == size:
            yield _block(ids, indexes, fields)
            ids, indexes, fields = [], [], []
    if ids:
        yield _block(ids, indexes, fields)


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


def _write_output(config: RunConfig, rows: pa.Table, schema: pa.Schema) -> FinalCounts:
    """``rows`` as the output, in its format, put in place by the committer (``store.commit``):
    built beside it and swapped in whole; what it holds. Its free space is not checked first:
    its size is not known before it is written (Parquet compresses, JSON lines spell out every
    key), and a full disk leaves the old output in place all the same."""
    output = config.output.path
    fmt = output_format_of(config.output)
    commit = Commit(output, fmt, types=output_types(config))  # the parts hold text
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        options = WriteOptions(part_rows=config.output.part_rows)
        with commit.building() as tmp, commit.writer(tmp, schema, options) as write:
            write(rows.select(schema.names).cast(schema))
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"cannot write {output}: {exc}") from exc
    ok = pc.sum(pc.equal(rows.column("status"), STATUS_OK)).as_py() or 0
    return FinalCounts(rows=rows.num_rows, ok=ok, error=rows.num_rows - ok)
