"""Faults without a rate limit, and a run that starts above one: batchrun against the SDK.

Two measurements, each against its own freshly started simulator (a subprocess; this file's
``serve`` mode runs it, so that its counters can be read while and after a contender runs):

1. **fault mix** (issue 18). The simulator answers 5 % 529, 3 % 500, 3 % 429 (retry-after 1)
   and resets 2 % of connections, at random, with no rate limit behind them; 2,000 rows at
   concurrency 32. Contenders, in the same run:

   * ``batchrun``  ``batchrun.run()``, concurrency 32, ``max_retries`` 10;
   * ``sdk``       ``anthropic.AsyncAnthropic(max_retries=10)`` with an ``asyncio.Semaphore(32)``
                   and ``gather``: what users write instead, and the baseline;
   * ``httpx``     a bare httpx loop with a semaphore and the usual retry rule (retry-after,
                   else 0.5 s doubling), for scale.

   Targets: batchrun's wall time <= 1.25x the SDK's; every row ok; nothing billed twice (no
   prompt answered 200 more than once, from the simulator's counters).

2. **drained** (issue 18). The simulator enforces 1,200 RPM and its bucket is emptied by
   another client just before batchrun starts with concurrency 64, no limits configured (it
   learns them from the headers) and, second, with ``--rpm`` configured (it does not know the
   bucket is empty). Target: after the first 10 s, <= 2 % of the requests answered 429.

Run from the repository root (about two minutes)::

    python bench/faults.py
    python bench/faults.py --only mix --rows 2000
    python bench/faults.py --only drained
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
from _harness import (
    API_KEY,
    API_VERSION,
    MODEL,
    BenchError,
    make_prompts,
    message_body,
    print_table,
    sigterm_as_interrupt,
    versions_banner,
    write_prompts_jsonl,
)

from batchrun import load_config, run

FAULT_MIX = {"529": 0.05, "500": 0.03, "429": 0.03, "reset": 0.02}
MAX_RETRIES = 10
LATENCY_S = 0.1
JITTER_S = 0.05
MAX_TOKENS = 16
MIX_TARGET = 1.25  # batchrun's wall time / the SDK's, at most

DRAINED_RPM = 1_200
DRAINED_ROWS = 800
DRAINED_CONCURRENCY = 64
DRAINED_LATENCY_S = 0.5
DRAINED_JITTER_S = 0.25
DRAINED_AFTER_S = 10.0  # 429s are counted from this long after the start
DRAINED_CEILING = 0.02
STATS_EVERY_S = 0.25
DRAIN_CONNECTIONS = 400


# --------------------------------------------------------------------------- simulator process


class StatsSimulator:
    """This file's ``serve`` mode in a subprocess: a simulator whose counters can be read.

    The child prints its URL, then answers every line on its stdin with one line of JSON
    (``counters()``); it exits when its stdin closes.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        self._settings = settings
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self.base_url = ""

    def __enter__(self) -> StatsSimulator:
        cmd = [sys.executable, __file__, "serve", json.dumps(self._settings)]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        assert self._proc.stdout is not None
        self.base_url = self._proc.stdout.readline().strip()
        if not self.base_url.startswith("http://127.0.0.1:"):
            self.__exit__(None, None, None)
            raise BenchError(f"simulator did not start: {self.base_url!r}")
        return self

    def counters(self) -> dict[str, Any]:
        with self._lock:
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("stats\n")
            proc.stdin.flush()
            return json.loads(proc.stdout.readline())  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def serve(settings_json: str) -> int:
    """The child: a simulator thread, its URL on stdout, its counters on request."""
    from batchrun.simulator import SimulatorConfig, SimulatorThread

    settings = json.loads(settings_json)
    with SimulatorThread(SimulatorConfig(**settings)) as sim:
        print(sim.base_url, flush=True)
        for _ in sys.stdin:
            stats = sim.stats.snapshot()
            billed = stats.answers_by_tag.values()
            counters = {
                "requests": stats.requests,
                "answered_ok": stats.answered_ok,
                "billed_twice": sum(1 for n in billed if n > 1),
                "by_status": {str(k): v for k, v in stats.by_status.items()},
                "faults": dict(stats.faults),
                "rate_limited": stats.rate_limited,
                "max_in_flight": stats.max_in_flight,
            }
            print(json.dumps(counters), flush=True)
    return 0


