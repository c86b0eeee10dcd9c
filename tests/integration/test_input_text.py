"""Inputs in other text encodings than UTF-8 (issue 23, item 13): UTF-16 and byte-order marks
read transparently, ``--encoding`` for the rest, and a file that does not start as UTF-8
refused once, before anything is sent, with the flag to pass."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, reply_tag

from batchrun.cli import cli
from batchrun.core.errors import ConfigError, InputError
from batchrun.formats.inputs import InputShape, count_rows, read_rows
from batchrun.formats.registry import sniff_format
from batchrun.rows.text import SNIFF_BYTES, UndecodableInputError
from batchrun.simulator import SimulatorThread

ROWS = [
    {"id": "r0", "text": "Crème brûlée, s'il vous plaît", "topic": "dessert"},
    {"id": "r1", "text": "“Smart quotes” cost 5 €", "topic": "prices"},
    {"id": "r2", "text": "naïve café, two\tcells? no: one", "topic": "café"},
]
MODEL = ["--model", "claude-haiku-4-5", "--max-tokens", "20"]


def _text(shape: str, rows: list[dict[str, Any]] = ROWS) -> str:
    """The rows as ``shape`` (jsonl, json, csv, tsv) text."""
    if shape == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if shape == "json":
        return json.dumps(rows, ensure_ascii=False, indent=1)
    out = io.StringIO()
    writer = csv.DictWriter(out, list(rows[0]), delimiter="\t" if shape == "tsv" else ",")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _compressed(data: bytes, codec: str) -> bytes:
    if codec == ".gz":
        return gzip.compress(data)
    if codec == ".bz2":
        return bz2.compress(data)
    if codec == ".zst":
        return bytes(pa.Codec("zstd").compress(data, asbytes=True))
    return data


def _read(path: Path, **shape: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(r.id, r.fields) for r in read_rows(path, shape=InputShape(**shape))]


def _invoke(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin, env={"ANTHROPIC_API_KEY": TEST_KEY})
    return result.exit_code, result.stdout, result.stderr


EXPECTED = [(row["id"], {"text": row["text"], "topic": row["topic"]}) for row in ROWS]

# How each byte-order mark is written: Python's codec, and the mark itself when the codec
# writes none.
MARKED = {
    "utf-16 (little-endian)": ("utf-16-le", "\ufeff"),
    "utf-16 (big-endian)": ("utf-16-be", "\ufeff"),
    "utf-8 with a mark": ("utf-8-sig", ""),
    "utf-32": ("utf-32", ""),
}


@pytest.mark.parametrize("marked", sorted(MARKED))
@pytest.mark.parametrize(
    "name", ["in.jsonl", "in.json", "in.csv", "in.tsv", "in.jsonl.gz", "in.csv.zst", "in.json.bz2"]
)
def test_a_file_with_a_byte_order_mark_reads_as_text(
    tmp_path: Path, marked: str, name: str
) -> None:
    """UTF-16 read as UTF-8 was one malformed row per line (or "template: no column")."""
    codec, mark = MARKED[marked]
    shape, _, suffix = name.removeprefix("in.").partition(".")
    path = tmp_path / name
    path.write_bytes(_compressed((mark + _text(shape)).encode(codec), "." + suffix))
    assert _read(path) == EXPECTED
    if shape == "jsonl":
        assert count_rows(path) == 3  # the progress bar's total, counted on the decoded lines


@pytest.mark.parametrize("shape", ["jsonl", "csv"])
def test_a_utf16_input_runs_with_a_template_and_a_kept_column(
    tmp_path: Path, sim: SimulatorThread, shape: str
) -> None:
    """The reported case: UTF-16 input, --template '{text}': "template: no column 'text'"."""
    inp = tmp_path / f"in.{shape}"
    inp.write_bytes(_text(shape).encode("utf-16"))
    out = tmp_path / "out.parquet"
    args = ["run", str(inp), "-o", str(out), "--base-url", sim.base_url, *MODEL]
    code, _, err = _invoke(*args, "--template", "{text}", "--keep-column", "topic", "-q")
    assert code == 0, err
    table = pq.read_table(out).to_pylist()
    assert [(r["id"], r["topic"]) for r in table] == [(row["id"], row["topic"]) for row in ROWS]
    for got, row in zip(table, ROWS, strict=True):
        assert got["status"] == "ok"
        assert got["text"].startswith(reply_tag(row["text"]))  # the answer to its own prompt


def test_input_that_is_not_utf8_is_refused_once_before_anything_is_sent(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    """latin-1 input gave one "not valid UTF-8" error row per line, and no way to read it."""
    inp = tmp_path / "in.csv"
    inp.write_bytes(_text("csv").encode("cp1252"))
    out = tmp_path / "out.parquet"
    code, _, err = _invoke("run", str(inp), "-o", str(out), "--base-url", sim.base_url, *MODEL)
    assert code == 2, err
    assert err.count("batchrun: error:") == 1
    assert f"{inp}: not UTF-8 text (line 2 has byte 0xe8, which is not UTF-8)" in err
    assert "nothing was sent" in err and "--encoding latin-1 (or cp1252, ...;" in err
    assert sim.stats.snapshot().requests == 0 and not out.exists()
    for command in ("validate", "estimate"):
        code, _, err = _invoke(command, str(inp), "-o", str(out), *MODEL)
        assert code == 2 and "line 2 has byte 0xe8" in err, (command, err)


def test_the_encoding_flag_reads_the_file(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(_text("jsonl").encode("cp1252"))
    assert _read(inp, encoding="cp1252") == EXPECTED
    out = tmp_path / "out.parquet"
    args = ["run", str(inp), "-o", str(out), "--base-url", sim.base_url, *MODEL]
    code, _, err = _invoke(*args, "--encoding", "cp1252", "--template", "{text}", "-q")
    assert code == 0, err
    table = pq.read_table(out).to_pylist()
    assert [r["text"][:11] for r in table] == [reply_tag(row["text"]) for row in ROWS]
    code, out_text, err = _invoke(
        "estimate", str(inp), *MODEL, "--encoding", "cp1252", "--template", "{text}"
    )
    assert code == 0 and "rows        3: 3 valid" in out_text, err


def test_a_job_file_names_the_encoding(tmp_path: Path) -> None:
    inp = tmp_path / "in.csv"
    inp.write_bytes(_text("csv").encode("latin-1", "replace"))
    job = tmp_path / "job.toml"
    job.write_text('input = "in.csv"\nencoding = "latin-1"\ntemplate = "{text}"\n')
    code, out_text, err = _invoke("validate", str(job), *MODEL)
    assert code == 0 and "3 rows, 3 valid" in out_text, err


def test_a_byte_the_encoding_cannot_decode_is_its_rows_problem(tmp_path: Path) -> None:
    """0x81 means nothing in cp1252: that row fails, naming the byte; the others are read."""
    inp = tmp_path / "in.jsonl"
    lines = [json.dumps(row, ensure_ascii=False).encode("cp1252") for row in ROWS]
    lines[1] = b'{"id": "r1", "text": "bad \x81 byte"}'
    inp.write_bytes(b"\n".join(lines) + b"\n")
    rows = list(read_rows(inp, shape=InputShape(encoding="cp1252")))
    assert [r.problem is None for r in rows] == [True, False, True]
    assert str(rows[1].problem) == f"{inp}:2: not valid cp1252 text (byte 0x81)"

    table = tmp_path / "in.csv"
    table.write_bytes(b"id,text\na,fine\nb,bad \x81 byte\n")
    rows = list(read_rows(table, shape=InputShape(encoding="cp1252")))
    assert str(rows[1].problem) == f"{table}:3: text: not valid cp1252 text"


def test_a_bad_line_past_the_start_stays_its_rows_problem(tmp_path: Path) -> None:
    """Only the start decides: one stray line further on is an error row, as before."""
    inp = tmp_path / "in.jsonl"
    good = json.dumps({"prompt": "é" * 200}).encode() + b"\n"
    count = SNIFF_BYTES // len(good) + 10
    inp.write_bytes(good * count + b'{"prompt": "caf\xe9"}\n' + good)
    rows = list(read_rows(inp))
    assert [r.line for r in rows if r.problem] == [count + 1]
    assert "not valid UTF-8 (byte 0xe9" in str(rows[count].problem)


def test_declared_utf8_reads_a_bad_start_as_error_rows(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b'{"prompt": "caf\xe9"}\n{"prompt": "ok"}\n')
    with pytest.raises(UndecodableInputError):
        read_rows(inp)
    rows = list(read_rows(inp, shape=InputShape(encoding="utf-8")))
    assert [r.problem is None for r in rows] == [False, True]


def test_a_character_cut_by_the_end_of_what_is_looked_at_is_no_mistake(tmp_path: Path) -> None:
    inp = tmp_path / "in.csv"
    head = b"id,text\na,"
    filler = b"x" * (SNIFF_BYTES - len(head) - 1)
    inp.write_bytes(head + filler + "é\n".encode() + b"b,next\n")  # é's 2 bytes straddle the end
    assert [r.id for r in read_rows(inp)] == ["a", "b"]


def test_utf16_without_a_mark_is_refused_naming_the_byte_order(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(_text("jsonl").encode("utf-16-be"))
    code, _, err = _invoke("validate", str(inp), *MODEL, "--template", "{text}")
    assert code == 2
    assert f"{inp}: not UTF-8 text: line 1 holds a NUL byte" in err
    assert "--encoding utf-16-be" in err
    assert _read(inp, encoding="utf-16-be") == EXPECTED


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("latin1x", "'latin1x' is not a text encoding Python knows (did you mean `latin-1`?)"),
        ("base64", "'base64' is not a text encoding Python knows"),
    ],
)
def test_an_unknown_encoding_is_refused(tmp_path: Path, name: str, message: str) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(_text("jsonl"), encoding="utf-8")
    code, _, err = _invoke("validate", str(inp), *MODEL, "--encoding", name)
    assert code == 1
    assert f"batchrun: error: `encoding`: {message}" in err
    with pytest.raises(ConfigError, match="such as utf-8, utf-16, latin-1 or cp1252"):
        job_config(inp, tmp_path / "out.parquet", "http://127.0.0.1:9", encoding=name)
    with pytest.raises(InputError, match=f"encoding: {message[:30]}"):  # read from Python
        read_rows(inp, shape=InputShape(encoding=name))


def test_parquet_is_read_whatever_the_encoding_says(tmp_path: Path) -> None:
    inp = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), inp)
    assert _read(inp, encoding="latin-1") == EXPECTED


@pytest.mark.parametrize(
    ("text", "codec", "fmt"),
    [
        (_text("json"), "utf-16", "json"),
        (_text("jsonl"), "utf-16-be", "jsonl"),
        (_text("tsv"), "utf-16", "tsv"),
        (_text("csv"), "utf-32", "csv"),
        (_text("jsonl"), "utf-8-sig", "jsonl"),
    ],
)
def test_the_format_of_piped_text_is_told_through_its_mark(text: str, codec: str, fmt: str) -> None:
    mark = "\ufeff" if codec == "utf-16-be" else ""
    assert sniff_format((mark + text).encode(codec)) == fmt
    assert sniff_format(text.encode("utf-16-le"), "utf-16-le") == fmt  # or through --encoding
    assert sniff_format(text.encode("utf-16-le"), "utf-16") == fmt  # no mark: little-endian


def test_utf16_piped_in_is_read(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    data = _text("json").encode("utf-16")
    code, out_text, err = _invoke(
        "validate", "-", "-o", str(out), *MODEL, "--template", "{text}", stdin=data
    )
    assert code == 0, err
    assert ".out.parquet.stdin.json: 3 rows, 3 valid, 0 invalid" in out_text
    latin = _text("tsv").encode("latin-1", "replace")
    args = ["validate", "-", "-o", str(out), *MODEL, "--template", "{text}"]
    args += ["--encoding", "latin-1"]
    code, out_text, err = _invoke(*args, stdin=latin)
    assert code == 0, err
    assert ".out.parquet.stdin.tsv: 3 rows, 3 valid, 0 invalid" in out_text


def test_validate_counts_the_lines_of_the_decoded_text(tmp_path: Path) -> None:
    """Lines are told in the text, not the bytes: UTF-16 puts a NUL beside every newline."""
    jsonl = tmp_path / "in.jsonl"
    text = '{"id": "a", "text": "é"}\r\n\r\n{"id": "b", "text": "ü"}\r\n{"id": "c"}\r\n'
    jsonl.write_bytes(text.encode("utf-16"))
    code, out_text, err = _invoke("validate", str(jsonl), *MODEL, "--template", "{text}")
    assert code == 3, err
    assert f"{jsonl}:4: text: the template uses this column" in out_text

    table = tmp_path / "in.csv"
    table.write_bytes('id,text,max_tokens\na,"two\nlines é",5\nb,x,ten\n'.encode("utf-16"))
    code, out_text, err = _invoke("validate", str(table), *MODEL, "--template", "{text}")
    assert code == 3, err
    assert f"{table}:4: max_tokens: expected an integer, got 'ten'" in out_text
