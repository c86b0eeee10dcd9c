"""``batchrun batches list|cancel SOURCE``: the Message Batches of a job run with --via batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from batchrun.cli.options import SOURCE, fail, load, precedence_epilog, setting_options

if TYPE_CHECKING:
    from batchrun.batches.admin import JobBatch
    from batchrun.config.load import RunConfig

# The built-in simulator lives inside the run that started it: once that run ends, no server
# holds its batches, and a new simulator would only answer "not found" for each.
SIMULATED_NOTE = (
    "batchrun: --simulate: no server was contacted{cancelled}; the states are as the batch "
    "journal recorded them. The built-in simulator lives only as long as the run that started "
    "it, so the batches it ran are gone with it and re-running the job with --simulate sends "
    "their rows again. For batches on the API, leave out --simulate."
)


@click.group("batches")
def batches_group() -> None:
    """The Message Batches of a job run with --via batches."""


@batches_group.command("list", epilog=precedence_epilog("batches list"))
@click.argument("source", type=SOURCE)
@setting_options("batches list")
def batches_list_cmd(source: str, **flags: Any) -> None:
    """Show SOURCE's batches: id, state and request counts."""
    _batches(source, flags, cancel=False)


@batches_group.command("cancel", epilog=precedence_epilog("batches cancel"))
@click.argument("source", type=SOURCE)
@setting_options("batches cancel")
def batches_cancel_cmd(source: str, **flags: Any) -> None:
    """Cancel SOURCE's batches still processing (re-running collects what they answered)."""
    _batches(source, flags, cancel=True)


def _batches(source: str, flags: dict[str, Any], *, cancel: bool) -> None:
    from batchrun.batches.admin import cancel_batches, list_batches
    from batchrun.core.errors import BatchrunError
    from batchrun.render.batch_table import format_batches
    from batchrun.store.batch_journal import batch_journal_path

    config = load(source, flags)
    try:
        if config.client.simulate:
            found = _recorded_batches(config)
        else:
            found = cancel_batches(config) if cancel else list_batches(config)
    except BatchrunError as exc:
        fail(exc, None)
    click.echo(format_batches(found, str(batch_journal_path(config.output.path))))
    if config.client.simulate and found:
        cancelled = " and nothing was cancelled" if cancel else ""
        click.echo(SIMULATED_NOTE.format(cancelled=cancelled), err=True)


def _recorded_batches(config: RunConfig) -> list[JobBatch]:
    """The job's batches as its journal recorded them, with no status from any server."""
    from batchrun.batches.admin import JobBatch
    from batchrun.store.batch_journal import BatchJournal, batch_journal_path

    journal = BatchJournal.load(batch_journal_path(config.output.path))
    return [JobBatch(entry, None) for entry in journal.entries.values()]
