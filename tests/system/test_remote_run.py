"""Whole runs with the input and output on S3 (a real moto server on 127.0.0.1): every row
once and in order, no final object before the run ends, and a machine lost mid-run costs only
the rows after the last sealed journal segment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, prompts, wait_until, write_jsonl

from batchrun import run
from batchrun.cli import cli
from batchrun.config.load import RunConfig
from batchrun.remote.errors import StorageError
from batchrun.remote.mirror import journal_prefix, work_folder
from batchrun.remote.objects import Storage, StorageSettings
from batchrun.simulator import SimulatorConfig, SimulatorThread


def storage(env: dict[str, str]) -> Storage:
    return Storage(StorageSettings.from_environ(env))


def config(inp: str, out: str, url: str, env: dict[str, str], **flags: Any) -> RunConfig:
    return job_config(inp, out, url, environ=env, **{"max_tokens": 20, **flags})


def read_final(env: dict[str, str], url: str, tmp_path: Path) -> list[dict[str, Any]]:
    local = tmp_path / f"read-{uuid.uuid4().hex[:6]}.parquet"
    storage(env).download(url, local)
    return list(pq.read_table(local).to_pylist())


def uploaded_input(env: dict[str, str], bucket: str, tmp_path: Path, n: int) -> str:
    url = f"s3://{bucket}/in/rows.jsonl"
    storage(env).upload(write_jsonl(tmp_path / "rows.jsonl", prompts(n)), url)
    return url


def test_s3_in_s3_out_sends_every_row_once_in_order(
    tmp_path: Path, env: dict[str, str], bucket: str, sim: SimulatorThread
) -> None:
    n = 40
    inp = uploaded_input(env, bucket, tmp_path, n)
    out = f"s3://{bucket}/out/labels.parquet"
    cfg = config(inp, out, sim.base_url, env, segment_rows=7)
    assert cfg.output.url == out and cfg.input.url == inp
    assert cfg.output.path.is_relative_to(tmp_path / "cache" / "batchrun")  # the work folder
    summary = run(cfg)
    assert summary.exit_code == 0 and summary.final is not None
    assert sim.stats.snapshot().answered_ok == n
    rows = read_final(env, out, tmp_path)
    assert [r["id"] for r in rows] == [p["id"] for p in prompts(n)]
    # The segments are removed once the final file is in place.
    assert storage(env).list(journal_prefix(out)) == []
    # Again: it resumes from what the store holds and sends nothing.
    again = run(config(inp, out, sim.base_url, env))
    assert again.finished == 0 and sim.stats.snapshot().answered_ok == n
    # ``report`` reads it where it is.
    shown = CliRunner().invoke(cli, ["report", out])
    assert shown.exit_code == 0, shown.output
    assert f"batchrun report: {out} ({n:,} rows; final)" in shown.output


def test_no_final_object_before_the_run_ends_and_a_stop_keeps_the_segments(
    tmp_path: Path, env: dict[str, str], bucket: str, sim: SimulatorThread
) -> None:
    inp = uploaded_input(env, bucket, tmp_path, 30)
    out = f"s3://{bucket}/out/costly.parquet"
    flags = {"model": "claude-sonnet-4-6", "max_tokens": 400, "segment_rows": 2}
    stopped = run(config(inp, out, sim.base_url, env, max_cost=0.03, **flags))
    assert stopped.exit_code == 4 and stopped.partial is not None
    assert not storage(env).exists(out)  # the final file is one upload, at the end
    segments = storage(env).list(journal_prefix(out))
    assert segments  # ... and the journal survives the machine
    # ``report`` of the store alone (a new machine) reads the sealed segments.
    shown = CliRunner().invoke(cli, ["report", out, "--json"])
    assert shown.exit_code == 0, shown.output
    assert 0 < json.loads(shown.output)["rows"] <= stopped.partial.rows
    done = run(config(inp, out, sim.base_url, env, **flags))
    assert done.exit_code == 0 and done.skipped == stopped.partial.rows
    assert len(read_final(env, out, tmp_path)) == 30


def test_an_output_that_cannot_be_written_stops_before_anything_is_sent(
    tmp_path: Path, env: dict[str, str], bucket: str, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(5))
    with pytest.raises(StorageError, match="no such bucket"):
        run(config(str(inp), "s3://no-such-bucket-here/out.parquet", sim.base_url, env))
    assert sim.stats.snapshot().requests == 0


def _journal_rows_in_segments(env: dict[str, str], out: str) -> int:
    rows = 0
    for info in storage(env).list(journal_prefix(out)):
        rows += storage(env).read_bytes(info.url).count(b"\n")
    return rows


@pytest.mark.parametrize("machine", ["same", "new"])
def test_a_lost_machine_costs_only_the_rows_after_the_last_sealed_segment(
    tmp_path: Path, env: dict[str, str], bucket: str, machine: str
) -> None:
    """``kill -9`` mid-run, then re-run: on the same machine (its work folder kept) only
    the rows not journaled are sent again; on a new one (no work folder) only the rows
    after the last sealed segment."""
    n = 300
    inp = uploaded_input(env, bucket, tmp_path, n)
    out = f"s3://{bucket}/out/lost.parquet"
    cmd = [sys.executable, "-m", "batchrun", "run", inp, "-o", out, "--model", "claude-haiku-4-5"]
    cmd += ["--max-tokens", "20", "-c", "8", "-q", "--segment-rows", "25"]
    with SimulatorThread(SimulatorConfig(latency_mean=0.05, latency_jitter=0.02)) as sim:
        full_env = {**os.environ, **env}
        proc = subprocess.Popen(
            [*cmd, "--base-url", sim.base_url],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(
            lambda: _journal_rows_in_segments(env, out) >= 100,
            60,
            "100 rows in sealed segments",
            alive=[proc],
            every=0.05,
        )
        proc.kill()
        proc.communicate(timeout=30)
        sealed = _journal_rows_in_segments(env, out)
        answered = sim.stats.snapshot().answered_ok
        assert 100 <= sealed < n and answered >= sealed
        folder = work_folder(out, None, tmp_path / "cache")
        journal = folder / "lost.parquet.journal"
        journaled = journal.read_bytes().count(b"\n")
        if machine == "new":
            shutil.rmtree(folder)
        again = subprocess.run(
            [*cmd, "--base-url", sim.base_url], env=full_env, capture_output=True, text=True
        )
        assert again.returncode == 0, again.stderr
        resent = sim.stats.snapshot().answered_ok - answered
    kept = sealed if machine == "new" else journaled
    print(
        f"{machine} machine: {n} rows, {answered} answered before the kill, {sealed} sealed, "
        f"{journaled} journaled locally; re-sent {resent}"
    )
    assert resent == n - kept  # only the rows after the last sealed segment / journal line
    rows = read_final(env, out, tmp_path)
    assert [r["id"] for r in rows] == [p["id"] for p in prompts(n)]
    assert TEST_KEY not in str(rows)
