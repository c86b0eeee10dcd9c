"""``batchrun batches list|cancel SOURCE``: the Message Batches of a job run with --via batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from batchrun.cli.options import PRECEDENCE, fail, load, setting_options


@click.group("batches")
def batches_group() -> None:
    """The Message Batches of a job run with --via batches."""


@batches_group.command("list", epilog=PRECEDENCE)
@click.argument("source", type=click.Path(path_type=Path))
@setting_options("batches list")
def batches_list_cmd(source: Path, **flags: Any) -> None:
    """Show SOURCE's batches: id, state and request counts."""
    _batches(source, flags, cancel=False)


@batches_group.command("cancel", epilog=PRECEDENCE)
@click.argument("source", type=click.Path(path_type=Path))
@setting_options("batches cancel")
def batches_cancel_cmd(source: Path, **flags: Any) -> None:
    """Cancel SOURCE's batches still processing (re-running collects what they answered)."""
    _batches(source, flags, cancel=True)


def _batches(source: Path, flags: dict[str, Any], *, cancel: bool) -> None:
    from batchrun.core.errors import BatchrunError
    from batchrun.drivers.batch_admin import cancel_batches, list_batches
    from batchrun.render.batches import format_batches
    from batchrun.store.batch_journal import batch_journal_path

    config = load(source, flags)
    try:
        found = cancel_batches(config) if cancel else list_batches(config)
    except BatchrunError as exc:
        fail(exc, None)
    click.echo(format_batches(found, str(batch_journal_path(config.output))))
