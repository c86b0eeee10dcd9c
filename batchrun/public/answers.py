"""``iter_answers``: a job's output rows as they finish, from Python.

    for row in batchrun.iter_answers(rows, model="claude-haiku-4-5", max_tokens=5,
                                     output="out/labels.parquet"):
        print(row["id"], row["text"])

The job runs as ``run`` runs it (``run_async``, on a thread of its own) and each output row is
handed over once it is journaled (``Runtime.on_row``), in the order rows finish; then the rows
earlier runs of the same output had answered, which this one did not send again. So a call
that runs to its end yields every row of the job's output once, and the same guarantees hold:
with ``output=`` a second call resumes, sending nothing already answered; stopping the loop
early (``break``, an exception, Ctrl-C) stops the job there, what finished kept in the journal
(and yielded by the next call).
"""

from __future__ import annotations

import os
import queue
from collections.abc import Generator, Mapping
from dataclasses import replace
from typing import Any

from batchrun.config.load import RunConfig
from batchrun.core.errors import ConfigError
from batchrun.core.sync import Worker
from batchrun.core.wording import option
from batchrun.public.result import RunResult
from batchrun.public.run import run_async
from batchrun.runs.runtime import DEFAULT, Runtime

_END = object()  # the run ended: nothing more will come


def iter_answers(
    source: object,
    *,
    runtime: Runtime | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    output: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **settings: Any,
) -> Generator[dict[str, Any], None, RunResult]:
    """Run ``source`` (a ``RunConfig``, or rows with the job's settings as keywords, as
    ``run`` takes them) and yield each output row as it finishes, in finishing order: a dict
    of the output's columns (``id``, ``status``, ``text``, ``cost_usd``, ...); at the end, the
    rows of the output this run did not answer (earlier runs did). The run's ``RunResult`` is
    the generator's return value (``result = yield from iter_answers(...)``).
    Rows are handed over as the online driver journals them: a job ``via="batches"`` is
    refused."""
    via = source.via if isinstance(source, RunConfig) else settings.get("via")
    if via in ("batches", "auto"):
        raise ConfigError(
            f"iter_answers hands rows over as they are answered online: with "
            f"{option('via', via)} use run(), which returns the table"
        )
    rows: queue.SimpleQueue[Any] = queue.SimpleQueue()
    seams = replace(runtime or DEFAULT, on_row=lambda row: rows.put(dict(row)))
    job = run_async(
        source,
        runtime=seams,
        model=model,
        max_tokens=max_tokens,
        output=output,
        environ=environ,
        **settings,
    )
    worker = Worker(
        job,
        on_end=lambda: rows.put(_END),
        daemon=True,
    )
    worker.start()
    handed: set[str] = set()
    try:
        while True:
            row = rows.get()
            if row is _END:
                break
            handed.add(row["id"])
            yield row
    finally:
        if worker.is_alive():  # the loop stopped early: stop the job, keep what finished
            worker.cancel()
            worker.join()
    result: RunResult = worker.outcome()
    for batch in result.table.to_batches():  # what earlier runs answered, in input order
        for row in batch.to_pylist():
            if row["id"] not in handed:
                yield row
    return result
