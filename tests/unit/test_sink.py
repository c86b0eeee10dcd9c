"""The output writer: journal, resume state, atomic final file in input order, both formats."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from support.outputs import write_rows

import batchrun.store.sink as sink_module
from batchrun.core.errors import OutputError
from batchrun.formats.marks import Partial
from batchrun.formats.registry import read_partial
from batchrun.store import journal_index
from batchrun.store.columns import COLUMN_NAMES, blank_row
from batchrun.store.sink import (
    Sink,
    SortedJournal,
    bucket_rows_for,
    journal_path,
    output_schema,
)
from batchrun.store.sink import output_batches as read_batches

WHEN = datetime(2026, 11, 22, 3, 0, 0, 123000, tzinfo=timezone.utc)


def make_row(i: int, status: str = "ok", **extra: Any) -> dict[str, Any]:
    row = blank_row(f"r{i}")
    row.update(
        status=status,
        text=f"answer {i} ✓",
        input_tokens=10 + i,
        output_tokens=3,
        request_hash=f"h{i}",
        finished_at=WHEN,
    )
    row.update(extra)
    return row


def read_output(out: Path) -> list[dict[str, Any]]:
    if out.suffix == ".parquet":
        return pq.read_table(out).to_pylist()  # type: ignore[no-any-return]
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_rows_arriving_out_of_order_are_written_in_input_order(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    order = [3, 0, 4, 1, 2]
    sink = write_rows(out, [(i, make_row(i)) for i in order])
    assert journal_path(out).exists()
    counts = sink.finalize(5)
    assert (counts.rows, counts.ok, counts.error) == (5, 5, 0)
    rows = read_output(out)
    assert [r["id"] for r in rows] == ["r0", "r1", "r2", "r3", "r4"]
    assert rows[2]["text"] == "answer 2 ✓"
    assert list(rows[0]) == list(COLUMN_NAMES)
    assert not journal_path(out).exists()


def test_parquet_output_has_the_explicit_schema(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    write_rows(out, [(0, make_row(0, product="mug"))], keep=("product",)).finalize(1)
    table = pq.read_table(out)
    assert table.schema.equals(output_schema(("product",)))
    row = table.to_pylist()[0]
    assert row["finished_at"] == WHEN
    assert row["product"] == "mug"


def test_the_newest_record_for_a_row_wins(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    rows = [
        (0, make_row(0, "error", error_type="overloaded_error")),
        (1, make_row(1)),
        (0, make_row(0)),
    ]
    counts = write_rows(out, rows).finalize(2)
    assert counts.ok == 2
    assert [r["status"] for r in read_output(out)] == ["ok", "ok"]


def test_resume_reads_prior_final_and_journal_and_merges(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    write_rows(out, [(i, make_row(i, "error" if i == 2 else "ok")) for i in range(4)]).finalize(4)

    # A later run: reads what is there, retries row 2, adds row 4 (the input grew).
    sink = Sink(out)
    prior = sink.open()
    assert prior.final_rows == 4
    assert [prior.lookup(i).status for i in range(4)] == ["ok", "ok", "error", "ok"]  # type: ignore[union-attr]
    assert prior.lookup(4) is None

    async def main() -> None:
        sink.submit(4, make_row(4))
        sink.submit(2, make_row(2))
        await sink.close()

    asyncio.run(main())
    counts = sink.finalize(5)
    assert (counts.ok, counts.error) == (5, 0)
    assert [r["id"] for r in read_output(out)] == [f"r{i}" for i in range(5)]


def test_journal_survives_a_crash_and_is_read_back(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write_rows(out, [(1, make_row(1)), (0, make_row(0))])
    # A crash mid-write leaves a torn last line.
    with journal_path(out).open("ab") as fh:
        fh.write(b'{"_index":2,"id":"r2","sta')
    prior = Sink(out).open()
    assert set(prior.journal) == {0, 1}
    assert journal_path(out).read_bytes().endswith(b"\n")


def test_a_resume_lets_the_journal_index_go_once_it_has_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The index holds 128 bytes a row: kept while a million records are sorted and kept, it
    # was the largest part of a resume's peak memory.
    out = tmp_path / "out.parquet"
    write_rows(out, [(i, make_row(i)) for i in range(20)])
    read, keep = journal_index.read_index, sink_module.JournalRecords
    seen: list[weakref.ref[Any]] = []
    held_while_kept: list[bool] = []

    def read_index(journal: Path) -> Any:
        indexed = read(journal)
        assert indexed is not None and len(indexed) == 20  # the resume reads it
        seen.append(weakref.ref(indexed))
        return indexed

    def records(table: Any) -> Any:
        gc.collect()
        held_while_kept.append(seen[0]() is not None)
        return keep(table)

    monkeypatch.setattr("batchrun.store.sink.read_index", read_index)
    monkeypatch.setattr(sink_module, "JournalRecords", records)
    prior = Sink(out).open()
    assert len(prior.journal) == 20 and held_while_kept == [False]


def test_overwrite_discards_earlier_output(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    write_rows(out, [(0, make_row(0))]).finalize(1)
    write_rows(out, [(0, make_row(5))])
    prior = Sink(out).open(overwrite=True)
    assert prior.final_rows == 0 and not prior.journal
    assert not out.exists()


def test_unwritable_location_is_reported_before_anything_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write output"):
        Sink(blocker / "out.parquet").open()


def test_a_missing_row_at_finalize_is_an_error_not_a_silent_gap(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    sink = write_rows(out, [(0, make_row(0)), (2, make_row(2))])
    with pytest.raises(OutputError, match="row 1"):
        sink.finalize(3)
    assert not out.exists()
    assert journal_path(out).exists()


def test_large_outputs_are_written_in_chunks(tmp_path: Path) -> None:
    chunks = {"chunk_rows": 7}
    out = tmp_path / "out.parquet"
    write_rows(out, [(i, make_row(i)) for i in reversed(range(30))], **chunks).finalize(30)
    second = [(i, make_row(i, text="second")) for i in (3, 17, 29, 30)]
    write_rows(out, second, **chunks).finalize(31)
    rows = read_output(out)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(31)]
    assert [r["text"] for r in rows if r["text"] == "second"] == ["second"] * 4
    assert pq.ParquetFile(out).metadata.num_row_groups == 5  # 31 rows, 7 per chunk
    batches = list(read_batches(out, output_schema(), ["id"], 7))
    assert sum(b.num_rows for b in batches) == 31


def test_a_shuffled_journal_is_written_in_order_a_few_rows_of_each_batch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Message Batch's results come in no particular order: each chunk of output draws on
    # every batch of the journal's Arrow file, and takes only its rows from each.
    monkeypatch.setattr("batchrun.store.sink._JOURNAL_BATCH_ROWS", 5)
    order = list(range(200))
    random.Random(7).shuffle(order)
    again = {3, 50, 51, 199}  # recorded twice: the newer record wins
    rows = [(i, make_row(i)) for i in order]
    rows += [(i, make_row(i, text=f"newer {i}")) for i in sorted(again, reverse=True)]
    out = tmp_path / "out.parquet"
    write_rows(out, rows, chunk_rows=7).finalize(200)
    got = read_output(out)
    assert [r["id"] for r in got] == [f"r{i}" for i in range(200)]
    assert [r["text"] for r in got if r["text"].startswith("newer")] == [
        f"newer {i}" for i in sorted(again)
    ]
    assert all(r["text"] == make_row(i)["text"] for i, r in enumerate(got) if i not in again)


def test_the_final_step_sorts_the_journal_a_bucket_of_rows_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Buckets of 16 input rows, chunks of 7 (some chunks straddle two buckets), slices of
    # the journal that span several buckets: every row once, in order, the newer record
    # winning, and only one bucket's indexes held at a time.
    monkeypatch.setattr("batchrun.store.sink._JOURNAL_BATCH_ROWS", 5)
    held: list[int] = []
    loaded = SortedJournal._bucket

    def bucket(self: SortedJournal, b: int) -> Any:
        found = loaded(self, b)
        held.append(len(list(self.folder.iterdir())))  # the folder holds every bucket
        assert self._open is not None and self._open[0] == b  # and only b is read
        return found

    monkeypatch.setattr(SortedJournal, "_bucket", bucket)
    order = list(range(100))
    random.Random(26).shuffle(order)
    again = {0, 15, 16, 63, 99}
    rows = [(i, make_row(i)) for i in order]
    rows += [(i, make_row(i, text=f"newer {i}")) for i in sorted(again)]
    small = {"chunk_rows": 7, "bucket_rows": 16, "json_slice_bytes": 2_000}
    out = tmp_path / "out.parquet"
    counts = write_rows(out, rows, **small).finalize(100)
    got = read_output(out)
    assert [r["id"] for r in got] == [f"r{i}" for i in range(100)]
    assert [r["text"] for r in got if r["text"].startswith("newer")] == [
        f"newer {i}" for i in sorted(again)
    ]
    assert (counts.rows, counts.ok) == (100, 100)
    assert held and set(held) == {2 * 7}  # 7 buckets: records and indexes of each
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]  # folder removed


def test_a_job_of_more_buckets_than_the_bound_gets_larger_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each bucket keeps two files open while the journal is split: at most MAX_BUCKETS of
    # them (4 here), so 100 rows in buckets of at least 16 are cut into buckets of 25.
    monkeypatch.setattr("batchrun.store.sink.MAX_BUCKETS", 4)
    assert bucket_rows_for(100, 16) == 25 and bucket_rows_for(10, 16) == 16
    seen: list[int] = []
    made = sink_module.journal_to_arrow

    def journal_to_arrow(*args: Any) -> SortedJournal:
        journal = made(*args)
        seen.append(len(list(journal.folder.iterdir())))
        return journal

    monkeypatch.setattr("batchrun.store.sink.journal_to_arrow", journal_to_arrow)
    rows = [(i, make_row(i)) for i in reversed(range(100))]
    out = tmp_path / "out.parquet"
    write_rows(out, rows, chunk_rows=7, bucket_rows=16).finalize(100)
    assert seen == [2 * 4]  # four buckets, not seven
    assert [r["id"] for r in read_output(out)] == [f"r{i}" for i in range(100)]


def test_the_final_step_gives_the_runs_freed_memory_back_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        "batchrun.store.sink.give_back_freed_memory", lambda: calls.append("given back")
    )
    out = tmp_path / "out.parquet"
    write_rows(out, [(i, make_row(i)) for i in range(3)]).finalize(3)
    assert calls == ["given back"]


def test_a_stopped_run_over_several_buckets_counts_what_it_has(tmp_path: Path) -> None:
    # Rows 0..39 of 50, in buckets of 8, one of them (row 20) missing: the partial output
    # says 39 of 50, and holds those rows in order.
    rows = [(i, make_row(i)) for i in reversed(range(40)) if i != 20]
    out = tmp_path / "out.parquet"
    sink = write_rows(out, rows, chunk_rows=6, bucket_rows=8)
    counts = sink.write_finished(50)
    assert counts is not None and (counts.rows, counts.of) == (39, 50)
    assert read_partial(out) == Partial(39, 50)
    assert [r["id"] for r in read_output(out)] == [f"r{i}" for i in range(40) if i != 20]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_journal_and_outputs_are_parsed_a_slice_of_lines_at_a_time(
    tmp_path: Path, suffix: str
) -> None:
    # Slices far shorter than a line: each grows to hold whole lines, however long.
    small = {"json_slice_bytes": 100}
    out = tmp_path / f"out{suffix}"
    long_text = "long answer " * 100
    first = [(i, make_row(i, text=long_text if i == 5 else None)) for i in range(9)]
    write_rows(out, first, **small)
    write_rows(out, [(8, make_row(8, text="again"))], **small).finalize(9)  # journal + final
    write_rows(out, [(9, make_row(9))], **small).finalize(10)  # reads the earlier final file
    rows = read_output(out)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(10)]
    assert [r["text"] for r in rows][4:] == [None, long_text, None, None, "again", "answer 9 ✓"]


def test_a_full_disk_mid_run_is_reported_and_keeps_what_was_written(tmp_path: Path) -> None:
    import errno

    out = tmp_path / "out.parquet"
    budget = [3]

    def write(fd: int, data: memoryview) -> int:
        if budget[0] == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        budget[0] -= 1
        return os.write(fd, data)

    sink = Sink(out, write=write)
    sink.open()
    for i in range(3):
        sink.submit(i, make_row(i))
    with pytest.raises(OutputError, match=r"No space left on device.*re-run resumes"):
        sink.submit(3, make_row(3))
    asyncio.run(sink.close())
    prior = Sink(out).open()
    assert sorted(prior.journal) == [0, 1, 2]


def test_a_failed_final_write_leaves_the_old_output_and_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.parquet"
    write_rows(out, [(0, make_row(0))]).finalize(1)
    before = out.read_bytes()
    sink = write_rows(out, [(1, make_row(1))])

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError, match=r"No space left.*needs about .* MiB free"):
        sink.finalize(2)
    assert out.read_bytes() == before
    assert journal_path(out).exists()
    assert not list(tmp_path.glob(".out.parquet*"))  # no temporary files left behind


def test_a_damaged_journal_line_is_skipped_when_the_final_file_is_built(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    write_rows(out, [(0, make_row(0))])
    with journal_path(out).open("ab") as fh:
        fh.write(b"\x00\x00 not json at all\n")  # what a power loss can leave behind
    sink = write_rows(out, [(1, make_row(1))])
    counts = sink.finalize(2)
    assert (counts.rows, counts.ok) == (2, 2)
    assert [r["id"] for r in read_output(out)] == ["r0", "r1"]


def test_a_row_longer_than_a_json_block_still_reaches_the_final_file(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    huge = "x" * (3 << 20)  # longer than the journal reader's block
    sink = write_rows(out, [(0, make_row(0)), (1, make_row(1, text=huge))])
    assert set(Sink(out).open().journal) == {0, 1}
    sink.finalize(2)
    assert read_output(out)[1]["text"] == huge


def test_too_little_free_space_is_said_before_the_final_step_writes_anything(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.parquet"
    write_rows(out, [(0, make_row(0))]).finalize(1)
    before = out.read_bytes()
    write_rows(out, [(1, make_row(1))])
    journal = journal_path(out).stat().st_size
    small = Sink(out, free_space=lambda folder: 2 * journal - 1)  # short of the journal twice
    with pytest.raises(OutputError) as info:
        small.finalize(2)
    message = str(info.value)
    assert "not enough space" in message and str(tmp_path) in message
    assert "re-run the same command" in message and "journal is kept" in message
    assert out.read_bytes() == before and journal_path(out).exists()
    assert not list(tmp_path.glob(".out.parquet*"))
    roomy = Sink(out, free_space=lambda folder: 10 * (journal + len(before)))
    assert roomy.finalize(2).rows == 2
