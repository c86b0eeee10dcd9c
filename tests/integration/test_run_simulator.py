"""Whole runs against the simulator over a real loopback socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from support import job_config, no_wait, prompts, reply_tag, write_jsonl

from batchrun import FatalRunError, run
from batchrun.runs.resume import ResumeMismatchError
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.columns import COLUMN_NAMES

TIMING = {"latency_ms", "elapsed_ms", "finished_at", "request_id"}


def read(out: Path) -> list[dict[str, Any]]:
    if out.suffix == ".jsonl":
        return [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    return pq.read_table(out).to_pylist()  # type: ignore[no-any-return]


def test_every_row_answered_in_input_order_by_its_own_prompt(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = prompts(300)
    for i, row in enumerate(rows):
        row["topic"] = {"n": i} if i % 2 else f"t{i}"
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    summary = run(job_config(inp, out, sim.base_url, keep_columns=("topic",)))

    assert summary.exit_code == 0
    assert summary.final is not None and summary.final.ok == 300
    got = read(out)
    assert list(got[0]) == [*COLUMN_NAMES, "topic"]
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for src, res in zip(rows, got, strict=True):
        assert res["status"] == "ok"
        assert res["text"].startswith(reply_tag(src["prompt"]))
        assert res["input_tokens"] > 0 and res["output_tokens"] > 0
        assert res["attempts"] == 1 and res["http_status"] == 200
        assert res["model"].startswith("claude-haiku-4-5")
        assert res["request_hash"] and res["message_id"] and res["request_id"]
        assert res["topic"] == (
            json.dumps(src["topic"]) if isinstance(src["topic"], dict) else src["topic"]
        )
    assert summary.input_tokens == sum(r["input_tokens"] for r in got)
    assert sim.stats.answered_ok == 300


def test_concurrency_bound_is_never_exceeded(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(120))
    with SimulatorThread(SimulatorConfig(latency_mean=0.02)) as sim:
        run(job_config(inp, tmp_path / "out.parquet", sim.base_url, concurrency=6))
        assert sim.stats.max_in_flight == 6


def test_retryable_faults_are_retried_until_every_row_is_ok(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(400))
    rates = {"429": 0.05, "529": 0.05, "500": 0.03, "503": 0.02, "reset": 0.03, "malformed": 0.02}
    with SimulatorThread(SimulatorConfig(error_rates=rates, retry_after=0, seed=7)) as sim:
        summary = run(
            job_config(inp, tmp_path / "out.parquet", sim.base_url), runtime=Runtime(sleep=no_wait)
        )
        faults = sum(sim.stats.faults.values())
    got = read(tmp_path / "out.parquet")
    assert all(r["status"] == "ok" for r in got)
    assert faults > 0
    assert summary.retries == faults == sum(r["attempts"] - 1 for r in got)
    for src, res in zip(prompts(400), got, strict=True):
        assert res["text"].startswith(reply_tag(src["prompt"]))


def test_streaming_and_plain_runs_write_the_same_rows(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(40))
    run(job_config(inp, tmp_path / "plain.parquet", sim.base_url))
    run(job_config(inp, tmp_path / "stream.parquet", sim.base_url, stream=True))
    plain, streamed = read(tmp_path / "plain.parquet"), read(tmp_path / "stream.parquet")
    for a, b in zip(plain, streamed, strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING} == {
            k: v for k, v in b.items() if k not in TIMING
        }


def test_rows_that_break_api_rules_are_recorded_and_never_sent(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = [
        *prompts(5),
        {"id": "bad-temp", "prompt": "hi", "temperature": 3},
        {"id": "empty"},
        {"id": "both", "prompt": "a", "messages": []},
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    summary = run(job_config(inp, tmp_path / "out.jsonl", sim.base_url))
    got = {r["id"]: r for r in read(tmp_path / "out.jsonl")}
    assert summary.exit_code == 3 and summary.invalid == 3
    for bad, field in [("bad-temp", "temperature"), ("empty", "prompt"), ("both", "messages")]:
        assert got[bad]["status"] == "error"
        assert got[bad]["error_type"] == "invalid_request"
        assert field in got[bad]["error_message"]
        assert got[bad]["attempts"] == 0
    assert sim.stats.requests == 5


def test_a_row_the_api_rejects_is_an_error_and_the_job_goes_on(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = [*prompts(6), {"id": "nomodel", "prompt": "hello", "model": "gpt-4o"}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    summary = run(job_config(inp, tmp_path / "out.parquet", sim.base_url))
    bad = read(tmp_path / "out.parquet")[-1]
    assert (bad["status"], bad["http_status"], bad["error_type"]) == (
        "error",
        404,
        "not_found_error",
    )
    assert "gpt-4o" in bad["error_message"] and bad["attempts"] == 1
    assert summary.ok == 6 and summary.exit_code == 3


def test_a_bad_key_stops_the_run_at_once(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(200))
    with SimulatorThread(SimulatorConfig(api_key="the-right-key")) as sim:
        with pytest.raises(FatalRunError, match="authentication_error"):
            run(job_config(inp, tmp_path / "out.parquet", sim.base_url, concurrency=4))
        assert sim.stats.requests <= 4
    assert not (tmp_path / "out.parquet").exists()


def test_rows_that_were_invalid_are_sent_once_a_rerun_makes_them_valid(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    # The first run forgot the model: every row is recorded invalid, and nothing is sent.
    rows = [*prompts(6), {"id": "empty", "model": "claude-haiku-4-5"}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    first = run(job_config(inp, out, sim.base_url, model=None))
    assert (first.invalid, sim.stats.requests) == (7, 0)
    # The fixed job sends them, without --retry-errors: they were never sent, so never paid.
    fixed = run(job_config(inp, out, sim.base_url))
    assert (fixed.ok, fixed.invalid, fixed.skipped, sim.stats.requests) == (6, 1, 0, 6)
    got = read(out)
    assert [r["status"] for r in got] == ["ok"] * 6 + ["error"]
    # The row still invalid is checked again by each run, and never sent.
    again = run(job_config(inp, out, sim.base_url))
    assert (again.skipped, again.invalid, sim.stats.requests) == (6, 1, 6)


def test_rerun_resumes_and_retry_errors_resends_only_the_errors(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(60))
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(error_rates={"500": 0.3}, seed=3)) as sim:
        first = run(job_config(inp, out, sim.base_url, max_retries=0))
        errors = first.error
        assert first.exit_code == 3 and errors > 0
    with SimulatorThread(SimulatorConfig()) as sim:
        # Another base URL is another source: its answers are kept on purpose (and remembered).
        again = run(job_config(inp, out, sim.base_url, keep_other_source=True))
        assert sim.stats.requests == 0 and again.skipped == 60
        assert again.exit_code == 3
        fixed = run(job_config(inp, out, sim.base_url, retry_errors=True))
        assert sim.stats.requests == errors
    assert fixed.exit_code == 0 and fixed.skipped == 60 - errors
    got = read(out)
    assert [r["id"] for r in got] == [r["id"] for r in prompts(60)]
    assert all(r["status"] == "ok" for r in got)


def test_resume_refuses_when_the_requests_changed(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(12))
    out = tmp_path / "out.parquet"
    run(job_config(inp, out, sim.base_url))
    with pytest.raises(ResumeMismatchError, match="q0000, q0001") as caught:
        run(job_config(inp, out, sim.base_url, max_tokens=41))
    assert "overwrite=True" in str(caught.value)
    before = sim.stats.requests
    summary = run(job_config(inp, out, sim.base_url, max_tokens=41, overwrite=True))
    assert summary.ok == 12 and sim.stats.requests == before + 12


def test_new_rows_appended_to_the_input_are_all_that_a_rerun_sends(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(10))
    out = tmp_path / "out.jsonl"
    run(job_config(inp, out, sim.base_url))
    write_jsonl(inp, prompts(15))
    summary = run(job_config(inp, out, sim.base_url))
    assert summary.ok == 5 and summary.skipped == 10
    assert [r["id"] for r in read(out)] == [r["id"] for r in prompts(15)]


def test_an_edited_row_is_caught_even_when_the_job_is_the_same(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = prompts(8)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    run(job_config(inp, out, sim.base_url))
    rows[3]["prompt"] = rows[3]["prompt"].replace("what", "WHAT")  # same length, new request
    write_jsonl(inp, rows)
    with pytest.raises(ResumeMismatchError, match="q0003"):
        run(job_config(inp, out, sim.base_url))


def test_a_new_row_repeating_an_answered_id_is_a_duplicate(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(4))
    out = tmp_path / "out.jsonl"
    run(job_config(inp, out, sim.base_url))
    write_jsonl(inp, [*prompts(4), {"id": "q0001", "prompt": "again"}])
    summary = run(job_config(inp, out, sim.base_url))
    assert summary.skipped == 4 and summary.invalid == 1
    last = read(out)[-1]
    assert (
        last["error_type"] == "invalid_request" and "duplicate id 'q0001'" in last["error_message"]
    )
