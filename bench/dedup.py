"""In-run dedup (issue 17, benchmark 3): 10,000 rows of which 30% repeat an earlier row exactly.

Targets: requests sent == distinct requests; the output has one row per input row, in input
order, each with the answer to its own prompt (the simulator starts every answer with a tag
of the prompt it answered); every duplicate names a sent row in ``duplicate_of`` and costs 0.
Also shown: billed cost and wall time against ``--no-dedup`` on the same rows, in this run.

The simulator runs in this process (``SimulatorThread``) so its request count can be read;
figures are counts and ratios, not absolute times. ``bench/cost.py`` runs this as scenario 3.

    python bench/dedup.py            # 10,000 rows, concurrency 64
    python bench/dedup.py --quick    # 1,000 rows
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import MODEL, print_table, versions_banner

from batchrun import load_config, run
from batchrun.simulator import SimulatorConfig, SimulatorThread

DUPLICATE_SHARE = 0.3
LATENCY_S = 0.02


@dataclass(frozen=True)
class DedupResult:
    mode: str
    sent: int
    rows: int
    right: int  # rows whose answer is their own prompt's
    duplicates: int  # rows with duplicate_of set
    free_duplicates: int  # of those, at cost 0 naming a row that was sent
    cost: float
    seconds: float


def write_rows(path: Path, rows: int) -> tuple[Path, int]:
    """``rows`` rows, ``DUPLICATE_SHARE`` of them copies of an earlier row's prompt, shuffled
    in (a fixed seed); returns the file and its number of distinct prompts."""
    rng = random.Random(17)
    distinct = rows - int(rows * DUPLICATE_SHARE)
    prompts = [
        f"Summarise note {i}: the shipment {i * 31 % 977} arrived late." for i in range(distinct)
    ]
    order = prompts + [rng.choice(prompts) for _ in range(rows - distinct)]
    head, tail = order[:1], order[1:]
    rng.shuffle(tail)  # a duplicate may come right after its original or thousands of rows on
    with path.open("w", encoding="utf-8") as fh:
        for i, prompt in enumerate(head + tail):
            fh.write(json.dumps({"id": f"r{i}", "prompt": prompt}) + "\n")
    return path, distinct


def tag(prompt: str) -> str:
    return "re:" + hashlib.sha256(prompt.encode()).hexdigest()[:8]


def run_once(
    sim: SimulatorThread, inp: Path, work: Path, dedup: bool, concurrency: int
) -> DedupResult:
    out = work / f"out-{'dedup' if dedup else 'nodedup'}.jsonl"
    settings = {
        "output": str(out),
        "model": MODEL,
        "max_tokens": 16,
        "dedup": dedup,
        "concurrency": concurrency,
        "base_url": sim.base_url,
        "quiet": True,
    }
    config = load_config(inp, settings, environ={"ANTHROPIC_API_KEY": "bench-key"})
    sim.stats.reset()
    start = time.perf_counter()
    summary = run(config)
    seconds = time.perf_counter() - start
    if summary.exit_code != 0:
        raise SystemExit(f"BENCHMARK BROKEN: the run ended with {summary.exit_code}")
    given = [json.loads(line) for line in inp.read_text(encoding="utf-8").splitlines()]
    rows: list[dict[str, Any]] = [
        json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()
    ]
    if [r["id"] for r in rows] != [g["id"] for g in given]:
        raise SystemExit("BENCHMARK BROKEN: the output is not one row per input row in order")
    by_id = {r["id"]: r for r in rows}
    duplicates = [r for r in rows if r["duplicate_of"] is not None]
    return DedupResult(
        mode="--dedup" if dedup else "--no-dedup",
        sent=sim.stats.requests,
        rows=len(rows),
        right=sum(
            r["status"] == "ok" and (r["text"] or "").startswith(tag(g["prompt"]))
            for r, g in zip(rows, given, strict=True)
        ),
        duplicates=len(duplicates),
        free_duplicates=sum(
            r["cost_usd"] == 0 and by_id[r["duplicate_of"]]["duplicate_of"] is None
            for r in duplicates
        ),
        cost=sum(r["cost_usd"] or 0.0 for r in rows),
        seconds=seconds,
    )


def scenario(rows: int, concurrency: int, quick: bool) -> tuple[list[str], bool]:
    """Run both modes; print the table; return the verdict lines and whether all passed."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        SimulatorThread(SimulatorConfig(latency_mean=LATENCY_S)) as sim,
    ):
        work = Path(tmp)
        inp, distinct = write_rows(work / "rows.jsonl", rows)
        off = run_once(sim, inp, work, False, concurrency)
        on = run_once(sim, inp, work, True, concurrency)
    print(f"\nscenario 3: {rows:,} rows, {distinct:,} distinct, concurrency {concurrency}")
    print_table(
        ["mode", "sent", "rows", "right answer", "duplicate_of", "cost $", "wall s"],
        [
            [r.mode, r.sent, r.rows, r.right, r.duplicates, f"{r.cost:.4f}", r.seconds]
            for r in (off, on)
        ],
    )
    checks = [
        (on.sent == distinct, f"requests sent = {on.sent:,}, distinct = {distinct:,}"),
        (
            on.rows == rows and on.right == rows,
            f"rows with their own answer = {on.right:,}/{rows:,}",
        ),
        (
            on.duplicates == rows - distinct == on.free_duplicates,
            f"duplicates naming a sent row at cost 0 = {on.free_duplicates:,}/{rows - distinct:,}",
        ),
        (
            True,
            f"billed cost dedup / no-dedup = {on.cost / off.cost:.3f}x; "
            f"wall {on.seconds / off.seconds:.2f}x",
        ),
    ]
    lines = [
        f"  [{'info' if quick else ('PASS' if ok else 'FAIL')}] scenario 3: {text}"
        for ok, text in checks
    ]
    return lines, all(ok for ok, _ in checks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1,000 rows")
    args = parser.parse_args(argv)
    print(versions_banner(), flush=True)
    lines, passed = scenario(1000 if args.quick else 10_000, 64, args.quick)
    print("\ntargets")
    print("\n".join(lines), flush=True)
    return 0 if passed or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
