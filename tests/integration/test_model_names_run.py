"""A budgeted run whose model name has a dotted version runs to the end against the simulator
(model names and their prices: tests/unit/test_model_names.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from support import TEST_KEY, prompts, write_jsonl

from batchrun import load_config, run
from batchrun.simulator import SimulatorThread


def test_a_budgeted_run_with_a_dotted_version_runs_to_the_end(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(6))
    out = tmp_path / "out.parquet"
    config = load_config(
        inp,
        {
            "output": str(out),
            "model": "claude-haiku-4.5",
            "max_tokens": 30,
            "max_cost": 1.0,
            "base_url": sim.base_url,
            "quiet": True,
        },
        environ={"ANTHROPIC_API_KEY": TEST_KEY},
    )
    summary = run(config)
    assert summary.budget_stop is None and summary.exit_code == 0
    assert summary.ok == 6 and summary.unpriced == 0 and summary.cost_usd > 0
    # The simulator names the model it was asked for: the dotted name went out unchanged.
    assert {r["model"] for r in pq.read_table(out).to_pylist()} == {"claude-haiku-4.5"}
