"""Rate-limited throughput: how close a run gets to a binding limit, and how many 429s it draws.

Each contender sends the same prompts to its own, freshly started ``batchrun simulate`` server
(a subprocess) that enforces RPM 3,000 and an input-token limit that binds first (by default
at 90 % of what RPM allows; ``--bind otpm`` makes the output-token limit bind instead). Its
buckets start full, like the API's, so the first minute's budget goes in a burst; what counts
is the steady state after it:

* ``batchrun``         ``batchrun.run()`` with ``--rpm/--itpm/--otpm`` set to the server's limits,
                       concurrency 64.
* ``batchrun-learned`` the same with no limits configured: it paces itself to the
                       ``anthropic-ratelimit-*`` headers of the replies.
* ``sdk``              ``anthropic.AsyncAnthropic`` with an ``asyncio.Semaphore(64)`` and
                       ``gather``: what users write instead. Its own retries (``--sdk-retries``,
                       20, honouring ``retry-after``) should let it finish every row; rows it
                       still loses are counted, not fatal.

Measured per contender: the steady-state answered rate of the binding dimension (its tokens or
requests answered per second, from the moment the server's initial bucket is spent to the last
answer, divided by the limit's refill rate), and the share of requests answered 429.

Targets (from issue 4): ``batchrun`` >= 0.95 of the binding limit with <= 1 % 429s;
``batchrun-learned`` >= 0.9 with <= 2 %. The SDK's figures are printed for comparison. Exit
code 0 when every target passes.

Run from the repository root (the default takes about four minutes: three contenders of
6,000 rows, each a burst then a minute and a bit of pacing)::

    python bench/ratelimit.py
    python bench/ratelimit.py --contenders batchrun,sdk --bind otpm
    python bench/ratelimit.py --quick        # 800 rows at 600 RPM, about 2 minutes; informational
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pyarrow.parquet as pq
from _harness import (
    API_KEY,
    MODEL,
    BenchError,
    SimulatorProcess,
    make_prompts,
    message_body,
    print_table,
    sigterm_as_interrupt,
    versions_banner,
    write_prompts_jsonl,
)

from batchrun import load_config, run
from batchrun.simulator import count_input_tokens, make_reply

CONTENDERS = ("batchrun", "batchrun-learned", "sdk")
DIMENSIONS = ("requests", "input tokens", "output tokens")
DRAINED_SLACK = 0.05  # the initial bucket counts as spent once within 5 % of empty
SETTLE_S = 3.0  # then this long for what is left of it (< 5 %) to go, before measuring


@dataclass(frozen=True)
class Scenario:
    rows: int = 6_000
    concurrency: int = 64
    rpm: int = 3_000
    share: float = 0.9  # the binding token limit allows this share of RPM's rate
    bind: str = "itpm"
    max_tokens: int = 16
    latency: float = 0.5
    jitter: float = 0.25
    sdk_retries: int = 20

    def limits(self, prompts: Sequence[str]) -> tuple[int, int, int]:
        """(rpm, itpm, otpm) of the server: the ``bind`` limit binds first, the other is loose."""
        sample = [message_body(p, self.max_tokens) for p in prompts[:500]]
        avg_in = statistics.mean(count_input_tokens(b) for b in sample)
        avg_out = statistics.mean(make_reply(b).message["usage"]["output_tokens"] for b in sample)
        tight = self.rpm * self.share
        if self.bind == "itpm":
            return self.rpm, round(tight * avg_in), round(self.rpm * self.max_tokens * 4)
        return self.rpm, round(self.rpm * avg_in * 4), round(tight * avg_out)


SCENARIO = Scenario()
QUICK = replace(SCENARIO, rows=800, rpm=600, latency=0.2, jitter=0.1)
# The otpm scenario reserves max_tokens 64 (replies average about 50 tokens), so that the
# reservation and its correction at the end matter.
OTPM_MAX_TOKENS = 64


@dataclass
class Outcome:
    """One contender's run: every answer (time, input, output tokens) and what it sent."""

    name: str
    answers: list[tuple[float, int, int]]
    requests: int
    rate_limited: int
    started: float
    seconds: float
    failed: int = 0

    def share_429(self) -> float:
        return self.rate_limited / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Steady:
    """The steady state of a run against one binding limit."""

    dimension: int
    window: tuple[float, float]  # seconds since the start
    rows_per_s: float
    utilisation: float  # answered / refill rate of the binding limit


