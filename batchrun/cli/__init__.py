"""The command line, click only: one module per command, each a thin shell over a library call.

``batchrun.cli.root`` holds the group and ``main`` (the console script); ``options`` what the
commands share, their flags made from the settings table (``batchrun.config.settings``). The
commands import their library code when they run, so ``--help`` and ``--version`` load none
of it.
"""

from batchrun.cli.root import cli, main

__all__ = ["cli", "main"]
