"""``batchrun merge SOURCE``: join a job's finished shards (``run --shard I/N``) into its output."""

from __future__ import annotations

import sys
from typing import Any

import click

from batchrun.cli.options import SOURCE, fail, load


@click.command("merge")
@click.argument("source", type=SOURCE)
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False),
    help="The job's output (as given to run).",
)
@click.option("--format", "input_format", help="Read the input as this format, as run does.")
@click.option(
    "--csv-delimiter", "csv_delimiter", help="A CSV input's field delimiter, as run does."
)
@click.option("--encoding", "encoding", help="The input's text encoding, as run reads it.")
@click.option(
    "-q", "--quiet", "quiet", is_flag=True, default=None, help="Print nothing on success."
)
def merge_cmd(source: str, **flags: Any) -> None:
    """Join the shards of SOURCE's job into its output, in input order.

    SOURCE and -o are those given to `batchrun run ... --shard I/N`: the shards are read
    from OUTPUT.shards/I-of-N/. Refuses, writing nothing, when a shard has not finished or
    an input row is in no shard or in more than one, naming the rows' ids.

    \b
    Examples:
      for i in 0 1 2 3; do batchrun run job.toml --shard $i/4 & done; wait
      batchrun merge job.toml
    """
    from batchrun.core.errors import BatchrunError
    from batchrun.drivers.shards import merge_shards

    config = load(source, flags)
    try:
        counts = merge_shards(config)
    except BatchrunError as exc:
        fail(exc, None)
    if not config.quiet:
        click.echo(
            f"batchrun: merged into {config.output}: {counts.rows:,} rows "
            f"({counts.ok:,} ok, {counts.error:,} error)",
            err=True,
        )
    sys.exit(0 if counts.error == 0 else 3)
