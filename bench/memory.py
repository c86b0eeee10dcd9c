"""Memory: peak RSS of a batchrun run over 20,000 and over 200,000 rows of the same shape.

Each run is ``python -m batchrun run`` in a subprocess (JSONL in, journal, final Parquet) against
a zero-latency ``batchrun simulate`` subprocess, concurrency 64. Its peak resident set size is
read from the kernel when it exits (``os.wait4``: the ``ru_maxrss`` of that one child), so the
figure covers the whole run, final Parquet file included, and nothing of this process.

Target (issue 4): peak RSS at 200,000 rows <= 1.3x peak RSS at 20,000 rows: memory must not
grow with the job. Exit code 0 when it passes.

Where it goes: the child's RSS is also sampled from ``/proc`` a few times a second, with the
size of its journal. While rows are being answered the journal grows; once it stops, the run
is writing the final file. The table shows the highest RSS of each phase, so growth can be
pinned on one of them.

``--trace ROWS`` instead runs the job in this process under ``tracemalloc`` and prints the
source lines whose live allocations grew most between the start and the moment of highest
traced memory (sampled every ``--every`` seconds): where memory goes when it grows.

Run from the repository root (the default takes about five minutes, most of it the 200,000 row
run)::

    python bench/memory.py
    python bench/memory.py --small 5000 --large 50000      # quicker, same ratio target
    python bench/memory.py --trace 50000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _harness import (
    API_KEY,
    MODEL,
    BenchError,
    SimulatorProcess,
    print_table,
    prompt_text,
    sigterm_as_interrupt,
    versions_banner,
)

from batchrun import load_config, run

TARGET = 1.3
CONCURRENCY = 64
MAX_TOKENS = 16


@dataclass(frozen=True)
class Peak:
    rows: int
    rss_mb: float
    seconds: float
    sending_mb: float | None  # highest sampled RSS while the journal was growing
    finishing_mb: float | None  # highest sampled RSS after it stopped (the final file)


class RssSampler:
    """Samples a process's VmRSS and its journal's size in a thread, until stopped."""

    EVERY_S = 0.25

    def __init__(self, pid: int, journal: Path) -> None:
        self.samples: list[tuple[float, int]] = []  # (RSS MiB, journal bytes)
        self._pid = pid
        self._journal = journal
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> tuple[float | None, float | None]:
        """(peak while sending, peak while finishing) in MiB, from the samples."""
        self._stop.set()
        self._thread.join()
        sizes = [size for _, size in self.samples]
        if not sizes:
            return None, None
        done_at = sizes.index(max(sizes))  # the first sample with the whole journal
        sending = [rss for rss, _ in self.samples[:done_at]]
        finishing = [rss for rss, _ in self.samples[done_at:]]
        return (max(sending) if sending else None, max(finishing) if finishing else None)

    def _loop(self) -> None:
        while not self._stop.wait(self.EVERY_S):
            rss = _vm_rss_mb(self._pid)
            if rss is None:
                return
            try:
                size = self._journal.stat().st_size
            except OSError:
                size = max((s for _, s in self.samples), default=0)  # renamed away: finishing
            self.samples.append((rss, size))


def _vm_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def write_rows(path: Path, rows: int) -> Path:
    """``rows`` lines of ``{"id", "prompt"}``, written in chunks (the file, not a list, grows)."""
    with path.open("w", encoding="utf-8") as f:
        chunk: list[str] = []
        for i in range(rows):
            text = prompt_text(i).replace('"', "'")
            chunk.append(f'{{"id": "row-{i}", "prompt": "{text}"}}\n')
            if len(chunk) == 10_000:
                f.writelines(chunk)
                chunk.clear()
        f.writelines(chunk)
    return path


def command(inp: Path, out: Path, url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "batchrun",
        "run",
        str(inp),
        "-o",
        str(out),
        "--model",
        MODEL,
        "--max-tokens",
        str(MAX_TOKENS),
        "--base-url",
        url,
        "--concurrency",
        str(CONCURRENCY),
        "--overwrite",
        "-q",
    ]


def peak_rss(inp: Path, out: Path, url: str, rows: int) -> Peak:
    """Run batchrun as a child and read its own peak RSS from the kernel as it is reaped."""
    env = {**os.environ, "ANTHROPIC_API_KEY": API_KEY}
    started = time.perf_counter()
    proc = subprocess.Popen(
        command(inp, out, url),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    sampler = RssSampler(proc.pid, out.with_name(out.name + ".journal"))
    assert proc.stderr is not None
    stderr = proc.stderr.read()  # small: the summary; read before reaping
    proc.stderr.close()
    sending, finishing = sampler.stop()  # /proc/PID goes away when it is reaped
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise BenchError(f"batchrun exited {proc.returncode}:\n{stderr.decode()[-3000:]}")
    # ru_maxrss is in KiB on Linux
    return Peak(rows, usage.ru_maxrss / 1024.0, seconds, sending, finishing)


def measure(small: int, large: int) -> int:
    peaks = []
    with (
        sigterm_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp,
        SimulatorProcess() as sim,
    ):
        for rows in (small, large):
            inp = write_rows(Path(tmp) / f"in-{rows}.jsonl", rows)
            print(f"  {rows:,} rows ...", end="", flush=True)
            peak = peak_rss(inp, Path(tmp) / f"out-{rows}.parquet", sim.base_url, rows)
            print(f" {peak.rss_mb:,.1f} MiB peak RSS, {peak.seconds:.0f} s", flush=True)
            peaks.append(peak)
            if not sim.alive():
                raise BenchError(f"the simulator died:\n{sim.stderr_text()}")
    print_table(
        ["rows", "peak RSS MiB", "sending MiB", "final file MiB", "wall s", "rows/s"],
        [
            [p.rows, p.rss_mb, p.sending_mb, p.finishing_mb, p.seconds, p.rows / p.seconds]
            for p in peaks
        ],
    )
    ratio = peaks[1].rss_mb / peaks[0].rss_mb
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(
        f"  [{verdict}] peak RSS {large:,} / {small:,} rows: {ratio:.3f}x "
        f"(target <= {TARGET:g}x); growth {peaks[1].rss_mb - peaks[0].rss_mb:+.1f} MiB"
    )
    if peaks[0].sending_mb and peaks[1].sending_mb:
        sending = peaks[1].sending_mb / peaks[0].sending_mb
        print(f"  [info] while sending only: {sending:.3f}x")
    return 0 if ratio <= TARGET else 1


# --------------------------------------------------------------------------- --trace


class PeakSampler:
    """Samples traced memory in a thread; keeps the snapshot taken at the highest point."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.best: tracemalloc.Snapshot | None = None
        self.best_size = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            size, _ = tracemalloc.get_traced_memory()
            if size > self.best_size:
                self.best_size = size
                self.best = tracemalloc.take_snapshot()


