"""Long waits are visible, and --max-retry-wait caps them (issue "trust under real use", 8).

A 429 with ``retry-after: 3600`` used to wait the full hour with the display at ``0/20`` and
nothing at all without a terminal.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from support import canned_message, job_config, prompts, write_jsonl

from batchrun import load_config
from batchrun.config.load import RunConfig
from batchrun.core.errors import ApiStatusError
from batchrun.engine.outcome import RowSettings, prepare
from batchrun.engine.tally import RowTally
from batchrun.engine.waits import WaitNotices
from batchrun.formats.inputs import read_rows
from batchrun.runs.compose import job_client, job_engine
from batchrun.runs.runtime import Runtime


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _too_many(retry_after: float | None) -> ApiStatusError:
    return ApiStatusError(
        "slow down", status=429, error_type="rate_limit_error", retry_after=retry_after
    )


def test_a_long_429_pause_is_told_once_with_its_length_reason_and_the_cap_hint() -> None:
    told: list[str] = []
    clock = FakeClock()
    notices = WaitNotices(told.append, clock=clock, wall_clock=lambda: 0.0)
    notices.retry("claude-haiku-4-5", _too_many(3600), 3600, paused=True, attempt=2)
    assert len(told) == 1
    line = told[0]
    assert "HTTP 429 rate_limit_error for claude-haiku-4-5" in line
    assert "paused for 60.0 min" in line and "the API's retry-after" in line
    assert "max_retry_wait=SECONDS caps such waits" in line


def test_short_waits_say_nothing_and_alike_waits_are_counted_not_repeated() -> None:
    told: list[str] = []
    clock = FakeClock()
    notices = WaitNotices(told.append, clock=clock)
    overloaded = ApiStatusError("busy", status=529, error_type="overloaded_error")
    notices.retry("m", overloaded, 1.5, paused=False, attempt=2)
    assert told == []
    for _ in range(5):
        notices.retry("m", overloaded, 12, paused=False, attempt=3)
    assert len(told) == 1 and "a row waits 12.0 s before attempt 3" in told[0]
    assert "(backoff)" in told[0] and "max_retry_wait" not in told[0]
    clock.now += 11
    notices.retry("m", overloaded, 12, paused=False, attempt=4)
    assert len(told) == 2 and "4 more wait(s) like it" in told[1]


def test_no_cap_hint_once_the_cap_is_set() -> None:
    told: list[str] = []
    WaitNotices(told.append, capped=True).retry("m", _too_many(900), 900, paused=True, attempt=2)
    assert told and "max_retry_wait" not in told[0]


class HourLong429:
    """The first request gets a 429 asking for an hour; the rest are answered.

    Its headers say the request bucket is empty, so the 429 pauses the whole model (a 429
    with plenty left would hold back only its own row, ``test_proportional_429``).
    """

    EMPTY_BUCKET: ClassVar[dict[str, str]] = {
        "retry-after": "3600",
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0",
    }

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        body = json.loads(request.content)
        if self.calls == 1:
            error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}
            return httpx.Response(429, json=error, headers=self.EMPTY_BUCKET)
        message = canned_message(body["model"], "ok", input_tokens=5, output_tokens=1)
        return httpx.Response(200, json=message)


def _run(config: RunConfig) -> tuple[list[float], list[str], RowTally]:
    slept: list[float] = []
    told: list[str] = []
    tally = RowTally()

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def go() -> None:
        runtime = Runtime(transport=httpx.MockTransport(HourLong429()), sleep=sleep)
        async with job_client(config, runtime) as client:
            engine = job_engine(config, client, tally, runtime, notify=told.append)
            works = [prepare(row, RowSettings.of(config)) for row in read_rows(config.input.path)]
            await engine.run(works, lambda work, row: None)

    asyncio.run(go())
    return slept, told, tally


@pytest.mark.slow
def test_an_hour_long_retry_after_is_told_and_waited_in_full_by_default(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    config = job_config(inp, tmp_path / "o.parquet", "http://127.0.0.1:9", concurrency=1)
    slept, told, tally = _run(config)
    assert tally.ok == 3 and tally.rate_limited_429s == 1
    assert max(slept) >= 3599  # honoured: the API asked for it
    assert any("paused for 60.0 min" in line for line in told)


@pytest.mark.slow
def test_max_retry_wait_caps_the_wait(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    config = job_config(
        inp, tmp_path / "o.parquet", "http://127.0.0.1:9", concurrency=1, max_retry_wait=5
    )
    slept, told, tally = _run(config)
    assert tally.ok == 3
    assert slept and max(slept) <= 5.0 + 1e-6
    assert any("paused for 5.0 s" in line for line in told)
    assert not any("max_retry_wait" in line for line in told)


def test_the_cap_comes_from_a_flag_the_environment_or_the_job(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    env = {"ANTHROPIC_API_KEY": "k", "BATCHRUN_MAX_RETRY_WAIT": "30"}
    assert load_config(inp, {}, environ=env).engine.max_retry_wait == 30.0
    assert load_config(inp, {"max_retry_wait": 7}, environ=env).engine.max_retry_wait == 7.0
    job = tmp_path / "job.toml"
    job.write_text(f'input = "{inp.name}"\nmax_retry_wait = 12\n', encoding="utf-8")
    assert load_config(job, {}, environ={"ANTHROPIC_API_KEY": "k"}).engine.max_retry_wait == 12.0
    assert load_config(inp, {}, environ={"ANTHROPIC_API_KEY": "k"}).engine.max_retry_wait is None
