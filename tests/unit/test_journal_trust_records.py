"""Journal records are verified, not trusted: a record of the wrong shape is a damaged line, a
damaged newest record leaves the older one, and damage is counted (whole runs that refuse or
resend: tests/integration/test_journal_trust.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from batchrun.store.columns import blank_row
from batchrun.store.journal import INDEX, Damage, Newest, read_records
from batchrun.store.latest import Source, latest_batches
from batchrun.store.sink import Sink, journal_path, output_schema

SCHEMA = pa.schema([output_schema().field(n) for n in ("id", "status", "input_tokens")])


def record(index: Any, row_id: str | None = "a", **fields: Any) -> str:
    row = {**blank_row(""), "id": row_id, "status": "ok", **fields}
    return json.dumps({INDEX: index, **row}) + "\n"


# -- item 5: damaged records -----------------------------------------------------------------


@pytest.mark.parametrize("slice_bytes", [120, 2 << 20])
def test_a_record_of_the_wrong_shape_is_a_damaged_line(tmp_path: Path, slice_bytes: int) -> None:
    path = tmp_path / "j"
    lines = [
        record(0, "a"),
        record(1, "b", input_tokens="12"),  # valid JSON, wrong type
        record(2, "c", status=5),
        record(3, "d", status="maybe"),
        record(-1, "e"),
        record(10**11, "f"),
        record(None, "g"),
        record("4", "h"),
        record(True, "i"),
        record(5, "j", attempts=1.5),
        record(6, None),
        "\n",  # blank: not a record, not damage
        record(7, "k", input_tokens=12),
    ]
    path.write_text("".join(lines))
    damage = Damage()
    got = [r for b in read_records(path, SCHEMA, slice_bytes, damage=damage) for r in b.to_pylist()]
    assert [(r[INDEX], r["id"]) for r in got] == [(0, "a"), (7, "k")]
    assert damage.lines == 10
    newest = Newest.read(path, slice_bytes)
    assert list(newest.indexes) == [0, 7] and newest.damaged == 10
    again = [r["id"] for b in newest.records(SCHEMA, slice_bytes) for r in b.to_pylist()]
    assert again == ["a", "k"]  # both passes agree on which lines are records


def test_a_damaged_newest_record_leaves_the_older_one(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_text(record(0, "a", status="error") + record(0, "a", input_tokens="9"))
    got = [r for b in Newest.read(path).records(SCHEMA) for r in b.to_pylist()]
    assert [(r["id"], r["status"]) for r in got] == [("a", "error")]


def test_a_wrong_type_in_an_unchecked_column_reads_as_null_not_damage(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_text(record(0, "a", text=5, model=["x"]) + record(1, "b", input_tokens="1"))
    schema = output_schema(["product"])
    damage = Damage()
    got = [r for b in read_records(path, schema, damage=damage) for r in b.to_pylist()]
    assert [(r["id"], r["text"], r["model"]) for r in got] == [("a", None, None)]
    assert damage.lines == 1
    assert list(Newest.read(path).indexes) == [0]  # the same lines are records for every read


def test_the_output_counts_damaged_lines_when_it_opens(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    journal_path(out).write_text(record(0, "a") + record(1, "b", status=5) + '{"_index": 2}\n')
    prior = Sink(out).open()
    assert set(prior.journal) == {0} and prior.damaged == 2
    prior.drop([0, 7])
    assert not prior.journal and prior.damaged == 3


def test_an_output_read_as_resumed_says_how_many_lines_were_damaged(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    journal_path(out).write_text(record(0, "a") + record(1, "b", cost_usd="free") + "junk\n")
    found: list[Source] = []
    got = [r["id"] for b in latest_batches(out, ("id",), found=found) for r in b.to_pylist()]
    assert got == ["a"] and found == [Source(out, 1, final=False, journal=True, damaged=2)]
