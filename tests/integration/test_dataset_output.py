"""Dataset outputs: a folder of Parquet parts and a ``_SUCCESS`` manifest
(``formats.parquet_dataset``), read as one table by pyarrow.dataset and polars, resumed,
reported and published to S3 like a single file."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, prompts, write_jsonl
from support.s3_server import MotoServer

from batchrun import load_config, run
from batchrun.cli import cli
from batchrun.core.errors import OutputError
from batchrun.formats.parquet_dataset import (
    PARTIAL_MANIFEST,
    SUCCESS,
    DatasetWriter,
    Manifest,
    open_parquet_part,
    part_name,
    read_manifest,
    schema_fingerprint,
    write_manifest,
)
from batchrun.remote.dataset import RemoteDataset
from batchrun.remote.errors import StorageError
from batchrun.remote.mirror import journal_prefix, work_folder
from batchrun.remote.objects import Storage, StorageSettings
from batchrun.simulator import SimulatorThread
from batchrun.store.columns import STATUS_OK
from batchrun.store.commit import recover_aside
from batchrun.store.sink import (
    Sink,
    output_batches,
    output_kind,
    output_schema,
    remove_stale_temporaries,
)


def ids_in(rows: int) -> list[str]:
    return [p["id"] for p in prompts(rows)]


def parts_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("part-"))


def dataset_parts(folder: Path, count: int) -> list[str]:
    """The parts of the dataset in ``folder``, checked: ``count`` of them, all its manifest
    lists, named ``part-0000k-<id>.parquet`` with one id of their own."""
    manifest = read_manifest(folder)
    assert manifest is not None and len(manifest.parts) == count
    dataset_id = manifest.parts[0].removeprefix("part-00000-").removesuffix(".parquet")
    assert re.fullmatch(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}", dataset_id), manifest.parts
    assert list(manifest.parts) == [part_name(k, dataset_id) for k in range(count)]
    assert parts_of(folder) == list(manifest.parts)
    return list(manifest.parts)


# -- the format, by the output's name -----------------------------------------------------


def test_a_folder_is_told_by_a_trailing_slash_a_folder_on_disk_or_no_suffix(
    tmp_path: Path,
) -> None:
    assert output_kind("out/labels/") == "parquet-dataset"
    assert output_kind("out/labels.parquet/") == "parquet-dataset"
    assert output_kind("out/labels.parquet") == "parquet"
    assert output_kind(tmp_path / "labels") == "parquet-dataset"
    assert output_kind(tmp_path / "labels.jsonl") == "jsonl"
    assert output_kind(tmp_path / "labels.csv") == "csv"
    written = tmp_path / "spark.parquet"
    written.mkdir()
    assert output_kind(written) == "parquet-dataset"  # a folder already: a dataset


# -- the writer ---------------------------------------------------------------------------


def table_of(n: int, start: int = 0) -> pa.Table:
    return pa.table({"n": pa.array(range(start, start + n), pa.int64())})


def test_parts_hold_at_most_part_rows_and_the_manifest_lists_them_in_order(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ds"
    writer = DatasetWriter(folder, table_of(0).schema, part_rows=4)
    for start in range(0, 10, 3):  # chunks that straddle the parts' ends
        writer.write(table_of(min(3, 10 - start), start))
    manifest = writer.finish()
    assert manifest.parts == tuple(part_name(k, writer.dataset_id) for k in range(3))
    assert dataset_parts(folder, 3) == list(manifest.parts)
    assert manifest.part_rows == (4, 4, 2) and manifest.rows == 10
    assert read_manifest(folder) == manifest
    assert manifest.schema == schema_fingerprint(table_of(0).schema)
    assert pads.dataset(folder).to_table().column("n").to_pylist() == list(range(10))


def test_parts_are_also_bounded_by_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    chunk = table_of(100)
    writer = DatasetWriter(folder, chunk.schema, part_rows=10_000, part_bytes=chunk.nbytes * 2)
    for start in range(0, 500, 100):
        writer.write(table_of(100, start))
    manifest = writer.finish()
    assert manifest.part_rows == (200, 200, 100)


def test_a_manifest_round_trips_through_its_json() -> None:
    manifest = Manifest(("part-00000.parquet",), (3,), "abc")
    data = json.loads(manifest.to_json())
    assert data["rows"] == 3 and data["parts"] == [{"name": "part-00000.parquet", "rows": 3}]
    assert Manifest.parse(manifest.to_json()) == manifest


# -- the sink -----------------------------------------------------------------------------


def row(index: int, answer: str = "fine") -> dict[str, Any]:
    return {"id": f"q{index:04d}", "status": STATUS_OK, "text": answer}


def journal_rows(sink: Sink, rows: range, answer: str = "fine") -> None:
    """Open ``sink`` and journal ``rows``, as a run does, then close the journal."""
    sink.open()
    for index in rows:
        sink.submit(index, row(index, answer))
    asyncio.run(sink.close())


def read_texts(folder: Path) -> list[str]:
    return list(pads.dataset(folder).to_table(columns=["text"]).column("text").to_pylist())


def test_a_crashed_final_step_leaves_the_previous_dataset_and_no_success_on_a_half_one(
    tmp_path: Path,
) -> None:
    out = tmp_path / "labels"
    sink = Sink(out, part_rows=4, chunk_rows=4)
    journal_rows(sink, range(10), "old")
    sink.finalize(10)
    before = read_manifest(out)
    assert before is not None and before.rows == 10

    opened: list[Path] = []

    def fail_on_the_third_part(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
        opened.append(path)
        if len(opened) == 3:
            raise OSError(28, "No space left on device")
        return open_parquet_part(path, schema)

    crashing = Sink(out, part_rows=4, chunk_rows=4, open_part=fail_on_the_third_part)
    journal_rows(crashing, range(10), "new")
    with pytest.raises(OutputError, match="the journal is kept"):
        crashing.finalize(10)
    assert len(opened) == 3  # two parts of the new dataset were written, then it failed
    assert read_manifest(out) == before and read_texts(out) == ["old"] * 10
    # Nothing half-written is left beside it, and no folder holds a _SUCCESS but the real one.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "labels",
        "labels.journal",
        "labels.journal.idx",
    ]
    # The journal was kept: the same step, re-run, writes the new dataset.
    again = Sink(out, part_rows=4, chunk_rows=4)
    again.open()
    counts = again.finalize(10)
    assert counts.rows == 10 and read_texts(out) == ["new"] * 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels"]


def test_a_stopped_run_writes_a_partial_dataset_marked_not_finished(
    tmp_path: Path,
) -> None:
    out = tmp_path / "labels"
    sink = Sink(out, part_rows=3)
    journal_rows(sink, range(5))
    counts = sink.write_finished(8)
    assert counts is not None and counts.partial is not None
    assert not (out / SUCCESS).exists()  # a reader waiting for _SUCCESS keeps waiting
    manifest = read_manifest(out)
    assert manifest is not None and manifest.file_name == PARTIAL_MANIFEST
    assert manifest.partial == counts.partial and manifest.rows == 5
    assert b"batchrun.partial" in (pq.read_schema(out / manifest.parts[0]).metadata or {})
    # The finishing run builds from the journal, and the dataset is then complete.
    done = Sink(out, part_rows=3)
    prior = done.open()
    assert prior.final_rows == 0 and len(prior.journal) == 5
    for index in range(5, 8):
        done.submit(index, row(index))
    asyncio.run(done.close())
    assert done.finalize(8).rows == 8
    assert (out / SUCCESS).exists() and not (out / PARTIAL_MANIFEST).exists()
    assert pads.dataset(out).to_table().column("id").to_pylist() == ids_in(8)


def test_a_swap_cut_short_by_a_crash_puts_the_old_dataset_back(tmp_path: Path) -> None:
    out = tmp_path / "labels"
    writer = DatasetWriter(tmp_path / ".labels.123.0123456789ab.old", table_of(0).schema)
    writer.write(table_of(3))
    writer.finish()  # the old dataset, moved aside; the new one never renamed in
    half = tmp_path / ".labels.123.abcdefabcdef.tmp"
    half.mkdir()
    (half / part_name(0)).write_bytes(b"torn")  # a part of a dataset killed mid-write
    remove_stale_temporaries(out)
    assert read_manifest(out) is not None and pads.dataset(out).to_table().num_rows == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels"]
    recover_aside(out)  # nothing left to recover: a no-op
    assert read_manifest(out) is not None


# -- readers during a publish ---------------------------------------------------------------


def publish(out: Path, answer: str, rows: int = 10) -> None:
    """A run's final step: ``rows`` rows answered ``answer``, three parts, swapped in."""
    sink = Sink(out, part_rows=4, chunk_rows=4)
    journal_rows(sink, range(rows), answer)
    sink.finalize(rows)


