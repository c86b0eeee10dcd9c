"""The online driver: input rows -> engine (pool, client, retries) -> journal -> final dataset.

from batchrun import load_config, run
summary = run(load_config(Path("jobs/label_sentiment.toml"), {"simulate": True}))
print(summary.final)
"""

from __future__ import annotations

import time
from collections.abc import Container, Iterator, Sized
from decimal import Decimal
from typing import Any

from batchrun.config.load import RunConfig
from batchrun.core.errors import ConfigError, FatalRunError
from batchrun.core.wording import option
from batchrun.engine.engine import Engine
from batchrun.engine.outcome import Work
from batchrun.live.frames import Snapshot, cost_text
from batchrun.rows.reader import check_input_file
from batchrun.runs.claim import Claim, check_credentials, claim_output
from batchrun.runs.compose import job_client, job_engine
from batchrun.runs.finish import record_spend, write_output
from batchrun.runs.interrupt import run_interruptibly
from batchrun.runs.plan import RowCounter, count_hint, plan
from batchrun.runs.preflight import check_every_row_can_be_built
from batchrun.runs.resume import take_over
from batchrun.runs.runtime import DEFAULT, Runtime
from batchrun.runs.summary import RunSummary
from batchrun.runs.twins import find_twins, load_answered, twin_pass_notice
from batchrun.store.batch_journal import running_batches
from batchrun.store.scratch import Scratch


async def run_async(
    config: RunConfig,
    runtime: Runtime = DEFAULT,
    *,
    only: Container[int] | None = None,
    redo_lapsed: bool = False,
    trial: bool = False,
) -> RunSummary:
    """Send every row not yet answered, journal each result, write the final dataset.

    Raises ConfigError / OutputError / FatalRunError (exit 1) before or instead of
    finishing; a row's own failure never raises, it becomes an error row. ``runtime``
    carries the seams (the HTTP transport, the retry wait, the display: ``runs.runtime``).
    ``only`` restricts the run to those input indexes (a pilot sample): their answers are
    journaled, and the final dataset is written by the run that answers the rest; with
    ``trial`` (``--limit``, ``--sample``) the rows finished are written as a partial output
    too, to be read now.
    ``redo_lapsed`` also sends the rows a Message Batch expired or cancelled (--finish-online).
    The run holds the output's lock (``store.lock``) from before it reads anything to its
    end: a second run of the same output is refused (OutputError) while this one goes.
    SIGINT or SIGTERM while the final dataset is written abandon that step and raise
    ``StoppedBySignal`` (a KeyboardInterrupt); the journal is kept and a re-run finishes.
    """
    return await run_holding(config, None, runtime, only=only, redo_lapsed=redo_lapsed, trial=trial)


async def run_holding(
    config: RunConfig,
    claim: Claim | None,
    runtime: Runtime = DEFAULT,
    *,
    only: Container[int] | None = None,
    redo_lapsed: bool = False,
    trial: bool = False,
) -> RunSummary:
    """``run_async`` under ``claim``, the output's lock (and lease) the caller holds already
    (a batch run finishing online: no other run may come in between); None takes it."""
    check_credentials(config.client, runtime.transport)
    check_input_file(config.input.path)
    check_every_row_can_be_built(config)
    with claim_output(config, claim) as held:
        return await _run_claimed(config, held, runtime, only, redo_lapsed, trial)


