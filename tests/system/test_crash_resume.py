"""Crash and interrupt, with real subprocesses against the simulator: nothing that had
completed is lost, and nothing completed is paid for twice."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import (
    check_output,
    journal_lines,
    prompts,
    settled,
    start_run,
    wait_for_journal,
    write_jsonl,
)

from batchrun.formats.marks import Partial
from batchrun.formats.registry import read_partial
from batchrun.simulator import SimulatorConfig, SimulatorThread

CONCURRENCY = 16


def test_kill_9_loses_nothing_that_had_completed(tmp_path: Path) -> None:
    n = 400
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(latency_mean=0.03, latency_jitter=0.02)) as sim:
        proc = start_run(inp, out, sim.base_url)
        wait_for_journal(out, proc, 120)
        proc.kill()
        proc.communicate(timeout=30)  # also closes its pipes
        journaled = journal_lines(out)
        assert 120 <= journaled < n and not out.exists()

        resumed = start_run(inp, out, sim.base_url)
        _, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        answered = sim.stats.answered_ok
    check_output(out, n)
    # Only requests in flight at the kill can have been answered and not journaled.
    assert n <= answered <= n + CONCURRENCY
    assert f"{journaled:,} already done" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_in_flight_requests_and_says_how_to_resume(
    tmp_path: Path, sig: signal.Signals
) -> None:
    n = 300
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(latency_mean=0.2)) as sim:
        proc = start_run(inp, out, sim.base_url)
        wait_for_journal(out, proc, 40)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Re-run the same command to resume" in err
        assert "Traceback" not in err
        # Every request that was answered was journaled: the grace period let them land.
        assert sim.stats.answered_ok == journal_lines(out) < n
        # ... and written out, readable now: the rows finished so far, marked partial.
        finished = journal_lines(out)
        assert read_partial(out) == Partial(finished, n)
        assert f"the rows finished so far are in {out} (partial: {finished:,} of {n:,} rows)" in err
        assert pq.read_table(out).num_rows == finished

        resumed = start_run(inp, out, sim.base_url)
        _, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        assert sim.stats.answered_ok == n  # nothing paid for twice
    check_output(out, n)


def test_a_second_ctrl_c_stops_at_once_keeping_the_journal(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(100))
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(latency_mean=0.01)) as sim:
        proc = start_run(inp, out, sim.base_url, "--grace", "600")
        wait_for_journal(out, proc, 10)
        sim.simulator.config = SimulatorConfig(latency_mean=300)  # what is in flight now hangs
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        assert proc.poll() is None  # waiting for in-flight requests, as the grace allows
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        journaled = journal_lines(out)
        sim.simulator.config = SimulatorConfig()
        resumed = start_run(inp, out, sim.base_url)
        _, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
    assert f"{journaled:,} already done" in err
    check_output(out, 100)


def test_an_input_cut_after_a_kill_9_is_refused_every_run_with_the_rows_it_lost(
    tmp_path: Path,
) -> None:
    n, kept = 400, 379
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(latency_mean=0.05, latency_jitter=0.02)) as sim:
        proc = start_run(inp, out, sim.base_url)
        wait_for_journal(out, proc, 390)
        proc.kill()
        proc.communicate(timeout=30)
        write_jsonl(inp, prompts(kept))
        sent = settled(sim)  # requests the killed run left in flight are still answered
        for _ in range(2):  # a refusal leaves nothing behind that makes the next run trust it
            again = start_run(inp, out, sim.base_url)
            _, err = again.communicate(timeout=120)
            assert again.returncode == 1, err
            assert "Restore the input" in err and "--overwrite" in err and "Traceback" not in err
            assert "no longer has" in err or f"holds {n} rows" in err  # journal, or final file
        assert settled(sim) == sent  # nothing sent
    assert not out.exists() or pq.read_metadata(out).num_rows == n


def test_a_typed_job_killed_and_resumed_gives_the_whole_run_s_types(tmp_path: Path) -> None:
    """A ``--json-schema`` job on Sonnet 5.5 killed with answers only in its journal (kept as
    text) comes back, resumed, with the schema's types, the kept integer and the integer id."""
    n = 200
    rows = [{"id": 1000 + i, "prompt": f"review {i}", "stars": i % 5 + 1} for i in range(n)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    schema = tmp_path / "schema.json"
    schema.write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {
                    "label": {"type": "string", "enum": ["positive", "negative"]},
                    "score": {"type": "number"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "flagged": {"type": "boolean"},
                },
                "required": ["label", "score", "tags", "flagged"],
                "additionalProperties": False,
            }
        ),
        encoding="utf-8",
    )
    typed = ("--model", "claude-sonnet-5-5", "--max-tokens", "300", "--json-schema", str(schema))
    typed += ("--keep-column", "stars")
    out, whole = tmp_path / "out.parquet", tmp_path / "whole.parquet"
    with SimulatorThread(SimulatorConfig(latency_mean=0.03, latency_jitter=0.02)) as sim:
        proc = start_run(inp, out, sim.base_url, *typed)
        wait_for_journal(out, proc, 60)
        proc.kill()
        proc.communicate(timeout=30)
        assert not out.exists() and 60 <= journal_lines(out) < n
        resumed = start_run(inp, out, sim.base_url, *typed)
        _, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        alone = start_run(inp, whole, sim.base_url, *typed)
        _, err = alone.communicate(timeout=120)
        assert alone.returncode == 0, err
    schema_of = pq.read_schema(out)
    assert schema_of == pq.read_schema(whole)
    assert schema_of.field("id").type == pa.int64() and schema_of.field("stars").type == pa.int64()
    assert schema_of.field("answer_score").type == pa.float64()
    assert schema_of.field("answer_tags").type == pa.list_(pa.string())
    assert schema_of.field("answer_flagged").type == pa.bool_()
    answers = ["id", "stars", "answer_label", "answer_score", "answer_tags", "answer_flagged"]
    assert pq.read_table(out).select(answers) == pq.read_table(whole).select(answers)
