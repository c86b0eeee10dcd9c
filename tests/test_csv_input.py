"""CSV inputs that used to go wrong quietly or slowly (issue "trust under real use", 11; issue
23: quotes left open, cells past the csv module's limit, the line a record starts on)."""

from __future__ import annotations

import csv
import io
import os
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, reply_tag

from batchrun import run
from batchrun.cli import cli
from batchrun.core.errors import InputError
from batchrun.formats import delimited
from batchrun.formats.inputs import read_rows
from batchrun.simulator import SimulatorThread


def _rows(path: Path) -> list[tuple[int, str, str | None, str | None]]:
    """(line, id, prompt, problem) of each row."""
    return [
        (r.line, r.id, r.fields.get("prompt"), None if r.problem is None else r.problem.what)
        for r in read_rows(path)
    ]


def test_a_quote_left_open_among_quoted_rows_is_an_error_row_not_a_merge(tmp_path: Path) -> None:
    """b's quote is never closed; the csv module took c's opening quote for its end and read
    b and c as one row, with c's text in b's cell (exit 0, nothing said)."""
    path = tmp_path / "in.csv"
    path.write_text(
        'id,prompt\na,"fine"\nb,"never closed\nc,"hello"\nd,"world"\n', encoding="utf-8"
    )
    got = _rows(path)
    assert [(line, row_id, prompt) for line, row_id, prompt, _ in got] == [
        (2, "a", "fine"),
        (3, "b", None),  # not sent: its cells are not used
        (5, "d", "world"),
    ]
    assert [problem is None for *_, problem in got] == [True, False, True]
    problem = got[1][3]
    assert problem is not None
    assert "quoted cell opened on line 3 does not close where a cell can end" in problem
    assert "line 4 has a quote followed by neither ',' nor the line's end" in problem
    assert "lines 3-4 would read as one row: none of them is used" in problem


def test_every_quoted_cell_and_the_same_stray_quote(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        '"id","prompt"\n"a","fine"\n"b","never closed\n"c","hello"\n"d","world"\n',
        encoding="utf-8",
    )
    got = _rows(path)
    assert [(line, row_id, problem is None) for line, row_id, _, problem in got] == [
        (2, "a", True),
        (3, "b", False),
        (5, "d", True),
    ]


def test_a_quote_never_closed_is_its_lines_error_and_the_rest_is_read(tmp_path: Path) -> None:
    """The file ends inside b's quote: nothing closes it, so it cannot be a cell with line
    breaks, and the lines after it are rows (the reader used to stop the whole job)."""
    path = tmp_path / "in.csv"
    path.write_text('id,prompt\na,fine\nb,"never closed\nc,hello\nd,world\n', encoding="utf-8")
    got = _rows(path)
    assert [(line, row_id, prompt) for line, row_id, prompt, _ in got] == [
        (2, "a", "fine"),
        (3, "b", None),
        (4, "c", "hello"),
        (5, "d", "world"),
    ]
    problem = got[1][3]
    assert problem is not None and "quoted cell opened on line 3 is never closed" in problem
    assert [p is None for *_, p in got] == [True, False, True, True]


