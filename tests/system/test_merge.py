"""Merge proves its inputs (issue 23): every shard records the job's fingerprint and the input
as it read it, and ``batchrun merge`` refuses, in one line and writing nothing, shards of
another job or input, torn shard files and absurd shard counts; ``batchrun merge OUTPUT``
finds the job from its shards; ``-q`` with ``--shard`` prints nothing but errors. Whole runs
against the simulator, merges through the command line as a user types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, prompts, python_process, write_jsonl

import batchrun
from batchrun.cli import cli
from batchrun.core.errors import ConfigError, OutputError
from batchrun.runs.runtime import Runtime
from batchrun.shards.layout import ShardError, proof_path, shard_output, shards_folder
from batchrun.shards.run import MERGE_FAN_IN
from batchrun.simulator import SimulatorThread
from batchrun.store.sink import journal_path


def merge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m batchrun merge ARGS`` as a user runs it."""
    return python_process("-m", "batchrun", "merge", *args, cwd=cwd)


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused merge prints (exit 1, no traceback)."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("batchrun: error: cannot merge the shards of ")
    return lines[0]


def labelled_rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"r{i:03d}", "review": f"review number {i}"} for i in range(n)]


def run_shards(config: Any, count: int, indexes: range | list[int] | None = None) -> None:
    for index in indexes if indexes is not None else range(count):
        assert batchrun.run_shard(config, index, count).exit_code == 0


# -- another job ------------------------------------------------------------------------------