def test_a_reader_of_success_gets_the_dataset_it_listed_or_file_not_found_never_a_mix(
    tmp_path: Path,
) -> None:
    out = tmp_path / "labels"
    publish(out, "first")
    manifest = read_manifest(out)  # a reader follows _SUCCESS ...
    assert manifest is not None
    head = pq.read_table(out / manifest.parts[0])  # ... reads its first part ...
    publish(out, "second")  # ... and the dataset is published again under it
    # The next part it lists is not found: it is never the new dataset's part of that number.
    with pytest.raises(FileNotFoundError):
        pq.read_table(out / manifest.parts[1])
    assert head.column("text").to_pylist() == ["first"] * 4
    # Read again from _SUCCESS, the reader has the new dataset whole.
    again = read_manifest(out)
    assert again is not None and not set(again.parts) & set(manifest.parts)
    assert read_texts(out) == ["second"] * 10


@pytest.mark.slow
def test_readers_during_repeated_publishes_each_read_one_whole_dataset(tmp_path: Path) -> None:
    out = tmp_path / "labels"
    publish(out, "publish-0")
    stop = threading.Event()
    reads: dict[str, list[list[str]]] = {"manifest": [], "listing": []}
    misses = {"manifest": 0, "listing": 0}

    def follow_success() -> list[str]:
        manifest = read_manifest(out)
        assert manifest is not None
        texts: list[str] = []
        for name in manifest.parts:
            texts += pq.read_table(out / name, columns=["text"]).column("text").to_pylist()
        assert len(texts) == manifest.rows
        return texts

    def list_folder() -> list[str]:  # pyarrow.dataset lists the folder, as DuckDB globs it
        return read_texts(out)

    def reader() -> None:
        last = False
        while not last:
            last = stop.is_set()  # one more read after the last publish: it must succeed
            for kind, read in (("manifest", follow_success), ("listing", list_folder)):
                try:
                    reads[kind].append(read())
                except (OSError, pa.ArrowException):  # a part gone under it: read again
                    misses[kind] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for k in range(1, 40):
            publish(out, f"publish-{k}")
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    for kind, done in reads.items():
        # Every read that succeeded holds one publish's ten rows: never two publishes' parts.
        mixed = [sorted(set(texts)) for texts in done if len(set(texts)) != 1 or len(texts) != 10]
        assert mixed == [], (kind, mixed[:3])
        assert done[-1] == ["publish-39"] * 10, kind  # the read after the last publish
    # batchrun's own reader (report's): a publish in the middle stops it, never mixes.
    batches = output_batches(out, output_schema(), columns=["text"], batch_rows=4)
    assert next(batches).column(0).to_pylist() == ["publish-39"] * 4
    publish(out, "publish-40")
    with pytest.raises(OutputError, match="is gone: the dataset was replaced while it was read"):
        next(batches)


