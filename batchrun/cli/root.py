"""The ``batchrun`` group: its version, its commands (one module each), and ``main``.

Exit codes (docs/design.md §3.6): 0 every row ok; 1 aborted (configuration, authentication, I/O);
2 usage error; 3 finished with some rows in error; 4 stopped by the --max-cost budget (re-run
to resume); 130 stopped by Ctrl-C or SIGTERM.

Every command speaks to a person at a terminal: messages made while it runs name settings by
their flags (``--max-tokens N``), where a Python caller reads ``max_tokens=N``
(``core.wording``).

Ctrl-C at any moment exits 130 with one line, never a traceback: while this module loads
(when the process is the command), while click parses the command line, and in a command
that does not handle it itself (``run`` does, once its run has begun, to say how to resume).
"""

from __future__ import annotations

import os
import sys

INTERRUPTED = "batchrun: interrupted."

try:
    from typing import Any, NoReturn

    import click

    from batchrun import __version__
    from batchrun.cli.batches import batches_group
    from batchrun.cli.cache import cache_group
    from batchrun.cli.estimate import estimate_cmd
    from batchrun.cli.merge import merge_cmd
    from batchrun.cli.options import flag_names
    from batchrun.cli.render import render_cmd
    from batchrun.cli.report import report_cmd
    from batchrun.cli.run import run_cmd
    from batchrun.cli.simulate import simulate_cmd
    from batchrun.cli.validate import validate_cmd
    from batchrun.core.wording import command_line
    from batchrun.formats.registry import input_name_suffixes
except KeyboardInterrupt:
    # Ctrl-C while the command line loads. In the batchrun command it exits as everywhere
    # else; a program that imports this module gets its KeyboardInterrupt.
    _main = sys.modules.get("__main__")
    _spec = getattr(_main, "__spec__", None)
    if getattr(_spec, "name", None) != "batchrun.__main__" and (
        os.path.basename(sys.argv[0] if sys.argv else "").split(".")[0] != "batchrun"
    ):
        raise
    sys.stderr.write(INTERRUPTED + "\n")
    raise SystemExit(130) from None


def exit_interrupted() -> NoReturn:
    """Ctrl-C with nothing to resume: one line on stderr, exit 130."""
    click.echo(INTERRUPTED, err=True)
    sys.exit(130)


class _Group(click.Group):
    """A click group whose Ctrl-C exits 130 in one line (click's own says "Aborted!", exit 1),
    and whose commands' messages name settings by their flags."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            exit_interrupted()

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with command_line(flag_names()):
                return super().invoke(ctx)
        except KeyboardInterrupt:
            exit_interrupted()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchrun")
def cli() -> None:
    """Run bulk prompts through the Claude Messages API."""


# The formats a SOURCE may be in come from the registry (batchrun.formats).
cli.help = (
    f"{cli.help}\n\nSOURCE is a TOML job file, a dataset of prompts "
    f"({', '.join(input_name_suffixes())}; .gz, .bz2 or .zst compressed) or - "
    "for standard input."
)


for _command in (
    run_cmd,
    validate_cmd,
    render_cmd,
    simulate_cmd,
    batches_group,
    estimate_cmd,
    report_cmd,
    merge_cmd,
    cache_group,
):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="batchrun")
    except KeyboardInterrupt:  # whatever moment click itself does not cover
        exit_interrupted()
