"""Start-up: how long ``import batchrun`` and ``batchrun --version`` / ``--help`` take, and
whether a job's start costs what the job holds, not what its folder holds.

The public API loads on first use (PEP 562) and each command imports its library code when it
runs, so starting batchrun should cost little more than starting Python. Each command runs
``--repeats`` times in a fresh interpreter, alternating with the baseline (``python -c pass``)
so that a busy machine slows both alike; medians are reported, with the ratio to the baseline
measured in the same run.

* ``import batchrun``: its cumulative time from ``python -X importtime`` (microseconds the
  interpreter itself reports for the package), and the wall time of the whole process.
* ``batchrun --version`` and ``batchrun run --help``: wall time of the console command.

A job in a busy folder (``--part folder``): the same ``--rows`` rows (20) run with
``--simulate``, once in a folder of their own and once beside ``--files`` unrelated files
(150,000), alternating; the first run (no output yet) and the resume (everything answered,
nothing sent) each timed ``--job-repeats`` times. Nothing at start-up may walk, list or stat
the folder's other files: the resume checks the files rows referred to, and the temporary
files a killed run left are looked for only after a run that was killed.

Targets: ``import batchrun`` <= 0.1 s and ``batchrun --version`` <= 0.25 s of wall time
(issue "one house"); the job beside the files within 1.3x of the job alone, first run and
resume (issue 26). Exit 0 when all pass.

    python bench/startup.py               # 15 repeats, then the job in a busy folder
    python bench/startup.py --repeats 40 --part imports
    python bench/startup.py --part folder --files 150000 --job-repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _harness import MODEL, Target, median, print_table, versions_banner

IMPORT_TARGET_S = 0.1
VERSION_TARGET_S = 0.25
BUSY_FOLDER_MAX_RATIO = 1.3


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


def _imports(repeats: int, python: str, command: str) -> list[Target]:
    """``import batchrun``, ``--version`` and ``run --help`` against ``python -c pass``."""
    samples: dict[str, list[float]] = {
        "python -c pass": [],
        "import batchrun (importtime)": [],
        "python -c 'import batchrun'": [],
        "batchrun --version": [],
        "batchrun run --help": [],
    }
    for _ in range(repeats):
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
    return [
        Target("import batchrun: target / measured", IMPORT_TARGET_S / imported, 1.0),
        Target("batchrun --version: target / measured", VERSION_TARGET_S / version, 1.0),
    ]


def _job(folder: Path, rows: int) -> tuple[Path, Path]:
    """``rows`` rows in ``folder``/in.jsonl, and their output beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    inp = folder / "in.jsonl"
    with inp.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            fh.write(json.dumps({"id": f"r{i}", "prompt": f"Say {i} in words."}) + "\n")
    return inp, folder / "out.parquet"


def _crowd(folder: Path, files: int) -> None:
    """``files`` small files no row names, in ``folder`` and a few folders below it."""
    for i in range(files):
        sub = folder if i % 4 else folder / f"sub{i % 40:02d}"
        if i < 160:
            sub.mkdir(exist_ok=True)
        (sub / f"unrelated-{i:06d}.txt").write_bytes(b"not for any row\n")


def _fresh(out: Path) -> None:
    """No output and nothing batchrun keeps beside it: the job's first run."""
    for name in ("", ".journal", ".state.json", ".files"):
        out.with_name(out.name + name).unlink(missing_ok=True)
    out.with_name(f".{out.name}.lock").unlink(missing_ok=True)


def _run_job(python: str, inp: Path, out: Path) -> float:
    cmd = [python, "-m", "batchrun", "run", str(inp), "-o", str(out)]
    cmd += ["--model", MODEL, "--max-tokens", "5", "--simulate", "-q"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "BATCHRUN_"))}
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the job failed ({done.returncode}):\n{done.stderr}")
    return took


def _busy_folder(python: str, rows: int, files: int, repeats: int) -> list[tuple[str, bool]]:
    """The same job alone in its folder and beside ``files`` unrelated files."""
    with tempfile.TemporaryDirectory(prefix="batchrun-startup-") as tmp:
        alone = _job(Path(tmp) / "alone", rows)
        crowded = _job(Path(tmp) / "crowded", rows)
        print(f"\nputting {files:,} unrelated files beside the crowded job ...", flush=True)
        started = time.perf_counter()
        _crowd(crowded[0].parent, files)
        print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
        samples: dict[tuple[str, str], list[float]] = {}
        for k in range(repeats):
            order = (("alone", alone), ("crowded", crowded))
            for where, (inp, out) in order if k % 2 == 0 else order[::-1]:
                _fresh(out)
                samples.setdefault(("first run", where), []).append(_run_job(python, inp, out))
                samples.setdefault(("resume", where), []).append(_run_job(python, inp, out))
    rows_out = []
    verdicts = []
    for phase in ("first run", "resume"):
        lone = median(samples[(phase, "alone")])
        busy = median(samples[(phase, "crowded")])
        ratio = busy / lone
        rows_out.append([phase, f"{lone * 1000:,.0f}", f"{busy * 1000:,.0f}", f"{ratio:.2f}x"])
        passed = ratio <= BUSY_FOLDER_MAX_RATIO
        verdicts.append(
            (
                f"  [{'PASS' if passed else 'FAIL'}] {phase}: {rows} rows beside {files:,} "
                f"files / alone: {ratio:.2f}x (target <= {BUSY_FOLDER_MAX_RATIO:g}x)",
                passed,
            )
        )
    print()
    print_table(
        ["job of " + str(rows) + " rows", "alone ms", "crowded ms", "crowded / alone"], rows_out
    )
    return verdicts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--part", choices=("all", "imports", "folder"), default="all")
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--files", type=int, default=150_000)
    parser.add_argument("--job-repeats", type=int, default=5)
    args = parser.parse_args(argv)
    python = sys.executable
    command = shutil.which("batchrun", path=str(Path(python).parent)) or shutil.which("batchrun")
    if command is None:
        print("no batchrun command on PATH: pip install -e . first", file=sys.stderr)
        return 1
    print("batchrun start-up benchmark")
    print(versions_banner(), flush=True)
    verdicts = []
    if args.part in ("all", "imports"):
        verdicts += [(t.line(), t.passed) for t in _imports(args.repeats, python, command)]
    if args.part in ("all", "folder"):
        verdicts += _busy_folder(python, args.rows, args.files, args.job_repeats)
    print()
    for line, _ in verdicts:
        print(line)
    return 0 if all(passed for _, passed in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
