"""Every common input and output file shape: JSON arrays, TSV, other CSV delimiters,
compressed inputs, --format, standard input, CSV outputs (read back for resume and report)."""

from __future__ import annotations

import asyncio
import bz2
import csv
import gzip
import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import (
    RecordingTransport,
    job_config,
    jsonl_bytes,
    prompts,
    reply_tag,
    write_jsonl,
)

from batchrun import run
from batchrun.cli import cli
from batchrun.core.errors import ConfigError, FatalRunError, InputError
from batchrun.formats import json_array
from batchrun.formats.delimited import csv_batches
from batchrun.formats.inputs import InputShape, count_rows, read_rows
from batchrun.formats.marks import Partial, mark_path
from batchrun.formats.registry import read_partial, sniff_format
from batchrun.formats.spool import spool_stdin
from batchrun.runs.claim import check_kept_columns_exist
from batchrun.runs.plan import input_rows
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorThread
from batchrun.store.columns import COLUMN_NAMES, blank_row
from batchrun.store.lock import OutputLock
from batchrun.store.sink import Sink, journal_path, output_batches, output_schema

ROWS = [{"id": f"r{i}", "prompt": f"say {i}", "topic": f"t{i}"} for i in range(6)]


def csv_text(rows: list[dict[str, Any]], delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter=delimiter)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def zstd(data: bytes) -> bytes:
    return bytes(pa.Codec("zstd").compress(data, asbytes=True))


def read_back(path: Path, **shape: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(r.id, r.fields) for r in read_rows(path, shape=InputShape(**shape))]


def plain(rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(r["id"], {k: v for k, v in r.items() if k != "id"}) for r in rows]


# -- JSON arrays ----------------------------------------------------------------------------


def test_a_json_array_reads_as_rows_numbered_by_element(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    assert read_back(path) == plain(ROWS)
    assert [r.line for r in read_rows(path)] == [1, 2, 3, 4, 5, 6]
    assert count_rows(path) is None  # a full parse would be needed: not cheap
    assert input_rows(path, parse=True) == 6


def test_a_json_element_that_is_no_object_is_that_rows_problem(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text('[{"id": "a", "prompt": "x"}, 7, {"id": "a", "prompt": NaN}]', "utf-8")
    rows = list(read_rows(path))
    assert rows[0].problem is None
    assert str(rows[1].problem) == f"{path}:2: expected a JSON object, got number"
    assert "NaN is not allowed" in str(rows[2].problem)
    assert "duplicate id" not in str(rows[2].problem)  # its id could not be read


def test_a_duplicate_id_names_the_element_it_repeats(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]))
    second = list(read_rows(path))[1]
    assert "duplicate id 'a': first seen on element 1" in str(second.problem)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"prompt": "x"}',
            r"one JSON array of row objects.*starts with '\{'.*input_format='jsonl'",
        ),
        ('[{"prompt": "x"},]', r"in\.json:1: a comma after element 1 and then the array's end"),
        ('[{"prompt": "x"} {"prompt": "y"}]', r":1: expected ',' or '\]' after element 1"),
        ('[{"prompt": "x"}, {"prompt": tru}]', r":2: element 2 is malformed JSON"),
        ('[{"prompt": "x"}', "the array is never closed: the file ends after element 1"),
        ('[{"prompt": "x"}] extra', r"text after the array's closing \]"),
        ("[]", "the file has no rows"),
    ],
)
def test_a_broken_json_array_names_the_file_and_element(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "in.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        list(read_rows(path))
    assert info.value.file == str(path)


def test_json_elements_are_cut_from_a_small_window_whatever_their_length() -> None:
    """The array is streamed: a buffer of a few characters still finds every element,
    long strings and numbers cut at a chunk's end included."""
    values = [{"prompt": "x" * 500, "n": 12345678901234567890}, {"n": 1.5e-7}, {"s": 'a\\"b'}]
    text = json.dumps(values)
    buffer = json_array._TextBuffer(io.StringIO(text), chunk=3)
    elements = list(json_array._array_elements(buffer, "in.json"))
    assert [json.loads(e) for e in elements] == values
    assert len(buffer.text) < 2 * len(elements[0]) + 8  # never the whole array


def test_skipped_json_elements_are_not_parsed_into_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps(ROWS), encoding="utf-8")
    rows = list(read_rows(path, skip=lambda i: i < 4, known_ids=["r0"]))
    assert [(r.index, r.id) for r in rows] == [(4, "r4"), (5, "r5")]


# -- TSV and other delimiters -----------------------------------------------------------------


