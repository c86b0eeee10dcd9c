"""``batchrun estimate``: offline, exact (count_tokens) and pilot levels, and the projection."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support import TEST_KEY, prompts, write_jsonl

from batchrun import ConfigError, load_config, run
from batchrun.cli import cli
from batchrun.config.load import RunConfig
from batchrun.core.errors import InputError
from batchrun.cost.projection import Observed, Pending, percentile, project
from batchrun.estimation.counter import Pacer
from batchrun.estimation.duration import estimate_duration
from batchrun.estimation.passes import choose_sample, estimate, parse_pilot
from batchrun.limits.values import Limits, LimitsConfig
from batchrun.public.run import run_job
from batchrun.render.estimate_text import format_estimate
from batchrun.reporting.totals import report
from batchrun.rows.request import build_request
from batchrun.rows.tokens import estimate_input_tokens
from batchrun.simulator import SimulatorConfig, SimulatorThread, count_input_tokens

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "estimate_costs.toml"


def config_for(inp: Path, out: Path, **flags: Any) -> RunConfig:
    settings = {
        "output": str(out),
        "model": "claude-haiku-4-5",
        "max_tokens": 50,
        "quiet": True,
        "concurrency": 4,
        **flags,
    }
    return load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY})


def bodies(rows: list[dict[str, Any]], config: RunConfig) -> list[dict[str, Any]]:
    return [build_request(r, config.defaults) for r in rows]


# --- offline ---------------------------------------------------------------------------------


def test_offline_sums_the_local_estimate_and_the_max_tokens_ceiling(tmp_path: Path) -> None:
    rows = [*prompts(20), {"id": "bad", "prompt": ""}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    config = config_for(inp, tmp_path / "out.parquet")
    est = estimate(config)

    assert (est.level, est.rows, est.invalid, est.pending) == ("offline", 21, 1, 20)
    (line,) = est.models.values()
    expected_input = sum(estimate_input_tokens(b) for b in bodies(rows[:20], config))
    assert line.input_tokens == expected_input
    assert line.output_ceiling == 20 * 50
    assert line.output_expected() is None  # nothing answered: unknown, not made up
    # Haiku 4.5: $1/M in, $5/M out. Floor = input only; ceiling = all of max_tokens.
    assert line.cost_floor() == pytest.approx(expected_input / 1e6)
    assert line.cost_ceiling() == pytest.approx((expected_input + 5 * 1000) / 1e6)
    assert line.cost_ceiling(Decimal("0.5")) == pytest.approx((expected_input + 5000) / 2e6)
    assert est.total_cost() is None
    text = format_estimate(est)
    assert "between $" in text and "(input only)" in text and "pilot=N measures it" in text
    assert "unknown: no rate limits configured" in text


def test_offline_costs_of_several_models_and_an_unpriced_one(tmp_path: Path) -> None:
    # An unpriced name that is not a Claude id (a gateway's alias) is estimated without a
    # price; a Claude id batchrun does not know is refused (tests/unit/test_model_names.py).
    rows = [
        {"prompt": "a b c", "model": "claude-opus-4-5"},
        {"prompt": "a b c", "model": "claude-haiku-4-5"},
        {"prompt": "a b c", "model": "gw-mystery-1"},
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    est = estimate(config_for(inp, tmp_path / "out.parquet"))
    assert set(est.models) == {"claude-opus-4-5", "claude-haiku-4-5", "gw-mystery-1"}
    assert est.unknown_models == ["gw-mystery-1"]
    assert est.models["gw-mystery-1"].cost_ceiling() is None
    data = est.to_dict()
    assert data["total"]["unpriced_models"] == ["gw-mystery-1"]
    priced = [m["cost_usd_ceiling_online"] for m in data["models"].values() if m["priced"]]
    assert data["total"]["cost_usd_ceiling_online"] == pytest.approx(sum(priced))
    assert "no price for gw-mystery-1" in format_estimate(est)


def test_duration_comes_from_configured_limits(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(120))
    est = estimate(config_for(inp, tmp_path / "out.parquet"))
    limits = LimitsConfig(Limits(rpm=60, otpm=3000))
    duration = estimate_duration(est, limits, concurrency=4)
    # 120 requests at 60/min = 120 s; 6,000 output tokens (ceiling) at 3,000/min = 120 s too.
    assert duration.seconds == pytest.approx(120.0)
    assert "limit" in duration.bound
    assert estimate_duration(est, None, 4).seconds is None
    est.latency_s = 2.0
    assert estimate_duration(est, None, 4).seconds == pytest.approx(120 * 2.0 / 4)


def test_a_batch_run_is_paced_by_the_batches_api_not_by_this_machine(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(120))
    est = estimate(config_for(inp, tmp_path / "out.parquet", via="batches", rpm=60))
    assert est.duration.seconds is None
    assert est.duration.bound.startswith("up to 24 h")
    # The online time stays as a detail, to compare: 120 requests at 60 RPM.
    assert est.duration.detail[-1] == (
        "online: about 2.0 min, set by claude-haiku-4-5: requests (RPM) limit 60/min"
    )
    text = format_estimate(est)
    assert "expires" in text and "online: about 2.0 min" in text


def test_parse_pilot() -> None:
    assert parse_pilot("10", 100) == 10
    assert parse_pilot("5%", 100) == 5
    assert parse_pilot("0.5%", 100) == 1
    assert parse_pilot("500", 40) == 40
    for bad in ("0", "-3", "abc", "150%", "0%"):
        with pytest.raises(ConfigError, match="pilot="):
            parse_pilot(bad, 100)
    sample = choose_sample(list(range(0, 200, 2)), 10, seed=7)
    assert len(sample) == 10 and all(i % 2 == 0 for i in sample)
    assert sample == choose_sample(list(range(0, 200, 2)), 10, seed=7)


# --- exact -----------------------------------------------------------------------------------


def test_exact_counts_each_distinct_request_once(tmp_path: Path, sim: SimulatorThread) -> None:
    rows = prompts(12) + [{"id": f"dup{i}", "prompt": "the same question"} for i in range(5)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    config = config_for(inp, tmp_path / "out.parquet", base_url=sim.base_url)
    est = estimate(config, exact=True, count_rpm=100_000)

    (line,) = est.models.values()
    # The run sends the 5 identical requests once (dedup): 13 to send, 4 filled for $0.
    assert (line.pending, line.duplicates) == (13, 4)
    assert line.input_tokens == sum(count_input_tokens(b) for b in bodies(rows[:13], config))
    assert est.counted == 13 and est.count_failures == 0
    assert "count_tokens" in format_estimate(est)


def test_the_pacer_spaces_requests_evenly() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async def go() -> None:
        pacer = Pacer(120, lambda: now[0], sleep)
        for _ in range(4):
            await pacer.wait()

    asyncio.run(go())
    assert slept == [0.5, 0.5, 0.5]


# --- the projection --------------------------------------------------------------------------


def test_projection_is_exact_when_every_answer_is_alike() -> None:
    observed = [Observed("claude-haiku-4-5", 100, 120, 40) for _ in range(5)]
    pending = [Pending("claude-haiku-4-5", 50, rows=300, estimated_input=30_000)]
    from batchrun.cost.prices import load_prices

    proj = project(observed, pending, load_prices(), replicates=50)
    assert proj is not None
    # Input calibrated by 120/100; output 40 a row; at $1/M in and $5/M out.
    assert set(proj.input_tokens["claude-haiku-4-5"]) == {36_000.0}
    assert set(proj.output_tokens["claude-haiku-4-5"]) == {12_000.0}
    assert proj.total_cost[0] == pytest.approx((36_000 + 5 * 12_000) / 1e6)
    assert project([], pending, load_prices()) is None


def test_projection_cuts_answers_at_the_pending_rows_max_tokens() -> None:
    from batchrun.cost.prices import load_prices

    observed = [Observed("m", 10, 10, n) for n in (10, 100, 1000)]
    pending = [Pending("m", 20, rows=1000, estimated_input=0)]
    proj = project(observed, pending, load_prices(), replicates=200)
    assert proj is not None and max(proj.output_tokens["m"]) <= 20_000
    assert proj.pooled_models == set() and "m" not in proj.cost  # unpriced model


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([5.0], 0.9) == 5.0


# --- the pilot -------------------------------------------------------------------------------


def test_a_pilot_range_contains_the_cost_of_the_full_run_that_follows(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    """The issue's acceptance check, on jobs/estimate_costs.toml against the simulator."""
    out = tmp_path / "analysis.parquet"
    flags = {"output": str(out), "base_url": sim.base_url, "quiet": True}
    config = load_config(JOB, flags, environ={"ANTHROPIC_API_KEY": TEST_KEY})
    est = estimate(config, pilot="10")

    assert est.pilot is not None and est.pilot.size == 10 and est.pilot.sent == 10
    assert est.answered == 10 and est.pending == 40
    low, mid, high = est.total_cost() or (0.0, 0.0, 0.0)
    assert low < mid < high
    assert est.pilot.spent_usd == pytest.approx(est.paid_usd)

    sent_before = sim.stats.snapshot().answered_ok
    summary = run(config)
    assert summary.exit_code == 0 and summary.skipped == 10  # pilot rows are not paid twice
    assert sim.stats.snapshot().answered_ok - sent_before == 40
    full = report([out])
    assert full.rows == 50 and full.ok == 50
    assert low <= full.cost_usd <= high
    o_low, _, o_high = est.total_output() or (0, 0, 0)
    assert o_low <= full.output_tokens <= o_high