def test_merge_refuses_a_shard_rerun_with_another_template(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", labelled_rows(60))
    out = tmp_path / "labels.parquet"
    job_a = job_config(inp, out, sim.base_url, template="A: {review}")
    job_b = job_config(inp, out, sim.base_url, template="B: {review}", overwrite=True)
    run_shards(job_a, 4)
    run_shards(job_b, 4, [1])  # shard 1 again, with another template

    line = refused(merge(str(inp), "-o", str(out)))
    assert (
        'shard 1/4 ran another job than shards 0/4, 2/4 and 3/4 (template "B: {review}" -> '
        '"A: {review}": the shard -> the others). Re-run it with the job\'s settings and '
        "--overwrite"
    ) in line
    assert refused(merge(str(out))) == line  # merge OUTPUT finds the same
    assert not out.exists()

    run_shards(replace_overwrite(job_a), 4, [1])  # the fix the message gives
    assert merge(str(out)).returncode == 0
    texts = pq.read_table(out).column("text").to_pylist()
    assert len(texts) == 60 and all(t is not None for t in texts)


def replace_overwrite(config: Any) -> Any:
    from dataclasses import replace

    return replace(config, resume=replace(config.resume, overwrite=True))


def test_merge_of_a_job_file_refuses_shards_that_all_ran_another_job(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    write_jsonl(tmp_path / "in.jsonl", labelled_rows(30))
    job = tmp_path / "label.toml"
    job.write_text(
        'input = "in.jsonl"\noutput = "out/labels.parquet"\nmodel = "claude-haiku-4-5"\n'
        'max_tokens = 20\ntemplate = "A: {review}"\n'
    )
    out = tmp_path / "out" / "labels.parquet"
    env = {"ANTHROPIC_API_KEY": TEST_KEY}
    other = batchrun.load_config(job, {"template": "B: {review}", "base_url": sim.base_url}, env)
    run_shards(replace_quiet(other), 2)  # every shard with a flag over the job file's template

    line = refused(merge(str(job)))
    assert (
        "shards 0/2 and 1/2 ran another job than the job merge was given (template "
        '"B: {review}" -> "A: {review}": these shards -> the job)'
    ) in line
    assert "merge OUTPUT merges them as they ran" in line
    # As they ran: the shards agree among themselves, so the output alone merges them.
    assert merge(str(out)).returncode == 0
    assert pq.read_table(out).num_rows == 30


def replace_quiet(config: Any) -> Any:
    from dataclasses import replace

    return replace(config, run=replace(config.run, quiet=True))


# -- another input ----------------------------------------------------------------------------


def test_merge_refuses_shards_of_an_input_edited_since_and_merges_it_restored(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = labelled_rows(40)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    original = inp.read_bytes()
    out = tmp_path / "labels.jsonl"
    config = job_config(inp, out, sim.base_url, template="Label: {review}")
    run_shards(config, 3)
    # The same ids, one review edited: every id is still at its row.
    write_jsonl(inp, [{**r, "review": "edited"} if r["id"] == "r007" else r for r in rows])

    line = refused(merge(str(inp), "-o", str(out)))
    assert f"shards 0/3, 1/3 and 2/3 read another input than {inp} is now (then " in line
    assert f"{len(original):,} bytes" in line
    assert "Restore the input they ran on, or re-run them with --overwrite" in line
    assert not out.exists()

    inp.write_bytes(original)
    result = merge(str(inp), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "40 rows (40 ok, 0 error)" in result.stderr


class EditsInputOnFirstRequest(httpx.AsyncBaseTransport):
    """The loopback transport, which appends a row to the input as the first request goes."""

    def __init__(self, inp: Path) -> None:
        self._inp = inp
        self._inner = httpx.AsyncHTTPTransport()
        self.edited = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.edited:
            with self._inp.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"id": "late", "review": "added mid-run"}) + "\n")
            self.edited = True
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_a_shard_whose_input_changed_while_it_ran_writes_no_file(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", labelled_rows(20))
    out = tmp_path / "labels.parquet"
    config = job_config(inp, out, sim.base_url, template="{review}")
    transport = EditsInputOnFirstRequest(inp)
    with pytest.raises(OutputError, match=r"changed while shard 0/2 ran") as stopped:
        batchrun.run_shard(config, 0, 2, runtime=Runtime(transport=transport))
    assert transport.edited
    assert "The journal is kept: re-run the same command" in str(stopped.value)
    mine = shard_output(out, 0, 2)
    assert not mine.exists() and not proof_path(mine).exists()
    assert journal_path(mine).stat().st_size > 0  # the answers are kept


# -- torn files and bad counts ----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_merge_refuses_a_torn_shard_file_naming_it(
    tmp_path: Path, sim: SimulatorThread, suffix: str
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    out = tmp_path / f"labels{suffix}"
    run_shards(job_config(inp, out, sim.base_url), 2)
    torn = shard_output(out, 1, 2)
    data = torn.read_bytes()
    torn.write_bytes(data[: len(data) // 2])  # a copy cut short

    line = refused(merge(str(inp), "-o", str(out)))
    assert (
        f"shard 1/2's file {torn} is {len(data) // 2:,} bytes and the shard wrote "
        f"{len(data):,}: it is torn or was replaced. Re-run that shard with --overwrite"
    ) in line
    assert not out.exists()


def test_a_torn_shard_file_that_its_proof_vouches_for_is_caught_reading_it(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    # A file the shard wrote torn (a disk that lied): its proof matches, its reader fails.
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    out = tmp_path / "labels.parquet"
    run_shards(job_config(inp, out, sim.base_url), 2)
    torn = shard_output(out, 0, 2)
    data = torn.read_bytes()[:-40]
    torn.write_bytes(data)
    proof = json.loads(proof_path(torn).read_text())
    import hashlib

    proof |= {"file_size": len(data), "file_sha256": hashlib.sha256(data).hexdigest()}
    proof_path(torn).write_text(json.dumps(proof))
    result = merge(str(out))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"batchrun: error: cannot read shard 0/2's file, {torn}: ")
    assert "It is torn or damaged: re-run that shard with --overwrite" in result.stderr


def test_a_shard_count_beyond_the_bound_is_refused_when_parsed(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(5))
    out = tmp_path / "labels.parquet"
    args = ["run", str(inp), "-o", str(out), "--base-url", sim.base_url, "--model"]
    args += ["claude-haiku-4-5", "--max-tokens", "20", "--shard", "0/1000000000000", "-q"]
    result = CliRunner().invoke(cli, args, env={"ANTHROPIC_API_KEY": TEST_KEY})
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "batchrun: error: `shard` '0/1000000000000': a job is split into at most 10,000 "
        "shards (each shard reads the whole input to find its rows, so more shards only "
        "multiply that reading): use a smaller N"
    ]
    assert not shards_folder(out).exists() and sim.stats.requests == 0
    assert job_config(inp, out, sim.base_url, shard="9999/10000").shard == (9999, 10_000)
    with pytest.raises(ConfigError, match="at most 10,000 shards"):
        batchrun.run_shard(job_config(inp, out, sim.base_url), 0, 10_001)
    # A folder of such a split, made by hand, is no shard merge reads.
    (shards_folder(out) / "0-of-1000000000000").mkdir(parents=True)
    with pytest.raises(ShardError, match=r"shards of 1,000,000,000,000 .* Remove them"):
        batchrun.merge_shards(out)


# -- merge OUTPUT -----------------------------------------------------------------------------


def test_merge_output_alone_finds_the_job_its_shards_recorded(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    (tmp_path / "data").mkdir()
    inp = write_jsonl(tmp_path / "data" / "in.jsonl", labelled_rows(50))
    out = tmp_path / "out" / "labels.csv"
    config = job_config(inp, out, sim.base_url, template="{review}", keep_columns=["review"])
    run_shards(config, 3)
    result = merge("out/labels.csv", cwd=tmp_path)  # relative, as typed
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"batchrun: merged into {out}: 50 rows (50 ok, 0 error)\n"
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(out)
    assert table.column("id").to_pylist() == [r["id"] for r in labelled_rows(50)]
    assert table.column("review").to_pylist() == [r["review"] for r in labelled_rows(50)]
    # SOURCE -o OUTPUT keeps working, with the columns the shards kept (merge has no flag
    # for them) ...
    out.unlink()
    again = merge(str(inp), "-o", str(out), "-q")
    assert again.returncode == 0 and again.stderr == ""
    assert pcsv.read_csv(out).column("review").to_pylist() == [
        r["review"] for r in labelled_rows(50)
    ]
    # ... and a job file that keeps other columns than its shards did is refused.
    job = tmp_path / "job.toml"
    job.write_text(
        'input = "data/in.jsonl"\noutput = "out/labels.csv"\nmodel = "claude-haiku-4-5"\n'
        'max_tokens = 40\ntemplate = "{review}"\n'
    )
    line = refused(merge(str(job)))
    assert (
        "shards 0/3, 1/3 and 2/3 kept the columns [review] and the job keeps []. Merge "
        "OUTPUT, which keeps the shards' columns, or give merge the job file they ran with"
    ) in line
    assert "ran another job" not in line  # the same request settings
    # Flags that describe the input are the shards' own with OUTPUT alone: a usage error.
    usage = merge(str(out), "--format", "jsonl")
    assert usage.returncode == 2 and "recorded how they read their input" in usage.stderr


def test_merge_output_of_a_dataset_folder(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    out = tmp_path / "labels"
    config = job_config(inp, Path("unused"), sim.base_url, output=f"{out}/", part_rows=8)
    run_shards(config, 3)
    result = merge(f"{out}/", "-q")
    assert result.returncode == 0 and result.stderr == ""
    assert pads.dataset(out).to_table().column("id").to_pylist() == [p["id"] for p in prompts(30)]
    # Merged again into the finished folder (the -o of a folder is no longer refused).
    assert merge(str(inp), "-o", f"{out}/", "-q").returncode == 0


def test_merge_names_a_path_that_is_neither_a_source_nor_an_output(tmp_path: Path) -> None:
    result = merge(str(tmp_path / "labels.parquet"))
    assert result.returncode == 1
    assert result.stderr == (
        f"batchrun: error: {tmp_path / 'labels.parquet'}: no such job file or input, and no "
        "output with shards beside it (labels.parquet.shards/). Give the job file or input "
        "the shards ran (with its -o), or the output\n"
    )


def test_a_shard_finished_without_a_proof_is_refused_until_rerun(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    out = tmp_path / "labels.parquet"
    config = job_config(inp, out, sim.base_url)
    run_shards(config, 2)
    proof_path(shard_output(out, 1, 2)).unlink()  # as an older batchrun left it
    line = refused(merge(str(out)))
    assert (
        "shard 1/2 has no record of the job and input it ran (no labels.parquet.shard.json "
        "beside the file: finished by an older batchrun, or the record was removed). Re-run "
        "it as before, without --overwrite: nothing is sent again, and the record is written"
    ) in line
    sent = sim.stats.requests
    run_shards(config, 2, [1])
    assert sim.stats.requests == sent
    assert merge(str(out)).returncode == 0


# -- many shards ------------------------------------------------------------------------------


def test_merge_of_more_shards_than_it_reads_at_once(tmp_path: Path, sim: SimulatorThread) -> None:
    count = MERGE_FAN_IN + 4  # two merge steps: 16 shards into one file, then the rest
    n = 90
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "labels.jsonl"
    config = job_config(inp, out, sim.base_url)
    run_shards(config, count)
    counts = batchrun.merge_shards(config)
    assert (counts.rows, counts.ok) == (n, n)
    # The merge steps' temporary files are gone.
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "labels.jsonl", "labels.jsonl.shards"]
    merged = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in merged] == [p["id"] for p in prompts(n)]
    whole = tmp_path / "whole.jsonl"
    batchrun.run(job_config(inp, whole, sim.base_url))
    assert [r["text"] for r in merged] == [
        json.loads(line)["text"] for line in whole.read_text().splitlines()
    ]


# -- -q ---------------------------------------------------------------------------------------


def test_quiet_shard_runs_print_nothing(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    out = tmp_path / "labels.parquet"
    env = {**os.environ, "ANTHROPIC_API_KEY": TEST_KEY}
    base = [sys.executable, "-m", "batchrun", "run", str(inp), "-o", str(out)]
    base += ["--base-url", sim.base_url, "--model", "claude-haiku-4-5", "--max-tokens", "20"]
    for shard in ("0/2", "1/2"):
        done = subprocess.run(
            [*base, "--shard", shard, "-q"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and (done.stdout, done.stderr) == ("", "")
    as_json = subprocess.run(
        [*base, "--shard", "1/2", "-q", "--json"], env=env, capture_output=True, text=True
    )
    assert as_json.returncode == 0 and as_json.stderr == ""
    assert json.loads(as_json.stdout)["outcome"] == "complete"
    # Errors still print: a shard that cannot run says why.
    bad = subprocess.run([*base, "--shard", "2/2", "-q"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("batchrun: error: `shard` must be")
    assert merge(str(inp), "-o", str(out), "-q").stderr == ""
