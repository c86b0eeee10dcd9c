"""Rate limits through the library and the CLI: configuration, whole runs, 429 pauses.

Whole runs go against a simulator that enforces limits, so they take a couple of seconds of
real pacing; nothing asserts on timing, only on what was answered and how often the server
said 429.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, prompts, reply_tag, write_jsonl

from batchrun import ConfigError, load_config, run
from batchrun.cli import cli
from batchrun.config.load import RunConfig
from batchrun.limits.limiter import RESUME_RAMP_S
from batchrun.limits.values import AUTO_MAX, Limits, LimitsConfig
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread, make_reply

MODEL = "claude-haiku-4-5"


def config_for(inp: Path, out: Path, url: str, **flags: Any) -> RunConfig:
    return job_config(inp, out, url, **{"model": MODEL, "max_tokens": 20, **flags})


# --------------------------------------------------------------------------- configuration


def job(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text('input = "in.jsonl"\n' + text, encoding="utf-8")
    return path


def test_limits_come_from_the_job_file_per_model_and_field_by_field(tmp_path: Path) -> None:
    path = job(
        tmp_path,
        '[limits]\nrpm = 1000\nitpm = 50000\n[limits."claude-sonnet-4-6"]\notpm = 8000\n',
    )
    config = load_config(path, environ={})
    assert config.engine.limits == LimitsConfig(
        Limits(rpm=1_000, itpm=50_000), (("claude-sonnet-4-6", Limits(otpm=8_000)),)
    )
    assert config.engine.limits.for_model("claude-sonnet-4-6") == Limits(1_000, 50_000, 8_000)


def test_flags_beat_the_environment_beat_the_job_file_for_every_model(tmp_path: Path) -> None:
    path = job(tmp_path, '[limits]\nrpm = 1000\n[limits."claude-sonnet-4-6"]\nrpm = 10\n')
    from_env = load_config(path, environ={"BATCHRUN_RPM": "2000", "BATCHRUN_OTPM": "9000"})
    assert from_env.engine.limits.for_model("claude-sonnet-4-6") == Limits(rpm=2_000, otpm=9_000)
    from_flag = load_config(path, {"rpm": 3_000, "itpm": 70_000}, environ={"BATCHRUN_RPM": "2"})
    assert from_flag.engine.limits.for_model(MODEL) == Limits(rpm=3_000, itpm=70_000)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[limits]\nrpm = 0\n", r"`limits.rpm` must be a whole number >= 1"),
        ("[limits]\nitpn = 5\n", r"did you mean `itpm`"),
        ('[limits."claude-haiku-4-5"]\nrpms = 5\n', r'`limits."claude-haiku-4-5".rpms`'),
        ('[limits]\notpm = "lots"\n', r"`limits.otpm`"),
        ('concurrency = "fast"\n', r'or "auto"'),
        ("limits = 5\n", r"`limits` must be a table"),
    ],
)
def test_bad_limits_are_refused_with_the_key_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(job(tmp_path, text), environ={})


def test_concurrency_auto_from_job_file_environment_or_flag(tmp_path: Path) -> None:
    path = job(tmp_path, 'concurrency = "auto"\n')
    config = load_config(path, environ={})
    assert (config.engine.concurrency_auto, config.engine.concurrency) == (True, AUTO_MAX)
    from_env = load_config(job(tmp_path, ""), environ={"BATCHRUN_CONCURRENCY": "auto"})
    assert from_env.engine.concurrency_auto
    fixed = load_config(path, {"concurrency": 12}, environ={})
    assert (fixed.engine.concurrency_auto, fixed.engine.concurrency) == (False, 12)


# --------------------------------------------------------------------------- whole runs


def check_every_row_ok(out: Path, rows: list[dict[str, Any]]) -> None:
    got = pq.read_table(out).to_pylist()
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for src, res in zip(rows, got, strict=True):
        assert res["status"] == "ok"
        assert res["text"].startswith(reply_tag(src["prompt"]))


# 600 RPM: a bucket of 600 at the start, then 10 a second. 610 rows make the limiter pace the
# last dozen or so (how many depends on how fast the burst went: no assertion on it) while the
# server counts every request it refuses.
SIM_LIMITS = SimulatorConfig(
    latency_mean=0.002, latency_jitter=0.002, rpm=600, itpm=400_000, otpm=100_000
)
ROWS = 610


@pytest.mark.slow
def test_a_run_paced_by_configured_limits_is_answered_without_429s(tmp_path: Path) -> None:
    rows = prompts(ROWS)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    with SimulatorThread(SIM_LIMITS) as sim:
        summary = run(config_for(inp, out, sim.base_url, rpm=600, concurrency=16))
        limited = sim.stats.rate_limited
    assert summary.exit_code == 0
    check_every_row_ok(out, rows)
    assert limited <= ROWS // 100  # the bar: at most 1 % answered 429
    assert summary.rate_limited_429s == limited
    # Configured RPM stays the ceiling; the token limits were learned from the headers.
    assert summary.rate_limits == {MODEL: Limits(rpm=600, itpm=400_000, otpm=100_000)}


@pytest.mark.slow
def test_with_no_limits_configured_the_run_paces_itself_to_the_headers(tmp_path: Path) -> None:
    rows = prompts(ROWS)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    with SimulatorThread(SIM_LIMITS) as sim:
        summary = run(config_for(inp, out, sim.base_url, concurrency=16))
        limited = sim.stats.rate_limited
    assert summary.exit_code == 0
    check_every_row_ok(out, rows)
    assert limited <= 2 * ROWS // 100  # the bar for learned limits: at most 2 %
    assert summary.rate_limits[MODEL] == Limits(rpm=600, itpm=400_000, otpm=100_000)


def test_concurrency_auto_chooses_from_limits_and_latency(tmp_path: Path) -> None:
    rows = prompts(60)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(latency_mean=0.01, rpm=1_200)) as sim:
        summary = run(config_for(inp, out, sim.base_url, concurrency="auto"))
        peak = sim.stats.max_in_flight
    assert summary.exit_code == 0
    check_every_row_ok(out, rows)
    # 20 requests/s x the latency seen x 1.5 headroom: a handful in flight, far under the cap.
    # (The latency seen is the simulator's 0.01 s plus what a loaded machine adds; the rate is
    # kept low so that even a second of it stays under the cap.)
    assert summary.concurrency_chosen is not None
    assert 1 <= summary.concurrency_chosen < 32
    assert peak <= 32


def test_a_row_larger_than_a_minutes_budget_fails_alone_and_is_never_sent(tmp_path: Path) -> None:
    rows = prompts(6)
    rows[3]["prompt"] = "a very long row " * 2_000
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(latency_mean=0.002)) as sim:
        summary = run(config_for(inp, out, sim.base_url, itpm=5_000))
        sent = sim.stats.requests
    got = pq.read_table(out).to_pylist()
    assert [r["status"] for r in got] == ["ok", "ok", "ok", "error", "ok", "ok"]
    assert got[3]["error_type"] == "exceeds_rate_limit"
    assert "raise itpm if" in got[3]["error_message"] and got[3]["http_status"] is None
    assert sent == 5
    assert summary.exit_code == 3


# --------------------------------------------------------------------------- 429 coordination


def rate_limited(retry_after: str) -> httpx.Response:
    """A 429 whose headers say the request bucket is empty (so it pauses the model)."""
    envelope = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    headers = {
        "retry-after": retry_after,
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "0",
    }
    return httpx.Response(429, json=envelope, headers=headers)


@pytest.mark.slow
def test_a_429_pauses_once_for_every_worker_and_the_retry_does_not_wait_again(
    tmp_path: Path,
) -> None:
    """Four rows meet a 429 saying the bucket is empty together: one 7 s pause, not four, and
    not 7 s more per retry."""
    sent: list[str] = []
    slept: list[float] = []
    all_in = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompt = body["messages"][0]["content"]
        sent.append(prompt)
        if sent.count(prompt) == 1:
            if len(sent) == 4:
                all_in.set()
            await all_in.wait()  # the four first attempts are in flight together
            return rate_limited("7")
        return httpx.Response(200, json=make_reply(body).message)

    async def record(seconds: float) -> None:
        slept.append(seconds)

    rows = prompts(4)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    summary = run(
        config_for(inp, out, "https://api.anthropic.com", concurrency=4),
        runtime=Runtime(transport=httpx.MockTransport(handler), sleep=record),
    )
    assert summary.exit_code == 0
    check_every_row_ok(out, rows)
    assert summary.rate_limited_429s == 4 and summary.retries == 4
    assert summary.rate_pauses == 1
    # One wait for the pause; the retry loop's own 7 s waits were skipped, then at most the
    # ramp that releases the held requests one by one.
    assert [round(s) for s in slept if s > RESUME_RAMP_S] == [7]
    assert sum(slept) <= 7.0 + RESUME_RAMP_S
    assert len(sent) == 8


def test_a_429_without_retry_after_waits_for_the_backoff(tmp_path: Path) -> None:
    calls = 0
    slept: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            envelope = {"type": "error", "error": {"type": "rate_limit_error", "message": "x"}}
            return httpx.Response(429, json=envelope)
        return httpx.Response(200, json=make_reply(json.loads(request.content)).message)

    async def record(seconds: float) -> None:
        slept.append(seconds)

    inp = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    summary = run(
        config_for(inp, tmp_path / "out.parquet", "https://api.anthropic.com"),
        runtime=Runtime(transport=httpx.MockTransport(handler), sleep=record),
    )
    assert summary.exit_code == 0
    assert len(slept) == 1 and 0.375 <= slept[0] <= 0.5  # the first backoff, waited once


@pytest.mark.slow
def test_a_429_teaches_the_limits_its_headers_carry(tmp_path: Path) -> None:
    """The first response is a 429: its anthropic-ratelimit-* headers are learned all the same."""
    calls = 0

    async def no_wait(seconds: float) -> None:
        return None

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            envelope = {"type": "error", "error": {"type": "rate_limit_error", "message": "x"}}
            headers = {
                "retry-after": "1",
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2026-11-22T00:00:01Z",
                "anthropic-ratelimit-output-tokens-limit": "8000",
            }
            return httpx.Response(429, json=envelope, headers=headers)
        return httpx.Response(200, json=make_reply(json.loads(request.content)).message)

    inp = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    summary = run(
        config_for(inp, tmp_path / "out.parquet", "https://api.anthropic.com"),
        runtime=Runtime(transport=httpx.MockTransport(handler), sleep=no_wait),
    )
    assert summary.exit_code == 0 and summary.rate_limited_429s == 1
    assert summary.rate_limits[MODEL] == Limits(rpm=50, otpm=8000)


# --------------------------------------------------------------------------- the CLI


def test_the_cli_takes_limit_flags_and_reports_limits_429s_and_auto_concurrency(
    tmp_path: Path,
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(latency_mean=0.002, rpm=5_000, itpm=900_000)) as sim:
        result = CliRunner().invoke(
            cli,
            [
                "run",
                str(inp),
                "-o",
                str(out),
                "--model",
                MODEL,
                "--max-tokens",
                "20",
                "--base-url",
                sim.base_url,
                "--rpm",
                "3000",
                "--concurrency",
                "auto",
                "-q",
            ],
            env={"ANTHROPIC_API_KEY": TEST_KEY},
        )
    assert result.exit_code == 0, result.output
    assert f"limits      {MODEL}: 3,000 rpm, 900,000 itpm" in result.stderr
    assert "rate limit  0 answered 429" in result.stderr
    assert "concurrency auto:" in result.stderr


@pytest.mark.parametrize("value", ["0", "lots"])
def test_the_cli_refuses_a_bad_concurrency(tmp_path: Path, value: str) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    result = CliRunner().invoke(cli, ["run", str(inp), "--concurrency", value])
    assert result.exit_code == 2
    assert "--concurrency" in result.output
