"""Throughput: batchrun against bare httpx and aiohttp loops and the official SDK, one server.

Measures rows per second, wall clock, of four contenders sending the same prompts to a local
server (a subprocess, so it has its own core and event loop):

* ``bare``     the minimum with batchrun's HTTP stack: one ``httpx.AsyncClient`` over
               ``httpx_aiohttp.AiohttpTransport`` (N connections), an ``asyncio.Semaphore(N)``,
               ``asyncio.gather`` over all rows, POST the body, ``response.json()``; nothing
               written anywhere.
* ``aiohttp``  the same loop on a bare ``aiohttp.ClientSession`` (N connections): the floor
               under httpx's own cost.
* ``batchrun`` ``batchrun.run()`` over a JSONL input, journal and final Parquet included (it is
               what a user gets), timed from ``load_config`` to the file being in place.
* ``sdk``      ``anthropic.AsyncAnthropic(max_retries=0)`` with a semaphore and ``gather`` over
               ``client.messages.create``: what a user would write instead.

Scenarios: (a) 10,000 rows, zero latency, concurrency 64 -- client overhead per request;
(b) 5,000 rows, 1 s latency, concurrency 512 -- keeping many slow requests in flight (ideal
512 rows/s). Contenders alternate order over ``--repeats`` rounds after one uncounted warm-up
round; the median per contender is reported, with ratios against the baselines measured in
this same run (never absolute thresholds: the machine is shared). Every contender must get
every row answered ok, or the benchmark fails loudly.

The server of (a) is ``bench/_canned_server.py`` (``--server canned``): every request answered
with the same Message, for a few microseconds of CPU. ``batchrun simulate`` (``--server
simulator``, the server of (b)) checks and builds every reply, about as much CPU as a bare
aiohttp client spends, so at zero latency it would measure itself; its CPU per row is printed
either way (``server CPU us/row``). ``--rate-limit-headers`` makes the canned server send the
API's ``anthropic-ratelimit-*`` headers, which every real answer carries.

Targets: (a) batchrun >= 0.9x bare, >= 0.4x aiohttp and >= 3x SDK; (b) batchrun >= 0.9x bare.
Exit code 0 when every target passes, 1 otherwise (or on a broken contender).

Run (from the repository root; the full run takes a few minutes)::

    python bench/throughput.py                    # both scenarios
    python bench/throughput.py --scenario a --repeats 5
    python bench/throughput.py --quick            # tiny smoke run; targets informational
    python bench/throughput.py --scenario a --contenders batchrun   # e.g. under cProfile
    python bench/throughput.py --scenario a --profile 25   # where batchrun's CPU goes
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
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
    canned_server,
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

import batchrun
from batchrun import load_config, run

MAX_TOKENS = 16
CONTENDERS = ("bare", "aiohttp", "batchrun", "sdk")
SERVERS = ("canned", "simulator")
BARE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Scenario:
    name: str
    rows: int
    latency: float
    concurrency: int
    repeats: int
    warmup_rows: int
    server: str  # "canned" (bench/_canned_server.py) or "simulator" (batchrun simulate)
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
        rows=10_000,
        latency=0.0,
        concurrency=64,
        repeats=5,
        warmup_rows=1000,
        server="canned",
        targets=(("batchrun", "bare", 0.9), ("batchrun", "aiohttp", 0.4), ("batchrun", "sdk", 3.0)),
    ),
    "b": Scenario(
        "b",
        rows=5000,
        latency=1.0,
        concurrency=512,
        repeats=3,
        warmup_rows=1024,
        server="simulator",
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


def aiohttp_loop(w: Workload) -> int:
    """The same minimal loop on a bare aiohttp session: what is left without httpx."""

    async def main() -> list[Any]:
        n = w.concurrency
        headers = {"x-api-key": API_KEY, "anthropic-version": API_VERSION}
        semaphore = asyncio.Semaphore(n)
        async with aiohttp.ClientSession(
            base_url=w.base_url,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=BARE_TIMEOUT_S),
            connector=aiohttp.TCPConnector(limit=n),
        ) as session:

            async def one(prompt: str) -> bool:
                async with (
                    semaphore,
                    session.post("/v1/messages", json=message_body(prompt, MAX_TOKENS)) as response,
                ):
                    data = await response.json()
                return response.status == 200 and data.get("type") == "message"

            return await asyncio.gather(*(one(p) for p in w.prompts), return_exceptions=True)

    return _count_ok("aiohttp", asyncio.run(main()), len(w.prompts))


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
    "aiohttp": aiohttp_loop,
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
        raise BenchError(f"the server died:\n{sim.stderr_text()}")
    m = measure(lambda: RUNNERS[name](w), sim=sim)
    if m.ok != expected:
        raise BenchError(f"{name}: {m.ok:,} of {expected:,} rows answered ok")
    check = CHECKS.get(name)
    if check is not None:
        check(w)
    return m


def start_server(scenario: Scenario, rate_limit_headers: bool) -> SimulatorProcess:
    if scenario.server == "canned":
        return canned_server(scenario.latency, rate_limit_headers)
    if rate_limit_headers:
        # The simulator sends them only for limits it enforces: these never bind.
        return SimulatorProcess(scenario.latency, extra=["--rpm", "100000000"])
    return SimulatorProcess(scenario.latency)


def profile_batchrun(w: Workload, sim: SimulatorProcess, expected: int, top: int) -> None:
    """One more round of batchrun alone, under cProfile (not counted): where its CPU goes.

    cProfile charges every Python call, so the figures are inflated evenly per call; the
    rankings are what they tell. Coroutines count a call per resumption."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        m = run_one("batchrun", w, sim, expected)
    finally:
        profiler.disable()
    print(
        f"\n-- cProfile of batchrun, {m.ok:,} rows (not counted): {m.rate():,.0f} rows/s profiled"
    )
    print(f"   client CPU {m.client_cpu_s / m.ok * 1e6:,.0f} us/row under the profiler")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(top)
        listing = out.getvalue()
        print(listing[listing.find("   ncalls") :].rstrip(), flush=True)
    print_own_time_by_package(pstats.Stats(profiler))


