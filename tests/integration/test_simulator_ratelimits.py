"""The simulator's rate limits: buckets with a fake clock, then headers and 429s over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from batchrun.cli import cli
from batchrun.limits.headers import parse_rate_limit_headers
from batchrun.simulator import SimLimits, Simulator, SimulatorConfig, count_input_tokens
from batchrun.simulator.ratelimits import Admission, RateLimits, Refusal, rfc3339

MODEL = "claude-haiku-4-5"
HEADERS = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
PREFIX = "anthropic-ratelimit-"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits_at(clock: Clock, **limits: int) -> RateLimits:
    return RateLimits(SimLimits(**limits), clock=clock, wall_clock=lambda: clock.now)


def admitted(verdict: Admission | Refusal) -> Admission:
    assert isinstance(verdict, Admission), verdict
    return verdict


def refused(verdict: Admission | Refusal) -> Refusal:
    assert isinstance(verdict, Refusal), verdict
    return verdict


# --------------------------------------------------------------------------- buckets


def test_requests_beyond_the_rpm_bucket_are_refused_until_it_refills() -> None:
    clock = Clock()
    limits = limits_at(clock, rpm=60)
    for _ in range(60):
        admitted(limits.admit(MODEL, 10, 10))
    refusal = refused(limits.admit(MODEL, 10, 10))
    assert refusal.dimension == "requests"
    assert refusal.retry_after == 1
    assert "60 requests per minute" in refusal.message
    clock.now += 1.0
    admitted(limits.admit(MODEL, 10, 10))
    refused(limits.admit(MODEL, 10, 10))


def test_retry_after_is_whole_seconds_until_every_short_bucket_has_enough() -> None:
    clock = Clock()
    limits = limits_at(clock, itpm=6_000, otpm=600)  # 100 input / s, 10 output / s
    admitted(limits.admit(MODEL, 6_000, 550))
    refusal = refused(limits.admit(MODEL, 250, 100))  # input short 2.5 s, output 5 s
    assert (refusal.dimension, refusal.retry_after) == ("output_tokens", 5)
    clock.now += 0.01
    assert refused(limits.admit(MODEL, 1, 1)).retry_after == 1  # never less than 1


def test_a_refused_request_takes_nothing() -> None:
    clock = Clock()
    limits = limits_at(clock, rpm=10, itpm=1_000)
    admitted(limits.admit(MODEL, 900, 10))
    refused(limits.admit(MODEL, 200, 10))
    headers = limits.headers(MODEL)
    assert headers[PREFIX + "requests-remaining"] == "9"
    assert headers[PREFIX + "input-tokens-remaining"] == "100"


def test_output_is_reserved_by_max_tokens_and_corrected_at_the_end() -> None:
    clock = Clock()
    limits = limits_at(clock, otpm=1_000)
    first = admitted(limits.admit(MODEL, 10, 800))
    refused(limits.admit(MODEL, 10, 300))  # 200 left: max_tokens does not fit
    limits.finish(first, 50)  # it wrote 50 of 800
    assert limits.headers(MODEL)[PREFIX + "output-tokens-remaining"] == "950"
    limits.finish(first, 0)  # finishing twice gives nothing more
    assert limits.headers(MODEL)[PREFIX + "output-tokens-remaining"] == "950"
    second = admitted(limits.admit(MODEL, 10, 300))
    limits.release(second)  # an error status: no output at all
    assert limits.headers(MODEL)[PREFIX + "output-tokens-remaining"] == "950"


def test_cancel_gives_back_the_request_and_its_tokens() -> None:
    clock = Clock()
    limits = limits_at(clock, rpm=5, itpm=1_000, otpm=1_000)
    admission = admitted(limits.admit(MODEL, 300, 400))
    limits.cancel(admission)
    headers = limits.headers(MODEL)
    assert [
        headers[PREFIX + f"{n}-remaining"] for n in ("requests", "input-tokens", "output-tokens")
    ] == [
        "5",
        "1000",
        "1000",
    ]


def test_a_request_larger_than_the_limit_is_told_to_wait_a_minute() -> None:
    limits = limits_at(Clock(), itpm=1_000)
    refusal = refused(limits.admit(MODEL, 5_000, 1))
    assert (refusal.dimension, refusal.retry_after) == ("input_tokens", 60)


def test_headers_show_limit_remaining_and_when_the_bucket_is_full_again() -> None:
    clock = Clock()
    limits = limits_at(clock, rpm=120, otpm=6_000)
    for _ in range(30):
        admitted(limits.admit(MODEL, 10, 100))
    headers = limits.headers(MODEL)
    assert headers == {
        PREFIX + "requests-limit": "120",
        PREFIX + "requests-remaining": "90",
        PREFIX + "requests-reset": rfc3339(1000 + 15),  # 30 requests at 2 per second
        PREFIX + "output-tokens-limit": "6000",
        PREFIX + "output-tokens-remaining": "3000",
        PREFIX + "output-tokens-reset": rfc3339(1000 + 30),
    }
    clock.now += 0.25
    assert limits.headers(MODEL)[PREFIX + "requests-remaining"] == "90"  # rounded down
    assert rfc3339(0) == "1970-01-01T00:00:00Z"


def test_each_model_has_its_own_buckets() -> None:
    limits = limits_at(Clock(), rpm=1)
    admitted(limits.admit(MODEL, 1, 1))
    refused(limits.admit(MODEL, 1, 1))
    admitted(limits.admit("claude-sonnet-4-6", 1, 1))


def test_limits_must_be_positive_whole_numbers() -> None:
    with pytest.raises(ValueError, match="rpm"):
        SimLimits(rpm=0)
    with pytest.raises(ValueError, match="otpm"):
        SimulatorConfig(otpm=-5)
    assert not SimLimits().any and SimLimits(itpm=5).any


# --------------------------------------------------------------------------- over HTTP


@asynccontextmanager
async def running(
    config: SimulatorConfig, clock: Callable[[], float] = time.monotonic
) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    """A simulator and a client of it; its buckets refill as ``clock`` moves."""
    async with (
        Simulator(config, clock=clock) as sim,
        httpx.AsyncClient(base_url=sim.base_url, timeout=10) as client,
    ):
        yield sim, client


def body(prompt: str = "Name three rivers.", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def test_every_answer_carries_rate_limit_headers_and_a_short_bucket_gives_429() -> None:
    # A fake clock that stands still: on the wall clock, the 100,000 ITPM bucket refills a
    # few tokens between the admission and the headers, and `remaining` shows them.
    config = SimulatorConfig(rpm=2, itpm=100_000, otpm=10_000)

    async def scenario() -> None:
        async with running(config, Clock()) as (sim, client):
            first = await client.post("/v1/messages", json=body(), headers=HEADERS)
            second = await client.post("/v1/messages", json=body(stream=True), headers=HEADERS)
            third = await client.post("/v1/messages", json=body(), headers=HEADERS)

            assert first.status_code == 200 and second.status_code == 200
            assert first.headers[PREFIX + "requests-remaining"] == "1"
            assert second.headers[PREFIX + "requests-remaining"] == "0"
            assert second.headers["content-type"].startswith("text/event-stream")
            used = count_input_tokens(body())
            assert first.headers[PREFIX + "input-tokens-remaining"] == str(100_000 - used)
            output = first.json()["usage"]["output_tokens"]
            assert first.headers[PREFIX + "output-tokens-remaining"] == str(10_000 - output)

            assert third.status_code == 429
            assert third.json()["error"]["type"] == "rate_limit_error"
            assert third.headers["retry-after"] == "30"  # 2 RPM: one request per 30 s
            assert third.headers[PREFIX + "requests-limit"] == "2"
            readings = parse_rate_limit_headers(third.headers)
            assert set(readings) == {0, 1, 2}

            assert sim.stats.rate_limited == 1
            assert sim.stats.rate_limited_by == {"requests": 1}
            assert sim.stats.by_status == {200: 2, 429: 1}
            assert sim.stats.snapshot().rate_limited == 1
            assert sim.stats.faults == {}

    asyncio.run(scenario())


def test_output_tokens_per_minute_count_max_tokens_while_a_request_runs() -> None:
    async def scenario() -> None:
        async with running(SimulatorConfig(otpm=100)) as (sim, client):
            big = await client.post("/v1/messages", json=body(max_tokens=101), headers=HEADERS)
            assert big.status_code == 429
            assert big.headers["retry-after"] == "60"
            fits = await client.post("/v1/messages", json=body(max_tokens=100), headers=HEADERS)
            assert fits.status_code == 200
            assert sim.stats.rate_limited_by == {"output_tokens": 1}

    asyncio.run(scenario())


def test_no_limits_means_no_rate_limit_headers() -> None:
    async def scenario() -> None:
        async with running(SimulatorConfig()) as (_, client):
            response = await client.post("/v1/messages", json=body(), headers=HEADERS)
            assert response.status_code == 200
            assert not [h for h in response.headers if h.startswith(PREFIX)]

    asyncio.run(scenario())


def test_injected_faults_carry_headers_and_an_injected_429_takes_nothing() -> None:
    async def scenario() -> None:
        config = SimulatorConfig(rpm=100, retry_after=3)
        async with running(config, Clock()) as (sim, client):  # no refill between requests
            sim.script(["429", "529"])
            limited = await client.post("/v1/messages", json=body(), headers=HEADERS)
            overloaded = await client.post("/v1/messages", json=body(), headers=HEADERS)
            assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
            assert limited.headers[PREFIX + "requests-remaining"] == "100"
            assert overloaded.status_code == 529
            assert overloaded.headers[PREFIX + "requests-remaining"] == "99"
            assert sim.stats.rate_limited == 0  # those were faults, not limits
            assert sim.stats.faults == {"429": 1, "529": 1}

    asyncio.run(scenario())


def test_count_tokens_is_not_rate_limited() -> None:
    async def scenario() -> None:
        async with running(SimulatorConfig(rpm=1)) as (_, client):
            request = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
            for _ in range(3):
                counted = await client.post(
                    "/v1/messages/count_tokens", json=request, headers=HEADERS
                )
                assert counted.status_code == 200

    asyncio.run(scenario())


def test_the_simulate_command_takes_limit_flags() -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["simulate", "--help"])
    assert shown.exit_code == 0
    for flag in ("--rpm", "--itpm", "--otpm"):
        assert flag in shown.output
    refused_flag = runner.invoke(cli, ["simulate", "--rpm", "0"])
    assert refused_flag.exit_code == 2
