"""formats.inputs, rows.reader and the input formats: input files -> rows, real files in tmp_path
for each format."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.core.errors import InputError, InvalidRowError
from batchrun.formats import jsonl
from batchrun.formats.inputs import InputRow, InputShape, count_rows, input_format, read_rows
from batchrun.rows import reader as spec
from batchrun.rows.raw import RawRow
from batchrun.rows.request import RequestDefaults, build_request
from batchrun.rows.shape import InputKind

# --- helpers -------------------------------------------------------------------------------------


def write_jsonl(path: Path, lines: list[str | bytes | dict[str, Any]]) -> Path:
    """Write lines as given: dicts as JSON, str as text, bytes untouched."""
    data = b""
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        data += (line.encode() if isinstance(line, str) else line) + b"\n"
    path.write_bytes(data)
    return path


def write_parquet(path: Path, table: pa.Table, **kwargs: Any) -> Path:
    pq.write_table(table, path, **kwargs)
    return path


def rows_of(path: Path, **kwargs: Any) -> list[InputRow]:
    return list(read_rows(path, **kwargs))


def only_problem(row: InputRow) -> InvalidRowError:
    assert row.problem is not None, row
    return row.problem


# --- input_format --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("a.json-lines", "jsonl"),
        ("A.JSONL", "jsonl"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
        ("data.v2.csv", "csv"),
        ("a.json", "json"),
        ("a.tsv", "csv"),
        ("a.jsonl.gz", "jsonl"),
        ("a.CSV.ZST", "csv"),
        ("a.json.bz2", "json"),
    ],
)
def test_input_format_by_extension(name: str, fmt: str) -> None:
    assert input_format(Path(name)) == fmt


def test_input_format_unknown_extension_names_the_file() -> None:
    with pytest.raises(InputError) as info:
        input_format(Path("data/rows.txt"))
    assert info.value.file == "data/rows.txt"
    assert "data/rows.txt" in str(info.value)
    assert ".jsonl" in str(info.value)


# --- JSONL: happy paths --------------------------------------------------------------------------


def test_jsonl_rows_ids_fields_and_lines(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "a", "prompt": "hello", "max_tokens": 5},
            {"id": 7, "prompt": "int id"},
            {"prompt": "no id", "note": None},
        ],
    )
    rows = rows_of(path)
    assert [(r.index, r.line, r.id) for r in rows] == [(0, 1, "a"), (1, 2, "7"), (2, 3, "row-2")]
    assert rows[0].fields == {"prompt": "hello", "max_tokens": 5}
    assert rows[2].fields == {"prompt": "no id"}  # None-valued fields are dropped
    assert all(r.problem is None for r in rows)


@pytest.mark.parametrize("value", [None, ""])
def test_jsonl_null_or_empty_id_defaults_to_row_index(tmp_path: Path, value: Any) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}, {"id": value, "prompt": "y"}])
    assert [r.id for r in rows_of(path)] == ["row-0", "row-1"]


def test_jsonl_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", ["", {"prompt": "a"}, "   ", "\t", {"prompt": "b"}])
    rows = rows_of(path)
    assert [(r.index, r.line, r.id) for r in rows] == [(0, 2, "row-0"), (1, 5, "row-1")]


def test_jsonl_crlf_and_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "prompt": "x"}\r\n{"id": "b", "prompt": "y"}\r\n')
    assert [(r.id, r.fields) for r in rows_of(path)] == [
        ("a", {"prompt": "x"}),
        ("b", {"prompt": "y"}),
    ]


def test_jsonl_keeps_nested_values_and_unicode(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "héllo ✓"}]}]
    path = write_jsonl(tmp_path / "in.jsonl", [{"messages": messages, "tags": ["a", "b"]}])
    assert rows_of(path)[0].fields == {"messages": messages, "tags": ["a", "b"]}


# --- JSONL: row problems -------------------------------------------------------------------------


def test_jsonl_malformed_line_is_a_row_problem_and_reading_goes_on(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "ok"}, '{"prompt": "x",', {"id": "z"}])
    rows = rows_of(path)
    assert len(rows) == 3
    bad = rows[1]
    assert (bad.index, bad.line, bad.id, bad.fields) == (1, 2, "row-1", {})
    problem = only_problem(bad)
    assert (problem.file, problem.row) == (str(path), 2)
    assert str(problem).startswith(f"{path}:2: malformed JSON: ")
    assert "Expecting" in str(problem)  # the JSON error itself
    assert rows[2].problem is None and rows[2].id == "z"


@pytest.mark.parametrize(
    ("line", "kind"), [("[1, 2]", "array"), ('"text"', "string"), ("3", "number")]
)
def test_jsonl_value_that_is_not_an_object(tmp_path: Path, line: str, kind: str) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [line])
    problem = only_problem(rows_of(path)[0])
    assert str(problem) == f"{path}:1: expected a JSON object, got {kind}"


def test_jsonl_non_utf8_line_is_a_row_problem_naming_its_line(tmp_path: Path) -> None:
    # Declared UTF-8: a bad line is its row's problem (undeclared, the file's start is
    # checked first: test_input_text).
    path = write_jsonl(
        tmp_path / "in.jsonl", [{"prompt": "a"}, b'{"prompt": "caf\xe9"}', {"prompt": "c"}]
    )
    rows = rows_of(path, shape=InputShape(encoding="utf-8"))
    problem = only_problem(rows[1])
    assert (problem.file, problem.row) == (str(path), 2)
    assert "not valid UTF-8" in str(problem) and "0xe9" in str(problem)
    assert rows[0].problem is None and rows[2].problem is None


def test_jsonl_nan_is_not_json(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", ['{"prompt": "x", "temperature": NaN}'])
    assert "NaN" in str(only_problem(rows_of(path)[0]))


@pytest.mark.parametrize(
    ("value", "kind"), [([1], "array"), (True, "boolean"), (1.5, "number"), ({}, "object")]
)
def test_jsonl_id_of_the_wrong_type(tmp_path: Path, value: Any, kind: str) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}, {"id": value, "prompt": "y"}])
    row = rows_of(path)[1]
    problem = only_problem(row)
    assert row.id == "row-1"
    assert row.fields == {"prompt": "y"}
    assert problem.field == "id"
    assert str(problem) == f"{path}:2: id: must be a string or an integer, not {kind}"


def test_jsonl_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": "r1", "prompt": "a"}, "", {"id": "r7", "prompt": "b"}, {"id": "r7", "prompt": "c"}],
    )
    rows = rows_of(path)
    assert rows[1].problem is None
    problem = only_problem(rows[2])
    assert rows[2].id == "r7"  # kept as written, so the error row shows which id clashed
    assert problem.field == "id"
    assert str(problem) == f"{path}:4: id: duplicate id 'r7': first seen on line 3"


def test_jsonl_int_and_string_ids_that_read_the_same_are_duplicates(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl", [{"id": 7, "prompt": "a"}, {"id": "7", "prompt": "b"}]
    )
    assert "duplicate id '7'" in str(only_problem(rows_of(path)[1]))


def test_jsonl_explicit_id_clashing_with_a_default_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": "row-1", "prompt": "a"}, {"prompt": "b"}])
    assert "duplicate id 'row-1': first seen on line 1" in str(only_problem(rows_of(path)[1]))


def test_every_duplicate_names_the_first_line_of_its_id(tmp_path: Path) -> None:
    # The first duplicate makes the reader read the rows before it again (ids are kept as
    # hashes until then); duplicates before and after that point name the right lines.
    ids = ["a", "b", "a", "c", "b", "d", "c", "a"]
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": "p"} for i in ids])
    rows = rows_of(path, skip=lambda index: index == 3, known_ids=["d"])
    got = [(r.line, str(r.problem).split(": id: ")[-1] if r.problem else None) for r in rows]
    assert got == [
        (1, None),
        (2, None),
        (3, "duplicate id 'a': first seen on line 1"),
        (5, "duplicate id 'b': first seen on line 2"),  # line 4 ("c") was skipped
        (6, "duplicate id 'd': also a row an earlier run answered"),
        (7, None),  # the skipped line 4 does not count
        (8, "duplicate id 'a': first seen on line 1"),
    ]


def test_a_duplicate_among_thousands_of_ids(tmp_path: Path) -> None:
    lines = [{"id": f"id-{i}", "prompt": "p"} for i in range(3000)] + [{"id": "id-1999"}]
    rows = rows_of(write_jsonl(tmp_path / "in.jsonl", list(lines)))
    assert [r.index for r in rows if r.problem] == [3000]
    assert "duplicate id 'id-1999': first seen on line 2000" in str(rows[3000].problem)


def test_ids_whose_hashes_collide_are_not_duplicates(tmp_path: Path) -> None:
    ids = ["x", "y", "z", "y", "x"]
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": "p"} for i in ids])

    def reread() -> Generator[RawRow, None, None]:
        return jsonl._jsonl_rows(path, InputKind("jsonl"), 1, lambda index: False)

    seen = spec._SeenIds(["k"], reread, hash_id=lambda row_id: 42)  # every id collides
    lines = [seen.first_line(row_id, i, i + 1) for i, row_id in enumerate(ids)]
    assert lines == [None, None, None, 2, 1]
    assert seen.first_line("k", 5, 6) == 0


def test_a_row_can_have_several_problems(tmp_path: Path) -> None:
    table = pa.table({"id": ["a", "a"], "max_tokens": ["5", "6"], "top_k": ["1", "2"]})
    path = write_parquet(tmp_path / "in.parquet", table)
    problem = only_problem(rows_of(path)[1])
    assert sorted(p.field or "" for p in problem.problems) == ["id", "max_tokens", "top_k"]


# --- file-level errors ---------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(InputError, match="no such file") as info:
        read_rows(path)  # raised at the call, before any iteration
    assert info.value.file == str(path)


def test_directory_is_not_an_input(tmp_path: Path) -> None:
    folder = tmp_path / "dir.jsonl"
    folder.mkdir()
    with pytest.raises(InputError, match="directory"):
        read_rows(folder)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "rows.txt"
    path.write_text('{"prompt": "x"}\n')
    with pytest.raises(InputError, match="unknown input format") as info:
        read_rows(path)
    assert info.value.file == str(path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    path.chmod(0)
    try:
        with pytest.raises(InputError, match="cannot read") as info:
            read_rows(path)
        assert info.value.file == str(path)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_jsonl_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match="no rows") as info:
        read_rows(path)
    assert info.value.file == str(path)


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    path.write_text("id,prompt\n1,hello\n")
    with pytest.raises(InputError, match="not a readable Parquet file") as info:
        read_rows(path)
    assert info.value.file == str(path)


def test_empty_parquet_file(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.string()), ("prompt", pa.string())])
    path = write_parquet(tmp_path / "in.parquet", schema.empty_table())
    with pytest.raises(InputError, match="no rows"):
        read_rows(path)


def test_csv_without_header(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("")
    with pytest.raises(InputError, match="no header") as info:
        read_rows(path)
    assert info.value.file == str(path)


def test_csv_with_only_a_header(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,prompt\n\n")
    with pytest.raises(InputError, match="no rows"):
        read_rows(path)


@pytest.mark.parametrize(
    ("header", "message"),
    [("id,prompt,id", "duplicate column names 'id'"), ("id,,prompt", "column 2 has no name")],
)
def test_csv_bad_header(tmp_path: Path, header: str, message: str) -> None:
    path = tmp_path / "in.csv"
    path.write_text(f"{header}\n1,2,3\n")
    with pytest.raises(InputError, match=message):
        read_rows(path)


def test_batch_size_must_be_positive(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    with pytest.raises(ValueError, match="batch_size"):
        read_rows(path, batch_size=0)


# --- laziness ------------------------------------------------------------------------------------


def _open_position(path: Path) -> int:
    """The offset of this process's open descriptor on ``path``, from /proc (Linux)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == str(path):
            fdinfo = Path(f"/proc/self/fdinfo/{fd}").read_text()
            return int(fdinfo.split("pos:")[1].split()[0])
    raise AssertionError(f"{path} is not open")


