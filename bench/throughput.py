"""Throughput: batchrun against a bare httpx loop and the official SDK, on the same simulator.

Measures rows per second, wall clock, of three contenders sending the same prompts to a local
``batchrun simulate`` server (a subprocess, so it has its own core and event loop):

* ``bare``     the minimum: one ``httpx.AsyncClient`` over ``httpx_aiohttp.AiohttpTransport``
               (N connections), an ``asyncio.Semaphore(N)``, ``asyncio.gather`` over all rows,
               POST the body, ``response.json()``; nothing written anywhere.
* ``batchrun`` ``batchrun.run()`` over a JSONL input, journal and final Parquet included (it is
               what a user gets), timed from ``load_config`` to the file being in place.
* ``sdk``      ``anthropic.AsyncAnthropic(max_retries=0)`` with a semaphore and ``gather`` over
               ``client.messages.create``: what a user would write instead.

Scenarios: (a) 5,000 rows, zero latency, concurrency 64 -- client overhead per request;
(b) 5,000 rows, 1 s latency, concurrency 512 -- keeping many slow requests in flight (ideal
512 rows/s). Contenders alternate order over ``--repeats`` rounds after one uncounted warm-up
round; the median per contender is reported, with ratios against the baselines measured in
this same run (never absolute thresholds: the machine is shared). Every contender must get
every row answered ok, or the benchmark fails loudly.

Targets: (a) batchrun >= 0.85x bare and >= 3x SDK; (b) batchrun >= 0.9x bare.
Exit code 0 when every target passes, 1 otherwise (or on a broken contender).

Run (from the repository root; the full run takes a few minutes)::

    python bench/throughput.py                    # both scenarios
    python bench/throughput.py --scenario a --repeats 5
    python bench/throughput.py --quick            # tiny smoke run; targets informational
    python bench/throughput.py --scenario a --contenders batchrun   # e.g. under cProfile
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pyarrow.parquet as pq
from _harness import (
    API_KEY,
    API_VERSION,
    MODEL,
    BenchError,
    Measurement,
    SimulatorProcess,
    Target,
    make_prompts,
    measure,
    median,
    message_body,
    print_table,
    rotated,
    sigterm_as_interrupt,
    versions_banner,
    write_prompts_jsonl,
)
from httpx_aiohttp import AiohttpTransport

from batchrun import load_config, run

MAX_TOKENS = 16
CONTENDERS = ("bare", "batchrun", "sdk")
BARE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Scenario:
    name: str
    rows: int
    latency: float
    concurrency: int
    repeats: int
    warmup_rows: int
    # (numerator, denominator, minimum ratio)
    targets: tuple[tuple[str, str, float], ...] = field(default=())

    @property
    def title(self) -> str:
        latency = f"{self.latency:g} s latency" if self.latency else "zero latency"
        return f"{self.rows:,} rows, {latency}, concurrency {self.concurrency}"

    @property
    def ideal_rate(self) -> float | None:
        return self.concurrency / self.latency if self.latency > 0 else None


SCENARIOS = {
    "a": Scenario(
        "a",
        rows=5000,
        latency=0.0,
        concurrency=64,
        repeats=5,
        warmup_rows=1000,
        targets=(("batchrun", "bare", 0.85), ("batchrun", "sdk", 3.0)),
    ),
    "b": Scenario(
        "b",
        rows=5000,
        latency=1.0,
        concurrency=512,
        repeats=3,
        warmup_rows=1024,
        targets=(("batchrun", "bare", 0.9),),
    ),
}

QUICK = {
    "a": replace(SCENARIOS["a"], rows=200, concurrency=16, repeats=1, warmup_rows=50),
    "b": replace(SCENARIOS["b"], rows=200, latency=0.1, concurrency=64, repeats=1, warmup_rows=64),
}


# --------------------------------------------------------------------------- contenders


@dataclass
class Workload:
    """What every contender of one round gets: the server, the prompts, a scratch folder."""

    base_url: str
    prompts: list[str]
    input_path: Path
    concurrency: int
    workdir: Path
    label: str  # names this round's output files


def _count_ok(kind: str, results: Sequence[object], expected: int) -> int:
    """Rows answered ok; raises BenchError with the first failure if any row was lost."""
    ok = sum(1 for r in results if r is True)
    if ok != expected:
        failures = [r for r in results if r is not True]
        raise BenchError(
            f"{kind}: only {ok:,} of {expected:,} rows answered ok; "
            f"{len(failures):,} failed, first: {failures[0]!r}"
        )
    return ok


def bare_loop(w: Workload) -> int:
    """The minimal loop: semaphore + gather over one httpx client on the aiohttp transport."""

    async def main() -> list[Any]:
        n = w.concurrency
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        headers = {"x-api-key": API_KEY, "anthropic-version": API_VERSION}
        semaphore = asyncio.Semaphore(n)
        async with httpx.AsyncClient(
            base_url=w.base_url,
            headers=headers,
            timeout=BARE_TIMEOUT_S,
            transport=AiohttpTransport(limits=limits),
        ) as client:

            async def one(prompt: str) -> bool:
                async with semaphore:
                    response = await client.post(
                        "/v1/messages", json=message_body(prompt, MAX_TOKENS)
                    )
                    data = response.json()
                return response.status_code == 200 and data.get("type") == "message"

            return await asyncio.gather(*(one(p) for p in w.prompts), return_exceptions=True)

    return _count_ok("bare", asyncio.run(main()), len(w.prompts))


def batchrun_run(w: Workload) -> int:
    """The library, as a user calls it: JSONL in, journal while running, Parquet out."""
    output = w.workdir / f"batchrun-{w.label}.parquet"
    config = load_config(
        w.input_path,
        {
            "output": str(output),
            "model": MODEL,
            "max_tokens": MAX_TOKENS,
            "concurrency": w.concurrency,
            "base_url": w.base_url,
            "quiet": True,
            "overwrite": True,
        },
        environ={"ANTHROPIC_API_KEY": API_KEY},
    )
    summary = run(config)
    if getattr(summary, "interrupted", None):  # run() took our Ctrl-C / SIGTERM gracefully
        raise KeyboardInterrupt
    final = summary.final
    if final is None or final.ok != len(w.prompts) or summary.ok != len(w.prompts):
        raise BenchError(
            f"batchrun: {summary.ok:,} of {len(w.prompts):,} rows ok this run "
            f"(final: {final}); errors: {dict(summary.error_types)}"
        )
    return final.ok


def check_batchrun_output(w: Workload) -> None:
    """Outside the timing: the Parquet file really holds one ok row per prompt."""
    output = w.workdir / f"batchrun-{w.label}.parquet"
    table = pq.read_table(output, columns=["id", "status"])
    ok = sum(1 for s in table.column("status").to_pylist() if s == "ok")
    if table.num_rows != len(w.prompts) or ok != len(w.prompts):
        raise BenchError(
            f"batchrun: {output} has {table.num_rows:,} rows, {ok:,} ok; "
            f"expected {len(w.prompts):,} ok"
        )
    output.unlink()


def sdk_loop(w: Workload) -> int:
    """What a user would write instead: the official SDK, a semaphore and gather."""

    async def main() -> list[Any]:
        client = anthropic.AsyncAnthropic(api_key=API_KEY, base_url=w.base_url, max_retries=0)
        semaphore = asyncio.Semaphore(w.concurrency)

        async def one(prompt: str) -> bool:
            async with semaphore:
                message = await client.messages.create(
                    model=MODEL,
                    max_tokens=MAX_TOKENS,
                    messages=[{"role": "user", "content": prompt}],
                )
            return message.type == "message" and bool(message.content)

        try:
            return await asyncio.gather(*(one(p) for p in w.prompts), return_exceptions=True)
        finally:
            await client.close()

    return _count_ok("sdk", asyncio.run(main()), len(w.prompts))


RUNNERS: dict[str, Callable[[Workload], int]] = {
    "bare": bare_loop,
    "batchrun": batchrun_run,
    "sdk": sdk_loop,
}
CHECKS: dict[str, Callable[[Workload], None]] = {"batchrun": check_batchrun_output}


# --------------------------------------------------------------------------- the run


@dataclass
class ScenarioResult:
    scenario: Scenario
    rounds: dict[str, list[Measurement]]
    targets: list[Target]


def run_one(name: str, w: Workload, sim: SimulatorProcess, expected: int) -> Measurement:
    if not sim.alive():
        raise BenchError(f"the simulator died:\n{sim.stderr_text()}")
    m = measure(lambda: RUNNERS[name](w), sim=sim)
    if m.ok != expected:
        raise BenchError(f"{name}: {m.ok:,} of {expected:,} rows answered ok")
    check = CHECKS.get(name)
    if check is not None:
        check(w)
    return m


def run_scenario(
    scenario: Scenario, contenders: Sequence[str], workdir: Path, warmup: bool
) -> ScenarioResult:
    print(
        f"\n== scenario {scenario.name}: {scenario.title}, {scenario.repeats} round(s)"
        + (" + warm-up" if warmup else ""),
        flush=True,
    )
    prompts = make_prompts(scenario.rows)
    input_path = write_prompts_jsonl(workdir / f"input-{scenario.name}.jsonl", prompts)
    rounds: dict[str, list[Measurement]] = {name: [] for name in contenders}
    with SimulatorProcess(latency=scenario.latency) as sim:
        print(f"simulator {sim.base_url}", flush=True)
        if warmup:
            few = prompts[: scenario.warmup_rows]
            warm_input = write_prompts_jsonl(workdir / f"warmup-{scenario.name}.jsonl", few)
            w = Workload(sim.base_url, few, warm_input, scenario.concurrency, workdir, "warmup")
            shown = []
            for name in contenders:
                m = run_one(name, w, sim, len(few))
                shown.append(f"{name} {m.rate():,.0f}")
            print(f"  warm-up ({len(few):,} rows, not counted): " + "  ".join(shown), flush=True)
        for r in range(scenario.repeats):
            w = Workload(sim.base_url, prompts, input_path, scenario.concurrency, workdir, f"r{r}")
            shown = []
            for name in rotated(contenders, r):
                m = run_one(name, w, sim, len(prompts))
                rounds[name].append(m)
                shown.append(f"{name} {m.rate():,.0f}")
            print(f"  round {r + 1}/{scenario.repeats} rows/s: " + "  ".join(shown), flush=True)

    # Judged on the median of per-round ratios: the contenders of one round run back to back
    # on the same server, so their ratio cancels the load drift of a shared machine, which a
    # ratio of overall medians does not. Both are printed.
    targets = [
        Target(
            f"batchrun / {den}" if num == "batchrun" else f"{num} / {den}",
            median([a.rate() / b.rate() for a, b in zip(rounds[num], rounds[den], strict=True)]),
            minimum,
        )
        for num, den, minimum in scenario.targets
        if rounds.get(num) and rounds.get(den)
    ]
    return ScenarioResult(scenario, rounds, targets)


def report(result: ScenarioResult, informational: bool) -> None:
    s = result.scenario
    print(f"\nscenario {s.name}: {s.title}" + (" (quick)" if informational else ""))
    ideal = s.ideal_rate
    headers = ["contender", "rows/s (median)", "min", "max", "s/round"]
    headers += ["% of ideal"] if ideal else []
    headers += ["client CPU us/row", "sim CPU %", "rows ok"]
    rows = []
    for name, ms in result.rounds.items():
        rates = [m.rate() for m in ms]
        secs = median([m.seconds for m in ms])
        sim_cpu = [m.sim_cpu_s / m.seconds * 100 for m in ms if m.sim_cpu_s is not None]
        row: list[object] = [name, median(rates), min(rates), max(rates), secs]
        row += [median(rates) / ideal * 100] if ideal else []
        row += [
            median([m.client_cpu_s / m.ok * 1e6 for m in ms]),
            median(sim_cpu) if sim_cpu else None,
            f"{ms[-1].ok:,}/{s.rows:,}",
        ]
        rows.append(row)
    print_table(headers, rows)
    rate = {name: median([m.rate() for m in ms]) for name, ms in result.rounds.items()}
    if "batchrun" in rate:
        for base in ("bare", "sdk"):
            if rate.get(base):
                # Rounds are paired (same server, back to back): their ratios show the noise.
                paired = [
                    b.rate() / o.rate()
                    for b, o in zip(result.rounds["batchrun"], result.rounds[base], strict=True)
                ]
                print(
                    f"  batchrun / {base}: median of per-round ratios {median(paired):.2f}x, "
                    f"ratio of medians {rate['batchrun'] / rate[base]:.2f}x "
                    f"(per round: {' '.join(f'{x:.2f}' for x in paired)})"
                )
    if ideal:
        print(f"  ideal rate (concurrency / latency): {ideal:,.0f} rows/s")
    for target in result.targets:
        print(target.line(informational))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput of batchrun vs a bare httpx loop vs the official SDK."
    )
    parser.add_argument(
        "--scenario",
        choices=("a", "b", "all"),
        default="all",
        help="a: zero latency, concurrency 64; b: 1 s latency, concurrency 512 (default: all)",
    )
    parser.add_argument("--rows", type=int, help="rows per round (default: per scenario)")
    parser.add_argument("--repeats", type=int, help="counted rounds (default: 3 for a, 2 for b)")
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help="comma-separated subset of bare,batchrun,sdk (default: all three)",
    )
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up round")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny smoke run (200 rows, short latency); targets are informational",
    )
    args = parser.parse_args(argv)
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(contenders) - set(CONTENDERS))
    if unknown or not contenders:
        parser.error(f"--contenders: unknown {unknown}; choose from {', '.join(CONTENDERS)}")
    args.contenders = [c for c in CONTENDERS if c in contenders]
    if args.rows is not None and args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    table = QUICK if args.quick else SCENARIOS
    names = ["a", "b"] if args.scenario == "all" else [args.scenario]
    scenarios = []
    for name in names:
        s = table[name]
        if args.rows is not None:
            s = replace(s, rows=args.rows, warmup_rows=min(s.warmup_rows, args.rows))
        if args.repeats is not None:
            s = replace(s, repeats=args.repeats)
        scenarios.append(s)

    quick_note = " (quick: targets informational)" if args.quick else ""
    print(f"batchrun throughput benchmark{quick_note}")
    print(versions_banner(), flush=True)
    results = []
    try:
        with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="bench-tp-") as tmp:
            for s in scenarios:
                results.append(run_scenario(s, args.contenders, Path(tmp), not args.no_warmup))
    except BenchError as exc:
        print(f"\nBENCHMARK BROKEN: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130

    print("\n================ results ================")
    for result in results:
        report(result, informational=args.quick)
    targets = [t for r in results for t in r.targets]
    failed = [t for t in targets if not t.passed]
    if args.quick:
        print("\nquick run: targets not judged")
        return 0
    if not targets:
        print("\nno targets judged (a baseline was left out)")
        return 0
    print(
        f"\n{len(targets) - len(failed)}/{len(targets)} targets PASS"
        + ("" if not failed else "; FAIL: " + ", ".join(t.label for t in failed))
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
