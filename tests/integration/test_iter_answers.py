"""``batchrun.iter_answers``: output rows handed over as they finish, each journaled first, with
run's resume guarantees; stopping the loop early stops the job and keeps what finished."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from support import TEST_KEY, journal_lines, reply_tag

import batchrun
from batchrun import ConfigError, RunResult
from batchrun.simulator import SimulatorThread

ROWS = [{"id": f"q{i:03d}", "prompt": f"Question {i}?"} for i in range(40)]


def _answers(
    sim: SimulatorThread, out: Path, **more: Any
) -> Generator[dict[str, Any], None, RunResult]:
    return batchrun.iter_answers(
        ROWS,
        model="claude-haiku-4-5",
        max_tokens=10,
        output=out,
        base_url=sim.base_url,
        environ={"ANTHROPIC_API_KEY": TEST_KEY},
        quiet=True,
        concurrency=4,
        **more,
    )


def test_every_row_is_handed_over_once_journaled_first(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    out = tmp_path / "out.parquet"
    seen = []
    answers = _answers(sim, out)
    for row in answers:
        seen.append(row["id"])
        # Journaled before it was handed over (the journal goes once the output is final).
        assert out.exists() or journal_lines(out) >= len(seen)
        assert row["status"] == "ok"
        assert row["text"].startswith(reply_tag(f"Question {int(row['id'][1:])}?"))
    assert sorted(seen) == [r["id"] for r in ROWS]
    assert sim.stats.answered_ok == 40


def test_the_run_result_is_the_generators_value(tmp_path: Path, sim: SimulatorThread) -> None:
    def drain() -> Generator[dict[str, Any], None, RunResult]:
        return (yield from _answers(sim, tmp_path / "out.parquet"))

    gen = drain()
    rows = []
    with pytest.raises(StopIteration) as stop:
        while True:
            rows.append(next(gen))
    result = stop.value.value
    assert isinstance(result, RunResult) and result.exit_code == 0 and len(rows) == 40
    assert result.table.num_rows == 40


def test_a_loop_stopped_early_stops_the_job_and_a_second_call_resumes(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    out = tmp_path / "out.parquet"
    first = []
    for row in _answers(sim, out):
        first.append(row["id"])
        if len(first) == 5:
            break  # closes the generator: the job stops, what finished is journaled
    done_before = journal_lines(out)  # the job stopped: what finished is journaled
    assert done_before >= 5
    sent_before = sim.stats.answered_ok
    second = list(_answers(sim, out))
    # Every row of the job once: this call's answers as they finished, then the earlier ones.
    assert sorted(row["id"] for row in second) == [r["id"] for r in ROWS]
    earlier = {row["id"] for row in second[40 - done_before :]}
    assert set(first) <= earlier and len(earlier) == done_before
    # Nothing journaled before was sent again.
    assert sim.stats.answered_ok - sent_before == 40 - done_before


def test_batches_are_refused(tmp_path: Path, sim: SimulatorThread) -> None:
    with pytest.raises(ConfigError, match="online"):
        next(_answers(sim, tmp_path / "out.parquet", via="batches"))