@pytest.mark.skipif(not Path("/proc/self/fdinfo").is_dir(), reason="needs Linux /proc")
def test_jsonl_is_read_lazily(tmp_path: Path) -> None:
    path = (tmp_path / "big.jsonl").resolve()
    line = json.dumps({"prompt": "x" * 200}) + "\n"
    with path.open("w") as out:
        for number in range(100_000):
            out.write(f'{{"id": "r{number}", ' + line[1:])
    size = path.stat().st_size
    assert size > 20_000_000

    rows = read_rows(path)
    first = next(rows)
    second = next(rows)
    assert (first.id, second.id) == ("r0", "r1")
    # Only a buffer's worth has been read, not the file.
    assert _open_position(path) < 1_000_000
    rows.close()  # type: ignore[attr-defined]  # a generator: closing it closes the file
    with pytest.raises(AssertionError, match="not open"):
        _open_position(path)


def test_count_rows(tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}, "", {"prompt": "b"}, "not json"])
    parquet = write_parquet(tmp_path / "in.parquet", pa.table({"prompt": ["a", "b", "c"]}))
    csv_file = tmp_path / "in.csv"
    csv_file.write_text("prompt\na\n")
    assert count_rows(jsonl) == 3
    assert count_rows(parquet) == 3
    assert count_rows(csv_file) is None
    assert count_rows(tmp_path / "missing.jsonl") is None
    assert count_rows(tmp_path / "rows.txt") is None