# --------------------------------------------------------------------------- contenders


@dataclass
class Result:
    name: str
    seconds: float
    ok: int
    counters: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return int(self.counters.get("requests", 0))


def batchrun_rows(
    url: str, inp: Path, concurrency: int, summary: dict[str, Any], **flags: Any
) -> int:
    out = inp.with_name("batchrun.parquet")
    settings: dict[str, Any] = {
        "output": str(out),
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "concurrency": concurrency,
        "max_retries": MAX_RETRIES,
        "base_url": url,
        "quiet": True,
        "overwrite": True,
        **flags,
    }
    config = load_config(inp, settings, environ={"ANTHROPIC_API_KEY": API_KEY})
    tally = run(config)
    out.unlink(missing_ok=True)
    summary.update(
        retries=tally.retries,
        answered_429=tally.rate_limited_429s,
        pauses_bucket_empty=tally.rate_pauses,
        # getattr: the same bench measures the code before issue 18, which lacks these.
        retried_alone=getattr(tally, "rate_429s_retried", None),
        slowdowns=getattr(tally, "rate_slowdowns", None),
    )
    return tally.ok


def sdk_rows(url: str, prompts: Sequence[str], concurrency: int) -> int:
    async def main() -> list[Any]:
        http = anthropic.DefaultAsyncHttpxClient(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        )
        client = anthropic.AsyncAnthropic(
            api_key=API_KEY, base_url=url, max_retries=MAX_RETRIES, http_client=http
        )
        semaphore = asyncio.Semaphore(concurrency)

        async def one(prompt: str) -> str:
            async with semaphore:
                message = await client.messages.create(
                    model=MODEL,
                    max_tokens=MAX_TOKENS,
                    messages=[{"role": "user", "content": prompt}],
                )
            return message.id

        try:
            return await asyncio.gather(*(one(p) for p in prompts), return_exceptions=True)
        finally:
            await client.close()

    return sum(isinstance(r, str) for r in asyncio.run(main()))


def httpx_rows(url: str, prompts: Sequence[str], concurrency: int) -> int:
    """A bare loop: retry 429/5xx/529 and dropped connections, retry-after else backoff."""
    headers = {"x-api-key": API_KEY, "anthropic-version": API_VERSION}

    async def main() -> list[Any]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as http:
            semaphore = asyncio.Semaphore(concurrency)

            async def one(prompt: str) -> bool:
                async with semaphore:
                    for attempt in range(MAX_RETRIES + 1):
                        try:
                            r = await http.post("/v1/messages", json=message_body(prompt))
                        except httpx.TransportError:
                            wait = 0.5 * 2**attempt
                        else:
                            if r.status_code == 200:
                                return True
                            if r.status_code not in (429, 500, 529):
                                return False
                            after = r.headers.get("retry-after")
                            wait = float(after) if after else 0.5 * 2**attempt
                        await asyncio.sleep(min(wait, 8.0) * (1 - 0.25 * random.random()))
                return False

            return await asyncio.gather(*(one(p) for p in prompts), return_exceptions=True)

    return sum(r is True for r in asyncio.run(main()))


def contend(name: str, url: str, inp: Path, concurrency: int, summary: dict[str, Any]) -> int:
    """One contender's rows answered ok, for the prompts of ``inp``."""
    prompts = [json.loads(line)["prompt"] for line in inp.read_text().splitlines()]
    if name == "batchrun":
        return batchrun_rows(url, inp, concurrency, summary)
    if name == "sdk":
        return sdk_rows(url, prompts, concurrency)
    return httpx_rows(url, prompts, concurrency)


def timed(name: str, sim: StatsSimulator, call: Callable[[], int]) -> Result:
    started = time.perf_counter()
    ok = call()
    seconds = time.perf_counter() - started
    return Result(name, seconds, ok, sim.counters())