def trace(rows: int, every: float) -> int:
    with (
        sigterm_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp,
        SimulatorProcess() as sim,
    ):
        inp = write_rows(Path(tmp) / "in.jsonl", rows)
        config = load_config(
            inp,
            {
                "output": str(Path(tmp) / "out.parquet"),
                "model": MODEL,
                "max_tokens": MAX_TOKENS,
                "concurrency": CONCURRENCY,
                "base_url": sim.base_url,
                "quiet": True,
            },
            environ={"ANTHROPIC_API_KEY": API_KEY},
        )
        tracemalloc.start(8)
        baseline = tracemalloc.take_snapshot()
        with PeakSampler(every) as sampler:
            run(config)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    if sampler.best is None:
        print("the run ended before a sample was taken; use a smaller --every")
        return 1
    print(
        f"{rows:,} rows: traced peak {peak / 2**20:,.1f} MiB; sampled high point "
        f"{sampler.best_size / 2**20:,.1f} MiB. Largest growth since the start, by line:"
    )
    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<*>")]
    diff = sampler.best.filter_traces(keep).compare_to(baseline.filter_traces(keep), "lineno")
    for stat in diff[:15]:
        frame = stat.traceback[0]
        print(
            f"  {stat.size_diff / 2**20:8.2f} MiB {stat.count_diff:+9,} blocks  "
            f"{frame.filename}:{frame.lineno}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--trace", type=int, metavar="ROWS", help="trace allocations instead")
    parser.add_argument("--every", type=float, default=2.0, help="--trace sampling seconds")
    args = parser.parse_args(argv)
    print("batchrun memory benchmark")
    print(versions_banner(), flush=True)
    try:
        if args.trace:
            return trace(args.trace, args.every)
        return measure(args.small, args.large)
    except BenchError as exc:
        print(f"\nBENCHMARK BROKEN: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