# --- Parquet -------------------------------------------------------------------------------------


def test_parquet_rows(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": ["d1", None, "d3"],
            "title": ["One", "Two", None],
            "max_tokens": pa.array([10, None, 30], pa.int32()),
            "temperature": [0.5, None, 1.0],
            "word_count": [100, 200, 300],
        }
    )
    rows = rows_of(write_parquet(tmp_path / "in.parquet", table))
    assert [(r.index, r.line, r.id) for r in rows] == [(0, 1, "d1"), (1, 2, "row-1"), (2, 3, "d3")]
    assert rows[0].fields == {
        "title": "One",
        "max_tokens": 10,
        "temperature": 0.5,
        "word_count": 100,
    }
    assert rows[1].fields == {"title": "Two", "word_count": 200}
    assert rows[2].fields == {"max_tokens": 30, "temperature": 1.0, "word_count": 300}
    assert all(r.problem is None for r in rows)


def test_parquet_integer_ids(tmp_path: Path) -> None:
    rows = rows_of(write_parquet(tmp_path / "in.parquet", pa.table({"id": [3, 1, 2]})))
    assert [r.id for r in rows] == ["3", "1", "2"]


def test_parquet_float_id_is_a_row_problem(tmp_path: Path) -> None:
    rows = rows_of(write_parquet(tmp_path / "in.parquet", pa.table({"id": [1.0, None]})))
    problem = only_problem(rows[0])
    assert (
        str(problem)
        == f"{tmp_path / 'in.parquet'}:1: id: must be a string or an integer, not number"
    )
    assert rows[1].problem is None and rows[1].id == "row-1"


