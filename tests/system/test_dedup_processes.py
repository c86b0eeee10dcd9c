"""In-run dedup (issue 17, item 3) across a batch run in another process: a twin of a row whose
batch is still running waits for it (the rest: tests/integration/test_dedup.py)."""

from __future__ import annotations

import signal
from pathlib import Path

import pyarrow.parquet as pq
from support import job_config, start_run, write_jsonl

from batchrun import run
from batchrun.simulator import SimulatorConfig, SimulatorThread


def test_a_twin_of_a_row_in_a_batch_still_running_waits_for_it(tmp_path: Path) -> None:
    """Stopped with a batch running, then re-run with rows added that repeat its requests:
    the repeats are not submitted; they are filled once the running batch is collected."""
    first = [{"id": f"a{i}", "prompt": f"Question {i}?"} for i in range(10)]
    inp = write_jsonl(tmp_path / "in.jsonl", first)
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(batch_processing_s=4.0)) as bsim:
        proc = start_run(inp, out, bsim.base_url, "--via", "batches", "--poll-interval", "0.05")
        journal = tmp_path / "out.parquet.batches"
        while not journal.exists() or '"event":"created"' not in journal.read_text():
            assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 130
        write_jsonl(inp, first + [{"id": f"b{i}", "prompt": f"Question {i}?"} for i in range(10)])
        config = job_config(
            inp, out, bsim.base_url, via="batches", poll_interval=0.05, max_tokens=20
        )  # the same requests as start_run's
        summary = run(config)
        stats = bsim.stats.snapshot()
    assert summary.exit_code == 0 and summary.deduplicated == 10
    assert stats.batch_requests_submitted == 10 and stats.batches_created == 1
    table = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert all(table[f"b{i}"]["duplicate_of"] == f"a{i}" for i in range(10))