def test_a_success_whose_part_is_missing_is_refused_naming_it(tmp_path: Path) -> None:
    out = tmp_path / "labels"
    publish(out, "only")
    manifest = read_manifest(out)
    assert manifest is not None
    (out / manifest.parts[1]).unlink()
    with pytest.raises(OutputError) as refused:
        list(output_batches(out, output_schema()))
    assert str(refused.value).startswith(f"{out / manifest.parts[1]}, a part its _SUCCESS lists")


def test_a_dataset_of_plain_part_names_is_still_read_resumed_and_replaced(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    n = 12
    inp = write_jsonl(tmp_path / "rows.jsonl", prompts(n))
    out = tmp_path / "labels"
    config = job_config(inp, Path("unused"), sim.base_url, output=f"{out}/", part_rows=5)
    assert run(config).exit_code == 0
    # As batchrun wrote it before parts had ids: part-00000.parquet, ...
    manifest = read_manifest(out)
    assert manifest is not None
    plain = manifest.renamed([part_name(k) for k in range(len(manifest.parts))])
    for old, new in zip(manifest.parts, plain.parts, strict=True):
        (out / old).rename(out / new)
    write_manifest(out, plain)
    assert parts_of(out) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]

    again = run(config)
    assert again.exit_code == 0 and again.skipped == n and again.finished == 0
    assert sim.stats.snapshot().answered_ok == n
    shown = CliRunner().invoke(cli, ["report", str(out)])
    assert shown.exit_code == 0 and f"({n:,} rows; final)" in shown.output
    # Written again (--retry-errors has nothing to retry; --overwrite starts afresh): the new
    # dataset's parts have ids, and the plain ones are gone with the old folder.
    assert run(replace(config, resume=replace(config.resume, overwrite=True))).exit_code == 0
    dataset_parts(out, 3)
    assert pads.dataset(out).to_table().column("id").to_pylist() == ids_in(n)


