"""``python -m batchrun``: the same command line as the ``batchrun`` script."""

from .cli import main

main()
