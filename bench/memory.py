"""Memory: peak RSS of batchrun runs that differ only in how many rows they have.

Each run is ``python -m batchrun run`` in a subprocess (JSONL in, journal, final Parquet), with
every default on (dedup included), against a zero-latency simulator, concurrency 64. Its peak
resident set size is read from the kernel when it exits (``os.wait4``: the ``ru_maxrss`` of
that one child), so the figure covers the whole run, final Parquet file included, and nothing
of this process. The simulator runs in a thread of this process, which counts the requests it
answers.

Targets (issues 4 and 26): memory must not grow with the job.

- distinct prompts: peak RSS at 200,000 rows <= 1.3x peak RSS at 20,000 rows, and at
  1,000,000 rows <= 1.3x at 100,000;
- 30% of the prompts repeat one 70% further on in the file (twins spread far apart, so the
  answers copied to them cannot all wait in memory): the same 1.3x at 200,000 over 20,000,
  and the server answers each distinct request once (requests == distinct prompts).

Exit code 0 when every target is met.

Where it goes: the child's RSS is also sampled from ``/proc`` a few times a second, with the
size of its journal. While rows are being answered the journal grows; once it stops, the run
is writing the final file. The table shows the highest RSS of each phase, so growth can be
pinned on one of them.

``--trace ROWS`` instead runs the job in this process under ``tracemalloc`` and prints the
source lines whose live allocations grew most between the start and the moment of highest
traced memory (sampled every ``--every`` seconds): where memory goes when it grows.

Run from the repository root (the default takes about 25 minutes on 2 cores, most of it the
1,000,000 row run)::

    python bench/memory.py
    python bench/memory.py --pairs 5000:50000 --twins 5000:50000   # quicker, same targets
    python bench/memory.py --trace 50000 [--twins-input]
    python bench/memory.py --pairs 2000:20000 --no-twins --baseline   # + the large size with
                                                                      # --no-dedup: what the
                                                                      # twin pass costs
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
    print_table,
    prompt_text,
    sigterm_as_interrupt,
    versions_banner,
)

from batchrun import load_config, run
from batchrun.simulator import SimulatorConfig, SimulatorThread

TARGET = 1.3
CONCURRENCY = 64
MAX_TOKENS = 16
PAIRS = ((20_000, 200_000), (100_000, 1_000_000))  # distinct prompts: (small, large) rows
TWINS = (20_000, 200_000)  # 30% of prompts repeated far apart
TWIN_SHARE = 0.3


@dataclass(frozen=True)
class Peak:
    case: str
    rows: int
    rss_mb: float
    seconds: float
    sending_mb: float | None  # highest sampled RSS while the journal was growing
    finishing_mb: float | None  # highest sampled RSS after it stopped (the final file)
    requests: int  # Messages requests the simulator answered
    distinct: int  # distinct prompts in the input


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


def write_rows(path: Path, rows: int, *, twins: bool = False) -> tuple[Path, int]:
    """``rows`` lines of ``{"id", "prompt"}``, written in chunks (the file, not a list, grows);
    and how many distinct prompts they hold. With ``twins``, the last 30% of the rows repeat
    the prompts of the first 30%, each 70% of the file further on than its original."""
    first_twin = rows - int(rows * TWIN_SHARE) if twins else rows
    with path.open("w", encoding="utf-8") as f:
        chunk: list[str] = []
        for i in range(rows):
            text = prompt_text(i if i < first_twin else i - first_twin).replace('"', "'")
            chunk.append(f'{{"id": "row-{i}", "prompt": "{text}"}}\n')
            if len(chunk) == 10_000:
                f.writelines(chunk)
                chunk.clear()
        f.writelines(chunk)
    return path, first_twin


def command(inp: Path, out: Path, url: str, *, dedup: bool = True) -> list[str]:
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
        *([] if dedup else ["--no-dedup"]),
    ]


def peak_rss(
    case: str,
    inp: Path,
    out: Path,
    sim: SimulatorThread,
    rows: int,
    distinct: int,
    *,
    dedup: bool = True,
) -> Peak:
    """Run batchrun as a child and read its own peak RSS from the kernel as it is reaped."""
    env = {**os.environ, "ANTHROPIC_API_KEY": API_KEY}
    sim.stats.reset()
    started = time.perf_counter()
    proc = subprocess.Popen(
        command(inp, out, sim.base_url, dedup=dedup),
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
    requests = sim.stats.snapshot().requests
    # ru_maxrss is in KiB on Linux
    return Peak(
        case, rows, usage.ru_maxrss / 1024.0, seconds, sending, finishing, requests, distinct
    )


@dataclass(frozen=True)
class Ratio:
    label: str
    small: Peak
    large: Peak

    @property
    def value(self) -> float:
        return self.large.rss_mb / self.small.rss_mb

    @property
    def passed(self) -> bool:
        return self.value <= TARGET

    def lines(self) -> list[str]:
        verdict = "PASS" if self.passed else "FAIL"
        growth = self.large.rss_mb - self.small.rss_mb
        out = [
            f"  [{verdict}] {self.label}: peak RSS {self.large.rows:,} / {self.small.rows:,} rows: "
            f"{self.value:.3f}x (target <= {TARGET:g}x); growth {growth:+.1f} MiB"
        ]
        if self.small.sending_mb and self.large.sending_mb:
            sending = self.large.sending_mb / self.small.sending_mb
            out.append(f"  [info] {self.label}, while sending only: {sending:.3f}x")
        return out


def measure(
    pairs: Sequence[tuple[int, int]], twins: tuple[int, int] | None, baseline: bool = False
) -> int:
    cases = [("distinct", small, large, False) for small, large in pairs]
    if twins is not None:
        cases.append(("30% twins", twins[0], twins[1], True))
    peaks: list[Peak] = []
    ratios: list[Ratio] = []
    baselines: list[tuple[Peak, Peak]] = []  # (dedup on, --no-dedup) at the large size
    with (
        sigterm_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp,
        SimulatorThread(SimulatorConfig()) as sim,
    ):
        for case, small, large, repeat in cases:
            pair = []
            for rows in (small, large):
                inp, distinct = write_rows(Path(tmp) / f"in-{rows}.jsonl", rows, twins=repeat)
                print(f"  {case}: {rows:,} rows ...", end="", flush=True)
                peak = peak_rss(case, inp, Path(tmp) / f"out-{rows}.parquet", sim, rows, distinct)
                print(f" {peak.rss_mb:,.1f} MiB peak RSS, {peak.seconds:.0f} s", flush=True)
                if baseline and rows == large:
                    print(f"  {case}: {rows:,} rows, --no-dedup ...", end="", flush=True)
                    off = peak_rss(
                        f"{case}, --no-dedup",
                        inp,
                        Path(tmp) / f"out-{rows}-off.parquet",
                        sim,
                        rows,
                        rows,  # every row is sent
                        dedup=False,
                    )
                    print(f" {off.rss_mb:,.1f} MiB peak RSS, {off.seconds:.0f} s", flush=True)
                    baselines.append((peak, off))
                inp.unlink()
                pair.append(peak)
            peaks += pair
            ratios.append(Ratio(f"{case} prompts", pair[0], pair[1]))
    print_table(
        [
            "case",
            "rows",
            "peak RSS MiB",
            "sending MiB",
            "final file MiB",
            "wall s",
            "rows/s",
            "requests",
            "distinct",
        ],
        [
            [
                p.case,
                p.rows,
                p.rss_mb,
                p.sending_mb,
                p.finishing_mb,
                p.seconds,
                p.rows / p.seconds,
                p.requests,
                p.distinct,
            ]
            for p in peaks + [off for _, off in baselines]
        ],
    )
    passed = True
    for ratio in ratios:
        print("\n".join(ratio.lines()))
        passed = passed and ratio.passed
    for p in peaks:
        if p.requests != p.distinct:
            passed = False
            print(
                f"  [FAIL] {p.case}, {p.rows:,} rows: the server answered {p.requests:,} "
                f"requests for {p.distinct:,} distinct prompts (each is to be sent once)"
            )
    for on, off in baselines:
        # What finding twins before sending costs: the pass reads every row once more.
        print(
            f"  [info] {on.case}, {on.rows:,} rows, dedup on / --no-dedup: peak RSS "
            f"{on.rss_mb / off.rss_mb:.3f}x, wall {on.seconds / off.seconds:.3f}x"
        )
    once = [p for p in peaks if p.requests == p.distinct and p.distinct < p.rows]
    for p in once:
        print(
            f"  [PASS] {p.case}, {p.rows:,} rows: {p.requests:,} requests for {p.distinct:,} "
            f"distinct prompts: each sent once, {p.rows - p.distinct:,} rows filled"
        )
    return 0 if passed else 1


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


def trace(rows: int, every: float, twins: bool) -> int:
    with (
        sigterm_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp,
        SimulatorThread(SimulatorConfig()) as sim,
    ):
        inp, _ = write_rows(Path(tmp) / "in.jsonl", rows, twins=twins)
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


def _pair(text: str) -> tuple[int, int]:
    small, _, large = text.partition(":")
    try:
        return int(small), int(large)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SMALL:LARGE rows, not {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--pairs",
        type=_pair,
        nargs="*",
        default=list(PAIRS),
        metavar="SMALL:LARGE",
        help="distinct-prompt runs to compare (default: 20000:200000 100000:1000000)",
    )
    parser.add_argument(
        "--twins",
        type=_pair,
        default=TWINS,
        metavar="SMALL:LARGE",
        help="the runs with 30%% twins (default: 20000:200000)",
    )
    parser.add_argument("--no-twins", action="store_true", help="leave the twins runs out")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run each large size with --no-dedup: what dedup costs in memory and time",
    )
    parser.add_argument("--trace", type=int, metavar="ROWS", help="trace allocations instead")
    parser.add_argument("--twins-input", action="store_true", help="--trace: 30%% twins")
    parser.add_argument("--every", type=float, default=2.0, help="--trace sampling seconds")
    args = parser.parse_args(argv)
    print("batchrun memory benchmark")
    print(versions_banner(), flush=True)
    try:
        if args.trace:
            return trace(args.trace, args.every, args.twins_input)
        return measure(args.pairs, None if args.no_twins else args.twins, args.baseline)
    except BenchError as exc:
        print(f"\nBENCHMARK BROKEN: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