async def _run_claimed(
    config: RunConfig,
    claim: Claim,
    runtime: Runtime,
    only: Container[int] | None,
    redo_lapsed: bool,
    trial: bool = False,
) -> RunSummary:
    """``run_async``, the output claimed."""
    _check_no_running_batches(config)
    summary = RunSummary(
        input=config.input.path, output=config.output.path, max_cost=config.cost.max_cost
    )
    output, prior, resume = take_over(config, claim, summary)
    sink = output.sink
    states, known_ids = resume.states, resume.ids

    async with job_client(config, runtime) as client:
        summary.todo = (
            len(only) if isinstance(only, Sized) else count_hint(config, states, redo_lapsed)
        )
        engine: Engine | None = None
        progress = runtime.progress(
            summary.todo,
            lambda: _snapshot(summary, engine.in_flight if engine else 0),
            quiet=config.run.quiet,
        )
        engine = job_engine(
            config,
            client,
            summary,
            runtime,
            notify=progress.log,
            send_check=output.lease,  # an object-store output: sent only while the lease holds
            spent_before=Decimal(repr(resume.spent)),
        )
        counter = RowCounter()

        def works(counter: RowCounter) -> Iterator[Work]:
            return plan(
                config,
                states,
                known_ids,
                counter,
                only,
                redo_lapsed=redo_lapsed,
                files=resume.files,
            )

        def record(work: Work, row: dict[str, Any]) -> None:
            sink.submit(work.row.index, row)
            progress.advance()
            if runtime.on_row is not None:  # journaled first: handed on, it is never lost
                runtime.on_row(row)

        scratch = Scratch(sink.output)  # what would not fit in memory, made only if needed
        started = time.perf_counter()
        fatal: FatalRunError | None = None
        try:
            if engine.dedup is not None and summary.todo != 0:
                # Twins are found before sending (the rows read once more), so that every
                # twin is filled, and its answer kept only while a twin of it is to come.
                notice = twin_pass_notice(summary.todo)
                if notice is not None:
                    progress.log(notice)
                twins = find_twins(
                    works(RowCounter()),
                    sink,
                    prior,
                    resume.sources.accepted,
                    scratch,
                    samples=config.engine.samples,  # each sample its own request, as sent
                )
                engine.dedup.follow(twins, scratch)
                load_answered(engine.dedup, twins, sink, prior)
            summary.interrupted = await run_interruptibly(
                engine.run(works(counter), record),
                stop_admitting=engine.stop_admitting,
                grace=config.run.grace,
                notify=progress.log,
            )
        except FatalRunError as exc:
            fatal = exc  # raised once what is finished is written
        finally:
            if engine.dedup is not None:
                engine.dedup.close()
            scratch.close()
            summary.elapsed_s = time.perf_counter() - started
            summary.budget_stop = engine.budget_stop
            refused = engine.budget_refused
            summary.budget_refused_usd = None if refused is None else float(refused)
            progress.close()
            await output.close()
    summary.total_rows = counter.rows
    summary.skipped = counter.skipped
    record_spend(config, sink, summary)  # before the final step may remove the journal
    lost = output.lease_lost(engine.closed_by)
    if lost is not None:
        raise lost  # another run owns the output now: nothing of this run is written there
    complete = (
        fatal is None
        and summary.interrupted is None
        and summary.skipped + summary.finished == counter.rows
    )
    # A pilot sample's answers stay in the journal, for the run that answers the rest; a
    # trial's are also written as a partial output, to be read now.
    if only is None or complete or trial:
        write_output(config, output, summary, counter.rows, complete=complete)
    if fatal is not None:
        raise fatal
    return summary


def _check_no_running_batches(config: RunConfig) -> None:
    """Rows waiting in a Message Batch must not be paid for again online."""
    running = running_batches(config.output.path)
    if running:
        raise ConfigError(
            f"{len(running)} Message Batch(es) of {config.output.shown} are still running "
            f"({', '.join(running[:5])}): collect them with `{option('via', 'batches')}`, or "
            "cancel them with `batchrun batches cancel` and then collect, before sending rows "
            "online"
        )


def _snapshot(summary: RunSummary, in_flight: int) -> Snapshot:
    """The run's counts for the display (``live.frames``), which knows no engine."""
    return summary.snapshot(
        in_flight=in_flight,
        rate_limited_429s=summary.rate_limited_429s,
        rate_wait_s=summary.rate_wait_s,
        budget=summary.run_budget,  # what is left of --max-cost for this run
    )


def _cost_status(summary: RunSummary) -> str:
    """Spent so far, the projected total if the rest costs alike, and the budget."""
    return cost_text(_snapshot(summary, 0))
