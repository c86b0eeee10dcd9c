"""The --max-cost budget in whole runs against the simulator: a run stopped in time, a zero
budget, the CLI's exit 4 and the progress line's costs (the arithmetic:
tests/unit/test_budget.py)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, write_jsonl

from batchrun import run
from batchrun.cli import cli
from batchrun.config.load import RunConfig
from batchrun.cost.budget import Budget
from batchrun.cost.prices import load_prices
from batchrun.rows.tokens import estimate_input_tokens
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorThread
from batchrun.store.sink import journal_path


def _config(inp: Path, out: Path, url: str, **flags: Any) -> RunConfig:
    return job_config(
        inp,
        out,
        url,
        **{"model": "claude-sonnet-4-6", "max_tokens": 400, "concurrency": 6, **flags},
    )


# --- against the simulator ------------------------------------------------------------------


def _documents(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"d{i:03d}", "prompt": f"Document {i}: " + "words and figures " * (20 + i % 30)}
        for i in range(n)
    ]


def _journal(out: Path) -> list[dict[str, Any]]:
    lines = journal_path(out).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_the_cap_stops_a_run_within_one_requests_worst_case(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = _documents(60)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    cap = 0.05
    summary = run(_config(inp, out, sim.base_url, max_cost=cap))

    assert summary.exit_code == 4 and summary.final is None and summary.budget_stop
    answered = _journal(out)
    spent = sum(r["cost_usd"] for r in answered)
    assert 0 < len(answered) < len(rows)
    assert spent <= cap
    assert summary.cost_usd == pytest.approx(spent)
    # It stopped because the next request might not fit: less than one worst case was left.
    prices = load_prices()
    budget = Budget(Decimal(repr(cap)), prices)
    worst = max(
        budget.worst_case(b, estimate_input_tokens(b)) or Decimal(0)
        for b in (
            {"model": "claude-sonnet-4-6", "max_tokens": 400, "messages": [m]}
            for m in ({"role": "user", "content": r["prompt"]} for r in rows)
        )
    )
    assert Decimal(repr(cap)) - Decimal(repr(spent)) < worst

    # The run resumes like any other; nothing answered is sent again.
    before = sim.stats.snapshot().answered_ok
    resumed = run(_config(inp, out, sim.base_url))
    assert resumed.exit_code == 0 and resumed.skipped == len(answered)
    assert sim.stats.snapshot().answered_ok - before == len(rows) - len(answered)
    final = pq.read_table(out).to_pylist()
    assert [r["id"] for r in final] == [r["id"] for r in rows]
    assert all(r["cost_usd"] > 0 for r in final)


def test_a_zero_budget_sends_nothing(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _documents(5))
    out = tmp_path / "out.parquet"
    summary = run(_config(inp, out, sim.base_url, max_cost=0))
    assert summary.exit_code == 4 and summary.finished == 0
    assert sim.stats.snapshot().answered_ok == 0


def test_the_cli_exits_4_with_a_message_and_shows_the_cost(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _documents(30))
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(inp),
            "-o",
            str(out),
            "--model",
            "claude-sonnet-4-6",
            "--max-tokens",
            "400",
            "--base-url",
            sim.base_url,
            "--max-cost",
            "0.02",
            "-q",
        ],
        env={"ANTHROPIC_API_KEY": TEST_KEY},
    )
    assert result.exit_code == 4, result.stderr
    assert "stopped by the budget (--max-cost 0.02)" in result.stderr
    assert "of a $0.02 budget" in result.stderr, result.stderr
    # The cap is the job's: the same command would send nothing, so the way on is a larger cap.
    assert "Re-run the same command" not in result.stderr
    way_on = r"\d+ rows are left: re-run with --max-cost 0\.\d+ to spend up to \$0\.\d+ more"
    assert re.search(way_on, result.stderr), result.stderr
    assert "the rows finished so far are in" in result.stderr


def test_the_progress_line_shows_spent_and_projected_cost(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    import io

    from batchrun.runs import online as runner

    inp = write_jsonl(tmp_path / "in.jsonl", _documents(4))
    config = _config(inp, tmp_path / "out.parquet", sim.base_url, max_cost=5)
    summary = run(config, runtime=Runtime(progress_stream=io.StringIO())).summary
    summary.todo = 8
    line = runner._cost_status(summary)
    assert f"cost=${summary.cost_usd:.4f}" in line
    assert f"proj=${summary.cost_usd * 2:.4f}" in line and "max=$5" in line


def test_samples_cut_off_by_the_cap_are_counted_in_the_jobs_spend_and_asked_again(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    # --samples 3: the cap stops the run between a row's samples. What those samples cost is
    # journaled (a samples_cut record), so this run's cost and the job's ledger hold every
    # request paid; the next run asks the cut rows again whole, and every row ends answered.
    rows = _documents(30)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    sampled = {"samples": 3, "temperature": 1.0}
    summary = run(_config(inp, out, sim.base_url, max_cost=0.08, **sampled))
    assert summary.exit_code == 4 and summary.budget_stop
    records = _journal(out)
    cut = [r for r in records if r["error_type"] == "samples_cut"]
    assert cut, "the cap stopped between samples of no row: raise or lower it"
    paid = sum(r["cost_usd"] for r in records)
    samples_paid = sum(len(json.loads(r["samples_json"])) for r in records)
    assert samples_paid == sim.stats.requests  # every request answered is in the journal
    assert summary.cost_usd == pytest.approx(paid)
    sim.stats.reset()
    again = run(_config(inp, out, sim.base_url, **sampled))
    assert again.exit_code == 0
    assert sim.stats.requests == 3 * (len(rows) - (len(records) - len(cut)))
    assert again.job_cost_before == pytest.approx(paid)  # the ledger kept the cut samples
    final = pq.read_table(out).to_pylist()
    assert len(final) == len(rows) and all(r["status"] == "ok" for r in final)
