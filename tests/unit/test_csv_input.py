"""CSV inputs that used to go wrong quietly or slowly (issue "trust under real use", 11; issue
23: quotes left open, cells past the csv module's limit, the line a record starts on)."""

from __future__ import annotations

import csv
import os
import threading
from pathlib import Path

import pytest

from batchrun.core.errors import InputError
from batchrun.formats import delimited
from batchrun.formats.inputs import read_rows


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
