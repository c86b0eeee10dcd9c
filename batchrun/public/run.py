"""``run`` / ``run_async``: a job to its end, online or through Message Batches, as its config
says, or rows held in memory (``public.frames``); either way a ``RunResult``.

    from batchrun import load_config, run
    result = run(load_config("jobs/label_sentiment.toml", {"simulate": True}))
    print(result.final, result.exit_code)
    result = run([{"prompt": "Say hi"}], model="claude-haiku-4-5", max_tokens=20, simulate=True)
    print(result.table["text"], result.to_dict()["cost_usd"])

``run`` called where an event loop already runs (a Jupyter cell) runs the job on a thread of
its own and waits for it (``core.sync``); ``await run_async`` runs it on the caller's loop.
"""

from __future__ import annotations

import os
from collections.abc import Container, Mapping
from dataclasses import replace
from typing import Any

from batchrun.config.load import RunConfig, check_shard
from batchrun.core.errors import ConfigError
from batchrun.core.sync import blocking
from batchrun.core.wording import option
from batchrun.public.result import RunResult
from batchrun.public.trial import is_trial, run_trial
from batchrun.runs.fetch import fetched
from batchrun.runs.runtime import DEFAULT, Runtime
from batchrun.runs.summary import RunSummary

__all__ = ["run", "run_async", "run_shard"]


async def run_async(
    source: object,
    *,
    runtime: Runtime | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    output: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **settings: Any,
) -> RunResult:
    """Run a job to the end on the running event loop.

    ``source`` is a ``RunConfig`` (``load_config``), or rows: a list of dicts, a pandas or
    polars DataFrame, a pyarrow Table or RecordBatchReader, or a Hugging Face Dataset. Rows
    take the job's settings as keywords, the keys of a job file (``model``, ``max_tokens``,
    ``system``, ``template``, ``concurrency``, ``max_cost``, ``simulate`` ...); ``environ``
    replaces ``os.environ`` for the key and ``BATCHRUN_*`` variables. With ``output=`` the
    output is written (with its journal) as the command line writes it, and a second call
    with the same rows and output resumes, sending nothing already answered. Files rows name
    (``image``, ``document``, path blocks) resolve against ``media_root``, by default the
    working directory::

        result = await run_async(df, model="claude-haiku-4-5", max_tokens=5, output="o.parquet")
        result.table   # in input order, the output file's schema

    ``runtime`` carries the seams (an HTTP transport, the wait between retries, the
    display: ``runs.runtime``). A row's own failure is an error row, never an exception.
    """
    runtime = runtime or DEFAULT
    for_rows = {"model": model, "max_tokens": max_tokens, "output": output, "environ": environ}
    if isinstance(source, RunConfig):
        given = [name for name, value in for_rows.items() if value is not None] + list(settings)
        if given:
            raise TypeError(
                f"run(config) takes every setting from its RunConfig, not from "
                f"{', '.join(f'{name}=' for name in given)}: give them to "
                "load_config(source, {...}), or pass rows instead of a config"
            )
        return RunResult(await run_job(source, runtime), source)
    from batchrun.public.frames import output_table, staged_rows  # rows from memory only

    flags = dict(settings)
    for key in ("model", "max_tokens", "output"):
        if for_rows[key] is not None:
            flags[key] = for_rows[key]
    with staged_rows(source, flags, environ) as job:
        summary = await run_job(job, runtime)
        # The staged input is gone once the call returns: the table and the summary's
        # JSON are taken while it stands (and the rows are still "the rows given").
        result = RunResult(summary, job)
        as_json = result.to_dict()
        if output is None:
            as_json["output"] = None  # a temporary file, not the caller's
        result._dict = as_json
        result._table = output_table(job, summary, as_json)
        return result


run = blocking(
    run_async,
    "run",
    """Run a job to the end; see ``run_async``.

    Where an event loop is running already (Jupyter), the job runs on a worker thread; an
    interrupt (Ctrl-C, the notebook's stop button) then stops it at once, what finished kept in
    the journal, and raises KeyboardInterrupt. Elsewhere the first Ctrl-C lets the requests in
    flight finish, as on the command line.
    """,
)


async def run_job(
    config: RunConfig,
    runtime: Runtime = DEFAULT,
    *,
    only: Container[int] | None = None,
    redo_lapsed: bool = False,
) -> RunSummary:
    """The driver ``config`` asks for, to its end: a shard, Message Batches, or online.
    ``only`` and ``redo_lapsed`` are the online driver's (``runs.online``)."""
    config = fetched(config)  # a remote input and price file, brought here first
    if is_trial(config):  # --limit / --sample: a few rows, then the whole job's cost
        if only is not None or redo_lapsed:
            raise ConfigError(
                f"{option('limit')} and {option('sample')} choose the rows themselves: a "
                "pilot's sample or the rows batches left cannot be given too"
            )
        return await run_trial(config, runtime)
    if config.via == "auto":  # --deadline: batches while it allows, online for the rest
        from batchrun.batches.auto import run_auto_async

        if only is not None or redo_lapsed:
            raise ConfigError(
                f"{option('via', 'auto')} chooses the rows of each lane itself: a pilot's "
                "sample or the rows batches left cannot be given to it"
            )
        return await run_auto_async(config, runtime)
    if config.shard is not None:
        if only is not None or redo_lapsed:
            raise ConfigError(
                f"a shard run takes its rows from {option('shard')}: a pilot's sample or the "
                "rows batches left cannot be given to it too"
            )
        from batchrun.shards.run import run_shard_async

        if config.via == "batches":
            from batchrun.batches.run import run_batches_holding

            return await run_shard_async(config, runtime, run_batches_holding)
        return await run_shard_async(config, runtime)
    if config.via == "batches":
        from batchrun.batches.run import run_batches_async

        return await run_batches_async(config, runtime)
    from batchrun.runs.online import run_async as run_online

    return await run_online(config, runtime, only=only, redo_lapsed=redo_lapsed)


def run_shard(
    config: RunConfig, index: int, count: int, *, runtime: Runtime | None = None
) -> RunResult:
    """Run shard ``index`` of ``count`` of the job: the rows whose id hashes to ``index``
    (``shards.run``), into the shard's own output, resumable as any run. Any engine that
    can start a process or a task per shard can drive a job this way; ``merge_shards``
    (``batchrun merge``) then writes the job's output::

        for i in range(4):   # or one task each on Ray, Dask, Spark, a queue of machines
            batchrun.run_shard(config, i, 4)
        batchrun.merge_shards(config)
    """
    check_shard(index, count)
    return run(replace(config, shard=(index, count)), runtime=runtime)
