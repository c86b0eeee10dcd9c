"""Shards (issue 16): ``run --shard I/N`` sends only its rows into its own output, resumes as any
run, and ``merge`` joins the shards into the job's output, refusing missing, doubled and
unfinished ones. Whole runs against the simulator, as subprocesses and through the library."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pj
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import job_config, prompts, reply_tag, start_run, wait_until, write_jsonl

import batchrun
from batchrun.cli import cli
from batchrun.runs.plan import in_shard, shard_of
from batchrun.shards.layout import ShardError, proof_path, shard_output
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.sink import journal_path

COMPARED = ["id", "status", "text", "request_hash"]


def _read(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    if path.suffix == ".csv":
        return pcsv.read_csv(path)
    return pj.read_json(path)


def _columns(path: Path) -> dict[str, list[Any]]:
    table = _read(path)
    return {name: table.column(name).to_pylist() for name in COMPARED}


def _shard_ids(n: int, index: int, count: int) -> list[str]:
    return [row["id"] for row in prompts(n) if in_shard(row["id"], (index, count))]


def _merge_cli(inp: Path, out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "batchrun", "merge", str(inp), "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


# -- the hash ---------------------------------------------------------------------------------


def test_a_rows_shard_is_the_sha256_of_its_id_and_every_shard_gets_rows() -> None:
    # Pinned: workers on other machines, and later versions, must agree on every row's shard.
    assert [shard_of(f"q{i:04d}", 4) for i in range(8)] == [2, 1, 1, 2, 2, 1, 0, 0]
    digest = hashlib.sha256("é-7".encode()).digest()
    assert shard_of("é-7", 10) == int.from_bytes(digest[:8], "big") % 10
    sizes = [len(_shard_ids(400, i, 4)) for i in range(4)]
    assert sum(sizes) == 400
    assert min(sizes) > 60  # about 100 each: no shard starved
    assert all(shard_of(f"q{i}", 1) == 0 for i in range(20))


# -- four processes and a merge ---------------------------------------------------------------


def test_four_shard_processes_and_merge_equal_one_run(tmp_path: Path, sim: SimulatorThread) -> None:
    n = 120
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out" / "labels.parquet"
    procs = [start_run(inp, out, sim.base_url, "--shard", f"{i}/4") for i in range(4)]
    for i, proc in enumerate(procs):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        shard = pq.read_table(shard_output(out, i, 4))
        assert shard.column("id").to_pylist() == _shard_ids(n, i, 4)  # its rows, in input order
        assert not journal_path(shard_output(out, i, 4)).exists()
    assert sim.stats.requests == n  # each row sent by one shard only

    merged = _merge_cli(inp, out)
    assert merged.returncode == 0, merged.stderr
    assert f"{n:,} rows ({n:,} ok, 0 error)" in merged.stderr

    whole = tmp_path / "whole.parquet"
    assert batchrun.run(job_config(inp, whole, sim.base_url, max_tokens=20)).exit_code == 0
    assert _columns(out) == _columns(whole)
    assert pq.read_schema(out).names == pq.read_schema(whole).names  # no _index left
    texts = _columns(out)["text"]
    assert all(t.startswith(reply_tag(r["prompt"])) for t, r in zip(texts, prompts(n), strict=True))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_run_shard_and_merge_shards_in_each_output_format(
    tmp_path: Path, sim: SimulatorThread, suffix: str
) -> None:
    n = 60
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / f"labels{suffix}"
    config = job_config(inp, out, sim.base_url)
    for i in range(3):
        summary = batchrun.run_shard(config, i, 3)
        assert summary.exit_code == 0
        assert summary.final is not None and summary.final.rows == len(_shard_ids(n, i, 3))
        assert summary.output == shard_output(out, i, 3)
    counts = batchrun.merge_shards(config)
    assert (counts.rows, counts.ok, counts.error) == (n, n, 0)
    whole = tmp_path / f"whole{suffix}"
    batchrun.run(job_config(inp, whole, sim.base_url))
    assert _columns(out) == _columns(whole)
    # The merged output is a finished output like any: an unsharded run of it sends nothing.
    sent = sim.stats.requests
    assert batchrun.run(config).skipped == n
    assert sim.stats.requests == sent


def test_rerunning_a_finished_shard_sends_nothing_and_keeps_its_rows(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    n = 40
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "labels.parquet"
    config = job_config(inp, out, sim.base_url)
    batchrun.run_shard(config, 1, 2)
    before = pq.read_table(shard_output(out, 1, 2))
    sent = sim.stats.requests
    again = batchrun.run_shard(config, 1, 2)
    assert sim.stats.requests == sent
    assert again.skipped == before.num_rows and again.exit_code == 0
    assert pq.read_table(shard_output(out, 1, 2)).equals(before)


# -- merge refuses ----------------------------------------------------------------------------


def _all_shards(tmp_path: Path, sim: SimulatorThread, n: int, count: int) -> tuple[Path, Path]:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "labels.parquet"
    config = job_config(inp, out, sim.base_url)
    for i in range(count):
        batchrun.run_shard(config, i, count)
    return inp, out


def test_merge_refuses_a_missing_shard(tmp_path: Path, sim: SimulatorThread) -> None:
    inp, out = _all_shards(tmp_path, sim, 40, 4)
    shutil.rmtree(shard_output(out, 2, 4).parent)
    shard_output(out, 2, 4).parent.mkdir()  # its folder, but nothing run in it
    result = CliRunner().invoke(cli, ["merge", str(inp), "-o", str(out)])
    assert result.exit_code == 1
    assert "shard 2/4 has not run" in result.output
    assert not out.exists()


def test_merge_refuses_a_shard_file_copied_over_another(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    n = 40
    inp, out = _all_shards(tmp_path, sim, n, 4)
    config = job_config(inp, out, sim.base_url)
    three = shard_output(out, 3, 4)
    shutil.copyfile(shard_output(out, 0, 4), three)  # the file alone: its proof is 3's
    with pytest.raises(ShardError) as refused:
        batchrun.merge_shards(config)
    assert f"shard 3/4's file {three} is " in str(refused.value)
    assert "torn or was replaced. Re-run that shard with overwrite=True" in str(refused.value)
    shutil.copyfile(proof_path(shard_output(out, 0, 4)), proof_path(three))  # and its proof
    with pytest.raises(ShardError, match=r"is the proof of shard 0/4 \(a shard folder copied"):
        batchrun.merge_shards(config)
    assert not out.exists()


def test_merge_still_counts_each_row_when_a_proof_is_forged(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    # The proofs are checked first; under them, every input row must be in one shard.
    n = 40
    inp, out = _all_shards(tmp_path, sim, n, 4)
    shutil.copyfile(shard_output(out, 0, 4), shard_output(out, 3, 4))
    proof = json.loads(proof_path(shard_output(out, 0, 4)).read_text())
    proof_path(shard_output(out, 3, 4)).write_text(json.dumps({**proof, "shard": [3, 4]}))
    with pytest.raises(ShardError) as refused:
        batchrun.merge_shards(job_config(inp, out, sim.base_url))
    message = str(refused.value)
    doubled, missing = _shard_ids(n, 0, 4), _shard_ids(n, 3, 4)
    assert f"{len(missing)} row(s) in no shard (ids {', '.join(missing[:10])}" in message
    assert f"{len(doubled)} row(s) in more than one shard (ids {doubled[0]}" in message
    assert not out.exists()


def test_merge_refuses_a_shard_of_another_input(tmp_path: Path, sim: SimulatorThread) -> None:
    inp, out = _all_shards(tmp_path, sim, 40, 2)
    write_jsonl(inp, [{**row, "id": f"x{i}"} for i, row in enumerate(prompts(40))])
    with pytest.raises(ShardError, match=r"shards 0/2 and 1/2 read another input than"):
        batchrun.merge_shards(job_config(inp, out, sim.base_url))


def test_merge_refuses_when_no_shard_ran(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(5))
    with pytest.raises(ShardError, match="no shards of"):
        batchrun.merge_shards(job_config(inp, tmp_path / "labels.parquet", sim.base_url))


# -- a killed shard ---------------------------------------------------------------------------


def _wait_for_lines(journal: Path, proc: subprocess.Popen[str], lines: int) -> None:
    def journaled() -> int:
        return journal.read_bytes().count(b"\n") if journal.exists() else 0

    wait_until(lambda: journaled() >= lines, 60, f"{lines} lines in {journal}", alive=[proc])


def test_a_killed_shard_is_unfinished_and_its_rerun_sends_only_its_missing_rows(
    tmp_path: Path,
) -> None:
    n = 240
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "labels.parquet"
    mine = _shard_ids(n, 1, 4)
    journal = journal_path(shard_output(out, 1, 4))
    with SimulatorThread(SimulatorConfig(latency_mean=0.05, latency_jitter=0.01)) as sim:
        config = job_config(inp, out, sim.base_url, max_tokens=20)  # the requests start_run makes
        for i in (0, 2, 3):
            assert batchrun.run_shard(config, i, 4).exit_code == 0
        killed = start_run(inp, out, sim.base_url, "--shard", "1/4", concurrency=2)
        _wait_for_lines(journal, killed, 10)
        killed.kill()
        killed.communicate(timeout=30)
        journaled = journal.read_bytes().count(b"\n")
        assert 10 <= journaled < len(mine)

        with pytest.raises(ShardError, match=r"shard 1/4 is not finished \(only its journal\)"):
            batchrun.merge_shards(config)

        sent = sim.stats.requests
        resumed = batchrun.run_shard(config, 1, 4)
        assert resumed.exit_code == 0 and resumed.skipped == journaled
        # Rows of the other shards are not this shard's missing rows: only its own are sent.
        assert sim.stats.requests - sent == len(mine) - journaled
        batchrun.merge_shards(config)
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [r["id"] for r in prompts(n)]
    assert table.column("status").to_pylist() == ["ok"] * n
