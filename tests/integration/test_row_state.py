"""One row-state enum decides which rows a run sends; estimate counts the same rows pending."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import job_config, no_wait, prompts, write_jsonl

from batchrun import estimate, run
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.row_state import RowState, count_done, state_of, to_send


@pytest.mark.parametrize(
    ("status", "error_type", "state"),
    [
        ("ok", None, RowState.OK),
        ("error", "invalid_request", RowState.NOTHING),
        ("error", "overloaded_error", RowState.ERROR),
        ("error", "expired", RowState.LAPSED),
        ("error", "canceled", RowState.LAPSED),
    ],
)
def test_state_of_a_record(status: str, error_type: str | None, state: RowState) -> None:
    assert state_of(status, error_type) is state


@pytest.mark.parametrize("retry_errors", [False, True])
@pytest.mark.parametrize("redo_lapsed", [False, True])
def test_to_send_and_count_done_agree(retry_errors: bool, redo_lapsed: bool) -> None:
    states = bytearray([RowState.NOTHING, RowState.OK, RowState.ERROR, RowState.LAPSED] * 3)
    flags = {"retry_errors": retry_errors, "redo_lapsed": redo_lapsed}
    sent = sum(to_send(s, **flags) for s in states)
    assert count_done(states, **flags) == len(states) - sent
    assert not to_send(RowState.OK, **flags) and to_send(RowState.NOTHING, **flags)
    assert to_send(RowState.ERROR, **flags) is retry_errors
    assert to_send(RowState.LAPSED, **flags) is (retry_errors or redo_lapsed)


@pytest.mark.parametrize("flag", ["resubmit_expired", "finish_online"])
def test_estimate_counts_pending_the_expired_rows_the_run_sends(tmp_path: Path, flag: str) -> None:
    """The estimate said 0 pending while the run sent the expired row (issue: one house)."""
    n = 30
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    sim_config = SimulatorConfig(batch_processing_s=0.05, batch_expire_rate=0.2, seed=3)
    with SimulatorThread(sim_config) as sim:
        first = run(job_config(inp, out, sim.base_url, via="batches", poll_interval=0.05))
        expired = first.error_types["expired"]
        assert expired > 0
        flags = {"via": "batches", "poll_interval": 0.05, flag: True}
        config = job_config(inp, out, sim.base_url, **flags)
        plain = estimate(job_config(inp, out, sim.base_url, via="batches"))
        est = estimate(config)
        assert plain.pending == 0  # without the flag, a re-run sends nothing
        assert est.pending == expired
        second = run(config, runtime=Runtime(sleep=no_wait))
    assert second.finished == expired  # exactly the rows the estimate said were pending
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == n
    assert sum(r["status"] == "ok" or r["error_type"] == "expired" for r in rows) == n
