"""The answer cache across jobs (issue 28): what a second job sharing ``--answer-cache`` costs.

Against the simulator (online latency 0.2 s), one cache folder shared by four jobs:

1. job A: 300 rows into out-a (the cache empty): sends 300, fills the cache;
2. job B: the same 300 rows with 30 prompts changed and 50 rows added, into out-b, the same
   cache: target 80 requests sent (30 changed + 50 new), every row ok with its own prompt's
   answer, the 270 others marked ``cached_from`` and costing 0;
3. job B again without the cache (into out-b-nocache): the baseline B would cost;
4. job A's rows on another model (claude-sonnet-4-6), the same cache: target all 300 sent
   (another request is another answer).

Printed: requests, rows from the cache, billed cost and wall time of each job, and the ratios
B-with-cache / B-without (cost, wall) and B / A. Ratios are between runs of this same
invocation, never absolute figures. Exit code 0 when every target holds.

    python bench/answer_cache.py
    python bench/answer_cache.py --quick     # latency 0.02 s
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import MODEL, print_table, versions_banner

from batchrun import load_config, run
from batchrun.simulator import SimulatorConfig, SimulatorThread

ROWS, CHANGED, ADDED = 300, 30, 50
OTHER_MODEL = "claude-sonnet-4-6"


@dataclass(frozen=True)
class Job:
    name: str
    sent: int
    rows: int
    right: int  # ok rows whose answer is their own prompt's (the simulator's tag)
    cached: int  # rows with cached_from set, all at cost 0
    cost: float
    seconds: float


def tag(prompt: str) -> str:
    return "re:" + hashlib.sha256(prompt.encode()).hexdigest()[:8]


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def job(
    sim: SimulatorThread, name: str, inp: Path, out: Path, cache: Path | None, model: str
) -> Job:
    settings: dict[str, Any] = {
        "output": str(out),
        "model": model,
        "max_tokens": 16,
        "concurrency": 32,
        "base_url": sim.base_url,
        "quiet": True,
    }
    if cache is not None:
        settings["answer_cache"] = str(cache)
    config = load_config(inp, settings, environ={"ANTHROPIC_API_KEY": "bench-key"})
    sim.stats.reset()
    start = time.perf_counter()
    summary = run(config)
    seconds = time.perf_counter() - start
    if summary.exit_code != 0:
        raise SystemExit(f"BENCHMARK BROKEN: {name} ended with {summary.exit_code}")
    given = [json.loads(line) for line in inp.read_text(encoding="utf-8").splitlines()]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return Job(
        name=name,
        sent=sim.stats.requests,
        rows=len(rows),
        right=sum(
            r["status"] == "ok" and (r["text"] or "").startswith(tag(g["prompt"]))
            for r, g in zip(rows, given, strict=True)
        ),
        cached=sum(r["cached_from"] is not None and r["cost_usd"] == 0 for r in rows),
        cost=sum(r["cost_usd"] or 0.0 for r in rows),
        seconds=seconds,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="latency 0.02 s instead of 0.2 s")
    args = parser.parse_args()
    latency = 0.02 if args.quick else 0.2
    print(versions_banner())
    first = [
        {"id": f"r{i}", "prompt": f"Label review {i}: the parcel came late."} for i in range(ROWS)
    ]
    second = [
        {**row, "prompt": f"Label review {i} (edited): the parcel came late."}
        if i < CHANGED
        else row
        for i, row in enumerate(first)
    ]
    second += [{"id": f"n{i}", "prompt": f"Label new review {i}: it works."} for i in range(ADDED)]
    with (
        tempfile.TemporaryDirectory(prefix="bench-answer-cache-") as tmp,
        SimulatorThread(SimulatorConfig(latency_mean=latency, latency_jitter=0.0)) as sim,
    ):
        work = Path(tmp)
        cache = work / "answers"
        a_in, b_in = write(work / "a.jsonl", first), write(work / "b.jsonl", second)
        a = job(sim, "A (cache empty)", a_in, work / "out-a.jsonl", cache, MODEL)
        b = job(sim, "B (30 changed, 50 added)", b_in, work / "out-b.jsonl", cache, MODEL)
        b0 = job(sim, "B without the cache", b_in, work / "out-b-nocache.jsonl", None, MODEL)
        other = job(sim, f"A on {OTHER_MODEL}", a_in, work / "out-other.jsonl", cache, OTHER_MODEL)
    jobs = (a, b, b0, other)
    print_table(
        ["job", "rows", "sent", "from cache", "right", "cost $", "wall s"],
        [
            [j.name, j.rows, j.sent, j.cached, j.right, f"{j.cost:.6f}", f"{j.seconds:.2f}"]
            for j in jobs
        ],
    )
    print(
        f"B with the cache / without: cost {b.cost / b0.cost:.2f}x, "
        f"wall {b.seconds / b0.seconds:.2f}x"
    )
    print(f"B / A: cost {b.cost / a.cost:.2f}x, wall {b.seconds / a.seconds:.2f}x")
    targets = {
        f"B sends {CHANGED + ADDED} requests": b.sent == CHANGED + ADDED,
        f"B fills {ROWS - CHANGED} rows from the cache at cost 0": b.cached == ROWS - CHANGED,
        f"another model sends all {ROWS}": other.sent == ROWS and other.cached == 0,
        "every row of every job is ok with its own prompt's answer": all(
            j.right == j.rows for j in jobs
        ),
    }
    for label, held in targets.items():
        print(f"  [{'PASS' if held else 'FAIL'}] {label}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
