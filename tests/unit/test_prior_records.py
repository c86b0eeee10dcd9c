"""What a resume takes from a big journal, made fast without changing what it says: each
row's newest record held as columns (``store.sink.JournalRecords``), the rows a run skips
told by a translated byte string (``store.row_state.done_flags``), and journal slices parsed
in parallel (``store.journal``), giving exactly what one parser gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchrun.store import journal as journal_module
from batchrun.store.columns import blank_row
from batchrun.store.journal import INDEX, RUN, Damage, read_records
from batchrun.store.provenance import UNRECORDED
from batchrun.store.row_state import RowState, done_flags, to_send
from batchrun.store.sink import PriorRecord, Sink, journal_path, output_schema


def line(index: int, row_id: str, **fields: Any) -> str:
    row = {**blank_row(row_id), "status": "ok", "request_hash": f"h{row_id}", **fields}
    return json.dumps({INDEX: index, RUN: "r1", **row}) + "\n"


def test_the_journal_records_answer_as_a_dict_of_the_newest_records_would(
    tmp_path: Path,
) -> None:
    out = tmp_path / "o.parquet"
    journal_path(out).write_text(
        line(5, "f", status="error", error_type="overloaded_error")
        + line(2, "c")
        + line(5, "f", source="https://api.example")  # the newer record of row 5 wins
        + line(9, "j", status=None)
        + line(0, "a", status="error", error_type="expired")
    )
    records = Sink(out).open().journal
    expected = {
        0: PriorRecord("a", "error", "ha", "expired", UNRECORDED),
        2: PriorRecord("c", "ok", "hc", None, UNRECORDED),
        5: PriorRecord("f", "ok", "hf", None, "https://api.example"),
        9: PriorRecord("j", None, "hj", None, UNRECORDED),  # type: ignore[arg-type]
    }
    assert dict(records) == expected and len(records) == 4
    assert list(records) == [0, 2, 5, 9] and list(reversed(records)) == [9, 5, 2, 0]
    assert (records.first(), records.last()) == (0, 9)
    assert 5 in records and 3 not in records and "5" not in records
    assert records.get(3) is None and records.from_index(3) == [5, 9]
    assert [r[:3] for r in records.rows()] == [
        (0, "a", "error"),
        (2, "c", "ok"),
        (5, "f", "ok"),
        (9, "j", None),
    ]
    assert records.pop(9) == expected[9] and records.pop(9) is None and records.pop(4) is None
    assert list(records) == [0, 2, 5] and records.last() == 5 and len(records) == 3
    assert 9 not in records and records.from_index(3) == [5]
    assert [r[0] for r in records.rows()] == [0, 2, 5]
    with pytest.raises(KeyError):
        records[9]


def test_an_output_with_no_journal_has_no_records(tmp_path: Path) -> None:
    records = Sink(tmp_path / "o.parquet").open().journal
    assert not records and list(records) == [] and (records.first(), records.last()) == (-1, -1)


@pytest.mark.parametrize("retry_errors", [False, True])
@pytest.mark.parametrize("redo_lapsed", [False, True])
def test_done_flags_skip_exactly_the_rows_to_send_would_not(
    retry_errors: bool, redo_lapsed: bool
) -> None:
    states = bytearray([RowState.NOTHING, RowState.OK, RowState.ERROR, RowState.LAPSED] * 3)
    flags = done_flags(states, retry_errors=retry_errors, redo_lapsed=redo_lapsed)
    assert list(flags) == [
        0 if to_send(s, retry_errors=retry_errors, redo_lapsed=redo_lapsed) else 1 for s in states
    ]


def test_slices_parsed_at_once_give_what_one_parser_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many small slices, damaged lines among them: the same records, in journal order, and
    the same count of damage, whether one slice is parsed at a time or four."""
    path = tmp_path / "j"
    lines = []
    for i in range(300):
        lines.append(line(i % 120, f"r{i}", input_tokens=i))
        if i % 37 == 0:
            lines.append('{"_index": 3, "id": "torn", "status": "o\n')
        if i % 53 == 0:
            lines.append(line(i, f"bad{i}", input_tokens="many"))  # a wrong type
    path.write_text("".join(lines))
    schema = output_schema()

    def read(parsers: int) -> tuple[list[tuple[int, str, int]], int]:
        monkeypatch.setattr(journal_module, "_PARSERS", parsers)
        damage = Damage()
        got = [
            (r[INDEX], r["id"], r["input_tokens"])
            for batch in read_records(path, schema, 700, damage=damage)
            for r in batch.to_pylist()
        ]
        return got, damage.lines

    one, many = read(1), read(4)
    assert one == many
    assert len(one[0]) == 300 and one[1] == 9 + 6
    assert [r[1] for r in one[0]] == [f"r{i}" for i in range(300)]
