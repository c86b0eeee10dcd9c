"""The command line, click only: one module per command, each a thin shell over a library call.

``batchrun.cli.root`` holds the group, ``main`` (the console script) and what every command
shares; the commands import their library code when they run, so ``--help`` and
``--version`` load none of it.
"""

from batchrun.cli.main import cli, main

__all__ = ["cli", "main"]
