"""The ``batchrun`` group: its version, its commands (one module each), and ``main``.

Exit codes (DESIGN §2): 0 every row ok; 1 aborted (configuration, authentication, I/O);
2 usage error; 3 finished with some rows in error; 4 stopped by the --max-cost budget (re-run
to resume); 130 stopped by Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import click

from batchrun import __version__
from batchrun.cli.batches import batches_group
from batchrun.cli.estimate import estimate_cmd
from batchrun.cli.report import report_cmd
from batchrun.cli.run import run_cmd
from batchrun.cli.simulate import simulate_cmd
from batchrun.cli.validate import validate_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchrun")
def cli() -> None:
    """Run bulk prompts through the Claude Messages API.

    SOURCE is a TOML job file or a dataset (.jsonl, .parquet, .csv) of prompts.
    """


for _command in (run_cmd, validate_cmd, simulate_cmd, batches_group, estimate_cmd, report_cmd):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="batchrun")
