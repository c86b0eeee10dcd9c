"""The journal's binary index (``store.journal_index``): what a run notes beside its journal,
and what a resume takes from it only once it has checked it against the journal."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from support.outputs import write_rows

from batchrun.store.columns import blank_row
from batchrun.store.journal import journal_line
from batchrun.store.journal_index import (
    RECORD_BYTES,
    JournalIndexWriter,
    index_path,
    read_index,
)
from batchrun.store.sink import JournalRecords, PriorRecord, Sink, journal_path

SOURCE = "https://api.anthropic.com"


def request_hash(i: int) -> str:
    return hashlib.sha256(f"request {i}".encode()).hexdigest()


def answer(i: int, **extra: Any) -> dict[str, Any]:
    row = blank_row(f"r{i}")
    row.update(
        status="ok",
        text=f"answer {i}",
        input_tokens=10,
        output_tokens=3,
        cost_usd=0.001 * i,
        request_hash=request_hash(i),
        source=SOURCE,
        http_status=200,
    )
    row.update(extra)
    return row


def records(out: Path) -> list[tuple[int, PriorRecord]]:
    """What a resume of ``out`` takes from its journal: each row's newest record."""
    prior = Sink(out).open()
    journal: JournalRecords = prior.journal
    return [(i, journal[i]) for i in journal]


def parsed(out: Path) -> list[tuple[int, PriorRecord]]:
    """The same, from the journal alone (its index set aside and put back)."""
    index = index_path(journal_path(out))
    aside = index.with_name(index.name + ".aside")
    os.replace(index, aside)
    try:
        return records(out)
    finally:
        os.replace(aside, index)


def mixed_rows() -> list[tuple[int, dict[str, Any]]]:
    """Rows of every kind a resume tells apart, in finishing order (not input order)."""
    rows: list[tuple[int, dict[str, Any]]] = []
    for i in [3, 0, 2, 1, 5, 4, 7, 6, 9, 8]:
        rows.append((i, answer(i)))
    rows.append((10, answer(10, status="error", error_type="overloaded", request_hash=None)))
    rows.append((11, answer(11, id="x" * 80)))  # an id too long to keep inline
    rows.append((12, answer(12, request_hash="not-hex")))  # an older hash
    rows.append((13, answer(13, source=None, message_id="msg_sim_1")))  # a legacy source
    rows.append((14, answer(14, status=None, error_type="invalid_request", http_status=None)))
    rows.append((2, answer(2, text="again")))  # a newer record for row 2
    rows.append((15, answer(15, id="ünïcødé ✓")))
    return rows


def test_a_resume_takes_from_the_index_exactly_what_it_parses_from_the_journal(
    tmp_path: Path,
) -> None:
    out = tmp_path / "o.parquet"
    rows = mixed_rows()
    write_rows(out, rows)
    found = read_index(journal_path(out))
    assert found is not None and len(found) == len(rows) and found.gaps == []
    from_index = records(out)
    assert from_index == parsed(out)
    assert dict(from_index)[11].id == "x" * 80
    assert dict(from_index)[12].request_hash == "not-hex"
    assert dict(from_index)[13].source == "simulator"
    assert dict(from_index)[14].source is None and dict(from_index)[14].status is None
    assert dict(from_index)[0].request_hash == request_hash(0)


