"""``batchrun merge SOURCE | OUTPUT``: join a job's finished shards (``run --shard I/N``) into
its output."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from batchrun.cli.options import SOURCE, fail, load
from batchrun.config.settings import INPUT_FORMATS


@click.command("merge")
@click.argument("source", type=SOURCE, metavar="SOURCE|OUTPUT")
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(),
    help="The job's output (as given to run), with SOURCE.",
)
@click.option(
    "--format",
    "input_format",
    type=click.Choice(INPUT_FORMATS),
    help="Read the input as this format, as run does.",
)
@click.option(
    "--csv-delimiter", "csv_delimiter", help="A CSV input's field delimiter, as run does."
)
@click.option("--encoding", "encoding", help="The input's text encoding, as run reads it.")
@click.option(
    "-q", "--quiet", "quiet", is_flag=True, default=None, help="Print nothing on success."
)
def merge_cmd(source: str, **flags: Any) -> None:
    """Join the shards of a job into its output, in input order.

    \b
    batchrun merge SOURCE [-o OUTPUT]   SOURCE and -o as given to `batchrun run ... --shard I/N`
    batchrun merge OUTPUT               the output alone: its shards (OUTPUT.shards/I-of-N/)
                                        recorded their input and settings

    Refuses, writing nothing, when a shard has not finished, ran another job (its request
    settings differ from the job file's, or from the other shards'), read another input
    than the input is now, or its file is torn or changed since it was written; and when an
    input row is in no shard or in more than one, naming the rows' ids.

    \b
    Examples:
      for i in 0 1 2 3; do batchrun run job.toml --shard $i/4 & done; wait
      batchrun merge job.toml
      batchrun merge out/labels.parquet
    """
    from batchrun.config.load import is_job_file, output_alone
    from batchrun.core.errors import BatchrunError, ConfigError
    from batchrun.shards.layout import shards_folder
    from batchrun.shards.run import merge

    try:
        output = _output_named(source) if flags.get("output") is None else None
        if output is not None:
            names = {"input_format": "--format", "csv_delimiter": "--csv-delimiter"}
            given = [flag for key, flag in names.items() if flags.get(key) is not None]
            if given:
                raise click.UsageError(
                    f"{' and '.join(given)}: for `merge SOURCE -o OUTPUT`; the shards of "
                    f"{source} recorded how they read their input"
                )
            counts = merge(output)
            quiet = bool(flags.get("quiet"))
            shown = output_alone(output)[0].shown
        else:
            if "://" not in source and source != "-" and not Path(source).exists():
                raise ConfigError(
                    f"{source}: no such job file or input, and no output with shards beside "
                    f"it ({shards_folder(Path(source)).name}/). Give the job file or input "
                    "the shards ran (with its -o), or the output"
                )
            config = load(source, flags)
            counts = merge(config, check_job=is_job_file(Path(source)))
            quiet, shown = config.run.quiet, config.output.shown
    except BatchrunError as exc:
        fail(exc, None)
    if not quiet:
        click.echo(
            f"batchrun: merged into {shown}: {counts.rows:,} rows "
            f"({counts.ok:,} ok, {counts.error:,} error)",
            err=True,
        )
    sys.exit(0 if counts.error == 0 else 3)


def _output_named(source: str) -> str | None:
    """The output ``source`` names, when it is one: its shards' folder is beside it (a job
    file or an input never has one: an output cannot be its input), on this machine or on
    the object store of an ``s3://`` or ``gs://`` URL."""
    from batchrun.config.load import is_job_file, output_alone
    from batchrun.core.locations import is_remote
    from batchrun.shards.layout import shards_folder

    if source == "-" or source.lower().endswith(".toml"):
        return None
    if is_remote(source):
        from batchrun.remote.objects import Storage
        from batchrun.shards.layout import SHARDS_SUFFIX

        storage = Storage(output_alone(source)[1])
        return source if storage.list(source.rstrip("/") + SHARDS_SUFFIX) else None
    if "://" in source or is_job_file(Path(source)):
        return None
    output = Path(source).expanduser().absolute()
    return str(output) if shards_folder(output).is_dir() else None