def test_tsv_by_name_and_by_format(tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": "hello, you"}, {"id": "b", "prompt": "two\nlines"}]
    tsv = tmp_path / "in.tsv"
    tsv.write_text(csv_text(rows, "\t"), encoding="utf-8")
    assert read_back(tsv) == plain(rows)
    txt = tmp_path / "in.txt"
    txt.write_text(csv_text(rows, "\t"), encoding="utf-8")
    assert read_back(txt, format="tsv") == plain(rows)


def test_csv_delimiter_is_honoured_across_a_quoted_line_break(tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": "x; y"}, {"id": "b", "prompt": "two\nlines"}]
    path = tmp_path / "in.csv"
    path.write_text(csv_text(rows, ";"), encoding="utf-8")
    assert read_back(path, delimiter=";") == plain(rows)


@pytest.mark.parametrize(
    ("delimiter", "hint"),
    [
        (";", "csv_delimiter=';'"),
        ("\t", "csv_delimiter='\\t' (or input_format='tsv')"),
        ("|", "'|'"),
    ],
)
def test_a_header_split_by_another_delimiter_stops_with_one_error(
    tmp_path: Path, delimiter: str, hint: str
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(csv_text(ROWS, delimiter), encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_rows(path)  # at the call: before any row is returned
    assert "the CSV header is one column" in str(info.value) and hint in str(info.value)
    assert info.value.file == str(path)


def test_a_comma_separated_file_read_with_another_delimiter_is_told_so(tmp_path: Path) -> None:
    path = tmp_path / "in.tsv"
    path.write_text(csv_text(ROWS), encoding="utf-8")
    with pytest.raises(InputError, match=r"separated by ',', not by tabs.*csv_delimiter=','"):
        read_rows(path)


def test_a_one_column_csv_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("prompt\nhello; there\n", encoding="utf-8")
    assert read_back(path) == [("row-0", {"prompt": "hello; there"})]


# -- compressed inputs ------------------------------------------------------------------------


def test_compressed_inputs_read_like_plain_ones(tmp_path: Path) -> None:
    gz = tmp_path / "in.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl_bytes(ROWS)))
    zst = tmp_path / "in.csv.zst"
    zst.write_bytes(zstd(csv_text(ROWS).encode()))
    bz = tmp_path / "in.json.bz2"
    bz.write_bytes(bz2.compress(json.dumps(ROWS).encode()))
    for path in (gz, zst, bz):
        assert read_back(path) == plain(ROWS), path
    assert count_rows(gz) == 6  # JSON lines are counted through the codec
    assert count_rows(zst) is None and count_rows(bz) is None
    assert input_rows(zst, parse=True) == input_rows(bz, parse=True) == 6
    resumed = read_rows(gz, skip=lambda i: i < 5)
    assert [r.id for r in resumed] == ["r5"]


def test_format_overrides_the_name_and_compression_is_told_by_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "rows.txt"
    path.write_bytes(gzip.compress(jsonl_bytes(ROWS)))
    assert read_back(path, format="jsonl") == plain(ROWS)
    assert count_rows(path, InputShape("jsonl")) == 6
    with pytest.raises(InputError, match=r"unknown input format.*input_format"):
        read_rows(path)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("in.jsonl.gz", jsonl_bytes(ROWS), "the name says gzip-compressed"),
        ("in.parquet.gz", gzip.compress(b"PAR1"), "gzip-compressed Parquet file cannot be read"),
        ("in.jsonl.gz", gzip.compress(jsonl_bytes(prompts(50)))[:-20], "Truncated compressed"),
    ],
)
def test_unusable_compressed_files_say_why(
    tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=message) as info:
        list(read_rows(path))
    assert info.value.file == str(path)


def test_kept_columns_are_checked_in_every_shape(tmp_path: Path) -> None:
    shapes = {
        "in.json": json.dumps(ROWS).encode(),
        "in.jsonl.gz": gzip.compress(jsonl_bytes(ROWS)),
        "in.tsv": csv_text(ROWS, "\t").encode(),
        "in.csv.zst": zstd(csv_text(ROWS).encode()),
    }
    for name, data in shapes.items():
        path = tmp_path / name
        path.write_bytes(data)
        check_kept_columns_exist(path, ["topic"])
        with pytest.raises(ConfigError, match=r"`topik` .*did you mean"):
            check_kept_columns_exist(path, ["topik"])
    semi = tmp_path / "semi.csv"
    semi.write_text(csv_text(ROWS, ";"), encoding="utf-8")
    check_kept_columns_exist(semi, ["topic"], InputShape(None, ";"))


# -- standard input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"PAR1\x15\x04", "parquet"),
        (b"\xef\xbb\xbf  [ {", "json"),
        (b'\n{"id": 1}', "jsonl"),
        (b"id\tprompt\n", "tsv"),
        (b"id,prompt\tx\n", "csv"),
        (b"id;prompt\n", "csv"),
    ],
)
def test_the_format_of_piped_bytes_is_sniffed(head: bytes, fmt: str) -> None:
    assert sniff_format(head) == fmt