@pytest.mark.parametrize(
    ("column", "values", "expected"),
    [
        ("max_tokens", ["5", None, "7"], "expected an integer, but the column has type string"),
        ("top_k", [1.5, None, 2.0], "expected an integer, but the column has type double"),
        ("temperature", ["0.5", None, "1"], "expected a number, but the column has type string"),
        ("model", [1, None, 2], "expected a string, but the column has type int64"),
        ("messages", [1, None, 2], "expected a list of messages or its JSON text"),
        ("metadata", [[1], None, [2]], "expected a struct or its JSON text"),
    ],
)
def test_parquet_mistyped_known_column_is_a_problem_on_each_set_row(
    tmp_path: Path, column: str, values: list[Any], expected: str
) -> None:
    path = write_parquet(
        tmp_path / "in.parquet", pa.table({"prompt": ["a", "b", "c"], column: values})
    )
    rows = rows_of(path)
    for row in (rows[0], rows[2]):
        problem = only_problem(row)
        assert problem.field == column
        assert str(problem).startswith(f"{path}:{row.line}: {column}: {expected}")
    assert rows[1].problem is None  # null means "not set": nothing wrong with it


def test_parquet_accepts_dictionary_encoded_and_json_text_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "model": pa.array(["m", "m"]).dictionary_encode(),
            "messages": ['[{"role": "user", "content": "hi"}]', None],
            "prompt": [None, "x"],
            "metadata": ['{"user_id": "u"}', None],
        }
    )
    rows = rows_of(write_parquet(tmp_path / "in.parquet", table))
    assert [r.problem for r in rows] == [None, None]
    assert rows[0].fields["model"] == "m"
    assert rows[0].fields["messages"] == '[{"role": "user", "content": "hi"}]'


