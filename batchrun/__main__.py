"""``python -m batchrun``: the same command line as the ``batchrun`` script.

Ctrl-C at any moment, loading included, exits 130 with one line (``batchrun.cli.root``).
"""

import sys

try:
    from batchrun.cli import main
except KeyboardInterrupt:
    sys.stderr.write("batchrun: interrupted.\n")
    sys.exit(130)

main()
