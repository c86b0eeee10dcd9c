"""Batches built from the rows a round's first pass kept (``batches.planned``), on the
simulator: the same output as batches built from rows prepared again, twins, rows that
cannot be sent and kept columns included, whether every row was kept or the file's bound cut
the keeping short; and the file is gone once the run ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from support import batch_config, submitted_once, write_jsonl

from batchrun import run
from batchrun.simulator import SimulatorConfig, SimulatorThread

# What differs between two runs of the same rows: when, which batch, which server answered.
_OF_THE_RUN = {"finished_at", "batch_id", "elapsed_ms", "request_id", "source"}


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(60):
        rows.append({"id": f"r{i}", "prompt": f"Question {i % 45}: a river?", "topic": f"t{i}"})
    rows[10]["max_tokens"] = 10**9  # cannot be sent: the model's limit
    rows[33] = {"id": "r33", "topic": "no prompt"}
    rows.append({"id": "r5", "prompt": "An id used twice."})
    return rows


def _run(tmp_path: Path, name: str, **flags: Any) -> tuple[list[dict[str, Any]], Any]:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows())
    out = tmp_path / f"{name}.parquet"
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.1)) as sim:
        summary = run(
            batch_config(inp, out, sim.base_url, keep_columns="topic", batch_max_requests=8)
        )
        submitted_once(sim, 44)  # 45 distinct questions; the one of r33 has no prompt
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".planned")]
    table = [
        {k: v for k, v in row.items() if k not in _OF_THE_RUN}
        for row in pq.read_table(out).to_pylist()
    ]
    return table, summary


def test_batches_from_kept_rows_match_rows_prepared_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, summary = _run(tmp_path, "kept")
    assert summary.exit_code == 3 and summary.ok == 58 and summary.invalid == 3
    assert summary.deduplicated == 14
    by_id = {row["id"]: row for row in kept if row["id"] != "r5"}
    assert by_id["r50"]["duplicate_of"] == "r5" and by_id["r50"]["topic"] == "t50"
    assert by_id["r10"]["error_type"] == "invalid_request" and "max_tokens" in str(
        by_id["r10"]["error_message"]
    )
    assert by_id["r33"]["topic"] == "no prompt" and by_id["r33"]["status"] == "error"
    assert kept[-1]["status"] == "error" and "r5" in str(kept[-1]["error_message"])

    # Only the first 8 rows kept (one record, past a 1-byte bound): the rest prepared again.
    monkeypatch.setattr("batchrun.batches.planned.ROWS_PER_RECORD", 8)
    monkeypatch.setattr("batchrun.batches.planned.MAX_BYTES", 1)
    again, summary = _run(tmp_path, "again")
    assert summary.exit_code == 3 and summary.ok == 58 and summary.deduplicated == 14
    assert again == kept
