"""Every output row of a whole run is priced from its own usage (the price table:
tests/unit/test_pricing.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import TEST_KEY, prompts, write_jsonl

from batchrun import load_config, run
from batchrun.cost.prices import (
    Usage,
    load_prices,
)
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread

# --- cost_usd in a real run -----------------------------------------------------------------


def test_every_output_row_is_priced_from_its_own_usage(tmp_path: Path) -> None:
    # Two rows ask for a gateway's own alias, which this simulator answers as a gateway would.
    rows = [*prompts(6), {"id": "odd", "prompt": "hello", "model": "gw-unpriced-1"}]
    rows.append({"id": "odd2", "prompt": "again", "model": "gw-unpriced-1"})
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    stream = io.StringIO()
    with SimulatorThread(SimulatorConfig(gateway_models=frozenset({"gw-unpriced-1"}))) as sim:
        config = load_config(
            inp,
            {
                "output": str(out),
                "model": "claude-haiku-4-5",
                "max_tokens": 30,
                "base_url": sim.base_url,
            },
            environ={"ANTHROPIC_API_KEY": TEST_KEY},
        )
        summary = run(config, runtime=Runtime(progress_stream=stream))
    got = pq.read_table(out).to_pylist()
    table = load_prices()
    for row in got[:6]:
        expected = table.cost(
            "claude-haiku-4-5",
            Usage(input_tokens=row["input_tokens"], output_tokens=row["output_tokens"]),
        )
        assert expected is not None and row["cost_usd"] == float(expected)
    assert [r["cost_usd"] for r in got[6:]] == [None, None]
    assert summary.unpriced == 2
    assert summary.cost_usd == pytest.approx(sum(r["cost_usd"] for r in got[:6]))
    assert stream.getvalue().count("model 'gw-unpriced-1' is not a model batchrun knows") == 1