def test_a_pilot_as_a_percentage_with_exact_counts(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(40))
    config = config_for(inp, tmp_path / "out.jsonl", base_url=sim.base_url)
    est = estimate(config, pilot="25%", exact=True, count_rpm=100_000, seed=3)
    assert est.pilot is not None and est.pilot.size == 10 and est.pilot.ok == 10
    assert est.counted == 30  # only the rows still to send are counted
    assert est.latency_s is not None and est.duration.seconds is not None
    data = est.to_dict()
    assert data["level"] == "pilot" and data["exact_input"] is True
    assert data["projection"]["source"] == "pilot"
    assert data["total"]["cost_usd_online"]["p10"] <= data["total"]["cost_usd_online"]["p90"]


def test_rows_recorded_invalid_count_as_to_send_once_the_job_makes_them_valid(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    # One row names its own model, so the job without one is not refused up front
    # (runs.preflight): the other twelve are recorded invalid, for want of a model.
    rows = [*prompts(12), {"id": "own", "prompt": "Hi", "model": "claude-haiku-4-5"}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    first = run(config_for(inp, out, base_url=sim.base_url, model=None))
    assert (first.invalid, first.ok) == (12, 1)
    est = estimate(config_for(inp, out, base_url=sim.base_url))
    assert (est.pending, est.answered, est.invalid) == (12, 1, 0)
    assert sum(line.failed for line in est.models.values()) == 0


def test_answers_already_in_the_output_inform_a_later_offline_estimate(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    out = tmp_path / "out.parquet"
    config = config_for(inp, out, base_url=sim.base_url)
    asyncio.run(run_job(config, only=set(range(8))))  # a pilot's way: some rows only
    est = estimate(config)
    assert est.answered == 8 and est.pending == 22
    assert est.projection_source == "answered rows"
    assert "may not be a random sample" in format_estimate(est)


# --- command line ----------------------------------------------------------------------------


def test_cli_estimate_json_and_text(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(15))
    common = [
        str(inp),
        "-o",
        str(tmp_path / "out.parquet"),
        "--model",
        "claude-sonnet-4-6",
        "--max-tokens",
        "64",
        "--base-url",
        sim.base_url,
        "-q",
    ]
    runner = CliRunner()
    env = {"ANTHROPIC_API_KEY": TEST_KEY}
    result = runner.invoke(cli, ["estimate", *common, "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["level"] == "offline" and data["pending_rows"] == 15
    result = runner.invoke(cli, ["estimate", *common, "--pilot", "5"], env=env)
    assert result.exit_code == 0, result.output
    assert "pilot       5 random rows" in result.stdout and "10-90%" in result.stdout
    result = runner.invoke(cli, ["estimate", *common, "--pilot", "many"], env=env)
    assert result.exit_code == 1 and "--pilot" in result.stderr
    result = runner.invoke(cli, ["estimate", "--help"])
    assert "--max-cost" in result.stdout and "--concurrency" in result.stdout


def test_a_pilot_learns_the_rate_limits_that_set_the_pace(tmp_path: Path) -> None:
    with SimulatorThread(SimulatorConfig(rpm=600)) as sim:
        inp = write_jsonl(tmp_path / "in.jsonl", prompts(60))
        config = config_for(inp, tmp_path / "out.parquet", base_url=sim.base_url)
        est = estimate(config, pilot="5")
    assert est.pilot is not None and est.pilot.limits["claude-haiku-4-5"].rpm == 600
    # 55 requests left at 600 a minute: 5.5 s, slower than 4 at a time at the simulator's speed.
    assert est.duration.seconds == pytest.approx(55 / 600 * 60)
    assert "RPM" in est.duration.bound and "pilot" in est.duration.bound


def test_a_pilot_with_no_valid_row_says_why_before_sending(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = [{"id": f"r{i}", "prompt": "", "max_tokens": 5} for i in range(4)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    config = config_for(inp, tmp_path / "out.parquet", base_url=sim.base_url)
    with pytest.raises(InputError, match=r"nothing to run a pilot on\. The first: .*in\.jsonl:1"):
        estimate(config, pilot="2")
    assert sim.stats.snapshot().requests == 0


def test_an_offline_estimate_with_no_valid_row_is_an_error_not_zero_dollars(
    tmp_path: Path,
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "only", "prompt": "   "}])
    with pytest.raises(InputError, match=r"checked its one row.*Why: .*in\.jsonl:1"):
        estimate(config_for(inp, tmp_path / "out.parquet"))
