"""A trial (--limit N, --sample N --seed S) runs a few rows into the job's own output; the run
without it sends only the rest; the summary says it was a trial and what the whole job costs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, journal_lines, rows_of, write_jsonl

from batchrun import run
from batchrun.cli import cli
from batchrun.core.errors import ConfigError
from batchrun.formats.registry import read_partial
from batchrun.render.summary import format_summary, summary_dict
from batchrun.simulator import SimulatorThread


def _rows(n: int) -> list[dict[str, str]]:
    return [{"id": f"row-{i:07d}", "prompt": f"Review {i}: fine, I guess."} for i in range(n)]


def test_limit_sends_the_first_rows_and_the_full_run_the_rest(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(200))
    out = tmp_path / "out.parquet"

    trial = run(job_config(inp, out, sim.base_url, limit=10))
    assert sim.stats.answered_ok == 10
    summary = trial.summary
    assert summary.exit_code == 0
    assert summary.trial is not None and summary.trial.rows == 10
    assert summary.trial.pending == 190
    # The trial's rows are readable now, as a partial output of the job's own output.
    assert read_partial(out) is not None
    assert [r["id"] for r in rows_of(out)] == [f"row-{i:07d}" for i in range(10)]
    low, mid, high = summary.trial.job_cost_usd or (0, 0, 0)
    assert 0 < low <= mid <= high
    # The whole job costs about 20 times the trial (every row alike here).
    assert summary.cost_usd * 10 < mid < summary.cost_usd * 40
    text = format_summary(summary, trial.config)
    assert "trial       10 of 200 rows (limit=10)" in text
    assert "sends the other 190" in text and "whole job   about $" in text
    assert summary_dict(summary, trial.config)["trial"]["pending"] == 190

    full = run(job_config(inp, out, sim.base_url))
    assert sim.stats.answered_ok == 200  # the other 190, each once
    assert full.summary.finished == 190 and full.summary.skipped == 10
    ids = [r["id"] for r in rows_of(out)]
    assert ids == [f"row-{i:07d}" for i in range(200)]
    assert read_partial(out) is None


def test_sample_draws_the_same_rows_for_the_same_seed_not_the_first(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(200))
    drawn = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.parquet"
        result = run(job_config(inp, out, sim.base_url, sample=10, seed=3))
        assert result.summary.trial is not None and result.summary.trial.rows == 10
        drawn.append(sorted(r["id"] for r in rows_of(out)))
    assert drawn[0] == drawn[1] and len(drawn[0]) == 10
    assert drawn[0] != [f"row-{i:07d}" for i in range(10)]
    other = tmp_path / "c.parquet"
    run(job_config(inp, other, sim.base_url, sample=10, seed=4))
    assert sorted(r["id"] for r in rows_of(other)) != drawn[0]
    # Again into the same output: nothing more is sent.
    before = sim.stats.answered_ok
    run(job_config(inp, tmp_path / "a.parquet", sim.base_url, sample=10, seed=3))
    assert sim.stats.answered_ok == before


def test_the_command_line_trial_then_the_run(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(30))
    out = tmp_path / "out.jsonl"
    args = ["run", str(inp), "-o", str(out), "--model", "claude-haiku-4-5", "--max-tokens", "9"]
    args += ["--base-url", sim.base_url, "-q"]
    env = {"ANTHROPIC_API_KEY": TEST_KEY}
    first = CliRunner().invoke(cli, [*args, "--sample", "5", "--seed", "1"], env=env)
    assert first.exit_code == 0, first.output
    assert "(--sample 5 --seed 1); the same command without --sample sends the other 25" in (
        first.output
    )
    assert journal_lines(out) == 5
    second = CliRunner().invoke(cli, args, env=env)
    assert second.exit_code == 0, second.output
    assert sim.stats.answered_ok == 30
    assert "25 rows: 25 ok, 0 error; 5 already done" in second.output


def test_a_trial_goes_with_nothing_that_picks_rows_itself(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(5))
    out = tmp_path / "out.parquet"
    with pytest.raises(ConfigError, match="not both"):
        run(job_config(inp, out, sim.base_url, limit=2, sample=2))
    with pytest.raises(ConfigError, match="online"):
        run(job_config(inp, out, sim.base_url, limit=2, via="batches"))
    assert sim.stats.requests == 0


def test_a_trial_of_rows_that_cannot_be_sent_says_it_cannot_project(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = [{"id": f"r{i}", "prompt": "x", "top_k": -1} for i in range(4)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    result = run(job_config(inp, tmp_path / "out.parquet", sim.base_url, limit=2))
    trial = result.summary.trial
    assert trial is not None and trial.pending is None and trial.job_cost_usd is None
    text = format_summary(result.summary, result.config)
    assert "trial       2 of 4 rows (limit=2); the same command without limit sends the rest" in (
        text
    )
    assert "whole job   not projected" in text and "batchrun.estimate(config)" in text
    assert result.summary.exit_code == 3 and sim.stats.requests == 0


def test_a_trial_fills_its_twins_and_the_full_run_fills_the_rest_from_its_answers(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    # The twin pass sees the trial's rows only; the run after it finds the twins of the
    # trial's answers in the journal and fills them without sending.
    rows = _rows(20)
    rows[3] = {"id": "twin-in-trial", "prompt": rows[0]["prompt"]}
    rows[15] = {"id": "twin-after", "prompt": rows[0]["prompt"]}
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    trial = run(job_config(inp, out, sim.base_url, limit=5))
    assert sim.stats.answered_ok == 4 and trial.summary.deduplicated == 1
    full = run(job_config(inp, out, sim.base_url))
    assert sim.stats.answered_ok == 4 + 14  # row 15 is filled from the trial's answer
    assert full.summary.deduplicated == 1 and full.summary.finished == 15
    by_id = {r["id"]: r for r in rows_of(out)}
    assert by_id["twin-in-trial"]["duplicate_of"] == by_id["twin-after"]["duplicate_of"]
    assert by_id["twin-after"]["duplicate_of"] == "row-0000000"
