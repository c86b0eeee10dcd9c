"""Shards at the batch price (issue 26): ``run --shard I/N --via batches`` sends its rows in
Message Batches into its own output, resumes as any batch run (a batch created before a kill
is collected, never created again), and ``merge OUTPUT`` writes every row once, in order.
Real processes against the simulator, which keeps its batches across them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow.parquet as pq
from support import (
    job_config,
    prompts,
    python_process,
    reply_tag,
    rows_of,
    start_run,
    submitted_once,
    wait_until,
    write_jsonl,
)

import batchrun
from batchrun.runs.plan import in_shard
from batchrun.shards.layout import proof_path, shard_output
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.batch_journal import batch_journal_path

BATCHES = ("--via", "batches", "--poll-interval", "0.05")


def shard_ids(n: int, index: int, count: int) -> list[str]:
    return [row["id"] for row in prompts(n) if in_shard(row["id"], (index, count))]


def finish(proc: subprocess.Popen[str]) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


def check_merged(out: Path, n: int) -> None:
    """Every input row once, in input order, answered by its own prompt in a batch."""
    rows = rows_of(out)
    assert [r["id"] for r in rows] == [p["id"] for p in prompts(n)]
    for src, row in zip(prompts(n), rows, strict=True):
        assert row["status"] == "ok" and row["text"].startswith(reply_tag(src["prompt"]))
        assert row["via"] == "batches" and row["batch_id"]
    assert "_index" not in pq.read_schema(out).names


def test_two_batch_shard_processes_and_merge_output_write_every_row_once_in_order(
    tmp_path: Path,
) -> None:
    n = 90
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out" / "labels.parquet"
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.3)) as sim:
        procs = [start_run(inp, out, sim.base_url, "--shard", f"{i}/2", *BATCHES) for i in (0, 1)]
        for proc in procs:
            finish(proc)
        submitted_once(sim, n)  # each row in one batch of one shard, once
        assert sim.stats.snapshot().batches_created == 2
    for i in (0, 1):
        shard = pq.read_table(shard_output(out, i, 2))
        assert shard.column("id").to_pylist() == shard_ids(n, i, 2)
        assert set(shard.column("via").to_pylist()) == {"batches"}
        assert proof_path(shard_output(out, i, 2)).exists()

    merged = python_process("-m", "batchrun", "merge", str(out))
    assert merged.returncode == 0, merged.stderr
    assert f"merged into {out}: {n:,} rows ({n:,} ok, 0 error)" in merged.stderr
    check_merged(out, n)


def test_a_batch_shard_killed_while_its_batch_runs_collects_it_when_run_again(
    tmp_path: Path,
) -> None:
    n = 60
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "labels.parquet"
    mine = shard_ids(n, 1, 2)
    with SimulatorThread(SimulatorConfig(batch_processing_s=2.0)) as sim:
        config = job_config(
            inp, out, sim.base_url, max_tokens=20, via="batches", poll_interval=0.05
        )
        assert batchrun.run_shard(config, 0, 2).exit_code == 0
        killed = start_run(inp, out, sim.base_url, "--shard", "1/2", *BATCHES)
        wait_until(
            lambda: sim.stats.snapshot().batches_created == 2,
            60,
            "shard 1's batch created",
            alive=[killed],
        )
        killed.kill()  # while its batch runs on the API
        killed.communicate(timeout=30)
        assert batch_journal_path(shard_output(out, 1, 2)).exists()
        assert not shard_output(out, 1, 2).exists()

        refused = python_process("-m", "batchrun", "merge", str(out))
        assert refused.returncode == 1
        assert "shard 1/2 is not finished (1 of its Message Batches still run" in refused.stderr

        again = batchrun.run_shard(config, 1, 2)
        assert again.exit_code == 0
        summary = again.summary
        assert summary.final is not None and summary.final.rows == len(mine)
        assert summary.batches_created == 0 and summary.batches_collected == 1
        stats = sim.stats.snapshot()
        assert stats.batches_created == 2  # the killed run's batch, collected: none created
        submitted_once(sim, n)
    batchrun.merge_shards(out)
    check_merged(out, n)


def test_a_finished_batch_shard_run_again_sends_nothing_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    n = 30
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "labels.jsonl"
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.1)) as sim:
        config = job_config(inp, out, sim.base_url, via="batches", poll_interval=0.05)
        for i in (0, 1):
            batchrun.run_shard(config, i, 2)
        before = shard_output(out, 1, 2).read_bytes()
        again = batchrun.run_shard(config, 1, 2)
        assert again.exit_code == 0 and again.summary.batches_created == 0
        assert again.summary.skipped == len(shard_ids(n, 1, 2))
        assert sim.stats.snapshot().batch_requests_submitted == n
    assert shard_output(out, 1, 2).read_bytes() == before
    counts = batchrun.merge_shards(config)
    assert (counts.rows, counts.ok) == (n, n)
