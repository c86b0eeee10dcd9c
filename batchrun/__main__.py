"""``python -m batchrun``: the same command line as the ``batchrun`` script."""

from batchrun.cli import main

main()
