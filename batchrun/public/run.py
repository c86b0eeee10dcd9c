"""``run`` / ``run_async``: a job to its end, online or through Message Batches, as its config
says; or rows held in memory (``public.frames``), their output returned as a pyarrow Table.

from batchrun import load_config, run
summary = run(load_config(Path("jobs/label_sentiment.toml"), {"simulate": True}))
print(summary.final)
table = run([{"prompt": "Say hi"}], model="claude-haiku-4-5", max_tokens=20, simulate=True)

``run`` called where an event loop already runs (a Jupyter cell) cannot start another on
that thread, so it runs the job on a thread of its own and waits for it; ``await run_async``
runs it on the caller's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Container, Coroutine, Mapping
from dataclasses import replace
from typing import IO, Any, Generic, TypeVar, cast, overload

import httpx
import pyarrow as pa

from batchrun.batches.run import run_batches_async
from batchrun.config.load import RunConfig
from batchrun.core.errors import ConfigError
from batchrun.core.wording import option
from batchrun.public.frames import output_table, staged_rows
from batchrun.runs.online import run_async as run_online_async
from batchrun.runs.resume import Sleep
from batchrun.runs.summary import RunSummary
from batchrun.shards.run import run_shard_async

__all__ = ["run", "run_async", "run_shard"]

T = TypeVar("T")


@overload
def run(
    config: RunConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress_stream: IO[str] | None = None,
    retry_sleep: Sleep = asyncio.sleep,
    only: Container[int] | None = None,
) -> RunSummary: ...


@overload
def run(
    config: object,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress_stream: IO[str] | None = None,
    retry_sleep: Sleep = asyncio.sleep,
    only: Container[int] | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    output: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **settings: Any,
) -> pa.Table: ...


def run(
    config: object,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress_stream: IO[str] | None = None,
    retry_sleep: Sleep = asyncio.sleep,
    only: Container[int] | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    output: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **settings: Any,
) -> RunSummary | pa.Table:
    """Run a job to the end: a ``RunConfig`` returns its ``RunSummary``; rows return their
    output as a pyarrow Table. See ``run_async``.

    Where an event loop is running already (Jupyter), the job runs on a worker thread; an
    interrupt (Ctrl-C, the notebook's stop button) then stops it at once, what finished kept in
    the journal, and raises KeyboardInterrupt. Elsewhere the first Ctrl-C lets the requests in
    flight finish, as on the command line.
    """
    work = _run_any(
        config,
        transport=transport,
        progress_stream=progress_stream,
        retry_sleep=retry_sleep,
        only=only,
        redo_lapsed=False,
        model=model,
        max_tokens=max_tokens,
        output=output,
        environ=environ,
        settings=settings,
    )
    return _to_end(work)


@overload
async def run_async(
    config: RunConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress_stream: IO[str] | None = None,
    retry_sleep: Sleep = asyncio.sleep,
    only: Container[int] | None = None,
    redo_lapsed: bool = False,
) -> RunSummary: ...


@overload
async def run_async(
    config: object,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress_stream: IO[str] | None = None,
    retry_sleep: Sleep = asyncio.sleep,
    only: Container[int] | None = None,
    redo_lapsed: bool = False,
    model: str | None = None,
    max_tokens: int | None = None,
    output: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **settings: Any,
) -> pa.Table: ...


async def run_async(
    config: object,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress_stream: IO[str] | None = None,
    retry_sleep: Sleep = asyncio.sleep,
    only: Container[int] | None = None,
    redo_lapsed: bool = False,
    model: str | None = None,
    max_tokens: int | None = None,
    output: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **settings: Any,
) -> RunSummary | pa.Table:
    """Run a job to the end on the running event loop.

    ``config`` is a ``RunConfig`` (``load_config``), whose summary is returned, or rows: a
    list of dicts, a pandas or polars DataFrame, a pyarrow Table or RecordBatchReader, or a
    Hugging Face Dataset. Rows take the job's settings as keywords, the keys of a job file
    (``model``, ``max_tokens``, ``system``, ``template``, ``concurrency``, ``max_cost``,
    ``simulate`` ...); ``environ`` replaces ``os.environ`` for the key and ``BATCHRUN_*``
    variables. They return the output as a pyarrow Table, in input order, with the output
    file's schema and the run's summary in its metadata (``batchrun.summary_of``). With
    ``output=`` the output is written (with its journal) as the command line writes it, and a
    second call with the same rows and output resumes, sending nothing already answered.
    Files rows name (``image``, ``document``, path blocks) resolve against ``media_root``,
    by default the working directory::

        table = await run_async(df, model="claude-haiku-4-5", max_tokens=5, output="out.parquet")

    A ``RunConfig`` with ``via = "batches"`` goes through the Message Batches API
    (``batches.run``; ``only`` and ``redo_lapsed`` are for online runs). Errors are as
    in ``runs.online.run_async``: a row's own failure is an error row, never an exception.
    """
    return await _run_any(
        config,
        transport=transport,
        progress_stream=progress_stream,
        retry_sleep=retry_sleep,
        only=only,
        redo_lapsed=redo_lapsed,
        model=model,
        max_tokens=max_tokens,
        output=output,
        environ=environ,
        settings=settings,
    )


async def _run_any(
    config: object,
    *,
    transport: httpx.AsyncBaseTransport | None,
    progress_stream: IO[str] | None,
    retry_sleep: Sleep,
    only: Container[int] | None,
    redo_lapsed: bool,
    model: str | None,
    max_tokens: int | None,
    output: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None,
    settings: Mapping[str, Any],
) -> RunSummary | pa.Table:
    """A config to its summary, rows to their output Table."""
    for_rows = {"model": model, "max_tokens": max_tokens, "output": output, "environ": environ}
    if isinstance(config, RunConfig):
        given = [name for name, value in for_rows.items() if value is not None] + list(settings)
        if given:
            raise TypeError(
                f"run(config) takes every setting from its RunConfig, not from "
                f"{', '.join(f'{name}=' for name in given)}: give them to "
                "load_config(source, {...}), or pass rows instead of a config"
            )
        return await _run_config(config, transport, progress_stream, retry_sleep, only, redo_lapsed)
    flags = dict(settings)
    for key in ("model", "max_tokens", "output"):
        if for_rows[key] is not None:
            flags[key] = for_rows[key]
    with staged_rows(config, flags, environ) as job:
        summary = await _run_config(job, transport, progress_stream, retry_sleep, only, redo_lapsed)
        return output_table(job, summary, kept_output=output is not None)


async def _run_config(
    config: RunConfig,
    transport: httpx.AsyncBaseTransport | None,
    progress_stream: IO[str] | None,
    retry_sleep: Sleep,
    only: Container[int] | None,
    redo_lapsed: bool,
) -> RunSummary:
    if config.shard is not None:
        if only is not None or redo_lapsed:
            raise ConfigError(
                f"a shard run takes its rows from {option('shard')}: not `only` nor redo_lapsed"
            )
        return await run_shard_async(
            config, transport=transport, progress_stream=progress_stream, retry_sleep=retry_sleep
        )
    if config.via == "batches":
        return await run_batches_async(
            config, transport=transport, progress_stream=progress_stream, sleep=retry_sleep
        )
    return await run_online_async(
        config,
        transport=transport,
        progress_stream=progress_stream,
        retry_sleep=retry_sleep,
        only=only,
        redo_lapsed=redo_lapsed,
    )


def run_shard(
    config: RunConfig,
    index: int,
    count: int,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress_stream: IO[str] | None = None,
    retry_sleep: Sleep = asyncio.sleep,
) -> RunSummary:
    """Run shard ``index`` of ``count`` of the job: the rows whose id hashes to ``index``
    (``shards.run``), into the shard's own output, resumable as any run. Any engine that
    can start a process or a task per shard can drive a job this way; ``merge_shards``
    (``batchrun merge``) then writes the job's output::

        for i in range(4):   # or one task each on Ray, Dask, Spark, a queue of machines
            batchrun.run_shard(config, i, 4)
        batchrun.merge_shards(config)
    """
    if not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count}: need 0 <= index < count")
    return run(
        replace(config, shard=(index, count)),
        transport=transport,
        progress_stream=progress_stream,
        retry_sleep=retry_sleep,
    )


def _to_end(work: Coroutine[Any, Any, T]) -> T:
    """``work`` run to its end: on a fresh event loop here, or, when this thread runs one
    already (which ``asyncio.run`` refuses), on a worker thread's."""
    if not _loop_running():
        return asyncio.run(work)
    worker = _Worker(work)
    worker.start()
    try:
        worker.join()
    except KeyboardInterrupt:
        # Ctrl-C reaches this thread, not the worker (signal handlers live in the main
        # thread only): stop the job there, let it close its journal, then stop here.
        worker.cancel()
        worker.join()
        raise
    return worker.outcome()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Worker(threading.Thread, Generic[T]):
    """A coroutine run to its end by ``asyncio.run`` on a thread of its own."""

    def __init__(self, work: Coroutine[Any, Any, T]) -> None:
        super().__init__(name="batchrun-run")
        self._work = work
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._result: T | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._result = asyncio.run(self._main())
        except BaseException as exc:  # handed to the caller's thread by outcome()
            self._error = exc
        finally:
            self._started.set()  # also when it failed before starting

    async def _main(self) -> T:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._started.set()
        return await self._work

    def cancel(self) -> None:
        """Cancel the work from another thread (as a second Ctrl-C would)."""
        self._started.wait()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the work had ended
                loop.call_soon_threadsafe(task.cancel)

    def outcome(self) -> T:
        if self._error is not None:
            raise self._error
        return cast(T, self._result)  # set, as no error was
