"""``batchrun run --via auto --deadline D`` against the simulator (issue 28).

2,000 rows (``--rows``), online latency 0.2 s, each contender a real ``python -m batchrun run``
subprocess, timed from start to exit; the simulator runs in this process (a thread with its
own event loop: this process only waits meanwhile), so its own counts tell what it answered
and billed, online and in batches:

* ``online``  the same job ``--via online``: the baseline of time and cost.
* ``(a)``     batches end 15 s after creation, ``--deadline 90s``. Targets: done within 100 s,
              every row once and ok, >= 80% of the rows via batches, cost <= 0.6x online.
* ``(b)``     batches take 10 minutes, ``--deadline 45s``. Targets: done within 55 s, every
              row once and ok (the batch is cancelled; what it answered is kept, the rest
              goes online).

"Every row once" is checked twice: the output holds each input row once, ok, with its own
prompt's answer; and the simulator billed each prompt's answer once (its online 200s plus the
succeeded items of every batch). Each scenario starts from an empty output folder (no history
of earlier batches: the run measures its online pace with a pilot). ``--poll-interval 1`` is
given (the default is 10 s against the real API, where batches take minutes).

Run from the repository root (about 2-3 minutes)::

    python bench/deadline.py
    python bench/deadline.py --rows 500 --quick    # a smoke run; nothing judged

Exit code 0 when every target passes, 1 otherwise, 2 when a contender broke.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from _harness import API_KEY, MODEL, BenchError, make_prompts, versions_banner, write_prompts_jsonl

from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.simulator.batch_store import ListQuery

LATENCY_S = 0.2
MAX_TOKENS = 16
TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Outcome:
    name: str
    seconds: float
    rows: int
    ok: int
    via: Counter[str]
    cost_usd: float
    once_in_output: bool
    billed_once: bool
    summary: dict[str, Any]


def billed(sim: SimulatorThread) -> Counter[str]:
    """Answers the simulator billed, by the answer's leading tag (one per prompt)."""
    paid: Counter[str] = Counter(sim.stats.snapshot().answers_by_tag)
    store = sim.simulator.batches
    for batch in store.list_batches(ListQuery(limit=1000))["data"]:
        if batch["processing_status"] != "ended":
            raise BenchError(f"batch {batch['id']} was left {batch['processing_status']}")
        for line in store.results(batch["id"]).decode().splitlines():
            result = json.loads(line)["result"]
            if result["type"] == "succeeded":
                paid[result["message"]["content"][0]["text"].split()[0]] += 1
    return paid


def run_job(name: str, processing_s: float, flags: list[str], rows: int, work: Path) -> Outcome:
    folder = work / name
    folder.mkdir()
    inp = write_prompts_jsonl(folder / "in.jsonl", make_prompts(rows))
    out = folder / "out.parquet"
    config = SimulatorConfig(latency_mean=LATENCY_S, batch_processing_s=processing_s)
    with SimulatorThread(config) as sim:
        cmd = [sys.executable, "-m", "batchrun", "run", str(inp), "-o", str(out)]
        cmd += ["--base-url", sim.base_url, "--model", MODEL, "--max-tokens", str(MAX_TOKENS)]
        cmd += ["--poll-interval", "1", "--json", "-q", *flags]
        env = {**os.environ, "ANTHROPIC_API_KEY": API_KEY}
        started = time.perf_counter()
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise BenchError(f"{name}: exit {done.returncode}: {done.stderr[-2000:]}")
        paid = billed(sim)
    table = pq.read_table(out).to_pylist()
    ids = [r["id"] for r in table]
    # Each answer starts with its prompt's tag; every tag once means every prompt paid once.
    tags = Counter(r["text"].split()[0] for r in table if r["text"])
    return Outcome(
        name,
        seconds,
        len(table),
        sum(r["status"] == "ok" for r in table),
        Counter(r["via"] for r in table),
        sum(r["cost_usd"] or 0.0 for r in table),
        ids == [f"row-{i}" for i in range(rows)],
        paid == tags and len(tags) == rows and set(paid.values()) == {1},
        json.loads(done.stdout),
    )


def judged(label: str, passed: bool, figure: str) -> bool:
    print(f"  [{'PASS' if passed else 'FAIL'}] {label}: {figure}")
    return passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: nothing judged")
    args = parser.parse_args()
    print(versions_banner())
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-deadline-") as tmp:
        work = Path(tmp)
        try:
            online = run_job("online", 15.0, ["--via", "online"], args.rows, work)
            a = run_job("a", 15.0, ["--via", "auto", "--deadline", "90s"], args.rows, work)
            b = run_job("b", 600.0, ["--via", "auto", "--deadline", "45s"], args.rows, work)
        except (BenchError, subprocess.TimeoutExpired) as exc:
            print(f"bench: a contender broke: {exc}", file=sys.stderr)
            return 2
    print(f"load average after: {os.getloadavg()}")
    print(
        f"{'run':8} {'seconds':>8} {'rows':>6} {'ok':>6} {'batches':>8} {'online':>7} {'cost $':>9}"
    )
    for o in (online, a, b):
        print(
            f"{o.name:8} {o.seconds:8.1f} {o.rows:6,} {o.ok:6,} {o.via['batches']:8,} "
            f"{o.via['online']:7,} {o.cost_usd:9.4f}"
        )
        deadline = o.summary.get("deadline")
        if deadline:
            print(
                f"         deadline met: {deadline['met']}, {deadline['left_s']:.1f} s left; "
                f"plan: {deadline['plan']}"
            )
    if args.quick:
        return 0
    n = args.rows
    results = [
        judged("(a) done within 100 s", a.seconds <= 100, f"{a.seconds:.1f} s"),
        judged(
            "(a) every row once and ok",
            a.once_in_output and a.billed_once and a.ok == n,
            f"{a.ok:,}/{n:,} ok, billed once: {a.billed_once}",
        ),
        judged(
            "(a) >= 80% via batches",
            a.via["batches"] >= 0.8 * n,
            f"{a.via['batches'] / n:.1%}",
        ),
        judged(
            "(a) cost <= 0.6x all online",
            a.cost_usd <= 0.6 * online.cost_usd,
            f"{a.cost_usd / online.cost_usd:.3f}x (${a.cost_usd:.4f} / ${online.cost_usd:.4f})",
        ),
        judged("(b) done within 55 s", b.seconds <= 55, f"{b.seconds:.1f} s"),
        judged(
            "(b) every row once and ok",
            b.once_in_output and b.billed_once and b.ok == n,
            f"{b.ok:,}/{n:,} ok, billed once: {b.billed_once}",
        ),
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
