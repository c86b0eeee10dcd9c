"""Mistakes that would fail every row alike are caught once, before anything is written.

No model anywhere, a template column no row has, no prompt and no template: one error with
the fix, exit 2 (a usage error), no output, no journal, not one request. Where the input
cannot tell cheaply (compressed, a misread CSV header, a key that may appear further on),
nothing is said and rows fail one by one as before.
"""

from __future__ import annotations

import gzip
from array import array
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, prompts, write_jsonl

from batchrun import load_config, run
from batchrun.cli import cli
from batchrun.cli.options import flag_names
from batchrun.config.load import RunConfig
from batchrun.core.errors import ConfigError
from batchrun.core.wording import command_line
from batchrun.drivers.preflight import (
    UnbuildableJobError,
    check_every_row_can_be_built,
    scan_for,
)
from batchrun.estimation.estimate import estimate
from batchrun.simulator import SimulatorThread
from batchrun.store.batch_journal import BatchJournal, IntentRows, batch_journal_path
from batchrun.store.sink import journal_path

ENV = {"ANTHROPIC_API_KEY": TEST_KEY}
TITLED = [{"id": f"r{i}", "title": f"Title {i}", "body": f"Body {i}"} for i in range(5)]


def write_input(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` as JSONL, CSV or Parquet, by ``path``'s extension."""
    if path.suffix == ".jsonl":
        return write_jsonl(path, rows)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if path.suffix == ".csv":
        lines = [",".join(columns)]
        lines += [",".join(str(row.get(c, "")) for c in columns) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def config(inp: Path, **flags: Any) -> RunConfig:
    return load_config(inp, {"output": str(inp.with_suffix(".out.parquet")), **flags}, {})


def refusal(cfg: RunConfig) -> str:
    with pytest.raises(UnbuildableJobError) as caught:
        check_every_row_can_be_built(cfg)
    return str(caught.value)


FORMATS = ["in.jsonl", "in.csv", "in.parquet"]


# --- the checks, format by format ------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_no_model_and_no_max_tokens_anywhere_is_one_error_naming_the_flags(
    tmp_path: Path, name: str
) -> None:
    inp = write_input(tmp_path / name, prompts(4))
    message = refusal(config(inp))  # from Python: the keywords
    assert message.count("model=MODEL") == 1 and message.count("max_tokens=N") == 1
    assert "--" not in message and "nothing was sent or written" in message
    with command_line(flag_names()):  # what the batchrun command says
        message = refusal(config(inp))
    assert message.count("--model MODEL") == 1 and message.count("--max-tokens N") == 1
    assert "BATCHRUN_MODEL" in message and "nothing was sent or written" in message
    assert issubclass(UnbuildableJobError, ConfigError) and UnbuildableJobError.exit_code == 2


@pytest.mark.parametrize("name", FORMATS)
def test_a_setting_the_rows_carry_needs_no_default(tmp_path: Path, name: str) -> None:
    rows = [{**row, "model": "claude-haiku-4-5", "max_tokens": 5} for row in prompts(3)]
    check_every_row_can_be_built(config(write_input(tmp_path / name, rows)))


def test_a_jsonl_key_on_a_late_line_counts_as_present(tmp_path: Path) -> None:
    rows = [*prompts(50), {"id": "last", "prompt": "hi", "model": "claude-haiku-4-5"}]
    message = refusal(config(write_jsonl(tmp_path / "in.jsonl", rows)))
    assert "`max_tokens`" in message and "`model`" not in message


def test_the_key_in_text_only_leaves_the_rows_to_fail_one_by_one(tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": "Name a part of a car", "max_tokens": 5, "tag": "model"}]
    check_every_row_can_be_built(config(write_jsonl(tmp_path / "in.jsonl", rows)))


@pytest.mark.parametrize("name", FORMATS)
def test_a_template_column_no_row_has_is_named_with_a_suggestion(tmp_path: Path, name: str) -> None:
    inp = write_input(tmp_path / name, TITLED)
    cfg = config(inp, model="claude-haiku-4-5", max_tokens=5, template="{titel}: {body}")
    message = refusal(cfg)
    assert "template: no column `titel` (did you mean `title`?)" in message
    assert "`body`" not in message


def test_a_template_column_only_later_rows_have_is_left_to_the_rows(tmp_path: Path) -> None:
    rows = [{"id": "a", "title": "x"}, {"id": "b", "title": "y", "extra": "z"}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    cfg = config(inp, model="claude-haiku-4-5", max_tokens=5, template="{title} {extra}")
    check_every_row_can_be_built(cfg)


@pytest.mark.parametrize("name", FORMATS)
def test_rows_with_their_own_prompt_need_not_match_the_template(tmp_path: Path, name: str) -> None:
    inp = write_input(tmp_path / name, prompts(3))
    cfg = config(inp, model="claude-haiku-4-5", max_tokens=5, template="{titel}")
    check_every_row_can_be_built(cfg)


@pytest.mark.parametrize("name", FORMATS)
def test_no_prompt_and_no_template_says_to_pass_one(tmp_path: Path, name: str) -> None:
    inp = write_input(tmp_path / name, TITLED)
    message = refusal(config(inp, model="claude-haiku-4-5", max_tokens=5))
    assert "template='{text}'" in message and "`title`" in message


def test_a_compressed_input_cannot_be_told_and_is_not_refused(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(gzip.compress(b'{"id": "a", "prompt": "hi"}\n'))
    check_every_row_can_be_built(config(inp))


def test_a_csv_header_read_with_the_wrong_delimiter_is_not_trusted(tmp_path: Path) -> None:
    inp = tmp_path / "in.csv"
    inp.write_text("id;prompt;model;max_tokens\n1;hi;claude-haiku-4-5;5\n", encoding="utf-8")
    check_every_row_can_be_built(config(inp))


def test_the_scan_finds_a_key_split_across_two_reads(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": "a", "max_tokens": 5}\n')
    for chunk_size in (1, 3, 7, 64):
        found = scan_for(path, {b'"max_tokens"', b'"model"'}, chunk_size=chunk_size)
        assert found == {b'"max_tokens"'}, chunk_size


# --- through the drivers and the command line -------------------------------------------------


def test_run_stops_before_writing_or_sending_anything(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(200))
    out = tmp_path / "out.parquet"
    cfg = load_config(inp, {"output": str(out), "base_url": sim.base_url, "quiet": True}, ENV)
    with pytest.raises(UnbuildableJobError, match="model=MODEL"):
        run(cfg)
    assert not out.exists() and not journal_path(out).exists()
    assert sim.stats.snapshot().requests == 0


def test_run_on_the_command_line_exits_2_and_says_it_once(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(200))
    out = tmp_path / "out.parquet"
    args = ["run", str(inp), "-o", str(out), "--base-url", sim.base_url, "-q"]
    result = CliRunner().invoke(cli, [*args, "--max-tokens", "5"], env=ENV)
    assert result.exit_code == 2, result.output
    assert result.output.count("--model MODEL") == 1
    assert "invalid_request" not in result.output and "resume" not in result.output
    assert not out.exists() and not journal_path(out).exists()
    assert sim.stats.snapshot().requests == 0


def test_a_template_typo_stops_run_before_sending(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", TITLED)
    out = tmp_path / "out.parquet"
    args = ["run", str(inp), "-o", str(out), "--base-url", sim.base_url, "-q"]
    args += ["--model", "claude-haiku-4-5", "--max-tokens", "5", "--template", "{titel}"]
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 2, result.output
    assert "template: no column `titel` (did you mean `title`?)" in result.output
    assert not out.exists() and sim.stats.snapshot().requests == 0


def test_estimate_exits_2_before_a_pilot_sends_anything(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    out = tmp_path / "out.parquet"
    args = ["estimate", str(inp), "-o", str(out), "--base-url", sim.base_url, "-q"]
    result = CliRunner().invoke(cli, [*args, "--max-tokens", "5", "--pilot", "5"], env=ENV)
    assert result.exit_code == 2, result.output
    assert result.output.count("--model MODEL") == 1 and "to send" not in result.output
    assert not out.exists() and not journal_path(out).exists()
    assert sim.stats.snapshot().requests == 0


def test_estimate_with_no_valid_row_fails_saying_why(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "prompt": "hi", "max_tokens": 0} for i in range(3)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    args = ["estimate", str(inp), "-o", str(tmp_path / "out.parquet"), "--model", "m"]
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 1, result.output
    assert "no row of" in result.output and "any of its 3 rows" in result.output
    assert "in.jsonl:1: max_tokens" in result.output  # the first row's own problem
    assert "$0" not in result.output


def test_estimate_of_a_valid_job_is_not_stopped(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", TITLED)
    cfg = job_config(inp, tmp_path / "out.parquet", sim.base_url, template="{title}: {body}")
    est = estimate(cfg)
    assert (est.rows, est.invalid, est.pending) == (5, 0, 5)


# --- batches list / cancel --simulate -----------------------------------------------------------


def journaled_batch(out: Path, batch_id: str) -> None:
    journal = BatchJournal(batch_journal_path(out))
    rows = IntentRows(array("q", range(3)), ["a", "b", "c"], ["x"] * 3)
    entry = journal.intend(datetime.now(timezone.utc), 300, "h", rows)
    journal.created(entry, batch_id)


@pytest.mark.parametrize("command", ["list", "cancel"])
def test_batches_with_simulate_show_the_journal_without_contacting_anything(
    tmp_path: Path, command: str
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.parquet"
    journaled_batch(out, "msgbatch_sim_0001")
    args = ["batches", command, str(inp), "-o", str(out), "--simulate"]
    result = CliRunner().invoke(cli, args, env={})
    assert result.exit_code == 0, result.output
    assert "msgbatch_sim_0001" in result.output and "3 rows" in result.output
    assert "no server was contacted" in result.output
    assert ("nothing was cancelled" in result.output) == (command == "cancel")


def test_batches_list_with_simulate_and_no_journal(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    args = ["batches", "list", str(inp), "-o", str(tmp_path / "out.parquet"), "--simulate"]
    result = CliRunner().invoke(cli, args, env={})
    assert result.exit_code == 0, result.output
    assert "no batches recorded" in result.output