# --------------------------------------------------------------------------- 1. fault mix


def mix_settings(seed: int) -> dict[str, Any]:
    return {
        "latency_mean": LATENCY_S,
        "latency_jitter": JITTER_S,
        "error_rates": FAULT_MIX,
        "retry_after": 1.0,
        "seed": seed,
    }


def fault_mix(rows: int, concurrency: int, contenders: Sequence[str], tmp: Path) -> list[str]:
    prompts = make_prompts(rows)
    inp = write_prompts_jsonl(tmp / "mix.jsonl", prompts)
    results: list[Result] = []
    for name in contenders:
        print(f"  {name} ...", end="", flush=True)
        with StatsSimulator(mix_settings(seed=18)) as sim:
            summary: dict[str, Any] = {}
            call = functools.partial(contend, name, sim.base_url, inp, concurrency, summary)
            result = timed(name, sim, call)
            result.summary = summary
        results.append(result)
        print(f" {result.seconds:.1f} s, {result.ok:,} ok", flush=True)
    rates = ", ".join(f"{v:.0%} {k}" for k, v in FAULT_MIX.items())
    print(
        f"\nfault mix: {rates}, retry-after 1 s, no rate limit; {rows:,} rows, "
        f"concurrency {concurrency}, latency {LATENCY_S:g} ± {JITTER_S:g} s"
    )
    headers = ["contender", "wall s", "rows ok", "requests", "429s", "billed twice", "x sdk"]
    sdk = next((r for r in results if r.name == "sdk"), None)
    table = [
        [
            r.name,
            r.seconds,
            r.ok,
            r.requests,
            r.counters.get("by_status", {}).get("429", 0),
            r.counters.get("billed_twice"),
            f"{r.seconds / sdk.seconds:.2f}" if sdk else "-",
        ]
        for r in results
    ]
    print_table(headers, table)
    mine = next((r for r in results if r.name == "batchrun"), None)
    failed: list[str] = []
    if mine is not None:
        print(f"  batchrun summary: {mine.summary}")
        if sdk is not None:
            ratio = mine.seconds / sdk.seconds
            passed = ratio <= MIX_TARGET
            print(
                f"  [{'PASS' if passed else 'FAIL'}] batchrun wall time {ratio:.2f}x the "
                f"SDK's (target <= {MIX_TARGET:g}x)"
            )
            failed += [] if passed else ["mix wall time"]
        every_ok = mine.ok == rows
        once = mine.counters.get("billed_twice") == 0
        print(f"  [{'PASS' if every_ok else 'FAIL'}] batchrun: {mine.ok:,} of {rows:,} rows ok")
        print(
            f"  [{'PASS' if once else 'FAIL'}] batchrun: "
            f"{mine.counters.get('billed_twice')} prompts answered (billed) more than once"
        )
        failed += [] if every_ok else ["mix rows ok"]
        failed += [] if once else ["mix billed twice"]
    return failed


# --------------------------------------------------------------------------- 2. drained bucket


def drain(url: str) -> int:
    """Spend the simulator's request bucket from another client; requests it took.

    aiohttp, not httpx: httpx's connection pool slows down badly at hundreds of connections,
    and the bucket must be empty by the time batchrun starts.
    """
    import aiohttp

    headers = {"x-api-key": API_KEY, "anthropic-version": API_VERSION}

    async def main() -> int:
        refused = asyncio.Event()
        sent = 0
        connector = aiohttp.TCPConnector(limit=DRAIN_CONNECTIONS)
        async with aiohttp.ClientSession(url, headers=headers, connector=connector) as http:

            async def one(i: int) -> None:
                nonlocal sent
                while not refused.is_set():
                    sent += 1
                    body = message_body(f"drain {i} {sent}")
                    async with http.post("/v1/messages", json=body) as r:
                        await r.read()
                        if r.status == 429:
                            refused.set()

            await asyncio.gather(*(one(i) for i in range(DRAIN_CONNECTIONS)))
        return sent

    return asyncio.run(main())


