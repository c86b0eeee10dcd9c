"""``batchrun render SOURCE [--row ID]``: the exact request body one row would be sent with."""

from __future__ import annotations

import sys
from typing import Any

import click

from batchrun.cli.options import SOURCE, fail, load, precedence_epilog, setting_options


@click.command("render", epilog=precedence_epilog("render"))
@click.argument("source", type=SOURCE)
@click.option("--row", "row_id", metavar="ID", help="The row's id [default: the first row].")
@click.option("--full", is_flag=True, help="Show files' base64 whole (shortened by default).")
@setting_options("render")
def render_cmd(source: str, row_id: str | None, full: bool, **flags: Any) -> None:
    """Print the request body one row of SOURCE would be sent with, as JSON; send nothing.

    The run's own request: the template applied, files attached, the cache marks placed
    and the job's and the model's rules checked. Needs no API key. Exit 3 when the row
    breaks a rule the API would refuse it for (said on stderr, nothing on stdout).

    \b
    Examples:
      batchrun render jobs/label_sentiment.toml
      batchrun render in.jsonl --row row-0000005 --model claude-haiku-4-5 --max-tokens 5
      batchrun render jobs/describe_images.toml --full | jq .messages
    """
    from batchrun.core.errors import BatchrunError
    from batchrun.render.request_json import request_json
    from batchrun.runs.row_request import row_request

    config = load(source, flags)
    try:
        request = row_request(config, row_id)
    except BatchrunError as exc:
        fail(exc, None)
    if request.body is None:
        click.echo(f"batchrun: row {request.id} would not be sent: {request.problem}", err=True)
        sys.exit(3)
    click.echo(request_json(request.body, full=full))
