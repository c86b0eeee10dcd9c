"""``--max-cost`` caps the job, not one run: what the job spent is kept with its output (and
survives a ``kill -9``), a re-run spends only what is left, a larger cap lets it go on, and
``--overwrite`` starts a new job at zero. Whole runs against the simulator over loopback."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from click.testing import CliRunner
from support import TEST_KEY, job_config, journal_lines, start_run, wait_for_journal, write_jsonl

from batchrun import run
from batchrun.cli import cli
from batchrun.cli.options import flag_names
from batchrun.config.load import RunConfig
from batchrun.core.wording import command_line
from batchrun.cost.budget import Budget
from batchrun.cost.prices import load_prices
from batchrun.render.summary import format_summary
from batchrun.rows.tokens import estimate_input_tokens
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.resume import job_ledger
from batchrun.store.sink import journal_path

CAP = 0.05


def _documents(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"d{i:03d}", "prompt": f"Document {i}: " + "words and figures " * (20 + i % 30)}
        for i in range(n)
    ]


def _config(inp: Path, out: Path, url: str, **flags: Any) -> RunConfig:
    settings = {"model": "claude-sonnet-4-6", "max_tokens": 400, "concurrency": 6, **flags}
    return job_config(inp, out, url, **settings)


def _paid(out: Path) -> float:
    """What every answer the journal holds cost: the journal keeps each run's records (a
    stopped job's journal stays), so this is what the job paid."""
    lines = journal_path(out).read_text(encoding="utf-8").splitlines()
    return sum(json.loads(line)["cost_usd"] or 0.0 for line in lines)


def _worst_case(rows: list[dict[str, Any]]) -> float:
    """The most one row's request could cost: the budget's contract allows that much over."""
    budget = Budget(Decimal(1), load_prices())
    bodies = (
        {"model": "claude-sonnet-4-6", "max_tokens": 400, "messages": [m]}
        for m in ({"role": "user", "content": r["prompt"]} for r in rows)
    )
    return float(max(budget.worst_case(b, estimate_input_tokens(b)) or 0 for b in bodies))


