"""A stray 429 must not stop the world (issue 18), in whole runs against the simulator with
scattered 429s (the decision rules and MockTransport runs: tests/unit/test_proportional_429.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from support import job_config, no_wait, prompts, write_jsonl

from batchrun import run
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread


def test_a_run_with_scattered_429s_ends_ok_without_pausing_for_each(tmp_path: Path) -> None:
    n = 600
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    config = SimulatorConfig(
        error_rates={"429": 0.04, "529": 0.03}, retry_after=1.0, latency_mean=0.001, seed=18
    )
    with SimulatorThread(config) as sim:
        summary = run(
            job_config(inp, out, sim.base_url, concurrency=16), runtime=Runtime(sleep=no_wait)
        )
        refused = sim.stats.faults["429"]
    rows = pq.read_table(out).to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * n
    assert refused > 10 and summary.rate_limited_429s == refused
    # Scattered (4 % of answers, no rate-limit headers): never a cluster, so no pause at all,
    # and every 429 was waited out by its own request. The faults are seeded by arrival.
    assert summary.rate_pauses == 0
    assert summary.rate_429s_retried == refused


def test_injected_429s_whose_headers_show_plenty_left_never_pause(tmp_path: Path) -> None:
    """A limit far above the run's needs: every 429 carries headers saying most is left."""
    n = 300
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    config = SimulatorConfig(
        error_rates={"429": 0.05}, retry_after=1.0, rpm=1_000_000, latency_mean=0.001, seed=7
    )
    with SimulatorThread(config) as sim:
        summary = run(
            job_config(inp, out, sim.base_url, concurrency=16), runtime=Runtime(sleep=no_wait)
        )
        refused = sim.stats.faults["429"]
    assert [r["status"] for r in pq.read_table(out).to_pylist()] == ["ok"] * n
    assert refused > 5
    assert summary.rate_pauses == 0 and summary.rate_429s_retried == refused