def test_stdin_is_spooled_beside_the_output_and_kept_when_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "out" / "labels.parquet"
    data = gzip.compress(csv_text(ROWS).encode())
    spooled = spool_stdin(io.BytesIO(data), out)
    assert spooled == out.with_name(".labels.parquet.stdin.csv.gz")
    assert spooled.read_bytes() == data and read_back(spooled) == plain(ROWS)
    before = os.stat(spooled)
    assert spool_stdin(io.BytesIO(data), out) == spooled
    after = os.stat(spooled)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    other = spool_stdin(io.BytesIO(jsonl_bytes(ROWS)), out)
    assert other.name == ".labels.parquet.stdin.jsonl"
    assert sorted(p.name for p in out.parent.iterdir()) == [other.name]  # no leftovers
    assert spool_stdin(io.BytesIO(b"x\n"), out, "jsonl").name == ".labels.parquet.stdin.jsonl"
    with pytest.raises(InputError, match="standard input is empty"):
        spool_stdin(io.BytesIO(b""), out)


def test_stdin_needs_an_output(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", "-"], input=jsonl_bytes(ROWS))
    assert result.exit_code == 1
    assert "SOURCE - (standard input) needs an output: give -o" in result.stderr


def test_stdin_is_not_copied_over_the_input_of_a_run_going_on(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    spooled = spool_stdin(io.BytesIO(jsonl_bytes(ROWS)), out)
    with OutputLock(out):  # a run of this output, reading ``spooled``
        args = ["validate", "-", "-o", str(out)]
        result = CliRunner().invoke(cli, args, input=jsonl_bytes(ROWS[:2]))
    assert result.exit_code == 1 and f"pid {os.getpid()}" in result.stderr
    assert read_back(spooled) == plain(ROWS)


def test_validate_and_estimate_read_stdin(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    flags = ["-o", str(out), "--model", "claude-haiku-4-5", "--max-tokens", "20"]
    runner = CliRunner()
    checked = runner.invoke(cli, ["validate", "-", *flags], input=json.dumps(ROWS).encode())
    assert checked.exit_code == 0, checked.output
    assert ".out.jsonl.stdin.json: 6 rows, 6 valid, 0 invalid" in checked.output
    estimated = runner.invoke(cli, ["estimate", "-", *flags], input=jsonl_bytes(ROWS))
    assert estimated.exit_code == 0, estimated.output
    assert "rows        6: 6 valid" in estimated.output
    assert not out.exists()  # neither writes the output


# -- whole runs of each input shape -----------------------------------------------------------


def _input(tmp_path: Path, name: str, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path / name
    if name == "in.json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif name == "in.jsonl.gz":
        path.write_bytes(gzip.compress(jsonl_bytes(rows)))
    elif name == "in.tsv":
        path.write_text(csv_text(rows, "\t"), encoding="utf-8")
    else:
        path.write_text(csv_text(rows, ";"), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "flags"),
    [("in.json", {}), ("in.jsonl.gz", {}), ("in.tsv", {}), ("in.csv", {"csv_delimiter": ";"})],
)
def test_a_whole_run_of_each_input_shape(
    tmp_path: Path, sim: SimulatorThread, name: str, flags: dict[str, Any]
) -> None:
    rows = [{**r, "topic": f"topic; {i}"} for i, r in enumerate(prompts(12))]
    inp = _input(tmp_path, name, rows)
    out = tmp_path / "out.parquet"
    summary = run(job_config(inp, out, sim.base_url, keep_columns=["topic"], **flags))
    assert summary.exit_code == 0
    table = pq.read_table(out).to_pylist()
    assert [r["id"] for r in table] == [r["id"] for r in rows]
    assert [r["topic"] for r in table] == [r["topic"] for r in rows]
    assert all(
        r["text"].startswith(reply_tag(p["prompt"])) for r, p in zip(table, rows, strict=True)
    )


def test_a_semicolon_csv_without_its_delimiter_sends_nothing(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = _input(tmp_path, "in.csv", prompts(5))
    with pytest.raises(InputError, match="csv_delimiter=';'"):
        run(job_config(inp, tmp_path / "out.parquet", sim.base_url))
    assert sim.stats.snapshot().requests == 0


# -- CSV outputs ------------------------------------------------------------------------------

WHEN = datetime(2026, 11, 22, 3, 0, 0, 123000, tzinfo=timezone.utc)


def _row(i: int, **extra: Any) -> dict[str, Any]:
    row = blank_row(f"r{i}")
    row.update(status="ok", text=f"answer {i}", input_tokens=10 + i, output_tokens=3)
    row.update(cost_usd=0.25 * i, request_hash=f"h{i}", finished_at=WHEN, **extra)
    return row


def _write(out: Path, rows: dict[int, dict[str, Any]], keep: tuple[str, ...] = ()) -> Sink:
    sink = Sink(out, keep, chunk_rows=2)
    sink.open()

    async def main() -> None:
        for index, row in rows.items():
            sink.submit(index, row)
        await sink.close()

    asyncio.run(main())
    return sink


def test_a_csv_output_reads_back_with_its_types(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    tricky = {
        0: _row(0, text="", error_message=None, topic="NA"),
        1: _row(1, text='two\nlines, "quoted"', content_json='[{"type": "text"}]', topic=None),
        2: _row(2, status="error", text=None, input_tokens=None, http_status=529, topic="x"),
    }
    _write(out, tricky, ("topic",)).finalize(3)
    header = out.read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",") == [f'"{name}"' for name in (*COLUMN_NAMES, "topic")]

    schema = output_schema(("topic",))
    back = pa.Table.from_batches(list(output_batches(out, schema)), schema=schema).to_pylist()
    for got, wanted in zip(back, tricky.values(), strict=True):
        assert got == {**dict.fromkeys(schema.names), **wanted}
    assert isinstance(back[0]["input_tokens"], int) and back[2]["input_tokens"] is None
    assert back[0]["text"] == "" and back[2]["text"] is None  # empty and null stay apart


def test_a_csv_record_longer_than_a_block_is_still_read(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    _write(out, {0: _row(0, text="y" * 300), 1: _row(1), 2: _row(2, text="z" * 900)}).finalize(3)
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    batches = list(csv_batches(out, schema, block_bytes=64))
    texts = pa.Table.from_batches(batches, schema=schema).column("text").to_pylist()
    assert texts == ["y" * 300, "answer 1", "z" * 900]


def test_a_partial_csv_output_is_marked_and_completed(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    counts = _write(out, {3: _row(3), 0: _row(0)}).write_finished(5)
    assert counts is not None and counts.partial == Partial(2, 5)
    assert read_partial(out) == Partial(2, 5) and mark_path(out).exists()
    reopened = Sink(out)
    prior = reopened.open()
    assert prior.final_rows == 0 and sorted(prior.journal) == [0, 3]  # a partial file: no source
    for i in (1, 2, 4):
        reopened.submit(i, _row(i))
    final = reopened.finalize(5)
    assert final.rows == 5 and read_partial(out) is None and not journal_path(out).exists()
    again = Sink(out).open()  # the complete CSV file is the source now
    assert again.final_rows == 5
    assert [again.lookup(i).id for i in range(5)] == [f"r{i}" for i in range(5)]  # type: ignore[union-attr]


class _RefusingAfter(httpx.AsyncBaseTransport):
    """The simulator for the first ``answered`` requests, then 401 (a key revoked mid-run)."""

    def __init__(self, answered: int) -> None:
        self.left = answered
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.left <= 0:
            body = {"type": "error", "error": {"type": "authentication_error", "message": "no"}}
            return httpx.Response(401, json=body)
        self.left -= 1
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_a_csv_output_is_resumed_and_reported(tmp_path: Path, sim: SimulatorThread) -> None:
    rows = prompts(20)
    inp = write_jsonl(tmp_path / "in.jsonl", rows[:10])
    out = tmp_path / "out.csv"
    config = job_config(inp, out, sim.base_url, concurrency=1)
    with pytest.raises(FatalRunError):
        run(config, runtime=Runtime(transport=_RefusingAfter(4)))  # stopped: a partial CSV output
    assert read_partial(out) == Partial(4, 10)

    done = run(config)  # completes it from the journal
    assert done.exit_code == 0 and done.skipped == 4

    write_jsonl(inp, rows)  # ten more rows: resumed from the complete CSV file
    recording = RecordingTransport()
    more = run(config, runtime=Runtime(transport=recording))
    assert more.exit_code == 0 and more.skipped == 10 and len(recording.bodies) == 10
    with out.open(encoding="utf-8", newline="") as fh:
        written = list(csv.DictReader(fh))
    assert [r["id"] for r in written] == [r["id"] for r in rows]
    assert all(
        r["text"].startswith(reply_tag(p["prompt"])) for r, p in zip(written, rows, strict=True)
    )

    report = CliRunner().invoke(cli, ["report", str(out), "--json"])
    assert report.exit_code == 0, report.output
    totals = json.loads(report.output)
    assert totals["rows"] == 20
    assert isinstance(totals["sources"][0], dict)
