"""The journal is verified, not trusted: damaged records are skipped and their rows sent again,
rows the input no longer has are refused, and another job's journal is never taken for ours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, prompts, write_jsonl

from batchrun import run
from batchrun.cli import cli
from batchrun.runs.resume import ResumeMismatchError
from batchrun.simulator import SimulatorThread
from batchrun.store.journal import INDEX, journal_line
from batchrun.store.sink import journal_path


def answered(inp: Path, out: Path, sim: SimulatorThread) -> list[dict[str, Any]]:
    """Run the job to its end, then turn its output back into a journal (a kill near the end)."""
    assert run(job_config(inp, out, sim.base_url)).exit_code == 0
    rows: list[dict[str, Any]] = pq.read_table(out).to_pylist()
    out.unlink()
    journal_path(out).write_text("".join(journal_line(i, r) for i, r in enumerate(rows)))
    return rows


# -- item 4: rows journaled that the input no longer has -------------------------------------


def test_rows_journaled_beyond_a_shrunk_input_are_refused_every_run(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(40))
    out = tmp_path / "out.parquet"
    answered(inp, out, sim)
    write_jsonl(inp, prompts(35))
    before = sim.stats.requests
    for _ in range(2):  # the first refusal must not make the second run trust the journal
        with pytest.raises(ResumeMismatchError, match=r"5 row\(s\)") as caught:
            run(job_config(inp, out, sim.base_url))
        message = str(caught.value)
        assert "q0035" in message and "q0039" in message
        assert "restore the input" in message.lower()
        assert "overwrite=True" in message and "output=OUT" in message
    assert sim.stats.requests == before and not out.exists()
    restored = write_jsonl(inp, prompts(40))
    assert run(job_config(restored, out, sim.base_url)).exit_code == 0
    assert pq.read_table(out).num_rows == 40 and sim.stats.requests == before


def test_the_cli_says_why_it_refuses_a_shrunk_input(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(12))
    out = tmp_path / "out.parquet"
    answered(inp, out, sim)
    write_jsonl(inp, prompts(10))
    args = ["run", str(inp), "-o", str(out), "--model", "claude-haiku-4-5", "--max-tokens", "40"]
    args += ["--base-url", sim.base_url, "-q"]
    for _ in range(2):
        result = CliRunner().invoke(cli, args, env={"ANTHROPIC_API_KEY": TEST_KEY})
        assert result.exit_code == 1, result.output
        assert "2 row(s)" in result.output and "q0010" in result.output
        assert "re-run the same command" not in result.output  # resuming is what is refused
    assert not out.exists()


def _damage_one(out: Path, index: int, line: str) -> None:
    path = journal_path(out)
    lines = path.read_text().splitlines(keepends=True)
    lines[index] = line
    path.write_text("".join(lines))


@pytest.mark.parametrize(
    "damaged",
    [
        {"input_tokens": "12"},
        {"status": 5},
        {INDEX: 10**11},
        {INDEX: 10**7},
        {INDEX: -3},
    ],
    ids=["str-tokens", "int-status", "index-1e11", "index-1e7", "index-negative"],
)
def test_a_damaged_record_is_skipped_reported_and_its_row_sent_again(
    tmp_path: Path, sim: SimulatorThread, capsys: pytest.CaptureFixture[str], damaged: Any
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    out = tmp_path / "out.parquet"
    rows = answered(inp, out, sim)
    bad = {INDEX: 4, **rows[4], **damaged}
    bad["finished_at"] = None
    _damage_one(out, 4, json.dumps(bad) + "\n")
    before = sim.stats.requests
    capsys.readouterr()
    summary = run(job_config(inp, out, sim.base_url, quiet=False))
    assert summary.exit_code == 0 and summary.ok == 1 and summary.skipped == 19
    assert sim.stats.requests == before + 1  # row 4, and only row 4, is sent again
    table = pq.read_table(out).to_pylist()
    assert [r["id"] for r in table] == [r["id"] for r in prompts(20)]
    assert all(r["status"] == "ok" for r in table)
    err = capsys.readouterr().err
    assert f"1 damaged journal line(s) skipped in {journal_path(out)}" in err
    assert "sent again" in err


# -- item 5: another job's journal -----------------------------------------------------------


def test_another_jobs_journal_beside_a_finished_output_is_refused(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()  # another job, in a folder of its own (not a file ours uses)
    ours = write_jsonl(tmp_path / "a" / "in.jsonl", prompts(10))
    out = tmp_path / "a" / "out.parquet"
    assert run(job_config(ours, out, sim.base_url)).exit_code == 0
    finished = out.read_bytes()
    other_rows = [{"id": f"x{i}", "prompt": f"other {i}"} for i in range(10)]
    other_in = write_jsonl(tmp_path / "b" / "in.jsonl", other_rows)
    other = answered(other_in, tmp_path / "b" / "out.parquet", sim)
    journal_path(out).write_text("".join(journal_line(i, r) for i, r in enumerate(other[:6])))
    before = sim.stats.requests
    for _ in range(2):
        with pytest.raises(ResumeMismatchError, match=r"6 row\(s\)") as caught:
            run(job_config(ours, out, sim.base_url))
        assert "x0" in str(caught.value) and "another" in str(caught.value)
    assert out.read_bytes() == finished and sim.stats.requests == before


def test_another_jobs_journal_of_the_same_rows_is_refused_mid_run(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    # Same ids, other prompts: the journal of a killed run replaced by another job's.
    (tmp_path / "a").mkdir()
    (tmp_path / "o").mkdir()
    inp = write_jsonl(tmp_path / "a" / "in.jsonl", prompts(10))
    out = tmp_path / "a" / "out.parquet"
    answered(inp, out, sim)
    other_in = tmp_path / "o" / "in.jsonl"
    write_jsonl(other_in, [{**r, "prompt": r["prompt"] + "!"} for r in prompts(10)])
    other = answered(other_in, tmp_path / "o" / "out.parquet", sim)
    journal_path(out).unlink()
    journal_path(out).write_text("".join(journal_line(i, r) for i, r in enumerate(other[:7])))
    with pytest.raises(ResumeMismatchError, match=r"7 row\(s\)"):
        run(job_config(inp, out, sim.base_url))


def test_an_old_journal_and_state_still_resume(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(10))
    out = tmp_path / "out.parquet"
    answered(inp, out, sim)
    state = out.with_name(out.name + ".state.json")
    data = json.loads(state.read_text())
    old = {k: data[k] for k in ("version", "fingerprint", "input_size", "input_sha256")}
    state.write_text(json.dumps(old))
    before = sim.stats.requests
    summary = run(job_config(inp, out, sim.base_url))
    assert summary.exit_code == 0 and summary.skipped == 10 and sim.stats.requests == before
