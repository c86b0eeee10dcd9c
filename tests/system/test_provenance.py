"""Where answers came from: a resume against another source than the one that answered refuses
before anything is sent, or asks those rows again, or keeps them on purpose; the simulator's
answers never count for a run against the API.

Whole runs against simulators over loopback: the in-process one of ``simulate=True`` (the
source ``simulator``), and ``SimulatorThread``s standing in for the API at a base URL (each
its own source, ``http://127.0.0.1:PORT``), with a test key.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from support import (
    TEST_KEY,
    job_config,
    journal_lines,
    prompts,
    python_process,
    start_run,
    wait_for_journal,
    write_jsonl,
)

from batchrun import run
from batchrun.estimation.passes import estimate
from batchrun.runs.resume import SourceMismatchError
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.columns import COLUMN_NAMES
from batchrun.store.journal import RUN
from batchrun.store.provenance import SIMULATOR, answer_source
from batchrun.store.resume import read_state
from batchrun.store.sink import journal_path

N = 20


def _journal(out: Path) -> list[dict[str, Any]]:
    lines = journal_path(out).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _sources(out: Path) -> list[str | None]:
    return pq.read_table(out).column("source").to_pylist()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return python_process("-m", "batchrun", "run", *args, env={"ANTHROPIC_API_KEY": TEST_KEY})


def test_the_source_is_the_base_url_without_credentials() -> None:
    assert answer_source(True, "https://api.anthropic.com") == SIMULATOR
    assert answer_source(False, "https://api.anthropic.com/") == "https://api.anthropic.com"
    secret = "https://user:sk-ant-KEY@Gateway.Example:443/anthropic/v1/?key=sk-ant-KEY#x"
    assert answer_source(False, secret) == "https://gateway.example/anthropic/v1"
    assert answer_source(False, "http://127.0.0.1:8765") == "http://127.0.0.1:8765"
    assert "source" in COLUMN_NAMES


def test_a_simulated_output_is_refused_by_a_run_against_the_api_then_asked_again(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(N))
    out = tmp_path / "out.parquet"
    simulated = run(job_config(inp, out, "https://api.anthropic.com", simulate=True))
    assert simulated.exit_code == 0 and _sources(out) == [SIMULATOR] * N

    # Against "the API": refused before anything is sent, naming both sources.
    result = _cli(str(inp), "-o", str(out), "--base-url", sim.base_url, "--model",
                  "claude-haiku-4-5", "--max-tokens", "40")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"holds {N} row(s) answered by the built-in simulator (--simulate)" in result.stderr
    assert f"this run asks the API at {sim.base_url}" in result.stderr
    assert "--reask-other-source" in result.stderr
    # The simulator's answers cannot be kept for the API, not even on purpose.
    with pytest.raises(SourceMismatchError, match="never count as answers of the API") as kept:
        run(job_config(inp, out, sim.base_url, keep_other_source=True))
    assert "keep_other_source=True keeps another API's, never these" in str(kept.value)
    assert sim.stats.requests == 0 and _sources(out) == [SIMULATOR] * N

    asked = run(job_config(inp, out, sim.base_url, reask_other_source=True))
    assert asked.exit_code == 0 and asked.ok == N and asked.skipped == 0
    assert asked.sources_reasked == {SIMULATOR: N}
    assert sim.stats.answered_ok == N  # each row asked of the API, none filled from a twin
    assert _sources(out) == [sim.base_url] * N

    again = run(job_config(inp, out, sim.base_url))
    assert again.exit_code == 0 and again.skipped == N and sim.stats.answered_ok == N


def test_a_pilot_on_the_simulator_never_counts_for_the_api(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(N))
    out = tmp_path / "out.parquet"
    est = estimate(job_config(inp, out, "https://api.anthropic.com", simulate=True), pilot="5")
    assert est.pilot is not None and est.pilot.sent == 5
    assert [r["source"] for r in _journal(out)] == [SIMULATOR] * 5

    # The estimate against the API counts the pilot's rows as to send, and says why.
    api = job_config(inp, out, sim.base_url)
    after = estimate(api)
    assert after.pending == N and after.other_sources == {SIMULATOR: 5}
    with pytest.raises(
        SourceMismatchError, match=re.escape("5 row(s) answered by the built-in simulator")
    ):
        run(api)
    assert sim.stats.requests == 0
    done = run(job_config(inp, out, sim.base_url, reask_other_source=True))
    assert done.exit_code == 0 and done.ok == N and sim.stats.answered_ok == N
    assert _sources(out) == [sim.base_url] * N


def test_a_run_killed_against_one_base_url_is_refused_against_another(tmp_path: Path) -> None:
    n = 200
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    slow = SimulatorConfig(latency_mean=0.03, latency_jitter=0.02)
    with SimulatorThread(slow) as first, SimulatorThread(SimulatorConfig()) as other:
        proc = start_run(inp, out, first.base_url)
        wait_for_journal(out, proc, 40)
        proc.kill()
        proc.communicate(timeout=30)
        journaled = journal_lines(out)

        args = [str(inp), "-o", str(out), "--model", "claude-haiku-4-5", "--max-tokens", "20"]
        refused = _cli(*args, "--base-url", other.base_url)
        assert refused.returncode == 1, refused.stderr
        assert f"answered by the API at {first.base_url}" in refused.stderr
        assert f"this run asks the API at {other.base_url}" in refused.stderr
        assert "--keep-other-source keeps their answers" in refused.stderr
        assert other.stats.requests == 0

        kept = _cli(*args, "--base-url", other.base_url, "--keep-other-source")
        assert kept.returncode == 0, kept.stderr
        assert f"{journaled:,} already done" in kept.stderr
        assert "the output mixes answers of" in kept.stderr
        sources = _sources(out)
        assert sources.count(first.base_url) == journaled
        assert sources.count(other.base_url) == n - journaled
        state = read_state(out)
        assert state is not None
        assert set(state.mixed_sources) == {first.base_url, other.base_url}

        # The choice is remembered: a later run of either source takes the output as it is.
        later = _cli(*args, "--base-url", other.base_url, "--retry-errors")
        assert later.returncode == 0, later.stderr
        assert other.stats.answered_ok == n - journaled


def test_the_journal_keeps_the_source_the_model_and_the_run(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(6))
    out = tmp_path / "out.parquet"
    estimate(job_config(inp, out, sim.base_url), pilot="3")  # journal only: no final file
    records = _journal(out)
    assert len(records) == 3
    for record in records:
        assert record["source"] == sim.base_url
        assert record["model"].startswith("claude-haiku-4-5")  # as the response named it
        assert record[RUN]
    assert len({r[RUN] for r in records}) == 1


def _strip_sources(out: Path, *, real_ids: bool = False) -> None:
    """The journal as a batchrun from before sources were recorded wrote it."""
    lines = []
    for record in _journal(out):
        record.pop("source", None)
        record.pop(RUN, None)
        if real_ids:
            record["message_id"] = "msg_01" + record["message_id"][-20:]
            record["request_id"] = "req_01" + record["request_id"][-20:]
        lines.append(json.dumps(record) + "\n")
    journal_path(out).write_text("".join(lines), encoding="utf-8")
    state = json.loads(out.with_name(out.name + ".state.json").read_text())
    for key in ("source", "mixed_sources", "spent_usd"):
        state.pop(key, None)
    out.with_name(out.name + ".state.json").write_text(json.dumps(state))


def test_an_older_journal_is_the_simulators_where_its_ids_say_so(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(8))
    out = tmp_path / "out.parquet"
    estimate(job_config(inp, out, "https://api.anthropic.com", simulate=True), pilot="4")
    _strip_sources(out)
    with pytest.raises(
        SourceMismatchError, match=re.escape("4 row(s) answered by the built-in simulator")
    ):
        run(job_config(inp, out, sim.base_url))
    assert sim.stats.requests == 0


def test_an_older_journal_of_the_api_counts_as_done_and_says_so(
    tmp_path: Path, sim: SimulatorThread, capfd: pytest.CaptureFixture[str]
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(8))
    out = tmp_path / "out.parquet"
    estimate(job_config(inp, out, sim.base_url), pilot="4")
    _strip_sources(out, real_ids=True)
    capfd.readouterr()
    summary = run(job_config(inp, out, sim.base_url, quiet=False))
    assert summary.exit_code == 0 and summary.skipped == 4
    assert sim.stats.answered_ok == 8  # 4 for the pilot, 4 now
    err = capfd.readouterr().err
    assert "4 row(s) of" in err and "did not record where answers came from" in err
