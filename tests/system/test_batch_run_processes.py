"""Message Batches runs as real processes: killed between a create and its journal line,
interrupted while batches run, cancelled, or given an input that changed meanwhile; no row is
submitted twice (the runs in-process: tests/integration/test_batch_run.py)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support import (
    TEST_KEY,
    batch_config,
    check_output,
    prompts,
    rows_of,
    start_run,
    submitted_once,
    wait_until,
    write_jsonl,
)

from batchrun import run
from batchrun.cli import cli
from batchrun.runs.resume import ResumeMismatchError
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.batch_journal import BatchJournal, batch_journal_path

# -- real processes ---------------------------------------------------------------------------


def start_batch_run(inp: Path, out: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    return start_run(inp, out, url, "--via", "batches", "--poll-interval", "0.05", *extra)


def test_kill_between_create_and_journaling_the_id_submits_the_rows_once(
    tmp_path: Path,
) -> None:
    n = 50
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.3)) as sim:
        procs: list[subprocess.Popen[str]] = []

        def kill_client(batch: dict[str, Any]) -> None:
            # The batch is stored; its id has not reached the client yet.
            procs[0].kill()
            procs[0].wait(timeout=30)

        sim.simulator.on_batch_created = kill_client
        procs.append(start_batch_run(inp, out, sim.base_url, "--batch-max-requests", "20"))
        assert procs[0].wait(timeout=60) == -signal.SIGKILL
        procs[0].communicate(timeout=30)
        sim.simulator.on_batch_created = None
        journal = BatchJournal.load(batch_journal_path(out))
        assert [(e.key, e.batch_id) for e in journal.entries.values()] == [("b1", None)]
        assert sim.stats.snapshot().batch_requests_submitted == 20

        resumed = start_batch_run(inp, out, sim.base_url, "--batch-max-requests", "20")
        _, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        submitted_once(sim, n)
        check_output(out, n)
        entries = BatchJournal.load(batch_journal_path(out)).entries
        assert entries["b1"].reconciled and all(e.collected for e in entries.values())


def wait_for_created(out: Path, proc: subprocess.Popen[str], count: int) -> None:
    path = batch_journal_path(out)

    def created() -> bool:
        return path.exists() and path.read_text().count('"event":"created"') >= count

    wait_until(created, 60, f"{count} batches created", alive=[proc])


def test_ctrl_c_while_waiting_leaves_the_batches_running_and_a_rerun_collects_them(
    tmp_path: Path,
) -> None:
    n = 30
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    # Long enough that the batch is still running when listed, on a loaded machine too.
    with SimulatorThread(SimulatorConfig(batch_processing_s=6.0)) as sim:
        proc = start_batch_run(inp, out, sim.base_url)
        wait_for_created(out, proc, 1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "keep running" in err and "msgbatch_" in err
        assert not out.exists()

        env = {"ANTHROPIC_API_KEY": TEST_KEY}
        listed = CliRunner().invoke(
            cli,
            ["batches", "list", str(inp), "-o", str(out), "--base-url", sim.base_url],
            env=env,
        )
        assert listed.exit_code == 0, listed.output
        assert "in_progress" in listed.output and f"{n:,} rows" in listed.output

        again = start_batch_run(inp, out, sim.base_url)
        _, err = again.communicate(timeout=60)
        assert again.returncode == 0, err
        submitted_once(sim, n)
        check_output(out, n)


def test_batches_cancel_then_rerun_records_cancelled_rows(tmp_path: Path) -> None:
    n = 20
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(batch_processing_s=30.0)) as sim:
        proc = start_batch_run(inp, out, sim.base_url)
        wait_for_created(out, proc, 1)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)

        env = {"ANTHROPIC_API_KEY": TEST_KEY}
        args = ["batches", "cancel", str(inp), "-o", str(out), "--base-url", sim.base_url]
        cancelled = CliRunner().invoke(cli, args, env=env)
        assert cancelled.exit_code == 0, cancelled.output
        assert "cancel" in cancelled.output  # canceling, or ended once it is through

        again = start_batch_run(inp, out, sim.base_url)
        _, err = again.communicate(timeout=60)
        assert again.returncode == 3, err
        got = rows_of(out)
        assert {r["error_type"] for r in got} == {"canceled"}
        assert all(r["batch_id"] for r in got)


def test_an_input_changed_while_its_batch_ran_is_refused(tmp_path: Path) -> None:
    n = 6
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(batch_processing_s=1.0)) as sim:
        proc = start_batch_run(inp, out, sim.base_url)
        wait_for_created(out, proc, 1)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        changed = prompts(n)
        changed[3]["prompt"] = "something else entirely"
        write_jsonl(inp, changed)
        with pytest.raises(ResumeMismatchError, match=f"row {changed[3]['id']} "):
            run(batch_config(inp, out, sim.base_url, max_tokens=20))
