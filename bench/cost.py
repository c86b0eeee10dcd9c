"""Cost: what ``--cache auto`` bills against ``--cache off`` for the same job (issue 17).

Both runs send the same rows through ``batchrun.run()`` to one local ``batchrun simulate``
server (a subprocess), whose prompt cache behaves as the API's: a prefix below the model's
minimum is not cached, and an entry is readable only once the answer of the request that
writes it has started (so requests sent together with a cold prefix all pay the write). Each
run's instruction carries a fresh random word, so no run reads another's cache entries.

Scenarios, Haiku 4.5 (cache minimum 4,096 tokens), concurrency 64:

1. 2,000 rows, a 6,000-token shared instruction (the template's head) and ~100 tokens per row.
   Billed input cost with ``--cache auto`` against ``--cache off`` (target <= 0.15x); cache
   writes paid for the prefix (target <= 2: the first request of the prefix group goes alone,
   the rest once it has answered; sent together they would all miss and all pay the write);
   wall time (target within 1.1x of ``--cache off``).
2. The same with a 2,000-token instruction, below Haiku's minimum: no breakpoint is placed
   (checked on the request batchrun builds) and the billed cost equals ``--cache off``
   exactly.
3. In-run dedup: 10,000 rows of which 30% repeat an earlier row exactly (``bench/dedup.py``,
   which this runs): requests sent = distinct requests; one output row per input row with
   its own prompt's answer; every duplicate names a sent row and costs 0.
4. Estimate accuracy: ``batchrun estimate --pilot 20`` of scenario 1's job (``--cache auto``,
   into a fresh output), then the run of the rest into the same output. The estimate's
   median total (the pilot's cost plus the projected rest, with the cache writes and reads the
   run makes: one write per prefix group, reads for the rest) against what the output was
   billed in all (target within +-10%).

Input cost is priced from each output row's usage (uncached input x 1, 5 m writes x 1.25,
reads x 0.1 of the input price, per the packaged price table); ratios are between runs of
this same invocation, never absolute figures. Exit code 0 when every target passes.

Run (from the repository root; about three minutes)::

    python bench/cost.py
    python bench/cost.py --quick        # 200 rows, concurrency 16; targets informational
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from _harness import MODEL, SimulatorProcess, print_table, sigterm_as_interrupt, versions_banner
from dedup import scenario as dedup_scenario

from batchrun import load_config, run
from batchrun.config.load import RunConfig
from batchrun.cost.prices import default_prices
from batchrun.estimation.passes import estimate
from batchrun.rows.request import prepare_request

LATENCY_S = 0.2  # long enough that a wave of 64 requests is in flight together
MAX_TOKENS = 8
ROW_WORDS = 100


@dataclass(frozen=True)
class RunResult:
    mode: str
    seconds: float
    rows_ok: int
    input_cost: Decimal
    writes: int  # rows that paid a cache write
    reads: int  # rows that read the cache
    placed: bool  # batchrun put a breakpoint in the first row's request


def instruction(tokens: int) -> str:
    """About ``tokens`` simulator tokens (one per word) of shared instruction, unique per run."""
    return f"Instructions {uuid.uuid4().hex}. " + "Label the review carefully. " * (tokens // 4)


def write_rows(path: Path, rows: int) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            text = f"Review {i}: " + " ".join(f"word{(i * 7 + j) % 997}" for j in range(ROW_WORDS))
            fh.write(json.dumps({"id": f"r{i}", "text": text}) + "\n")
    return path


def input_cost(row: dict[str, Any]) -> Decimal:
    price = default_prices().lookup(MODEL)
    assert price is not None
    rates = price.rates
    tokens = (
        rates.input * (row["input_tokens"] or 0)
        + rates.cache_write_5m * (row.get("cache_creation_5m_input_tokens") or 0)
        + rates.cache_write_1h * (row.get("cache_creation_1h_input_tokens") or 0)
        + rates.cache_read * (row["cache_read_input_tokens"] or 0)
    )
    return tokens / Decimal(1_000_000)


def job(
    sim: SimulatorProcess, inp: Path, out: Path, mode: str, head: str, concurrency: int
) -> RunConfig:
    settings = {
        "output": str(out),
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "template": head + "\n\nReview:\n{text}",
        "cache": mode,
        "concurrency": concurrency,
        "base_url": sim.base_url,
        "quiet": True,
    }
    return load_config(inp, settings, environ={"ANTHROPIC_API_KEY": "bench-key"})


def run_once(
    sim: SimulatorProcess, inp: Path, work: Path, mode: str, head: str, concurrency: int
) -> RunResult:
    out = work / f"out-{mode}-{uuid.uuid4().hex[:6]}.jsonl"
    config = job(sim, inp, out, mode, head, concurrency)
    first = json.loads(inp.read_text(encoding="utf-8").splitlines()[0])
    placed = prepare_request(first, config.defaults).prefix_key is not None
    start = time.perf_counter()
    summary = run(config)
    seconds = time.perf_counter() - start
    if summary.exit_code != 0:
        raise SystemExit(f"BENCHMARK BROKEN: the {mode} run ended with {summary.exit_code}")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return RunResult(
        mode=mode,
        seconds=seconds,
        rows_ok=sum(row["status"] == "ok" for row in rows),
        input_cost=sum((input_cost(row) for row in rows), Decimal(0)),
        writes=sum(bool(row["cache_creation_input_tokens"]) for row in rows),
        reads=sum(bool(row["cache_read_input_tokens"]) for row in rows),
        placed=placed,
    )


@dataclass(frozen=True)
class EstimateResult:
    estimated: float  # the estimate's median total: pilot paid + projected rest
    low: float  # its 10th and 90th percentiles
    high: float
    uncached: float  # the same median without caching
    pilot_paid: float
    billed: float  # every row of the output: the pilot's and the run's
    writes: int  # rows that paid a cache write, pilot and run
    estimated_writes: int  # cache writes the estimate counted for the rest of the run


def estimate_then_run(
    sim: SimulatorProcess, inp: Path, work: Path, head: str, concurrency: int, pilot: int
) -> EstimateResult:
    out = work / f"out-estimate-{uuid.uuid4().hex[:6]}.jsonl"
    config = job(sim, inp, out, "auto", head, concurrency)
    est = estimate(config, pilot=str(pilot))
    cached, uncached = est.total_cost(), est.total_cost(cached=False)
    if cached is None or uncached is None:
        raise SystemExit("BENCHMARK BROKEN: the pilot estimate has no cost")
    summary = run(config)
    if summary.exit_code != 0:
        raise SystemExit(f"BENCHMARK BROKEN: the run after the pilot ended {summary.exit_code}")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return EstimateResult(
        estimated=cached[1],
        low=cached[0],
        high=cached[2],
        uncached=uncached[1],
        pilot_paid=est.paid_usd,
        billed=sum(row["cost_usd"] or 0.0 for row in rows),
        writes=sum(bool(row["cache_creation_input_tokens"]) for row in rows),
        estimated_writes=sum(m.cache_writes for m in est.models.values()),
    )


def verdict(ok: bool, text: str, informational: bool) -> str:
    return f"  [{'info' if informational else ('PASS' if ok else 'FAIL')}] {text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small run; targets informational")
    args = parser.parse_args(argv)
    rows, concurrency = (200, 16) if args.quick else (2000, 64)
    print(versions_banner(), flush=True)
    lines: list[str] = []
    passed = True
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inp = write_rows(work / "rows.jsonl", rows)
        with SimulatorProcess(latency=LATENCY_S) as sim:
            for name, tokens in (("1: 6,000-token prefix", 6000), ("2: 2,000-token prefix", 2000)):
                # The same instruction for both modes: off sends no marks, so reads nothing.
                head = instruction(tokens)
                off = run_once(sim, inp, work, "off", head, concurrency)
                auto = run_once(sim, inp, work, "auto", head, concurrency)
                print(f"\nscenario {name}, {rows:,} rows, concurrency {concurrency}")
                print_table(
                    ["--cache", "rows ok", "input $", "writes", "reads", "wall s", "placed"],
                    [
                        [
                            r.mode,
                            f"{r.rows_ok}/{rows}",
                            f"{r.input_cost:.4f}",
                            r.writes,
                            r.reads,
                            r.seconds,
                            "yes" if r.placed else "no",
                        ]
                        for r in (off, auto)
                    ],
                )
                ratio = float(auto.input_cost / off.input_cost)
                wall = auto.seconds / off.seconds
                if tokens > 4096:
                    checks = [
                        (ratio <= 0.15, f"input cost auto / off = {ratio:.3f}x (target <= 0.15x)"),
                        (auto.writes <= 2, f"cache writes = {auto.writes} (target <= 2)"),
                        (wall <= 1.1, f"wall auto / off = {wall:.2f}x (target <= 1.1x)"),
                    ]
                else:
                    checks = [
                        (not auto.placed, "no breakpoint placed below the 4,096 minimum"),
                        (
                            auto.input_cost == off.input_cost,
                            f"input cost auto == off exactly ({ratio:.6f}x)",
                        ),
                    ]
                for ok, text in checks:
                    passed = passed and ok
                    lines.append(verdict(ok, f"scenario {name[:1]}: {text}", args.quick))
            head = instruction(6000)
            pilot = 20
            e = estimate_then_run(sim, inp, work, head, concurrency, pilot)
            print(f"\nscenario 4: estimate --pilot {pilot} of scenario 1's job, then the run")
            print_table(
                ["estimate $ (p50)", "10-90% $", "uncached $", "pilot $", "billed $", "writes"],
                [
                    [
                        f"{e.estimated:.4f}",
                        f"{e.low:.4f}-{e.high:.4f}",
                        f"{e.uncached:.4f}",
                        f"{e.pilot_paid:.4f}",
                        f"{e.billed:.4f}",
                        f"{e.writes} (estimated {e.estimated_writes} after the pilot)",
                    ]
                ],
            )
            accuracy = e.estimated / e.billed if e.billed else float("inf")
            ok = abs(accuracy - 1) <= 0.10
            passed = passed and ok
            lines.append(
                verdict(
                    ok,
                    f"scenario 4: estimate / billed = {accuracy:.3f}x (target 0.90-1.10x)",
                    args.quick,
                )
            )
    dedup_lines, dedup_passed = dedup_scenario(1000 if args.quick else 10_000, 64, args.quick)
    lines.extend(dedup_lines)
    passed = passed and dedup_passed
    print("\ntargets" + (" (quick run: targets not judged)" if args.quick else ""))
    print("\n".join(lines), flush=True)
    return 0 if passed or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
