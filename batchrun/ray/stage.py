"""The Ray Data stage: each block's rows through batchrun's engine, its finished rows committed.

Use it as any callable class of ``map_batches`` (an actor pool; each actor loads the job once)::

    ds = ray.data.read_parquet("s3://bucket/reviews/")
    answers = ds.map_batches(
        BatchrunStage,
        fn_constructor_kwargs={
            "settings": {"model": "claude-haiku-4-5", "max_tokens": 50, "system": "..."},
            "parts_dir": "/shared/parts",
        },
        batch_format="pyarrow", concurrency=4, num_cpus=0.5,
    )

or ``batchrun.ray.answer(ds, settings=..., parts_dir=...)``, which does exactly that.

Per block: the rows become ``InputRow``s as a file's rows do (the block is read through
``rows.reader``, so types, nested nulls and ids are checked alike); each row's committed
answer is looked up (``ray.parts``) and reused when its request is the same; the others go
through one ``Engine`` (retries, limits learned from headers, ``--rate-limit-store``,
``--max-cost``, usage, cost and ``request_hash`` columns), and the block's finished rows are
committed as its part before the block is returned. A row that fails is an error row; a block
whose engine stopped (bad credentials, the budget) returns its unfinished rows as
``not_sent`` error rows, left out of the part so that a re-run sends them. Nothing a row does
fails the dataset.

Why per row, not per block only: a re-run after a kill sends exactly the rows no part holds,
whether Ray cuts the blocks as before or not. Rows need an ``id`` column: a Ray block has no
global row number to name a row by.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.config.load import RunConfig, load_config
from batchrun.config.settings import BY_KEY
from batchrun.core.errors import ConfigError, InvalidRowError, Problem
from batchrun.engine.outcome import RowSettings, Work, error_row, prepare
from batchrun.engine.tally import RowTally
from batchrun.formats.inputs import InputRow, read_rows
from batchrun.ray.parts import Committed, job_folder, part_name, reusable, write_part
from batchrun.runs.compose import job_client, job_engine
from batchrun.runs.runtime import DEFAULT
from batchrun.store.resume import job_fingerprint
from batchrun.store.sink import output_schema

# A block the job driver (``ray.job``) made: each row's fields as JSON text and its input
# index, read by the driver's own reader, so no Arrow type is guessed for them.
FIELDS_COLUMN = "_batchrun_fields"
INDEX_COLUMN = "_batchrun_index"
# A block of the job driver's paths: each a Parquet file of such a block, staged beside the
# parts, which the stage reads and answers (the driver keeps no rows, Ray cuts no files).
STAGED_COLUMN = "_batchrun_staged"
# error_type of a row its block's engine stopped before sending (never committed).
NOT_SENT = "not_sent"
# The input's name in messages about a row of a dataset ("ray-dataset:7: ...").
_DATASET_NAME = "ray-dataset"


class BatchrunStage:
    """A ``map_batches`` callable class: a pyarrow block in, its output rows out.

    ``job`` is a job file (TOML) or None; ``settings`` are settings by key, as
    ``load_config``'s flags (they win over the job's); ``parts_dir`` is where finished blocks
    are committed (a folder every worker can write: a shared filesystem on a cluster).
    ``environ`` defaults to the worker's environment (``ANTHROPIC_API_KEY`` is read there:
    a key is never pickled into the stage).
    """

    def __init__(
        self,
        *,
        parts_dir: str | os.PathLike[str],
        job: str | os.PathLike[str] | None = None,
        settings: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        source = Path(job) if job is not None else Path(_DATASET_NAME)
        self.config = stage_config(source, settings or {}, environ)
        self.schema = output_schema(self.config.output.keep_columns)
        self._indexed = indexed_schema(self.schema)
        folder = job_folder(Path(parts_dir), job_fingerprint(self.config.defaults))
        folder.mkdir(parents=True, exist_ok=True)
        self.committed = Committed(folder, self.schema)
        self.tally = RowTally()  # this actor's rows, over all its blocks

    def __call__(self, block: pa.Table) -> pa.Table:
        if not isinstance(block, pa.Table):
            raise TypeError(
                f"BatchrunStage takes pyarrow blocks: give map_batches batch_format='pyarrow' "
                f"(got {type(block).__name__})"
            )
        if STAGED_COLUMN in block.column_names:
            answered = [
                answer_block(self.config, staged, self.committed, self.schema, self.tally)
                for staged in map(pq.read_table, block.column(STAGED_COLUMN).to_pylist())
            ]
            return pa.concat_tables(answered) if answered else self._indexed.empty_table()
        return answer_block(self.config, block, self.committed, self.schema, self.tally)


def stage_config(
    source: Path, settings: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> RunConfig:
    """The job's config for a stage: its input is the dataset, so input settings are refused."""
    for key in ("input", "input_format", "csv_delimiter", "encoding", "shard"):
        if settings.get(key) is not None:
            raise ConfigError(f"`{key}` does not apply to a Ray stage: the rows are the dataset's")
    config = load_config(source, dict(settings), environ)
    # One engine per block: its own bounded pool; the quiet flag silences nothing here.
    return replace(config, shard=None)


