"""The one journal reader: newest record per row, damaged lines skipped, outputs read as resumed."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.core.errors import OutputError
from batchrun.store.columns import blank_row
from batchrun.store.journal import (
    INDEX,
    Newest,
    journal_line,
    json_line,
    newest_per_row,
    read_records,
    repair_journal,
)
from batchrun.store.latest import Source, latest_batches
from batchrun.store.sink import journal_path, output_schema

WHEN = datetime(2026, 11, 22, 3, 0, 0, 123000, tzinfo=timezone.utc)
SCHEMA = pa.schema([output_schema().field(n) for n in ("id", "status", "finished_at")])


def record(index: int, row_id: str, status: str = "ok") -> str:
    row = blank_row(row_id)
    row.update(status=status, finished_at=WHEN)
    return journal_line(index, row)


def write(path: Path, *lines: str | bytes) -> Path:
    with path.open("ab") as fh:
        for line in lines:
            fh.write(line.encode() if isinstance(line, str) else line)
    return path


def rows(batches: Any) -> list[dict[str, Any]]:
    return [r for batch in batches for r in batch.to_pylist()]


def newest(path: Path, slice_bytes: int = 2 << 20) -> list[dict[str, Any]]:
    return rows(Newest.read(path, slice_bytes).records(SCHEMA, slice_bytes))


def test_the_newest_record_per_row_wins_and_keeps_journal_order(tmp_path: Path) -> None:
    path = write(
        tmp_path / "j",
        record(0, "a", "error"),
        record(1, "b"),
        record(0, "a2"),
        record(2, "c", "error"),
        record(2, "c2", "error"),
    )
    got = newest(path)
    assert [(r[INDEX], r["id"]) for r in got] == [(1, "b"), (0, "a2"), (2, "c2")]
    assert got[0]["finished_at"] == WHEN
    assert list(Newest.read(path).indexes) == [0, 1, 2]


def test_newest_per_row_gives_positions_and_indexes_in_index_order() -> None:
    positions, indexes = newest_per_row(pa.chunked_array([[3, 1], [3, 1, 2]], pa.int64()))
    assert positions.to_pylist() == [3, 4, 2]
    assert indexes.to_pylist() == [1, 2, 3]
    empty_positions, empty_indexes = newest_per_row(pa.chunked_array([], pa.int64()))
    assert len(empty_positions) == len(empty_indexes) == 0


@pytest.mark.parametrize("slice_bytes", [100, 2 << 20])
def test_damaged_and_torn_lines_are_skipped(tmp_path: Path, slice_bytes: int) -> None:
    path = write(
        tmp_path / "j",
        record(0, "a", "error"),
        b"\x00\x00 not json at all\n",  # what a power loss can leave behind
        record(1, "b"),
        b'{"id": "no index"}\n',
        b"\n",
        b"[1, 2]\n",
        record(0, "a2"),
        b'{"_index":2,"id":"c","sta',  # a crash mid-write
    )
    got = newest(path, slice_bytes)
    assert [(r[INDEX], r["id"]) for r in got] == [(1, "b"), (0, "a2")]
    assert {r["finished_at"] for r in got} == {WHEN}  # read back by the line-by-line path too
    records = rows(read_records(path, SCHEMA, slice_bytes))
    assert [r["id"] for r in records] == ["a", "b", "a2"]


def test_damage_costs_only_its_own_slice_and_positions_stay_right(tmp_path: Path) -> None:
    # Small slices: the damaged one is parsed line by line, the others by pyarrow; the newest
    # record of row 0 is after the damage, that of row 1 before it.
    lines = [record(0, "a"), record(1, "b1"), b"garbage\n", record(1, "b2")]
    lines += [record(i, f"r{i}") for i in range(2, 40)]
    lines += [b"{ also broken\n", record(0, "a-last")]
    path = write(tmp_path / "j", *lines)
    got = {r[INDEX]: r["id"] for r in newest(path, slice_bytes=200)}
    assert got[0] == "a-last" and got[1] == "b2" and len(got) == 40


def test_a_bad_timestamp_in_a_damaged_journal_becomes_null(tmp_path: Path) -> None:
    path = write(
        tmp_path / "j",
        b"oops\n",
        json.dumps({INDEX: 0, "id": "a", "finished_at": "yesterday"}) + "\n",
        json.dumps({INDEX: 1, "id": "b", "finished_at": "2026-11-22T03:00:00.123Z"}) + "\n",
    )
    got = newest(path)
    assert [r["finished_at"] for r in got] == [None, WHEN]


def test_a_journal_that_grew_after_the_index_pass_reads_as_it_was(tmp_path: Path) -> None:
    path = write(tmp_path / "j", record(0, "a"), record(1, "b"))
    found = Newest.read(path)
    write(path, record(0, "a-later"), record(2, "c"))  # the run is still going
    assert [r["id"] for r in rows(found.records(SCHEMA))] == ["a", "b"]


def test_a_missing_or_empty_journal_has_no_records(tmp_path: Path) -> None:
    assert newest(tmp_path / "missing") == []
    (tmp_path / "empty").touch()
    assert newest(tmp_path / "empty") == []


def test_lines_are_written_with_rfc3339_times_and_a_torn_line_is_repaired(tmp_path: Path) -> None:
    line = record(7, "x")
    assert line.endswith("\n") and json.loads(line)["finished_at"] == "2026-11-22T03:00:00.123Z"
    path = write(tmp_path / "j", line, b'{"_index": 8, "id"')
    repair_journal(path)
    assert path.read_text() == line


# -- an output read as a run would resume it ------------------------------------------------


def output_rows(n: int, prefix: str = "f") -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        row = blank_row(f"{prefix}{i}")
        row.update(status="ok", finished_at=WHEN)
        out.append(row)
    return out


def ids(path: Path, **options: Any) -> list[tuple[int, str]]:
    got = rows(latest_batches(path, ("id", "status"), **options))
    return [(r[INDEX], r["id"]) for r in got]


def test_a_final_file_only_is_read_in_input_order(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    pq.write_table(pa.Table.from_pylist(output_rows(5), schema=output_schema()), out)
    found: list[Source] = []
    assert ids(out, found=found, batch_rows=2) == [(i, f"f{i}") for i in range(5)]
    assert found == [Source(out, 5, final=True, journal=False)]


def test_a_journal_only_is_read_with_the_newest_record_per_row(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write(journal_path(out), record(1, "b"), record(0, "a"), record(1, "b2"))
    found: list[Source] = []
    assert ids(out, found=found) == [(0, "a"), (1, "b2")]
    assert found == [Source(out, 2, final=False, journal=True)]
    assert ids(journal_path(out)) == [(0, "a"), (1, "b2")]  # the journal named itself


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_a_journal_replaces_the_final_files_rows(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(output_rows(6), schema=output_schema()), out)
    else:
        write(out, *(json_line(r) for r in output_rows(6)))
    write(journal_path(out), record(4, "j4"), record(1, "j1"), record(7, "j7"), record(4, "j4b"))
    found: list[Source] = []
    got = ids(out, found=found, batch_rows=4, slice_bytes=150)
    # Final rows first (input order, replaced ones left out), then the journal's (time order).
    assert got == [(0, "f0"), (2, "f2"), (3, "f3"), (5, "f5"), (1, "j1"), (7, "j7"), (4, "j4b")]
    assert found == [Source(out, 7, final=True, journal=True)]


def test_no_output_at_all_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="no such output"):
        ids(tmp_path / "nope.parquet")
    with pytest.raises(OutputError, match="no such journal"):
        ids(tmp_path / "nope.parquet.journal")