def test_parquet_nested_structs_lose_their_null_keys(tmp_path: Path) -> None:
    messages = [
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}},
                ],
            },
        ]
    ]
    path = write_parquet(tmp_path / "in.parquet", pa.table({"messages": messages}))
    row = rows_of(path)[0]
    assert row.problem is None
    # Arrow gives the text block a "source": None (and the image a "text": None); both are gone.
    assert row.fields["messages"] == messages[0]
    body = build_request(row.fields, RequestDefaults(model="m", max_tokens=5))
    assert body["messages"] == messages[0]


def test_parquet_reads_in_batches_across_row_groups(tmp_path: Path) -> None:
    count = 95
    table = pa.table({"id": [f"r{i}" for i in range(count)], "n": list(range(count))})
    path = write_parquet(tmp_path / "in.parquet", table, row_group_size=20)
    assert pq.ParquetFile(path).num_row_groups == 5
    rows = rows_of(path, batch_size=7)
    assert [r.index for r in rows] == list(range(count))
    assert [r.line for r in rows] == list(range(1, count + 1))
    assert [r.fields["n"] for r in rows] == list(range(count))
    assert rows_of(path, batch_size=1000) == rows


def test_parquet_duplicate_ids_across_batches(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "in.parquet", pa.table({"id": ["a", "b", "c", "a"]}))
    problem = only_problem(rows_of(path, batch_size=2)[3])
    assert str(problem) == f"{path}:4: id: duplicate id 'a': first seen on row 1"


# --- CSV -----------------------------------------------------------------------------------------


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_csv_rows_are_strings_with_numeric_params_converted(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "in.csv",
        "id,title,max_tokens,top_k,temperature,top_p,year\n"
        "a,First,100,5,0.5,1,2024\n"
        ",Second,,,,,\n",
    )
    rows = rows_of(path)
    assert [(r.index, r.line, r.id) for r in rows] == [(0, 2, "a"), (1, 3, "row-1")]
    assert rows[0].fields == {
        "title": "First",
        "max_tokens": 100,
        "top_k": 5,
        "temperature": 0.5,
        "top_p": 1.0,
        "year": "2024",  # not a parameter: stays a string
    }
    assert rows[1].fields == {"title": "Second"}  # empty cells are absent


def test_csv_quoted_cells_blank_lines_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(
        b'\xef\xbb\xbfid,prompt\r\na,"line one\r\nline two, with comma"\r\n\r\nb,"say ""hi"""\r\n'
    )
    rows = rows_of(path)
    assert [(r.id, r.line, r.fields["prompt"]) for r in rows] == [  # the line each starts on
        ("a", 2, "line one\r\nline two, with comma"),
        ("b", 5, 'say "hi"'),
    ]


def test_csv_json_cells_are_left_for_build_request_to_decode(tmp_path: Path) -> None:
    messages = json.dumps([{"role": "user", "content": "hi"}])
    stops = json.dumps(["END"])
    path = tmp_path / "in.csv"
    with path.open("w", newline="") as out:
        csv.writer(out).writerows([["messages", "stop_sequences"], [messages, stops]])
    row = rows_of(path)[0]
    assert row.fields == {"messages": messages, "stop_sequences": stops}
    body = build_request(row.fields, RequestDefaults(model="m", max_tokens=5))
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["stop_sequences"] == ["END"]


