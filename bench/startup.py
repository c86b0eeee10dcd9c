"""Start-up: how long ``import batchrun`` and ``batchrun --version`` / ``--help`` take.

The public API loads on first use (PEP 562) and each command imports its library code when it
runs, so starting batchrun should cost little more than starting Python. Each command runs
``--repeats`` times in a fresh interpreter, alternating with the baseline (``python -c pass``)
so that a busy machine slows both alike; medians are reported, with the ratio to the baseline
measured in the same run.

* ``import batchrun``: its cumulative time from ``python -X importtime`` (microseconds the
  interpreter itself reports for the package), and the wall time of the whole process.
* ``batchrun --version`` and ``batchrun run --help``: wall time of the console command.

Targets (issue "one house"): ``import batchrun`` <= 0.1 s and ``batchrun --version`` <= 0.25 s
of wall time. Exit 0 when both pass.

    python bench/startup.py               # 15 repeats
    python bench/startup.py --repeats 40
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from _harness import Target, median, print_table, versions_banner

IMPORT_TARGET_S = 0.1
VERSION_TARGET_S = 0.25


def _wall(cmd: Sequence[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _import_time(python: str) -> float:
    """Seconds ``import batchrun`` took by the interpreter's own count (-X importtime)."""
    done = subprocess.run(
        [python, "-X", "importtime", "-c", "import batchrun"],
        check=True,
        capture_output=True,
        text=True,
    )
    for line in reversed(done.stderr.splitlines()):
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "batchrun":
            return int(parts[1]) / 1e6
    raise RuntimeError("no import time reported for batchrun:\n" + done.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    python = sys.executable
    command = shutil.which("batchrun", path=str(Path(python).parent)) or shutil.which("batchrun")
    if command is None:
        print("no batchrun command on PATH: pip install -e . first", file=sys.stderr)
        return 1
    print("batchrun start-up benchmark")
    print(versions_banner(), flush=True)

    samples: dict[str, list[float]] = {
        "python -c pass": [],
        "import batchrun (importtime)": [],
        "python -c 'import batchrun'": [],
        "batchrun --version": [],
        "batchrun run --help": [],
    }
    for _ in range(args.repeats):
        samples["python -c pass"].append(_wall([python, "-c", "pass"]))
        samples["import batchrun (importtime)"].append(_import_time(python))
        samples["python -c 'import batchrun'"].append(_wall([python, "-c", "import batchrun"]))
        samples["batchrun --version"].append(_wall([command, "--version"]))
        samples["batchrun run --help"].append(_wall([command, "run", "--help"]))

    base = median(samples["python -c pass"])
    rows = []
    for name, values in samples.items():
        mid = median(values)
        ratio = "" if name.endswith("(importtime)") else f"{mid / base:.2f}x"
        rows.append([name, f"{mid * 1000:,.0f}", f"{min(values) * 1000:,.0f}", ratio])
    print()
    print_table(["what", "median ms", "min ms", "/ python -c pass"], rows)

    imported = median(samples["import batchrun (importtime)"])
    version = median(samples["batchrun --version"])
    # Targets are ceilings in seconds; Target judges "value >= minimum", so compare headroom.
    targets = [
        Target("import batchrun: target / measured", IMPORT_TARGET_S / imported, 1.0),
        Target("batchrun --version: target / measured", VERSION_TARGET_S / version, 1.0),
    ]
    print()
    for target in targets:
        print(target.line())
    return 0 if all(t.passed for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
