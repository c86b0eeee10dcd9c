"""The format registry (``batchrun.formats``): every format it finds reads, writes and resumes
through the same questions, and what it does not know is refused naming what it knows.

A format added to ``batchrun/formats/`` is taken up by these tests by itself: each output
format is written, read back, counted, marked partial and resumed by the sink; an input format
needs a sample here (``SAMPLES``), which the first test asks for by name.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrun.formats
from batchrun.config.load import load_config
from batchrun.core.errors import ConfigError, InputError
from batchrun.formats.base import ColumnQuery, InputFormat, OutputFormat
from batchrun.formats.inputs import (
    InputShape,
    count_rows,
    format_of,
    input_format,
    input_kind,
    read_rows,
)
from batchrun.formats.marks import Partial, partial_metadata
from batchrun.formats.registry import (
    _unclashed,
    file_suffixes,
    input_formats,
    input_names,
    input_suffixes,
    output_for,
    output_formats,
    read_partial,
    sniff_format,
)
from batchrun.store.columns import blank_row
from batchrun.store.sink import Sink, output_batches, output_schema, row_count

ROWS = [{"id": f"r{i}", "prompt": f"say {i}", "topic": f"t{i}"} for i in range(5)]


def _delimited(delimiter: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(ROWS[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(ROWS)
        path.write_text(out.getvalue(), encoding="utf-8")

    return write


# A file of ROWS for each name --format takes, written as that format's files are.
SAMPLES: dict[str, Callable[[Path], None]] = {
    "jsonl": lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in ROWS), "utf-8"),
    "json": lambda p: p.write_text(json.dumps(ROWS, indent=1), encoding="utf-8"),
    "csv": _delimited(","),
    "tsv": _delimited("\t"),
    "parquet": lambda p: pq.write_table(pa.Table.from_pylist(ROWS), p),
}


def _input_cases() -> list[tuple[InputFormat, str]]:
    return [(fmt, name) for fmt in input_formats() for name in fmt.names]


def test_every_input_name_has_a_sample() -> None:
    assert sorted(input_names()) == sorted(SAMPLES), "a new input format needs a sample here"


@pytest.mark.parametrize(("fmt", "name"), _input_cases(), ids=lambda v: getattr(v, "name", v))
def test_every_input_format_reads_its_rows_by_name_and_by_its_first_bytes(
    tmp_path: Path, fmt: InputFormat, name: str
) -> None:
    path = tmp_path / f"rows{fmt.suffix_for(name)}"
    SAMPLES[name](path)
    assert input_format(path) == fmt.name
    rows = [(row.id, row.fields) for row in read_rows(path)]
    assert rows == [(r["id"], {"prompt": r["prompt"], "topic": r["topic"]}) for r in ROWS]
    assert count_rows(path) in (None, len(ROWS))  # only where it is cheap
    with path.open("rb") as stream:
        assert sniff_format(stream.read(1 << 16)) == name  # standard input is told so
    kind = input_kind(path)
    assert format_of(kind) is fmt
    exact = fmt.columns(ColumnQuery(path, kind, ["topic", "nope"]))
    assert exact is not None and exact.found == {"topic"}
    assert {"id", "prompt", "topic"} <= set(exact.known)
    quick = fmt.columns(ColumnQuery(path, kind, ["topic", "nope"], quick=True))
    assert quick is None or "topic" in quick.found  # a quick look never misses a column
    # Read as this format whatever the name says, too.
    renamed = path.rename(tmp_path / "rows.data")
    assert [r.id for r in read_rows(renamed, shape=InputShape(name))] == [r["id"] for r in ROWS]


def test_an_input_name_no_format_claims_is_refused_naming_every_suffix() -> None:
    with pytest.raises(InputError) as info:
        input_format(Path("data/rows.txt"))
    message = str(info.value)
    assert all(suffix in message for suffix in input_suffixes()), message
    with pytest.raises(InputError) as info:
        input_format(Path("rows.jsonl"), InputShape("yaml"))
    assert ", ".join(input_names()) in str(info.value)


def test_an_output_name_no_format_claims_is_refused_naming_every_suffix(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"prompt": "hi"}\n', encoding="utf-8")
    for name in ("out.txt", "out.tsv", "out.pq"):
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path / "in.jsonl", {"output": str(tmp_path / name)}, environ={})
        message = str(info.value)
        assert "must end in" in message
        assert all(suffix in message for suffix in file_suffixes()), message
        assert "output_format='parquet-dataset'" in message  # the folder format, by its name


# -- outputs ----------------------------------------------------------------------------------


def _rows(n: int, text: str = "answer") -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        row = blank_row(f"r{i}")
        row.update(status="ok", text=f"{text} {i} ✓", input_tokens=i, cost_usd=i / 1000)
        rows.append(row)
    return rows


def _output_path(tmp_path: Path, fmt: OutputFormat) -> Path:
    return tmp_path / (f"out{fmt.suffixes[0]}" if fmt.suffixes else "out")


@pytest.mark.parametrize("fmt", output_formats(), ids=lambda f: f.name)
def test_every_output_format_writes_and_reads_its_rows_back(
    tmp_path: Path, fmt: OutputFormat
) -> None:
    path = _output_path(tmp_path, fmt)
    schema = output_schema(["topic"])
    table = pa.Table.from_pylist([{**r, "topic": "t"} for r in _rows(7)], schema=schema)
    with fmt.writer(path, schema) as write:
        write(table.slice(0, 4))
        write(table.slice(4))
    assert output_for(path) is fmt
    assert fmt.exists(path) and fmt.size(path) > 0 and fmt.modified_ns(path) is not None
    assert row_count(path) == 7
    back = pa.Table.from_batches(list(output_batches(path, schema, batch_rows=3)), schema)
    assert back.equals(table)
    some = list(output_batches(path, schema, columns=["text", "id"]))
    assert pa.Table.from_batches(some).column("id").to_pylist() == [f"r{i}" for i in range(7)]
    assert read_partial(path) is None
    fmt.remove(path)
    assert not path.exists()


@pytest.mark.parametrize("fmt", output_formats(), ids=lambda f: f.name)
def test_every_output_format_resumes_and_marks_a_stopped_run_partial(
    tmp_path: Path, fmt: OutputFormat
) -> None:
    """The sink's whole life on each format: a stopped run's partial output, marked where
    the format keeps its mark; the finishing run; a later run reading the file back."""
    path = _output_path(tmp_path, fmt)
    rows = _rows(6)
    first = Sink(path, output_format=fmt)
    assert first.open().final_rows == 0
    for i in (0, 1, 3):
        first.submit(i, rows[i])
    counts = first.write_finished(6)
    assert counts is not None and counts.partial == Partial(3, 6)
    assert read_partial(path) == Partial(3, 6)
    assert row_count(path, fmt) == 3

    second = Sink(path, output_format=fmt)
    prior = second.open()
    assert prior.final_rows == 0 and sorted(prior.journal) == [0, 1, 3]  # from the journal
    for i in (2, 4, 5):
        second.submit(i, rows[i])
    assert second.finalize(6).rows == 6
    assert read_partial(path) is None

    third = Sink(path, output_format=fmt)
    prior = third.open()
    assert prior.final_rows == 6 and not prior.journal  # read back from the final file
    assert [prior.lookup(i).id for i in range(6)] == [f"r{i}" for i in range(6)]  # type: ignore[union-attr]
    third.submit(6, _rows(7, "more")[6])
    assert third.finalize(7).rows == 7
    batches = output_batches(path, output_schema(), ["text"])
    texts = [text for batch in batches for text in batch.column(0).to_pylist()]
    assert texts == [f"answer {i} ✓" for i in range(6)] + ["more 6 ✓"]


@pytest.mark.parametrize("fmt", output_formats(), ids=lambda f: f.name)
def test_a_partial_mark_lives_where_the_format_keeps_it(tmp_path: Path, fmt: OutputFormat) -> None:
    path = _output_path(tmp_path, fmt)
    schema = output_schema().with_metadata(partial_metadata(Partial(2, 9)))
    with fmt.writer(path, schema) as write:
        write(pa.Table.from_pylist(_rows(2), schema=schema))
    # A format that keeps the mark in the file has it now; the others are marked beside the
    # file when it is put in place (the sink's final step), so this one is not.
    assert fmt.read_mark(path) == (Partial(2, 9) if fmt.marks_itself else None)


# -- the registry -----------------------------------------------------------------------------


def test_the_registry_finds_every_format_its_package_modules_list() -> None:
    listed: list[object] = []
    for found in pkgutil.iter_modules(batchrun.formats.__path__):
        module = importlib.import_module(f"batchrun.formats.{found.name}")
        listed += getattr(module, "FORMATS", ())
    assert sorted(map(id, listed)) == sorted(map(id, (*input_formats(), *output_formats())))
    assert input_formats() and output_formats()


def test_two_formats_claiming_one_name_are_refused_naming_both() -> None:
    with pytest.raises(RuntimeError, match=r"formats of a\.one and b\.two both claim '\.x'"):
        _unclashed([(".x", "a.one"), (".y", "a.one"), (".x", "b.two")])


def test_the_settings_offer_what_the_registry_knows() -> None:
    from batchrun.config.settings import BY_KEY

    assert BY_KEY["input_format"].choices == input_names()
    folders = tuple(fmt.name for fmt in output_formats() if fmt.folder)
    assert BY_KEY["output_format"].choices == folders
    assert all(suffix in BY_KEY["output"].help for suffix in file_suffixes())