def steady_state(outcome: Outcome, limits: tuple[int, int, int]) -> Steady | None:
    """The binding dimension's answered rate after the initial bucket is spent; None if never.

    The bucket counts as spent at the first answer by which the contender has used the whole
    initial budget plus all the refill since the start (less ``DRAINED_SLACK``); ``SETTLE_S``
    later, what was left of it is gone too, and from then on a contender can only use what
    refills: its rate is compared with the refill rate.
    """
    answers = sorted(outcome.answers)
    if len(answers) < 10:
        return None
    per_request = [1.0, *(statistics.mean(a[i] for a in answers) for i in (1, 2))]
    dim = min(range(3), key=lambda d: limits[d] / max(per_request[d], 1e-9))
    rate = limits[dim] / 60.0
    used = 0.0
    start_index = None
    for index, answer in enumerate(answers):
        used += 1.0 if dim == 0 else answer[dim]
        elapsed = answer[0] - outcome.started
        if used >= limits[dim] * (1 - DRAINED_SLACK) + rate * elapsed:
            start_index = index
            break
    if start_index is None:
        return None
    settled = answers[start_index][0] + SETTLE_S
    while start_index < len(answers) and answers[start_index][0] < settled:
        start_index += 1
    if start_index >= len(answers) - 10:
        return None
    t0, t1 = answers[start_index][0], answers[-1][0]
    later = answers[start_index + 1 :]
    amount = sum(1.0 if dim == 0 else a[dim] for a in later)
    seconds = max(t1 - t0, 1e-9)
    return Steady(
        dim,
        (t0 - outcome.started, t1 - outcome.started),
        len(later) / seconds,
        amount / seconds / rate,
    )


# --------------------------------------------------------------------------- contenders


def batchrun_contender(learned: bool) -> Callable[[str, Path, Scenario, tuple[int, ...]], Outcome]:
    def contend(url: str, inp: Path, s: Scenario, limits: tuple[int, ...]) -> Outcome:
        name = "batchrun-learned" if learned else "batchrun"
        out = inp.with_name(f"{name}.parquet")
        flags: dict[str, Any] = {
            "output": str(out),
            "model": MODEL,
            "max_tokens": s.max_tokens,
            "concurrency": s.concurrency,
            "base_url": url,
            "quiet": True,
            "overwrite": True,
        }
        if not learned:
            flags.update(rpm=limits[0], itpm=limits[1], otpm=limits[2])
        config = load_config(inp, flags, environ={"ANTHROPIC_API_KEY": API_KEY})
        started = time.time()
        summary = run(config)
        seconds = time.time() - started
        table = pq.read_table(
            out, columns=["status", "finished_at", "input_tokens", "output_tokens", "attempts"]
        ).to_pylist()
        out.unlink()
        answers = [
            (r["finished_at"].timestamp(), r["input_tokens"], r["output_tokens"])
            for r in table
            if r["status"] == "ok"
        ]
        return Outcome(
            name,
            answers,
            requests=sum(r["attempts"] or 0 for r in table),
            rate_limited=summary.rate_limited_429s,
            started=started,
            seconds=seconds,
            failed=len(table) - len(answers),
        )

    return contend


def sdk_contender(url: str, inp: Path, s: Scenario, limits: tuple[int, ...]) -> Outcome:
    """The official SDK, a semaphore and gather; its retries honour retry-after."""
    prompts = make_prompts(s.rows)
    counts: Counter[str] = Counter()

    async def count(response: httpx.Response) -> None:
        counts["requests"] += 1
        counts["429"] += response.status_code == 429

    async def main() -> list[Any]:
        http = anthropic.DefaultAsyncHttpxClient(
            event_hooks={"response": [count]},
            limits=httpx.Limits(max_connections=s.concurrency),
        )
        client = anthropic.AsyncAnthropic(
            api_key=API_KEY, base_url=url, max_retries=s.sdk_retries, http_client=http
        )
        semaphore = asyncio.Semaphore(s.concurrency)

        async def one(prompt: str) -> tuple[float, int, int]:
            async with semaphore:
                message = await client.messages.create(
                    model=MODEL,
                    max_tokens=s.max_tokens,
                    messages=[{"role": "user", "content": prompt}],
                )
            return time.time(), message.usage.input_tokens, message.usage.output_tokens

        try:
            return await asyncio.gather(*(one(p) for p in prompts), return_exceptions=True)
        finally:
            await client.close()

    started = time.time()
    results = asyncio.run(main())
    seconds = time.time() - started
    answers = [r for r in results if isinstance(r, tuple)]
    return Outcome(
        "sdk",
        answers,
        requests=counts["requests"],
        rate_limited=counts["429"],
        started=started,
        seconds=seconds,
        failed=len(results) - len(answers),
    )


RUNNERS: dict[str, Callable[[str, Path, Scenario, tuple[int, ...]], Outcome]] = {
    "batchrun": batchrun_contender(learned=False),
    "batchrun-learned": batchrun_contender(learned=True),
    "sdk": sdk_contender,
}
TARGETS = {"batchrun": (0.95, 0.01), "batchrun-learned": (0.9, 0.02)}