@pytest.mark.parametrize(
    ("column", "cell", "expected"),
    [
        ("max_tokens", "ten", "expected an integer, got 'ten'"),
        ("max_tokens", "5.0", "expected an integer, got '5.0'"),
        ("top_k", "x", "expected an integer, got 'x'"),
        ("temperature", "warm", "expected a number, got 'warm'"),
        ("top_p", "nan", "expected a finite number, got 'nan'"),
    ],
)
def test_csv_bad_numeric_cell_names_row_and_field(
    tmp_path: Path, column: str, cell: str, expected: str
) -> None:
    path = write_csv(tmp_path / "in.csv", f"id,{column}\nok,1\nbad,{cell}\n")
    rows = rows_of(path)
    assert rows[0].problem is None
    problem = only_problem(rows[1])
    assert rows[1].id == "bad"
    assert (problem.file, problem.row, problem.field) == (str(path), 3, column)
    assert str(problem) == f"{path}:3: {column}: {expected}"


def test_csv_row_with_too_many_cells(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "id,prompt\na,x\nb,y,extra\nc\n")
    rows = rows_of(path)
    assert "the row has 3 cells but the header has 2 columns" in str(only_problem(rows[1]))
    assert rows[2].problem is None and rows[2].fields == {}  # short rows: missing cells are absent


def test_csv_non_utf8_cell_is_a_row_problem(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,prompt\na,caf\xe9\nb,fine\n")
    rows = rows_of(path, shape=InputShape(encoding="utf-8"))  # declared: bad cells are rows'
    problem = only_problem(rows[0])
    assert str(problem) == f"{path}:2: prompt: not valid UTF-8"
    assert rows[1].problem is None and rows[1].fields == {"prompt": "fine"}


def test_csv_duplicate_ids(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "id,prompt\nx,a\ny,b\nx,c\n")
    assert (
        str(only_problem(rows_of(path)[2]))
        == f"{path}:4: id: duplicate id 'x': first seen on line 2"
    )


def test_a_csv_cell_past_the_csv_modules_default_limit_is_read(tmp_path: Path) -> None:
    # 200,000 characters: over the csv module's 131,072 default, far under a request's limit.
    path = write_csv(tmp_path / "in.csv", "id,prompt\na,x\nb," + "x" * 200_000 + "\nc,y\n")
    rows = rows_of(path)
    assert [(r.id, len(r.fields["prompt"]), r.problem) for r in rows] == [
        ("a", 1, None),
        ("b", 200_000, None),
        ("c", 1, None),
    ]


# --- what JSON can say but no request can carry ---------------------------------------------------


def test_jsonl_lone_surrogate_is_a_problem_naming_the_field_and_keeping_the_id(
    tmp_path: Path,
) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [
            '{"id": "b", "prompt": "x \\ud83d"}',
            '{"id": "c", "messages": [{"role": "user", "content": "\\udc80"}]}',
            '{"id": "d", "prompt": "a real emoji \\ud83d\\ude00"}',
        ],
    )
    rows = rows_of(path)
    first, second = only_problem(rows[0]), only_problem(rows[1])
    assert (rows[0].id, first.field, first.row) == ("b", "prompt", 1)
    assert "lone surrogate \\ud83d" in first.message and "UTF-8" in first.message
    assert (rows[1].id, second.field) == ("c", "messages")
    assert second.message.startswith("[0].content: ")
    assert rows[2].problem is None and rows[2].fields["prompt"].endswith("\U0001f600")
    str(first).encode("utf-8")


def test_jsonl_lone_surrogate_in_an_id_or_a_key(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl",
        ['{"id": "x\\ud83d", "prompt": "y"}', '{"\\ud83d": 1, "prompt": "y"}'],
    )
    rows = rows_of(path)
    problem = only_problem(rows[0])
    assert rows[0].id == "row-0" and problem.field == "id"
    key_problem = only_problem(rows[1])
    assert key_problem.field == "\\ud83d" and "name" in key_problem.message
    for row in rows:
        str(row.problem).encode("utf-8")


