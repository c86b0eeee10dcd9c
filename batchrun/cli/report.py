"""``batchrun report OUTPUT...``: what one or more outputs hold, as text, JSON or HTML."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import click

from batchrun.cli.options import fail


@click.command("report")
@click.argument("outputs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write a self-contained HTML page with charts to this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--prices",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Price file for answers that had no price when they ran.",
)
def report_cmd(
    outputs: tuple[str, ...], html_file: Path | None, as_json: bool, prices: Path | None
) -> None:
    """Totals, stop reasons, errors, latency, cost and throughput of one or more outputs.

    An output may be a finished dataset or one still in its journal (a run that stopped),
    local or on object storage (s3://, gs://: its final file and journal segments are read).

    \b
    Examples:
      batchrun report out/analysis.parquet
      batchrun report out/a.parquet out/b.parquet --html report.html
    """
    from batchrun.core.errors import BatchrunError
    from batchrun.cost.prices import load_prices
    from batchrun.render.report_html import render_html
    from batchrun.render.report_text import format_report
    from batchrun.reporting.totals import report

    try:
        with tempfile.TemporaryDirectory(prefix="batchrun-report-") as folder:
            rep = report(_local_copies(outputs, Path(folder)), load_prices(prices))
        rep.sources = [
            replace(source, path=shown) if shown != str(source.path) else source
            for source, shown in zip(rep.sources, outputs, strict=True)
        ]
        if html_file is not None:
            html_file.write_text(render_html(rep), encoding="utf-8")
    except OSError as exc:
        fail(BatchrunError(f"cannot write {html_file}: {exc.strerror or exc}"), None)
    except BatchrunError as exc:
        fail(exc, None)
    click.echo(json.dumps(rep.to_dict(), indent=2) if as_json else format_report(rep))
    if html_file is not None:
        click.echo(f"batchrun: wrote {html_file}", err=True)


def _local_copies(outputs: tuple[str, ...], folder: Path) -> list[Path]:
    """Each output as a local path: an s3:// or gs:// one pulled into ``folder`` first (its
    final file, and the journal rebuilt from its segments, as a run on a new machine would)."""
    from batchrun.core.locations import is_remote

    local = []
    for number, output in enumerate(outputs):
        if not is_remote(output):
            local.append(Path(output))
            continue
        from batchrun.core.locations import StorageSettings
        from batchrun.remote.dataset import remote_output
        from batchrun.remote.objects import Storage

        storage = Storage(StorageSettings.from_environ(os.environ))
        # A URL ending with / is a dataset: its parts and _SUCCESS are pulled.
        remote = remote_output(output, storage, work_dir=folder / str(number))
        remote.pull()
        local.append(remote.local_output)
    return local
