"""Rows longer than a request can be (issue 23, item 11): a JSONL line, a JSON element or a
CSV record past the cap (32 MiB, the Messages API's request limit) is that row's error,
naming its size, read without ever being held whole, compressed or not, piped in or not;
the rest of the file is read as usual."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import TEST_KEY, reply_tag

from batchrun.core.errors import InputError
from batchrun.formats.inputs import read_rows
from batchrun.rows.request import MAX_REQUEST_BYTES
from batchrun.rows.text import MAX_ROW_BYTES, LongLine, bounded_lines
from batchrun.simulator import SimulatorThread

MIB = 1 << 20
KIB = 1 << 10

# Each shape: the text before the long value, and after it. The long value is "x" repeated;
# the rows around it are a and c.
SHAPES: dict[str, tuple[str, str]] = {
    "jsonl": (
        '{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "',
        '"}\n{"id": "c", "prompt": "z"}\n',
    ),
    "json": (
        '[{"id": "a", "prompt": "x"},\n {"id": "b", "prompt": "',
        '"},\n {"id": "c", "prompt": "z"}]',
    ),
    "csv": ('id,prompt\na,x\nb,"', '"\nc,z\n'),  # a quoted cell
    "tsv": ("id\tprompt\na\tx\nb\t", "\nc\tz\n"),  # an unquoted one
}
# What each names the long row by, and the size it gives: the long value and the text around
# it in that row (its line break not counted); and where the rows a, b and c are.
WHERE = {
    "jsonl": ("the line", len('{"id": "b", "prompt": ""}'), [1, 2, 3]),
    "json": ("element 2", len('{"id": "b", "prompt": ""}'), [1, 2, 3]),
    "csv": ("the record on line 3", len('b,""'), [2, 3, 4]),
    "tsv": ("the record on line 3", len("b\t"), [2, 3, 4]),
}


def _write(path: Path, shape: str, size: int, codec: str = "utf-8") -> None:
    """The shape's file around a value of ``size`` characters, written a MiB at a time,
    compressed as the name says."""
    compression = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}.get(path.suffix)
    head, tail = SHAPES[shape]
    encoder = "utf-16" if codec == "utf-16" else codec  # one mark, at the start
    with pa.output_stream(str(path), compression=compression) as out:
        out.write(head.encode(encoder))
        encoder = "utf-16-le" if codec == "utf-16" else codec
        chunk = ("x" * MIB).encode(encoder)
        for _ in range(size // MIB):
            out.write(chunk)
        out.write(("x" * (size % MIB)).encode(encoder))
        out.write(tail.encode(encoder))


def _summary(path: Path, cap: int) -> list[tuple[int, str, str | None]]:
    """(line, id, problem) of each row of ``path`` read with ``cap``."""
    return [
        (row.line, row.id, None if row.problem is None else row.problem.what)
        for row in read_rows(path, max_row_bytes=cap)
    ]


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("suffix", ["", ".gz", ".zst", ".bz2"])
def test_a_row_longer_than_the_cap_is_its_error_and_the_rest_is_read(
    tmp_path: Path, shape: str, suffix: str
) -> None:
    path = tmp_path / f"in.{shape}{suffix}"
    cap = 64 * KIB
    _write(path, shape, MIB + 7)
    rows = _summary(path, cap)
    assert [(row_id, problem is None) for _, row_id, problem in rows] == [
        ("a", True),
        ("row-1", False),  # its id is in what was not read
        ("c", True),
    ]
    what, around, lines = WHERE[shape]
    assert rows[1][2] == (
        f"{what} is {MIB + 7 + around:,} bytes, more than a whole request can be (65,536 "
        "bytes, the Messages API's limit): it was not read, and is not sent"
    )
    assert [line for line, _, _ in rows] == lines


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_row_up_to_the_cap_is_read_whole(tmp_path: Path, shape: str) -> None:
    """2 MiB: past the csv module's 128 KiB cell limit and the JSON reader's 1 MiB chunk,
    under the cap."""
    path = tmp_path / f"in.{shape}"
    _write(path, shape, 2 * MIB)
    rows = list(read_rows(path))
    assert [(r.id, len(r.fields["prompt"]), r.problem) for r in rows] == [
        ("a", 1, None),
        ("b", 2 * MIB, None),
        ("c", 1, None),
    ]


def test_the_cap_is_a_request_s_size_limit() -> None:
    assert MAX_ROW_BYTES == MAX_REQUEST_BYTES == 32 * MIB


def test_a_long_record_of_a_csv_cell_with_line_breaks_is_followed_to_its_end(
    tmp_path: Path,
) -> None:
    """The quoted cell spans lines, and holds quotes and delimiters: the skip follows them."""
    path = tmp_path / "in.csv"
    cell = ('line, with ""quotes"" and a comma\n' * 40_000).rstrip("\n")
    path.write_text(f'id,prompt\na,x\nb,"{cell}"\nc,"z, ""quoted"""\n', encoding="utf-8")
    rows = _summary(path, 64 * KIB)
    last = 3 + cell.count("\n")
    assert [(line, row_id) for line, row_id, _ in rows] == [(2, "a"), (3, "row-1"), (last + 1, "c")]
    assert rows[1][2] is not None and rows[1][2].startswith(f"the record on lines 3-{last:,} is ")
    assert rows[2][2] is None