def run_contender(
    name: str, s: Scenario, limits: tuple[int, int, int], inp: Path
) -> tuple[Outcome, float | None]:
    extra = ["--rpm", str(limits[0]), "--itpm", str(limits[1]), "--otpm", str(limits[2])]
    with SimulatorProcess(latency=s.latency, jitter=s.jitter, extra=extra) as sim:
        outcome = RUNNERS[name](sim.base_url, inp, s, limits)
        cpu = sim.cpu_seconds()
        if not sim.alive():
            raise BenchError(f"the simulator died:\n{sim.stderr_text()}")
    if outcome.failed and name != "sdk":  # the SDK may run out of retries: that is a finding
        raise BenchError(f"{name}: {outcome.failed:,} of {s.rows:,} rows failed")
    return outcome, cpu


# --------------------------------------------------------------------------- reporting


def report(s: Scenario, limits: tuple[int, int, int], outcomes: list[Outcome]) -> list[str]:
    """Print the table; return the names of failed targets."""
    print(
        f"\nlimits: {limits[0]:,} rpm, {limits[1]:,} itpm, {limits[2]:,} otpm; "
        f"{s.rows:,} rows, concurrency {s.concurrency}, latency {s.latency:g} ± {s.jitter:g} s"
    )
    headers = [
        "contender",
        "binding",
        "steady window s",
        "rows/s",
        "x binding limit",
        "requests",
        "429s",
        "429 %",
        "rows failed",
        "wall s",
    ]
    table = []
    steady: dict[str, Steady | None] = {}
    for o in outcomes:
        st = steady[o.name] = steady_state(o, limits)
        table.append(
            [
                o.name,
                DIMENSIONS[st.dimension] if st else "-",
                f"{st.window[0]:.1f}-{st.window[1]:.1f}" if st else "-",
                st.rows_per_s if st else None,
                f"{st.utilisation:.3f}" if st else "-",
                o.requests,
                o.rate_limited,
                f"{o.share_429() * 100:.2f}",
                o.failed,
                o.seconds,
            ]
        )
    print_table(headers, table)
    failed = []
    for o in outcomes:
        if o.name not in TARGETS:
            continue
        floor, ceiling = TARGETS[o.name]
        st = steady[o.name]
        value = st.utilisation if st else 0.0
        ok_rate = value >= floor
        ok_429 = o.share_429() <= ceiling
        print(
            f"  [{'PASS' if ok_rate else 'FAIL'}] {o.name}: steady state {value:.3f}x "
            f"of the binding limit (target >= {floor:g}x)"
        )
        print(
            f"  [{'PASS' if ok_429 else 'FAIL'}] {o.name}: {o.share_429() * 100:.2f} % of "
            f"requests answered 429 (target <= {ceiling * 100:g} %)"
        )
        failed += [] if ok_rate else [f"{o.name} rate"]
        failed += [] if ok_429 else [f"{o.name} 429s"]
    return failed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--bind", choices=("itpm", "otpm"), default="itpm")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--sdk-retries", type=int, default=SCENARIO.sdk_retries)
    parser.add_argument("--quick", action="store_true", help="small and short; informational")
    args = parser.parse_args(argv)
    names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown or not names:
        parser.error(f"--contenders: unknown {unknown}; choose from {', '.join(CONTENDERS)}")
    args.contenders = [c for c in CONTENDERS if c in names]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    s = QUICK if args.quick else SCENARIO
    s = replace(s, bind=args.bind, sdk_retries=args.sdk_retries)
    if args.bind == "otpm":
        s = replace(s, max_tokens=OTPM_MAX_TOKENS)
    if args.rows:
        s = replace(s, rows=args.rows)
    print(
        "batchrun rate-limit benchmark" + (" (quick: targets informational)" if args.quick else "")
    )
    print(versions_banner(), flush=True)
    prompts = make_prompts(s.rows)
    limits = s.limits(prompts)
    outcomes = []
    try:
        with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="bench-rl-") as tmp:
            inp = write_prompts_jsonl(Path(tmp) / "input.jsonl", prompts)
            for name in args.contenders:
                print(f"  {name} ...", end="", flush=True)
                outcome, _ = run_contender(name, s, limits, inp)
                outcomes.append(outcome)
                print(
                    f" {outcome.seconds:.0f} s, {outcome.rate_limited:,} x 429 "
                    f"of {outcome.requests:,} requests",
                    flush=True,
                )
    except BenchError as exc:
        print(f"\nBENCHMARK BROKEN: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    failed = report(s, limits, outcomes)
    if args.quick:
        print("\nquick run: targets not judged")
        return 0
    judged = [o for o in outcomes if o.name in TARGETS]
    print(
        f"\n{2 * len(judged) - len(failed)}/{2 * len(judged)} targets PASS"
        + (f"; FAIL: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