def answer_block(
    config: RunConfig,
    block: pa.Table,
    committed: Committed,
    schema: pa.Schema,
    tally: RowTally | None = None,
) -> pa.Table:
    """``block``'s output rows, in its order; the finished ones committed as its part. A
    block of the job driver's comes back with each row's input index (``INDEX_COLUMN``)."""
    rows = block_rows(block, config)
    if not rows:
        return (
            indexed_schema(schema) if FIELDS_COLUMN in block.column_names else schema
        ).empty_table()
    ids = [row.id for row in rows]
    own = committed.folder / part_name(ids)
    settings = RowSettings.of(config)
    works = [prepare(row, settings) for row in rows]
    prior = committed.rows(ids, own)
    done: dict[int, dict[str, Any]] = {}
    todo: list[Work] = []
    for position, work in enumerate(works):
        before = prior.get(work.row.id)
        if work.body is not None and reusable(
            before, work.request_hash, config.resume.retry_errors
        ):
            assert before is not None
            done[position] = before
        else:
            todo.append(work)
    reused = len(done)
    position_of = {id(work): position for position, work in enumerate(works)}
    stopped: str | None = None
    if todo:
        finished: dict[int, dict[str, Any]] = {}
        stopped = _send(config, todo, finished, position_of, tally or RowTally())
        done.update(finished)
    if len(done) > reused or not own.exists():
        final = [done[p] for p in sorted(done)]
        write_part(committed.folder, own.name, pa.Table.from_pylist(final, schema=schema))
    out = []
    for position, work in enumerate(works):
        row = done.get(position)
        if row is None:  # the engine stopped before this row: not committed, a re-run sends it
            reason = f"not sent: {stopped or 'the engine stopped admitting rows'}"
            row = error_row(work, settings, NOT_SENT, reason, None, 0)
        out.append(row)
    table = pa.Table.from_pylist(out, schema=schema)
    if FIELDS_COLUMN in block.column_names:
        # A block of the job driver's (``ray.job``): each row's input index goes back with
        # it, so the driver writes the output in input order without keeping an id's index.
        indexes = pa.array([row.index for row in rows], pa.int64())
        table = pa.Table.from_arrays([*table.columns, indexes], schema=indexed_schema(schema))
    return table


def indexed_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` (the output's) with each row's input index after it (``INDEX_COLUMN``)."""
    return schema.append(pa.field(INDEX_COLUMN, pa.int64()))


def _send(
    config: RunConfig,
    todo: Sequence[Work],
    finished: dict[int, dict[str, Any]],
    position_of: Mapping[int, int],
    tally: RowTally,
) -> str | None:
    """Send ``todo`` through one engine; None, or why it stopped before every row finished."""

    def record(work: Work, row: dict[str, Any]) -> None:
        finished[position_of[id(work)]] = row

    async def go() -> str | None:
        async with job_client(config, DEFAULT) as client:
            engine = job_engine(config, client, tally, DEFAULT, notify=_quiet)
            await engine.run(todo, record)
            return engine.budget_stop

    try:
        return asyncio.run(go())
    except MemoryError:
        raise
    except Exception as exc:  # a run-stopping error (credentials, ...): this block's rows wait
        return f"{type(exc).__name__}: {exc}"


def block_rows(block: pa.Table, config: RunConfig) -> list[InputRow]:
    """The block's rows as ``InputRow``s: from the job driver's JSON fields, or else read as a
    Parquet file is, so a dataset's rows are checked exactly as a file's."""
    if block.num_rows == 0:
        return []
    if FIELDS_COLUMN in block.column_names:
        return _driver_rows(block)
    if "id" not in block.column_names:
        raise ConfigError(
            "the dataset has no `id` column: each row of a Ray dataset needs one (a block "
            "has no row number of its own to name a row by)"
        )
    with tempfile.TemporaryDirectory(prefix="batchrun-block-") as tmp:
        path = Path(tmp) / "block.parquet"
        # As public.frames writes rows held in memory: no metadata, plain Parquet types.
        plain = block.replace_schema_metadata(None)
        pq.write_table(plain, path, store_schema=False)
        rows = list(read_rows(path, batch_size=max(1, block.num_rows)))
    blank = block.column("id").to_pylist()
    return [_named(row, blank[i], config) for i, row in enumerate(rows)]


def _named(row: InputRow, given: Any, config: RunConfig) -> InputRow:
    """A row without an id of its own is an error row: ``row-<n>`` would name another
    block's row too."""
    if given is not None and given != "":
        return row
    problem = Problem("id", "has no id: a row of a Ray dataset needs one")
    problems = [*(row.problem.problems if row.problem else []), problem]
    error = InvalidRowError(problems, file=str(config.input.path), row=row.line)
    return replace(row, problem=error)


def _driver_rows(block: pa.Table) -> list[InputRow]:
    ids = block.column("id").to_pylist()
    indexes = block.column(INDEX_COLUMN).to_pylist()
    fields = block.column(FIELDS_COLUMN).to_pylist()
    return [
        InputRow(index=index, line=index + 1, id=row_id, fields=json.loads(text))
        for row_id, index, text in zip(ids, indexes, fields, strict=True)
    ]


def absolute_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with relative file paths made absolute: workers run in other folders."""
    out = dict(settings)
    for key, value in settings.items():
        setting = BY_KEY.get(key)
        if setting is None or setting.kind != "path" or not isinstance(value, (str, Path)):
            continue
        text = str(value)
        if "://" not in text:
            out[key] = str(Path(text).expanduser().resolve())
    return out


def _quiet(message: str) -> None:
    """A Ray worker's engine tells nobody: its rows carry what happened to them."""
