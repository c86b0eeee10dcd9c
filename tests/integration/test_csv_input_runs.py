"""Broken CSV quotes in whole runs and in ``batchrun validate``: the rows around them are read,
each broken record named by the file line it starts on (the reader alone:
tests/unit/test_csv_input.py)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner
from support import TEST_KEY, job_config, reply_tag

from batchrun import run
from batchrun.cli import cli
from batchrun.formats.inputs import read_rows
from batchrun.simulator import SimulatorThread

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
