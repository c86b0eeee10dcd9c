"""A run's last step: what it spent recorded with the job (``record_spend``), then the final
dataset when every row is done, or the rows finished so far as a partial one after a stop
(``write_output``)."""

from __future__ import annotations

from batchrun.config.load import (
    RunConfig,
)
from batchrun.core.errors import OutputError
from batchrun.core.scrub import url_without_secrets
from batchrun.runs.interrupt import stopped_by_signals
from batchrun.runs.output import RunOutput
from batchrun.runs.plan import input_rows
from batchrun.runs.resume import notice
from batchrun.runs.summary import RunSummary
from batchrun.store.resume import (
    record_run_spend,
    restamp_journal,
    state_path,
)
from batchrun.store.sink import (
    Sink,
)


def record_spend(config: RunConfig, sink: Sink, summary: RunSummary) -> None:
    """Write what this run spent into the job's ledger (``store.spend``), before the final
    step may remove the journal that holds it; the job's total into ``summary``."""
    try:
        ledger = record_run_spend(config.output.path, sink.run_id, sink.spent)
    except OSError as exc:
        raise OutputError(f"cannot write {state_path(config.output.path)}: {exc}") from exc
    if ledger is not None and summary.source is not None:
        summary.job_cost_usd = ledger.spent_for(summary.source)


def write_output(
    config: RunConfig, output: RunOutput, summary: RunSummary, rows_read: int, *, complete: bool
) -> None:
    """The run's last step: the final dataset when every row is done (``summary.final``);
    after a stop, the rows finished so far as a partial output (``summary.partial``), so
    what is paid for can be read now; the journal stays and a re-run completes it.

    All or nothing either way: a signal abandons the step (``StoppedBySignal``) and leaves
    the journal, from which a re-run writes it.
    """
    sink = output.sink
    if output.seal_error is not None:
        notice(
            config,
            f"batchrun: warning: the last journal segment of "
            f"{url_without_secrets(config.output.url or '')} could not be "
            f"uploaded ({output.seal_error}); this machine's journal has every row",
        )
    with stopped_by_signals():
        if complete:
            summary.final = sink.finalize(rows_read)
            output.publish()
            return
        # The reader may have stopped early: count the rest, for the "of" of the mark.
        total = max(
            rows_read, input_rows(config.input.path, parse=True, shape=config.input.shape) or 0
        )
        summary.total_rows = max(summary.total_rows, total)  # for the rows left
        counts = sink.write_finished(total)
    if counts is None:
        return
    if counts.partial is None:
        summary.final = counts  # every row had a record after all
        return
    summary.partial = counts
    try:
        restamp_journal(config.output.path, sink.journal)
    except OSError as exc:
        raise OutputError(f"cannot write {state_path(config.output.path)}: {exc}") from exc