def test_a_long_quote_never_closed_is_its_line_and_the_rest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    lines = "".join(f"r{i},plain {i}\n" for i in range(20_000))  # past the cap
    path.write_text(f'id,prompt\na,x\nb,"never closed\n{lines}', encoding="utf-8")
    rows = _summary(path, 64 * KIB)
    assert rows[1][:2] == (3, "row-1")
    assert rows[1][2] is not None and "quoted cell opened on line 3 is never closed" in rows[1][2]
    assert len(rows) == 2 + 20_000 and all(problem is None for *_, problem in rows[2:])
    assert rows[-1][:2] == (20_003, "r19999")


def test_a_long_json_element_that_is_malformed_still_stops_the_file(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text('[{"id": "a", "prompt": "' + "x" * (2 * MIB) + '",}]', encoding="utf-8")
    with pytest.raises(InputError, match="element 1 is malformed JSON"):
        list(read_rows(path))


def test_long_rows_skipped_on_resume_are_still_passed_over(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    _write(path, "jsonl", MIB)
    rows = list(read_rows(path, max_row_bytes=64 * KIB, skip=lambda index: index == 1))
    assert [(r.index, r.id, r.problem) for r in rows] == [(0, "a", None), (2, "c", None)]


# -- memory: what reading a line far past the cap holds -----------------------------------

CAP = 8 * MIB
LONG = 96 * MIB  # twelve times the cap
# Held beyond the cap: the pieces a line is read in (a MiB) and the decompressor's and
# decoder's buffers, a few MiB whatever the line's length.
SLACK = 4 * MIB


@pytest.mark.parametrize(
    ("name", "shape", "codec"),
    [
        ("in.jsonl.gz", "jsonl", "utf-8"),
        ("in.json.gz", "json", "utf-8"),
        ("in.csv.gz", "csv", "utf-8"),
        ("in.tsv.zst", "tsv", "utf-8"),
        ("in.jsonl.gz", "jsonl", "utf-16"),  # recoded to UTF-8 as it is read
    ],
)
def test_reading_a_line_twelve_times_the_cap_holds_about_the_cap(
    tmp_path: Path, name: str, shape: str, codec: str
) -> None:
    path = tmp_path / name
    _write(path, shape, LONG, codec)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        rows = _summary(path, CAP)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [row_id for _, row_id, _ in rows] == ["a", "row-1", "c"]
    assert rows[1][2] is not None and "more than a whole request can be" in rows[1][2]
    assert peak < CAP + SLACK, f"peak {peak / MIB:.1f} MiB reading a {LONG // MIB} MiB line"


def test_the_command_reading_a_line_eight_times_a_request_grows_by_about_one(
    tmp_path: Path,
) -> None:
    """``batchrun validate`` as a process, with the real cap: its peak RSS over a gzipped
    256 MiB line is that over a one-line file plus about the cap (it was 4.5 times the line:
    about 1.1 GiB here, 8 GiB for a line of 2 GiB)."""
    long_file = tmp_path / "long.jsonl.gz"
    _write(long_file, "jsonl", 8 * MAX_ROW_BYTES)
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text('{"id": "a", "prompt": "x"}\n', encoding="utf-8")

    base, _ = _validate_peak_rss(tiny)
    peak, output = _validate_peak_rss(long_file)
    assert "3 rows, 2 valid, 1 invalid" in output, output
    size = 8 * MAX_ROW_BYTES + WHERE["jsonl"][1]
    assert f"{long_file}:2: the line is {size:,} bytes" in output, output
    assert peak - base < 2 * MAX_ROW_BYTES, f"{(peak - base) / MIB:.0f} MiB over the tiny run"


def _validate_peak_rss(path: Path) -> tuple[int, str]:
    """``batchrun validate path`` as a process: its peak RSS in bytes (the kernel's figure
    for that one process) and what it printed."""
    cmd = [sys.executable, "-m", "batchrun", "validate", str(path)]
    cmd += ["--model", "claude-haiku-4-5", "--max-tokens", "5"]
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read().decode()
    return usage.ru_maxrss * 1024, output  # ru_maxrss is in KiB


def test_a_run_piped_a_gzipped_line_past_the_cap_sends_every_other_row(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    """Standard input, gzipped, the real cap: the long row is an error row, the rest sent."""
    out = tmp_path / "out.parquet"
    rows = [{"id": f"r{i}", "prompt": f"say {i}"} for i in range(6)]
    lines = [json.dumps(row).encode() + b"\n" for row in rows]
    lines[3] = b'{"id": "huge", "prompt": "' + b"x" * (MAX_ROW_BYTES + 5) + b'"}\n'
    data = gzip.compress(b"".join(lines), compresslevel=1)
    cmd = [sys.executable, "-m", "batchrun", "run", "-", "-o", str(out), "-q"]
    cmd += ["--base-url", sim.base_url, "--model", "claude-haiku-4-5", "--max-tokens", "20"]
    env = {**os.environ, "ANTHROPIC_API_KEY": TEST_KEY}
    done = subprocess.run(cmd, input=data, env=env, capture_output=True, timeout=300)
    assert done.returncode == 3, done.stderr.decode()  # rows in error
    got = pq.read_table(out).to_pylist()
    assert [r["id"] for r in got] == ["r0", "r1", "r2", "row-3", "r4", "r5"]
    bad = got[3]
    assert (bad["status"], bad["error_type"], bad["attempts"]) == ("error", "invalid_request", 0)
    spooled = out.with_name(".out.parquet.stdin.jsonl.gz")
    assert bad["error_message"] == (
        f"{spooled}:4: the line is {len(lines[3]) - 1:,} bytes, more than a whole request "
        "can be (32 MiB, the Messages API's limit): it was not read, and is not sent"
    )
    for got_row, row in zip(got[:3] + got[4:], rows[:3] + rows[4:], strict=True):
        assert got_row["status"] == "ok" and got_row["text"].startswith(reply_tag(row["prompt"]))
    assert sim.stats.snapshot().requests == 5


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"0123456789\nab\n", [b"0123456789\n", b"ab\n"]),  # exactly the cap, then its break
        (b"0123456789A\nab\n", [11, b"ab\n"]),  # one byte past it
        (b"ab\n0123456789", [b"ab\n", b"0123456789"]),  # the last line, no break
        (b"ab\n0123456789A", [b"ab\n", 11]),
        (b"x" * 50 + b"\r\n", [51]),  # a "\r" before the break counts: it is in the line
    ],
)
def test_bounded_lines_cut_at_the_cap(data: bytes, expected: list[bytes | int]) -> None:
    stream = io.BufferedReader(io.BytesIO(data), 4)
    got = [
        line.size if isinstance(line, LongLine) else line for line in bounded_lines(stream, cap=10)
    ]
    assert got == expected