def test_three_reruns_after_a_budget_stop_spend_no_more_than_the_cap_in_all(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = _documents(60)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    runs = [run(_config(inp, out, sim.base_url, max_cost=CAP)) for _ in range(4)]

    assert all(s.exit_code == 4 and s.budget_stop and s.final is None for s in runs)
    paid = _paid(out)
    assert 0 < paid <= CAP + _worst_case(rows)
    assert sim.stats.answered_ok == journal_lines(out) < len(rows)
    # Each re-run knew what the job had spent before it, and spent at most what was left.
    before = 0.0
    for summary in runs:
        assert summary.job_cost_before is not None
        assert abs(summary.job_cost_before - before) < 1e-9
        assert summary.cost_usd <= CAP - before + 1e-12
        before += summary.cost_usd
    assert abs(before - paid) < 1e-9
    ledger = job_ledger(out)
    assert ledger is not None and abs(ledger.spent_for(sim.base_url) - paid) < 1e-9


def test_raising_the_cap_lets_the_job_go_on_with_the_remainder(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = _documents(40)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    stopped = run(_config(inp, out, sim.base_url, max_cost=CAP))
    assert stopped.exit_code == 4
    done = stopped.ok
    raised = run(_config(inp, out, sim.base_url, max_cost=1.0))
    assert raised.exit_code == 0 and raised.skipped == done and raised.ok == len(rows) - done
    assert raised.job_cost_before == stopped.cost_usd
    assert raised.job_cost_usd is not None
    assert abs(raised.job_cost_usd - (stopped.cost_usd + raised.cost_usd)) < 1e-9
    table = pq.read_table(out).to_pylist()
    assert [r["id"] for r in table] == [r["id"] for r in rows]
    assert abs(sum(r["cost_usd"] for r in table) - raised.job_cost_usd) < 1e-9


def test_a_job_that_spent_its_cap_sends_nothing_and_says_how_to_go_on(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = _documents(40)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    first = run(_config(inp, out, sim.base_url, max_cost=CAP))
    assert first.exit_code == 4
    spent = first.cost_usd
    sent = sim.stats.requests
    left = len(rows) - first.ok

    args = ["run", str(inp), "-o", str(out), "--base-url", sim.base_url, "-c", "6"]
    args += ["--model", "claude-sonnet-4-6", "--max-tokens", "400", "--max-cost", f"{spent}"]
    result = CliRunner().invoke(cli, args, env={"ANTHROPIC_API_KEY": TEST_KEY})
    assert result.exit_code == 4, result.stderr
    assert sim.stats.requests == sent  # nothing sent
    err = result.stderr
    assert f"the job has already spent ${spent:.4f} of its ${spent} budget" in err
    assert f"for the job so far, of a ${spent:g} budget" in err
    assert f"budget      stopped with {left} rows left: re-run with --max-cost" in err
    assert "Re-run the same command" not in err
    found = re.search(rf"{left} rows are left: re-run with --max-cost ([0-9.]+) to spend", err)
    assert found, err
    raised = float(found.group(1))
    assert raised > spent

    # The way it names goes on: the rows left are sent, within the raised cap, to the end.
    again = run(_config(inp, out, sim.base_url, max_cost=raised))
    assert again.exit_code == 0 and again.ok == left and sim.stats.answered_ok == len(rows)
    assert again.job_cost_usd is not None and again.job_cost_usd <= raised


def test_a_kill_9_loses_no_spend_already_journaled(tmp_path: Path) -> None:
    n = 200
    rows = [{"id": f"q{i:04d}", "prompt": f"Question number {i}"} for i in range(n)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(latency_mean=0.03, latency_jitter=0.02)) as sim:
        proc = start_run(inp, out, sim.base_url, "--max-cost", "100")
        wait_for_journal(out, proc, 40)
        proc.kill()
        proc.communicate(timeout=30)
        paid = _paid(out)
        sent = sim.stats.requests

        # A cap of exactly what the killed run paid: the job has nothing left to spend.
        config = job_config(inp, out, sim.base_url, max_tokens=20, max_cost=paid)
        resumed = run(config)
        assert resumed.exit_code == 4 and resumed.finished == 0
        assert sim.stats.requests == sent
        assert resumed.job_cost_before is not None
        assert abs(resumed.job_cost_before - paid) < 1e-9


def test_overwrite_starts_a_new_job_at_zero(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _documents(40))
    out = tmp_path / "out.parquet"
    first = run(_config(inp, out, sim.base_url, max_cost=CAP))
    assert first.exit_code == 4
    fresh = run(_config(inp, out, sim.base_url, max_cost=CAP, overwrite=True))
    assert fresh.job_cost_before == 0 and fresh.ok > 0
    assert abs(_paid(out) - fresh.cost_usd) < 1e-9  # the old journal went with the old job


def test_the_summary_after_a_budget_stop_reads_for_a_new_user(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _documents(40))
    out = tmp_path / "out.parquet"
    # One row at a time: the run stops at the first row whose worst case does not fit, so the
    # re-run finds the same room and the same row, and sends nothing. (With rows in flight
    # when it stops, their answers may cost less than reserved and leave room for one more.)
    config = _config(inp, out, sim.base_url, max_cost=CAP, concurrency=1)
    run(config)
    again = run(config)
    with command_line(flag_names()):  # the summary as the command prints it
        text = format_summary(again, config)
    job = again.job_cost_usd
    assert job is not None
    assert (
        f"  cost        $0.0000 this run; ${job:,.4f} for the job so far, of a $0.05 budget "
        "(--max-cost: the job's, across its runs)"
    ) in text
    line = next(x for x in text.splitlines() if x.startswith("  budget"))
    assert re.fullmatch(
        r"  budget      stopped with \d+ rows left: re-run with --max-cost [0-9.]+ to spend up "
        r"to \$[0-9.]+ more \(the rows left would cost about \$[0-9.]+ at the average so far\); "
        r"the same --max-cost 0\.05 leaves \$[0-9.]+ to spend",
        line,
    ), line
