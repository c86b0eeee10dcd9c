"""Messages speak to whoever reads them: the command line names flags (``--max-tokens N``),
Python names keywords (``max_tokens=N``); rows given to ``batchrun.run`` are "the rows given to
run()" and ``rows[i]``, never the temporary file they were staged in.

Each message is checked from both front ends: the ``batchrun`` command as a real process,
and the Python calls a notebook makes (``batchrun.run(rows, ...)``, ``load_config`` then
``run`` or ``estimate``). The rules alone: tests/unit/test_wording.py."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner
from support import TEST_KEY, prompts, python_process, write_jsonl

import batchrun
from batchrun import load_config
from batchrun.cli import cli
from batchrun.core.errors import ConfigError, InputError
from batchrun.core.wording import (
    ROWS_GIVEN,
    on_command_line,
)
from batchrun.runs.preflight import UnbuildableJobError
from batchrun.runs.resume import ResumeMismatchError

MODEL = "claude-haiku-4-5"

ENV = {"ANTHROPIC_API_KEY": TEST_KEY}

TITLED = [{"id": f"r{i}", "title": f"Title {i}", "body": f"Body {i}"} for i in range(3)]

STAGING = tempfile.gettempdir()  # where batchrun.run(rows) stages its rows


def batchrun_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return python_process("-m", "batchrun", *args, env=ENV, cwd=cwd)


def python_refusal(rows: Any, **settings: Any) -> str:
    """What ``batchrun.run(rows, ...)`` raises, as its caller reads it."""
    with pytest.raises(ConfigError) as caught:
        batchrun.run(rows, simulate=True, quiet=True, environ=ENV, **settings)
    return str(caught.value)


def assert_pythonic(message: str) -> None:
    """No flag and no staging path in a message to a Python caller."""
    assert " --" not in message and "(--" not in message and " -o" not in message, message
    assert STAGING not in message and "batchrun-" not in message, message


# --- no model, no max_tokens --------------------------------------------------------------------


def test_no_model_and_no_max_tokens_from_both_front_ends(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    proc = batchrun_cli(
        "run", str(inp), "-o", str(tmp_path / "o.parquet"), "--simulate", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert f"batchrun: error: {inp}: every row would be refused" in proc.stderr
    assert "pass --model MODEL (or set `model` in the job file, or BATCHRUN_MODEL)" in proc.stderr
    assert "pass --max-tokens N (or set `max_tokens` in the job file" in proc.stderr

    message = python_refusal(prompts(3))
    assert message == (
        f"{ROWS_GIVEN}: every row would be refused, so nothing was sent or written:\n"
        "  - `model`: no row has one and the job sets none: pass model=MODEL\n"
        "  - `max_tokens`: no row has one and the job sets none: pass max_tokens=N"
    )
    # A file through load_config: its own path, and the keyword.
    config = load_config(inp, {"model": MODEL, "simulate": True, "quiet": True}, ENV)
    with pytest.raises(UnbuildableJobError) as caught:
        batchrun.run(config)
    assert str(caught.value).startswith(f"{inp}: every row would be refused")
    assert "pass max_tokens=N" in str(caught.value)
    assert_pythonic(str(caught.value).replace(str(inp), "IN"))


# --- a template column the rows lack --------------------------------------------------------------


def test_a_bad_template_column_from_both_front_ends(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", TITLED)
    args = ["--model", MODEL, "--max-tokens", "5", "--template", "{titel}"]
    for command in ("run", "estimate"):
        proc = batchrun_cli(command, str(inp), *args, "--simulate", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"batchrun: error: {inp}: every row would be refused" in proc.stderr
        assert "template: no column `titel` (did you mean `title`?)" in proc.stderr

    settings = {"model": MODEL, "max_tokens": 5, "template": "{titel}"}
    message = python_refusal(TITLED, **settings)
    assert message.startswith(f"{ROWS_GIVEN}: every row would be refused")
    assert "template: no column `titel` (did you mean `title`?)" in message
    assert_pythonic(message)

    no_template = python_refusal(pa.Table.from_pylist(TITLED), model=MODEL, max_tokens=5)
    assert "with a template, e.g. template='{text}' (the input's columns: `body`, " in no_template
    assert_pythonic(no_template)

    with pytest.raises(UnbuildableJobError) as caught:
        batchrun.estimate(load_config(inp, settings, ENV))
    assert "template: no column `titel`" in str(caught.value)


# --- a stop for the budget: a model with no price -----------------------------------------------


def test_a_price_stop_from_both_front_ends(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    # A gateway's own alias (not a Claude id, which is refused before sending) has no price.
    args = ["--model", "gw-unpriced-1", "--max-tokens", "5", "--max-cost", "1", "--simulate"]
    proc = batchrun_cli("run", str(inp), "-o", str(tmp_path / "o.parquet"), *args, cwd=tmp_path)
    assert proc.returncode == 4, proc.stderr
    assert "add a price with --prices FILE, then run again" in proc.stderr

    table = batchrun.run(
        prompts(3),
        model="gw-unpriced-1",
        max_tokens=5,
        max_cost=1,
        simulate=True,
        quiet=True,
        environ=ENV,
    ).table
    stop = batchrun.summary_of(table)["budget_stop"]
    assert "add a price with prices=FILE, then run again" in stop
    assert_pythonic(stop)


# --- rows given from Python: named as the caller holds them ---------------------------------


def test_an_invalid_row_is_named_by_its_index_in_the_rows_given(tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": "hi", "temperature": None}, {"id": "b", "prompt": "x"}]
    rows[1]["temperature"] = 9
    for given in (rows, pa.Table.from_pylist(rows)):  # staged as JSON lines, and as Parquet
        table = batchrun.run(
            given, model=MODEL, max_tokens=5, simulate=True, quiet=True, environ=ENV
        ).table
        message = table.to_pylist()[1]["error_message"]
        assert message.startswith("rows[1]: temperature: must be"), message
        assert_pythonic(message)


def test_a_refused_resume_names_the_rows_given_and_the_keywords(tmp_path: Path) -> None:
    out = str(tmp_path / "labels.parquet")
    settings: dict[str, Any] = {"model": MODEL, "max_tokens": 5, "output": out}
    batchrun.run(prompts(3), simulate=True, quiet=True, environ=ENV, **settings)
    with pytest.raises(ResumeMismatchError) as caught:
        batchrun.run(prompts(2), simulate=True, quiet=True, environ=ENV, **settings)
    message = str(caught.value)
    assert f"{out} holds 3 rows but {ROWS_GIVEN} now has only 2" in message
    assert "use overwrite=True to start afresh, or write to a new output (output=OUT)" in message
    assert_pythonic(message.replace(out, "OUT"))


# --- the command line does not change how Python is spoken to -------------------------------


def test_a_command_run_in_process_leaves_python_spoken_to_as_python(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.csv", [])
    inp.write_text("id;prompt\n1;hi\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["validate", str(inp), "--model", MODEL, "--max-tokens", "5"], env=ENV
    )
    assert result.exit_code == 1, result.output
    assert "Read it with --csv-delimiter ';' (`csv_delimiter` in a job file)" in result.output
    assert not on_command_line()
    with pytest.raises(InputError) as caught:
        batchrun.validate(load_config(inp, {"model": MODEL, "max_tokens": 5}, ENV))
    assert str(caught.value).endswith("Read it with csv_delimiter=';'")