def test_rows_written_many_at_a_time_are_each_indexed_at_their_own_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's results are journaled many lines a write (``Sink.holding``): each line is
    noted in the index at its own offset, as rows written one at a time are."""
    monkeypatch.setattr("batchrun.store.sink.HELD_BYTES", 2_000)  # several writes
    out = tmp_path / "o.parquet"
    rows = [(i, answer(i)) for i in range(60)]
    sink = Sink(out)
    sink.open()

    async def main() -> None:
        sink.submit(0, rows[0][1])  # one at a time, then held
        with sink.holding():
            for index, row in rows[1:]:
                sink.submit(index, row)
        await sink.close()

    asyncio.run(main())
    found = read_index(journal_path(out))
    assert found is not None and len(found) == len(rows) and found.gaps == []
    assert records(out) == parsed(out)
    assert [i for i, _ in records(out)] == list(range(60))


def test_the_twin_pass_digests_come_from_the_index(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    write_rows(out, mixed_rows())
    rows, digests, others = Sink(out).open().journal.answered_digests(lambda source: True)
    assert len(digests) == 16 * len(rows)
    by_row = {r: digests[16 * k : 16 * k + 16] for k, r in enumerate(rows)}
    assert by_row[5] == bytes.fromhex(request_hash(5))[:16]
    assert 10 not in by_row and 14 not in by_row  # no answer
    assert others == [(12, "not-hex")]  # digested one by one, as before
    # Only the answers a row to send can be a twin of, when the rows to send are known.
    among = by_row[5] + bytes(16) + by_row[7]
    rows, digests, _ = Sink(out).open().journal.answered_digests(lambda source: True, among)
    assert list(rows) == [5, 7] and digests == by_row[5] + by_row[7]
    # Without the index, every digest is made from the text, as before.
    os.remove(index_path(journal_path(out)))
    rows, digests, others = Sink(out).open().journal.answered_digests(lambda source: True)
    assert len(rows) == 0 and len(others) == len(by_row) + 1


def test_a_torn_last_record_is_left_out_and_cut_by_the_next_writer(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    write_rows(out, [(i, answer(i)) for i in range(5)])
    index = index_path(journal_path(out))
    whole = index.stat().st_size
    with index.open("ab") as fh:
        fh.write(b"\x01" * (RECORD_BYTES // 2))  # a crash mid-write
    found = read_index(journal_path(out))
    assert found is not None and len(found) == 5 and found.size == whole
    write_rows(out, [(5, answer(5))])  # resumes: appends after the cut
    assert index.stat().st_size % RECORD_BYTES == 0
    found = read_index(journal_path(out))
    assert found is not None and len(found) == 6 and found.gaps == []
    assert records(out) == parsed(out)


def test_lines_past_the_index_are_parsed(tmp_path: Path) -> None:
    """A crash between a journal write and the index's (or lines written by other means):
    the journal's tail no record covers is parsed, with its damage counted."""
    out = tmp_path / "o.parquet"
    write_rows(out, [(i, answer(i)) for i in range(4)])
    journal = journal_path(out)
    size = journal.stat().st_size
    with journal.open("a", encoding="utf-8") as fh:
        fh.write(journal_line(4, answer(4), "run-b"))
        fh.write("{damaged\n")
        fh.write(journal_line(1, answer(1, text="newer"), "run-b"))
    found = read_index(journal)
    assert found is not None and found.gaps == [(size, journal.stat().st_size)]
    prior = Sink(out).open()
    assert sorted(prior.journal) == [0, 1, 2, 3, 4] and prior.damaged == 1
    assert records(out) == parsed(out)
    # The next run's records come after that stretch, which stays a gap between records.
    write_rows(out, [(5, answer(5))])
    found = read_index(journal)
    assert found is not None and len(found) == 5 and len(found.gaps) == 1
    assert records(out) == parsed(out)


def test_a_journal_of_an_older_batchrun_is_parsed_then_indexed_from_its_end(
    tmp_path: Path,
) -> None:
    out = tmp_path / "o.parquet"
    journal = journal_path(out)
    journal.write_text("".join(journal_line(i, answer(i), "old") for i in range(3)))
    assert read_index(journal) is None
    assert sorted(i for i, _ in records(out)) == [0, 1, 2]
    write_rows(out, [(3, answer(3))])
    found = read_index(journal)
    assert found is not None and len(found) == 1
    assert found.gaps[0][0] == 0  # the older lines: parsed, every time
    assert records(out) == parsed(out) and len(records(out)) == 4


def test_a_stale_index_is_never_trusted(tmp_path: Path) -> None:
    """The journal removed and another written in its place (the same inode reused, as a
    file system may): the index's lines no longer match, and the journal is parsed."""
    out = tmp_path / "o.parquet"
    write_rows(out, [(i, answer(i)) for i in range(6)])
    journal = journal_path(out)
    # Rewritten in place: same inode, same length, other lines (another run's).
    old = journal.read_bytes()
    new = "".join(journal_line(i, answer(i, text="other"), "run-x") for i in range(6)).encode()
    with journal.open("r+b") as fh:
        fh.write(new[: len(old)].ljust(len(old), b"\n"))
    assert read_index(journal) is None
    assert records(out) == parsed(out)