@pytest.mark.parametrize("depth", [129, 900, 200_000])
def test_jsonl_nested_too_deep_is_a_problem(tmp_path: Path, depth: int) -> None:
    line = '{"prompt": "x", "extra": ' + "[" * depth + "]" * depth + "}"
    path = write_jsonl(tmp_path / "in.jsonl", [line, {"id": "next", "prompt": "y"}])
    rows = rows_of(path)
    problem = only_problem(rows[0])
    assert "nested deeper than 128 levels" in str(problem) and problem.row == 1
    assert rows[1].problem is None and rows[1].id == "next"


def test_jsonl_nesting_up_to_the_limit_is_fine(tmp_path: Path) -> None:
    line = '{"prompt": "x", "extra": ' + "[" * 127 + "]" * 127 + "}"
    assert rows_of(write_jsonl(tmp_path / "in.jsonl", [line]))[0].problem is None


@pytest.mark.parametrize("number", ["1e400", "-1e400"])
def test_jsonl_number_beyond_a_float_is_a_problem(tmp_path: Path, number: str) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", ['{"prompt": "x", "t": ' + number + "}"])
    assert "out of range" in str(only_problem(rows_of(path)[0]))


def test_a_row_that_fails_unforeseen_is_its_problem_and_reading_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = jsonl._jsonl_row

    def flaky(line: int, data: bytes, *rest: Any) -> RawRow:
        if b"boom" in data:
            raise RuntimeError("boom")
        return real(line, data, *rest)

    monkeypatch.setattr(jsonl, "_jsonl_row", flaky)
    path = write_jsonl(
        tmp_path / "in.jsonl", [{"prompt": "a"}, {"prompt": "boom"}, {"prompt": "c"}]
    )
    rows = rows_of(path)
    assert [row.problem is None for row in rows] == [True, False, True]
    assert "RuntimeError: boom" in str(rows[1].problem) and rows[1].line == 2


def test_csv_json_cell_nested_too_deep_is_a_request_problem(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["prompt", "tools"], ["hi", "[" * 50_000 + "]" * 50_000]])
    [row] = rows_of(path)
    with pytest.raises(InvalidRowError) as info:
        build_request(row.fields, RequestDefaults(model="m", max_tokens=5))
    assert [p.field for p in info.value.problems] == ["tools"]
    assert "nested deeper" in str(info.value)


def test_rows_skipped_one_after_another_keep_every_index_line_and_duplicate(
    tmp_path: Path,
) -> None:
    """A JSON-lines reader gives a run of skipped rows as one (a resume skips millions at
    once): blank lines and a line past the cap inside the run, and a duplicate after it that
    makes the reader read the file again, still land on the right indexes and lines."""
    long = json.dumps({"id": "long", "prompt": "x" * 300})
    lines: list[str | bytes | dict[str, Any]] = [{"id": "a", "prompt": "p"}]
    lines += [{"id": f"s{i}", "prompt": "p"} for i in range(5)]  # skipped: rows 1-5
    lines += ["", long, "  "]  # a blank line, a long line (row 6, skipped), another blank
    lines += [{"id": "b", "prompt": "p"}, {"id": "s2", "prompt": "p"}, {"id": "a"}]
    path = write_jsonl(tmp_path / "in.jsonl", lines)
    asked: list[int] = []

    def skip(index: int) -> bool:
        asked.append(index)
        return 1 <= index <= 6

    rows = list(read_rows(path, skip=skip, known_ids=["s2"], max_row_bytes=200))
    got = [
        (r.index, r.line, r.id, str(r.problem).split(": id: ")[-1] if r.problem else None)
        for r in rows
    ]
    assert got == [
        (0, 1, "a", None),
        (7, 10, "b", None),
        (8, 11, "s2", "duplicate id 's2': also a row an earlier run answered"),
        (9, 12, "a", "duplicate id 'a': first seen on line 1"),
    ]
    assert sorted(set(asked)) == list(range(10))  # every row was asked about
