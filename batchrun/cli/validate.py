"""``batchrun validate SOURCE``: check every row and the job, send nothing."""

from __future__ import annotations

import sys
from typing import Any

import click

from batchrun.cli.options import SOURCE, fail, load, precedence_epilog, setting_options


@click.command("validate", epilog=precedence_epilog("validate"))
@click.argument("source", type=SOURCE)
@setting_options("validate")
def validate_cmd(source: str, **flags: Any) -> None:
    """Check every row of SOURCE and the job, send nothing.

    Lists each row that could not be sent with its file, line and field. Exit 0 when
    every row is valid, 3 when some are not, 2 when every row would be refused alike (no
    model, no rows, a template column the input lacks: said once), 1 when the input cannot
    be read at all.
    """
    from batchrun.core.errors import BatchrunError
    from batchrun.render.summary import format_validation
    from batchrun.runs.validate import validate

    config = load(source, flags)
    try:
        report = validate(config)
    except BatchrunError as exc:
        fail(exc, config)
    click.echo(format_validation(report))
    sys.exit(0 if report.invalid == 0 else 3)