class Sampler:
    """The simulator's (time, requests, 429s) every ``STATS_EVERY_S``, on a thread."""

    def __init__(self, sim: StatsSimulator) -> None:
        self._sim = sim
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(STATS_EVERY_S)

    def sample(self) -> None:
        c = self._sim.counters()
        self.samples.append((time.perf_counter(), c["requests"], int(c["by_status"].get("429", 0))))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def share_after(samples: Sequence[tuple[float, int, int]], start: float, after: float) -> tuple:
    """(requests, 429s, share) from ``after`` seconds past ``start`` to the last sample."""
    later = [s for s in samples if s[0] - start >= after]
    if len(later) < 2:
        return (0, 0, 0.0)
    requests = samples[-1][1] - later[0][1]
    refused = samples[-1][2] - later[0][2]
    return (requests, refused, refused / requests if requests else 0.0)


def drained(rows: int, tmp: Path) -> list[str]:
    inp = write_prompts_jsonl(tmp / "drained.jsonl", make_prompts(rows))
    settings = {"latency_mean": DRAINED_LATENCY_S, "latency_jitter": DRAINED_JITTER_S}
    settings["rpm"] = DRAINED_RPM
    table = []
    failed = []
    for name, flags in (("learned", {}), ("configured", {"rpm": DRAINED_RPM})):
        print(f"  batchrun {name} ...", end="", flush=True)
        with StatsSimulator(settings) as sim:
            drained_by = drain(sim.base_url)
            summary: dict[str, Any] = {}
            with Sampler(sim) as sampler:
                start = time.perf_counter()
                ok = batchrun_rows(sim.base_url, inp, DRAINED_CONCURRENCY, summary, **flags)
                seconds = time.perf_counter() - start
            first = sampler.samples[0]
            all_requests = sampler.samples[-1][1] - first[1]
            all_429 = sampler.samples[-1][2] - first[2]
            requests, refused, share = share_after(sampler.samples, start, DRAINED_AFTER_S)
        print(f" {seconds:.1f} s, {ok:,} ok (bucket drained by {drained_by:,} requests)")
        table.append(
            [name, seconds, ok, all_requests, all_429, requests, refused, f"{share:.2%}", summary]
        )
        passed = share <= DRAINED_CEILING and ok == rows
        print(
            f"  [{'PASS' if passed else 'FAIL'}] {name}: {share:.2%} of requests answered 429 "
            f"after the first {DRAINED_AFTER_S:g} s (target <= {DRAINED_CEILING:.0%}); "
            f"{ok:,}/{rows:,} ok"
        )
        failed += [] if passed else [f"drained {name}"]
    print(
        f"\ndrained: {DRAINED_RPM:,} rpm, bucket emptied before the start; {rows:,} rows, "
        f"concurrency {DRAINED_CONCURRENCY}, latency {DRAINED_LATENCY_S:g} ± "
        f"{DRAINED_JITTER_S:g} s"
    )
    headers = ["limits", "wall s", "rows ok", "requests", "429s", "req >10 s", "429 >10 s"]
    print_table([*headers, "429 % >10 s"], [row[:-1] for row in table])
    for row in table:
        print(f"  {row[0]} summary: {row[-1]}")
    return failed


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("mix", "drained"))
    parser.add_argument("--rows", type=int, default=2_000, help="rows of the fault mix")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--contenders", default="batchrun,sdk,httpx")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "serve":
        return serve(sys.argv[2])
    args = parse_args(argv)
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    print("batchrun faults benchmark")
    print(versions_banner(), flush=True)
    failed: list[str] = []
    try:
        with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
            if args.only in (None, "mix"):
                failed += fault_mix(args.rows, args.concurrency, contenders, Path(tmp))
            if args.only in (None, "drained"):
                print()
                failed += drained(DRAINED_ROWS, Path(tmp))
    except BenchError as exc:
        print(f"\nBENCHMARK BROKEN: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print("\nall targets PASS" if not failed else f"\nFAIL: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
