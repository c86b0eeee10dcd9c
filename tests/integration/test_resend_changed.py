"""A refused resume says what changed, and --resend-changed sends only the rows whose
request changed (nothing else is paid again)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, prompts, write_jsonl

from batchrun import run
from batchrun.cli import cli
from batchrun.runs.resume import ResumeMismatchError
from batchrun.simulator import SimulatorThread
from batchrun.store.resume import changed_settings, read_state


def test_changed_settings_are_named_with_their_values() -> None:
    before = {"model": "claude-haiku-4-5", "max_tokens": 50, "system": None}
    now = {"model": "claude-haiku-4-5", "max_tokens": 60, "system": "Be brief."}
    assert changed_settings(before, now) == ["max_tokens 50 -> 60", 'system unset -> "Be brief."']
    assert changed_settings(before, before) == []
    assert changed_settings(None, now) == []  # an older state: nothing to compare with
    long = {"system": "x" * 100}
    assert changed_settings({"system": None}, long) == ["system unset -> " + '"' + "x" * 36 + "..."]


def test_a_resume_refused_after_a_setting_changed_names_it(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(6))
    out = tmp_path / "out.parquet"
    assert run(job_config(inp, out, sim.base_url, max_tokens=50)).exit_code == 0
    state = read_state(out)
    assert state is not None and state.settings is not None
    assert state.settings["max_tokens"] == 50

    with pytest.raises(ResumeMismatchError) as refused:
        run(job_config(inp, out, sim.base_url, max_tokens=60))
    message = str(refused.value)
    assert "the job's settings changed: max_tokens 50 -> 60" in message
    assert "resend_changed=True sends only those rows again" in message


def test_resend_changed_sends_only_the_rows_whose_request_changed(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = prompts(10)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    assert run(job_config(inp, out, sim.base_url)).exit_code == 0
    before = {r["id"]: r for r in pq.read_table(out).to_pylist()}

    rows[3]["prompt"] = "A different question"
    rows[7]["prompt"] = "Another different question"
    write_jsonl(inp, rows)
    with pytest.raises(ResumeMismatchError, match=r"ids q0003, q0007\): those rows of the input"):
        run(job_config(inp, out, sim.base_url))

    sent = sim.stats.snapshot().answered_ok
    again = run(job_config(inp, out, sim.base_url, resend_changed=True))
    assert again.exit_code == 0 and again.finished == 2 and again.skipped == 8
    assert sim.stats.snapshot().answered_ok - sent == 2
    after = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    changed = {"q0003", "q0007"}
    for row_id, row in after.items():
        if row_id in changed:
            assert row["request_hash"] != before[row_id]["request_hash"]
        else:
            assert row == before[row_id]  # untouched: not sent, not rewritten differently
    # Now it matches: a plain re-run sends nothing.
    assert run(job_config(inp, out, sim.base_url)).finished == 0


def test_the_cli_takes_resend_changed(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(4))
    out = tmp_path / "out.jsonl"
    base = ["run", str(inp), "-o", str(out), "--base-url", sim.base_url, "-q"]
    base += ["--model", "claude-haiku-4-5"]
    env = {"ANTHROPIC_API_KEY": TEST_KEY}
    assert CliRunner().invoke(cli, [*base, "--max-tokens", "20"], env=env).exit_code == 0
    refused = CliRunner().invoke(cli, [*base, "--max-tokens", "30"], env=env)
    assert refused.exit_code == 1 and "max_tokens 20 -> 30" in refused.stderr
    sent = sim.stats.snapshot().answered_ok
    done = CliRunner().invoke(cli, [*base, "--max-tokens", "30", "--resend-changed"], env=env)
    assert done.exit_code == 0, done.stderr
    assert sim.stats.snapshot().answered_ok - sent == 4
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and all(json.loads(line)["status"] == "ok" for line in lines)
