"""What writing the journal's index (``store.journal_index``) costs a run: rows per second of
``batchrun.run()`` with it and without, alternating in one run of ``bench/throughput.py``.

    python bench/journal_index_cost.py [--repeats 5] [--rows 10000]

Scenario (a) of ``bench/throughput.py`` (zero latency, concurrency 64: where a per-row cost
shows most), two contenders: ``batchrun`` as it is, and ``noindex``, the same run with no
index written (``JournalIndexWriter.start`` gives no writer, as when it cannot write). The
ratio is the median of per-round ratios; the target is the index costing at most 3%.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

import throughput

from batchrun.store import journal_index


def without_index(w: throughput.Workload) -> int:
    """``batchrun`` writing no index beside its journal."""
    start = journal_index.JournalIndexWriter.start

    def none(*args: Any) -> None:
        return None

    journal_index.JournalIndexWriter.start = none  # type: ignore[method-assign,assignment]
    try:
        return throughput.batchrun_run(w)
    finally:
        journal_index.JournalIndexWriter.start = start  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int)
    args = parser.parse_args()
    throughput.CONTENDERS = (*throughput.CONTENDERS, "noindex")
    throughput.RUNNERS["noindex"] = without_index
    throughput.CHECKS["noindex"] = throughput.check_batchrun_output
    throughput.SCENARIOS["a"] = replace(
        throughput.SCENARIOS["a"], targets=(("batchrun", "noindex", 0.97),)
    )
    argv = ["--scenario", "a", "--contenders", "batchrun,noindex", "--repeats", str(args.repeats)]
    if args.rows is not None:
        argv += ["--rows", str(args.rows)]
    return throughput.main(argv)


if __name__ == "__main__":
    sys.exit(main())