def test_a_folder_with_other_files_is_refused_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "labels"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="not a dataset batchrun wrote"):
            Sink(out).open(overwrite=overwrite)
    assert (out / "notes.txt").read_text() == "mine"


# -- whole runs ---------------------------------------------------------------------------


def test_a_run_into_a_folder_writes_parts_read_as_one_table_and_resumes(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    n = 25
    inp = write_jsonl(tmp_path / "rows.jsonl", prompts(n))
    out = tmp_path / "out" / "labels"
    # As the user writes it: the trailing slash says "a folder" (a Path would drop it).
    config = job_config(inp, Path("unused"), sim.base_url, output=f"{out}/", part_rows=10)
    assert config.output.path == out and config.output.format == "parquet-dataset"
    summary = run(config)
    assert summary.exit_code == 0 and summary.final is not None and summary.final.rows == n
    dataset_parts(out, 3)
    manifest = json.loads((out / SUCCESS).read_text())
    assert manifest["rows"] == n and [p["rows"] for p in manifest["parts"]] == [10, 10, 5]

    table = pads.dataset(out, format="parquet").to_table()
    assert table.column("id").to_pylist() == ids_in(n)
    assert set(table.column("status").to_pylist()) == {STATUS_OK}
    import polars as pl

    frame = pl.read_parquet(f"{out}/*.parquet")
    assert frame["id"].to_list() == ids_in(n)
    # The consumers of an output read it as they read a file.
    schema = output_schema()
    assert sum(b.num_rows for b in output_batches(out, schema)) == n

    again = run(config)
    assert again.exit_code == 0 and again.finished == 0 and again.skipped == n
    assert sim.stats.snapshot().answered_ok == n  # the re-run sent nothing

    shown = CliRunner().invoke(cli, ["report", str(out)])
    assert shown.exit_code == 0, shown.output
    assert f"({n:,} rows; final)" in shown.output


def test_output_format_names_a_folder_whatever_its_name(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "rows.jsonl", prompts(7))
    out = tmp_path / "labels.parquet"
    args = ["run", str(inp), "-o", str(out), "--output-format", "parquet-dataset"]
    args += ["--part-rows", "3", "--base-url", sim.base_url, "--model", "claude-haiku-4-5"]
    args += ["--max-tokens", "20", "-q"]
    result = CliRunner().invoke(cli, args, env={"ANTHROPIC_API_KEY": TEST_KEY})
    assert result.exit_code == 0, result.output
    assert out.is_dir()
    dataset_parts(out, 3)
    assert pads.dataset(out).to_table().column("id").to_pylist() == ids_in(7)


# -- on S3 --------------------------------------------------------------------------------


def s3_config(inp: Path, out: str, url: str, env: dict[str, str], **flags: Any) -> Any:
    settings = {"output": out, "model": "claude-haiku-4-5", "max_tokens": 20}
    settings |= {"base_url": url, "quiet": True, "concurrency": 8, **flags}
    return load_config(inp, settings, environ=env)


def s3_dataset(moto: MotoServer, bucket: str, folder: str) -> pads.Dataset:
    s3 = pafs.S3FileSystem(endpoint_override=moto.endpoint.split("://")[1], scheme="http")
    return pads.dataset(f"{bucket}/{folder}", filesystem=s3, format="parquet")


@pytest.mark.slow
def test_a_folder_on_s3_gets_its_parts_then_success_and_loses_an_older_runs_parts(
    tmp_path: Path, env: dict[str, str], bucket: str, moto: MotoServer, sim: SimulatorThread
) -> None:
    n = 23
    inp = write_jsonl(tmp_path / "rows.jsonl", prompts(n))
    out = f"s3://{bucket}/out/"
    storage = Storage(StorageSettings.from_environ(env))
    summary = run(s3_config(inp, out, sim.base_url, env, part_rows=5, segment_rows=4))
    assert summary.exit_code == 0
    first = listed_parts(storage, out)
    assert [info.name for info in storage.list(out)] == [SUCCESS, *first]
    assert len(first) == 5 and all(name.startswith("part-0000") for name in first)
    assert s3_dataset(moto, bucket, "out").to_table().column("id").to_pylist() == ids_in(n)
    # The journal segments live beside the folder, not in it, and are gone once published.
    assert storage.list(journal_prefix(f"s3://{bucket}/out")) == []

    # A new machine (no work folder) resumes from the store and sends nothing.
    shutil.rmtree(work_folder(out, None, tmp_path / "cache"))
    again = run(s3_config(inp, out, sim.base_url, env, part_rows=5))
    assert again.finished == 0 and again.skipped == n
    assert sim.stats.snapshot().answered_ok == n
    local = work_folder(out, None, tmp_path / "cache") / "out"
    dataset_parts(local, 5)  # the local copy's names are its own too

    shown = CliRunner().invoke(cli, ["report", out])
    assert shown.exit_code == 0, shown.output
    assert f"({n:,} rows; final)" in shown.output

    # Written again with bigger parts: the older run's parts it does not list are deleted.
    bigger = run(s3_config(inp, out, sim.base_url, env, part_rows=10, overwrite=True))
    assert bigger.exit_code == 0
    latest = listed_parts(storage, out)
    assert [info.name for info in storage.list(out)] == [SUCCESS, *latest]
    assert len(latest) == 3 and not set(latest) & set(first)
    success = json.loads(storage.read_bytes(f"{out}{SUCCESS}"))
    assert [p["rows"] for p in success["parts"]] == [10, 10, 3]
    assert s3_dataset(moto, bucket, "out").to_table().column("id").to_pylist() == ids_in(n)


def listed_parts(storage: Storage, url: str) -> list[str]:
    return [p["name"] for p in json.loads(storage.read_bytes(f"{url}{SUCCESS}"))["parts"]]


@pytest.mark.slow
def test_a_publish_cut_short_leaves_the_previous_dataset_on_s3_whole(
    tmp_path: Path, env: dict[str, str], bucket: str, moto: MotoServer, sim: SimulatorThread
) -> None:
    n = 12
    inp = write_jsonl(tmp_path / "rows.jsonl", prompts(n))
    out = f"s3://{bucket}/out/"
    assert run(s3_config(inp, out, sim.base_url, env, part_rows=4)).exit_code == 0
    settings = StorageSettings.from_environ(env)
    before = listed_parts(Storage(settings), out)
    opened: list[Path] = []

    def fail_on_the_second_part(path: Path) -> BinaryIO:
        opened.append(path)
        if len(opened) == 2:
            raise OSError(5, "Input/output error")
        return path.open("rb")

    failing = Storage(settings, open_local=fail_on_the_second_part)
    remote = RemoteDataset(out, failing, work_dir=tmp_path / "work")
    remote.pull()
    sink = Sink(remote.local_output, part_rows=3)  # a new dataset, four parts this time
    sink.open()
    sink.finalize(n)
    with pytest.raises(StorageError):
        remote.publish()
    assert len(opened) == 2
    # The old _SUCCESS stands, with every part it lists: readers see the old dataset.
    assert listed_parts(Storage(settings), out) == before
    assert s3_dataset(moto, bucket, "out").to_table().column("id").to_pylist() == ids_in(n)
    # ... and the part this publish had uploaded was taken back: no orphan in the folder.
    assert [info.name for info in Storage(settings).list(out)] == [SUCCESS, *before]
    # Published again, it replaces the old dataset, whose parts go.
    retried = RemoteDataset(out, Storage(settings), work_dir=tmp_path / "work")
    retried.pull()
    again = Sink(retried.local_output, part_rows=3)
    again.open()
    again.finalize(n)
    retried.publish()
    after = listed_parts(Storage(settings), out)
    assert [info.name for info in Storage(settings).list(out)] == [SUCCESS, *after]
    assert len(after) == 4 and not set(after) & set(before)


def test_shards_merge_into_a_folder_output(tmp_path: Path, sim: SimulatorThread) -> None:
    import batchrun

    n = 30
    inp = write_jsonl(tmp_path / "rows.jsonl", prompts(n))
    out = tmp_path / "labels"
    config = job_config(inp, Path("unused"), sim.base_url, output=f"{out}/", part_rows=8)
    for index in range(3):
        assert batchrun.run_shard(config, index, 3).exit_code == 0
    counts = batchrun.merge_shards(config)
    assert (counts.rows, counts.ok) == (n, n)
    dataset_parts(out, 4)
    assert pads.dataset(out).to_table().column("id").to_pylist() == ids_in(n)
    # The merged folder is a finished output like any: a run of it sends nothing.
    sent = sim.stats.requests
    assert batchrun.run(config).skipped == n and sim.stats.requests == sent