def test_an_index_longer_than_its_journal_is_not_trusted(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    write_rows(out, [(i, answer(i)) for i in range(6)])
    journal = journal_path(out)
    with journal.open("r+b") as fh:
        fh.truncate(journal.stat().st_size // 2)
    assert read_index(journal) is None


def test_a_foreign_index_is_not_trusted(tmp_path: Path) -> None:
    """Another output's index copied beside this journal, or this one's journal copied
    elsewhere with its index: not the journal the index names."""
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    rows = [(i, answer(i)) for i in range(6)]
    write_rows(a, rows)
    write_rows(b, rows)
    shutil.copy(index_path(journal_path(a)), index_path(journal_path(b)))
    assert read_index(journal_path(b)) is None
    (tmp_path / "c").mkdir()
    c = tmp_path / "c" / "a.parquet"
    shutil.copy(journal_path(a), journal_path(c))
    shutil.copy(index_path(journal_path(a)), index_path(journal_path(c)))
    assert read_index(journal_path(c)) is None
    assert len(records(c)) == 6


def _at_first_row(data: bytes, at: int, new: bytes) -> bytes:
    """``data`` (an index) with ``new`` written ``at`` bytes into its first row record (the
    records of strings come before the first row that uses them)."""
    start = next(k for k in range(RECORD_BYTES, len(data), RECORD_BYTES) if data[k] == 1)
    return data[: start + at] + new + data[start + at + len(new) :]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"XXXXXXXX" + data[8:],  # not an index
        lambda data: data[:8] + b"\x09\x00" + data[10:],  # another version
        lambda data: data[:RECORD_BYTES] + b"\x07" + data[RECORD_BYTES + 1 :],  # a bad kind
        lambda data: _at_first_row(data, 20, b"\0\0\0\0"),  # a line's CRC-32
        lambda data: _at_first_row(data, 8, b"\x05"),  # a line's offset
    ],
    ids=["magic", "version", "kind", "crc", "offset"],
)
def test_a_damaged_index_is_not_trusted(tmp_path: Path, damage: Any) -> None:
    out = tmp_path / "o.parquet"
    write_rows(out, [(i, answer(i)) for i in range(6)])
    index = index_path(journal_path(out))
    data = index.read_bytes()
    index.write_bytes(damage(data))
    assert read_index(journal_path(out)) is None
    assert len(records(out)) == 6


def test_the_index_goes_with_the_journal(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    sink = write_rows(out, [(i, answer(i)) for i in range(3)])
    assert index_path(sink.journal).exists()
    sink.finalize(3)
    assert not sink.journal.exists() and not index_path(sink.journal).exists()
    write_rows(out, [(0, answer(0))])
    Sink(out).open(overwrite=True)
    assert not index_path(sink.journal).exists() or read_index(sink.journal) is not None


def test_notes_reach_the_index_only_after_the_journal_is_synced(tmp_path: Path) -> None:
    """What the index covers is on disk: its notes wait for the journal's fsync."""
    out = tmp_path / "o.parquet"
    now = [0.0]
    sink = Sink(out, clock=lambda: now[0])
    sink.open()
    index = index_path(sink.journal)
    header = index.stat().st_size
    now[0] = 10.0
    sink.submit(0, answer(0))  # synced: the journal's first fsync
    assert index.stat().st_size > header
    covered = index.stat().st_size
    sink.submit(1, answer(1))  # within the fsync interval: not yet
    assert index.stat().st_size == covered
    sink.sync()
    assert index.stat().st_size == covered + RECORD_BYTES
    asyncio.run(sink.close())


def test_a_writer_that_cannot_write_leaves_the_journal_to_be_parsed(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    journal = journal_path(out)
    journal.write_bytes(b"")
    writer = JournalIndexWriter.start(journal, None)
    assert writer is not None
    line = journal_line(0, answer(0, source="s" * 500), "run").encode()  # too long a string
    writer.add(0, line, 0, answer(0, source="s" * 500), "run")
    writer.flush()
    journal.write_bytes(line)
    found = read_index(journal)
    assert found is not None and len(found) == 0 and found.gaps == [(0, len(line))]