# Where a function's own time is charged: batchrun's own files, or the installed package its
# file is in (httpx, httpx_aiohttp, aiohttp, ...), or the standard library's (asyncio, json,
# "stdlib" for the rest), or a built-in function: the wait for the network (epoll, which
# cProfile counts as time) apart from the others (socket calls, the JSON codec's C part...).
BATCHRUN_DIR = Path(batchrun.__file__).resolve().parent
BENCH_DIR = Path(__file__).resolve().parent
STDLIB_DIR = Path(json.__file__).resolve().parent.parent


def package_of(filename: str, function: str) -> str:
    if filename == "~" or filename.startswith("<"):
        return "(waiting: epoll)" if "epoll" in function else "(built-ins)"
    path = Path(filename).resolve()
    if path.is_relative_to(BATCHRUN_DIR):
        return "batchrun"
    if path.is_relative_to(BENCH_DIR):
        return "bench"
    parts = path.parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].split(".")[0]
    if path.is_relative_to(STDLIB_DIR):
        inner = path.relative_to(STDLIB_DIR).parts
        return inner[0] if len(inner) > 1 and inner[0] in ("asyncio", "json") else "stdlib"
    return "other"


def print_own_time_by_package(stats: pstats.Stats) -> None:
    """Own (not cumulative) time summed by the package a function lives in: what of the run
    is batchrun's own work and what its HTTP stack's (httpx, the adapter, aiohttp)."""
    own: dict[str, float] = {}
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _, function), (_, _, tottime, _, _) in entries.items():
        package = package_of(filename, function)
        own[package] = own.get(package, 0.0) + tottime
    total = sum(own.values()) or 1.0
    print("\n   own time by package (cProfile):")
    for package, seconds in sorted(own.items(), key=lambda item: -item[1]):
        print(f"   {package:>14}  {seconds:7.2f} s  {seconds / total:6.1%}")


def run_scenario(
    scenario: Scenario,
    contenders: Sequence[str],
    workdir: Path,
    warmup: bool,
    *,
    rate_limit_headers: bool = False,
    profile: int = 0,
) -> ScenarioResult:
    print(
        f"\n== scenario {scenario.name}: {scenario.title}, {scenario.repeats} round(s)"
        + (" + warm-up" if warmup else ""),
        flush=True,
    )
    prompts = make_prompts(scenario.rows)
    input_path = write_prompts_jsonl(workdir / f"input-{scenario.name}.jsonl", prompts)
    rounds: dict[str, list[Measurement]] = {name: [] for name in contenders}
    with start_server(scenario, rate_limit_headers) as sim:
        headers = ", rate-limit headers" if rate_limit_headers else ""
        print(f"server: {scenario.server}{headers}, {sim.base_url}", flush=True)
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
        if profile and "batchrun" in contenders:
            w = Workload(sim.base_url, prompts, input_path, scenario.concurrency, workdir, "prof")
            profile_batchrun(w, sim, len(prompts), profile)

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
    print(
        f"\nscenario {s.name}: {s.title}, server: {s.server}"
        + (" (quick)" if informational else "")
    )
    ideal = s.ideal_rate
    headers = ["contender", "rows/s (median)", "min", "max", "s/round"]
    headers += ["% of ideal"] if ideal else []
    headers += ["client CPU us/row", "server CPU us/row", "rows ok"]
    rows = []
    for name, ms in result.rounds.items():
        rates = [m.rate() for m in ms]
        secs = median([m.seconds for m in ms])
        sim_cpu = [m.sim_cpu_s / m.ok * 1e6 for m in ms if m.sim_cpu_s is not None and m.ok]
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
        for base in ("bare", "aiohttp", "sdk"):
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
        help="comma-separated subset of bare,aiohttp,batchrun,sdk (default: all four)",
    )
    parser.add_argument(
        "--server",
        choices=SERVERS,
        help="canned: bench/_canned_server.py, a few us of CPU a request; simulator: batchrun "
        "simulate, which checks and builds every reply (default: canned for a, simulator for b)",
    )
    parser.add_argument(
        "--rate-limit-headers",
        action="store_true",
        help="the server sends the API's anthropic-ratelimit-* headers (limits never reached)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="after the rounds, one uncounted batchrun round under cProfile: print the top N "
        "functions by own and by cumulative time",
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
        if args.server is not None:
            s = replace(s, server=args.server)
        scenarios.append(s)

    quick_note = " (quick: targets informational)" if args.quick else ""
    print(f"batchrun throughput benchmark{quick_note}")
    print(versions_banner(), flush=True)
    results = []
    try:
        with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="bench-tp-") as tmp:
            for s in scenarios:
                results.append(
                    run_scenario(
                        s,
                        args.contenders,
                        Path(tmp),
                        not args.no_warmup,
                        rate_limit_headers=args.rate_limit_headers,
                        profile=args.profile,
                    )
                )
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