def test_a_last_line_with_its_quote_open_is_an_error_row(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,prompt\na,x\nb,"open', encoding="utf-8")  # no line break at the end
    got = _rows(path)
    assert [(line, row_id, p is None) for line, row_id, _, p in got] == [
        (2, "a", True),
        (3, "b", False),
    ]


def test_a_closed_cell_with_line_breaks_is_one_cell(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,prompt\na,"two\nlines"\nb,next\n', encoding="utf-8")
    got = [(r.id, r.line, r.fields["prompt"]) for r in read_rows(path)]
    assert got == [("a", 2, "two\nlines"), ("b", 4, "next")]


def test_a_cell_across_lines_with_text_after_its_closing_quote_is_not_used(
    tmp_path: Path,
) -> None:
    """``"two\\nlines"x``: a quote inside the cell not doubled, or a quote left open and the
    next line's quote taken for its end? Both read alike, so neither is guessed."""
    path = tmp_path / "in.csv"
    path.write_text('id,prompt\na,"two\nlines"x\nb,next\n', encoding="utf-8")
    got = _rows(path)
    assert [(line, row_id, p is None) for line, row_id, _, p in got] == [
        (2, "a", False),
        (4, "b", True),
    ]


def test_text_after_a_closing_quote_on_one_line_is_still_read(tmp_path: Path) -> None:
    # Such a record cannot take another row with it: read as the csv module reads it.
    path = tmp_path / "in.csv"
    path.write_text('id,prompt\na,"x"y\nb,z\n', encoding="utf-8")
    assert [(r.id, r.fields["prompt"], r.problem) for r in read_rows(path)] == [
        ("a", "xy", None),
        ("b", "z", None),
    ]


def test_a_broken_header_still_stops_the_file(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,"prompt\na,x\n', encoding="utf-8")
    with pytest.raises(InputError, match="unreadable CSV header: a quoted cell opened on line 1"):
        read_rows(path)


def test_a_csv_cell_of_a_megabyte_is_read(tmp_path: Path) -> None:
    """A 210 KB cell stopped the whole job (the csv module's 131,072-character limit)."""
    path = tmp_path / "in.csv"
    text = "word " * 200_000
    with path.open("w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerows([["id", "prompt"], ["a", text], ["b", "short"]])
    assert [(r.id, r.fields["prompt"], r.problem) for r in read_rows(path)] == [
        ("a", text, None),
        ("b", "short", None),
    ]


FILE = (
    "id,prompt\n"
    'a,"fine"\n'  # 2
    'b,"never closed\n'  # 3: b's quote is left open ...
    'c,"hello"\n'  # 4: ... and c's opening quote read as its end
    'd,"world"\n'  # 5
    'e,"two\nlines"\n'  # 6-7: a cell with a line break, closed
    "f,plain\n"  # 8
    'g,"open to the end\n'  # 9: a quote nothing closes
    "h,plain h\n"  # 10
    "i,plain i\n"  # 11
)


def test_a_whole_run_reads_the_rows_around_broken_quotes(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = tmp_path / "in.csv"
    inp.write_text(FILE, encoding="utf-8")
    out = tmp_path / "out.parquet"
    summary = run(job_config(inp, out, sim.base_url))
    assert summary.exit_code == 3  # rows in error
    got = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert list(got) == ["a", "b", "d", "e", "f", "g", "h", "i"]
    assert [i for i, r in got.items() if r["status"] == "error"] == ["b", "g"]
    assert got["b"]["error_message"].startswith(f"{inp}:3: a quoted cell opened on line 3")
    assert got["g"]["error_message"].startswith(f"{inp}:9: a quoted cell opened on line 9")
    sent = {"a": "fine", "d": "world", "e": "two\nlines", "f": "plain", "h": "plain h"}
    for row_id, prompt in {**sent, "i": "plain i"}.items():  # each answer is to its own prompt
        assert got[row_id]["text"].startswith(reply_tag(prompt)), row_id
    assert sim.stats.snapshot().requests == 6  # nothing merged was sent


def test_validate_names_the_line_each_broken_record_starts_on(tmp_path: Path) -> None:
    inp = tmp_path / "in.csv"
    inp.write_text(FILE, encoding="utf-8")
    args = ["validate", str(inp), "--model", "claude-haiku-4-5", "--max-tokens", "5"]
    result = CliRunner().invoke(cli, args, env={"ANTHROPIC_API_KEY": TEST_KEY})
    assert result.exit_code == 3, result.output
    listed = [line for line in result.output.splitlines() if line.startswith(f"{inp}:")]
    assert [line.split(":")[1] for line in listed[:-1]] == ["3", "9"]
    assert f"{inp}: 8 rows, 6 valid, 2 invalid" in result.output


def test_validate_gives_the_file_line_a_record_starts_on_not_its_number(tmp_path: Path) -> None:
    """A record with a line break in a cell spans lines: the rows after it are further down
    the file than their record number says (validate said 2 here, for line 4)."""
    inp = tmp_path / "in.csv"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows(
        [["id", "prompt", "max_tokens"], ["a", "one\ntwo", "5"], ["b", "x", "ten"], ["c", "y", "5"]]
    )
    inp.write_text(out.getvalue().replace("\nc,", "\n\nc,"), encoding="utf-8")
    # The header is line 1, a spans 2-3, b is 4, a blank line 5, c is 6.
    assert [(r.id, r.line) for r in read_rows(inp)] == [("a", 2), ("b", 4), ("c", 6)]
    args = ["validate", str(inp), "--model", "claude-haiku-4-5"]
    result = CliRunner().invoke(cli, args, env={"ANTHROPIC_API_KEY": TEST_KEY})
    assert result.exit_code == 3, result.output
    assert f"{inp}:4: max_tokens: expected an integer, got 'ten'" in result.output


def test_a_wide_header_is_checked_in_linear_time() -> None:
    """40,000 columns took 20 s (header.count per name); counted once now."""
    header = [f"c{i}" for i in range(200_000)]
    calls = 0

    class Counting(list[str]):
        def count(self, value: str) -> int:  # the quadratic way, if anything still uses it
            nonlocal calls
            calls += 1
            return super().count(value)

    assert delimited._csv_header(iter([Counting(header)]), "in.csv") == header
    assert calls == 0
    with pytest.raises(InputError, match="duplicate column names 'c7'"):
        delimited._csv_header(iter([[*header[:10], "c7"]]), "in.csv")


def _fifo_rows(tmp_path: Path, text: str, cap: int) -> list[tuple[int, str, str | None]]:
    """The rows of ``text`` read from a named pipe (``<(zcat in.csv.gz)``), which can be
    read only once."""
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=(text,), kwargs={"encoding": "utf-8"})
    writer.start()
    try:
        return [
            (r.line, r.id, None if r.problem is None else r.problem.what)
            for r in read_rows(fifo, max_row_bytes=cap)
        ]
    finally:
        writer.join(timeout=60)


def test_the_lines_after_a_quote_never_closed_are_read_again_from_a_pipe(tmp_path: Path) -> None:
    got = _fifo_rows(tmp_path, 'id,prompt\na,x\nb,"open\nc,y\nd,z\n', cap=1 << 20)
    assert [(line, row_id, p is None) for line, row_id, p in got] == [
        (2, "a", True),
        (3, "b", False),
        (4, "c", True),
        (5, "d", True),
    ]


def test_a_pipe_whose_quote_left_open_runs_past_the_cap_says_what_was_lost(
    tmp_path: Path,
) -> None:
    rest = "".join(f"r{i},plain {i}\n" for i in range(2_000))
    got = _fifo_rows(tmp_path, f'id,prompt\na,x\nb,"open\n{rest}', cap=4096)
    assert [(line, row_id) for line, row_id, _ in got] == [(2, "a"), (3, "row-1")]
    assert got[1][2] is not None and got[1][2].endswith(
        "nor are the lines after it, read as part of it: the input cannot be read twice"
    )
