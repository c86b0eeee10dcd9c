"""Mistakes that would fail every row alike are caught once, before anything is written.

No model anywhere, a template column no row has, no prompt and no template, no rows at all, a
Parquet column of a type no row could send: one error with the real cause and the fix, exit 2
(a usage error) from run, estimate and validate alike, no output, no journal, not one request.
Where the input cannot tell cheaply (a misread CSV header, a key that may appear further on),
nothing is said and rows fail one by one as before.
"""

from __future__ import annotations

import csv
import gzip
import json
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
from batchrun.estimation.passes import estimate
from batchrun.formats.jsonl import scan_for
from batchrun.runs.preflight import UnbuildableJobError, check_every_row_can_be_built
from batchrun.simulator import SimulatorThread
from batchrun.store.batch_journal import BatchJournal, IntentRows, batch_journal_path
from batchrun.store.sink import journal_path

ENV = {"ANTHROPIC_API_KEY": TEST_KEY}
TITLED = [{"id": f"r{i}", "title": f"Title {i}", "body": f"Body {i}"} for i in range(5)]


def write_input(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` as JSONL, CSV or Parquet, by ``path``'s extension."""
    if path.suffix == ".jsonl":
        return write_jsonl(path, rows)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
        return path
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if path.suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(columns)
            writer.writerows([str(row.get(c, "")) for c in columns] for row in rows)
        return path
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def config(inp: Path, **flags: Any) -> RunConfig:
    return load_config(inp, {"output": str(inp.with_suffix(".out.parquet")), **flags}, {})


def refusal(cfg: RunConfig) -> str:
    with pytest.raises(UnbuildableJobError) as caught:
        check_every_row_can_be_built(cfg)
    return str(caught.value)


FORMATS = ["in.jsonl", "in.json", "in.csv", "in.parquet"]


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
def test_a_template_typo_is_refused_when_the_rows_have_a_prompt_too(
    tmp_path: Path, name: str
) -> None:
    """Issue 23 (2): rows with a prompt went through without the template, so its columns
    were never checked; the template now always applies, and its columns always are."""
    rows = [{**row, "review": "fine"} for row in prompts(3)]
    inp = write_input(tmp_path / name, rows)
    cfg = config(inp, model="claude-haiku-4-5", max_tokens=5, template="Label: {reviw}")
    message = refusal(cfg)
    assert "template: no column `reviw` (did you mean `review`?)" in message
    assert "`prompt`" in message  # and the prompt the template leaves out is named too
    fixed = config(inp, model="claude-haiku-4-5", max_tokens=5, template="{review}: {prompt}")
    check_every_row_can_be_built(fixed)


@pytest.mark.parametrize("name", FORMATS)
def test_rows_with_messages_and_a_job_template_are_refused(tmp_path: Path, name: str) -> None:
    turns = json.dumps([{"role": "user", "content": "hi"}])  # JSON text: every format takes it
    rows = [{"id": f"r{i}", "messages": turns, "title": "t"} for i in range(3)]
    inp = write_input(tmp_path / name, rows)
    message = refusal(config(inp, model="claude-haiku-4-5", max_tokens=5, template="{title}"))
    assert "the input has a `messages` column: the job's template builds each row's user " in (
        message
    )
    # From Python, the template is a keyword: no flag is named (core.wording).
    assert "drop the template to send the rows' messages, or drop messages" in message


@pytest.mark.parametrize("name", FORMATS)
def test_no_prompt_and_no_template_says_to_pass_one(tmp_path: Path, name: str) -> None:
    inp = write_input(tmp_path / name, TITLED)
    message = refusal(config(inp, model="claude-haiku-4-5", max_tokens=5))
    assert "template='{text}'" in message and "`title`" in message


@pytest.mark.parametrize("name", ["in.jsonl.gz", "in.csv.gz", "in.json.gz"])
def test_a_compressed_input_is_told_through_its_codec(tmp_path: Path, name: str) -> None:
    plain = write_input(tmp_path / name.removesuffix(".gz"), TITLED)
    inp = tmp_path / name
    inp.write_bytes(gzip.compress(plain.read_bytes()))
    message = refusal(config(inp, model="claude-haiku-4-5", max_tokens=5, template="{titel}"))
    assert "template: no column `titel` (did you mean `title`?)" in message
    check_every_row_can_be_built(config(inp, model="m", max_tokens=5, template="{title}"))


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


# --- whole-file mistakes: once, with the real cause (issue 23, item 13) -------------------------


def _empty_parquet(path: Path) -> None:
    pq.write_table(
        pa.table({"id": pa.array([], pa.string()), "prompt": pa.array([], pa.string())}), path
    )


NO_ROWS: dict[str, Any] = {
    "in.jsonl": b"",
    "blank.jsonl": b"\n  \n\t\n",
    "in.csv": b"",
    "header.csv": b"id,prompt\n\n",
    "in.json": b"[]",
    "blank.json": b"  \n",
    "blank.jsonl.gz": gzip.compress(b"\n\n"),
    "in.parquet": _empty_parquet,
}


@pytest.mark.parametrize("name", sorted(NO_ROWS))
def test_an_input_with_no_rows_is_refused_as_such(tmp_path: Path, name: str) -> None:
    """It said "no row has `prompt` or `messages` ... use --template" (it has no rows)."""
    inp = tmp_path / name
    content = NO_ROWS[name]
    if callable(content):
        content(inp)
    else:
        inp.write_bytes(content)
    message = refusal(config(inp, model="claude-haiku-4-5", max_tokens=5))
    assert message.startswith(f"{inp} has no rows (it is empty, or holds only blank lines")
    assert "nothing was sent or written" in message and "no row has" not in message


@pytest.mark.parametrize("command", ["run", "validate", "estimate"])
def test_no_rows_exits_2_from_every_command_and_writes_nothing(
    tmp_path: Path, sim: SimulatorThread, command: str
) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n\n", encoding="utf-8")
    out = tmp_path / "out.parquet"
    args = [command, str(inp), "-o", str(out), "--model", "claude-haiku-4-5", "--max-tokens", "5"]
    if command != "validate":
        args += ["--base-url", sim.base_url, "-q"]
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 2, result.output
    assert result.output.count(f"{inp} has no rows") == 1
    assert not out.exists() and not journal_path(out).exists()
    assert sim.stats.snapshot().requests == 0


def _listed_prompts(path: Path, n: int = 200) -> Path:
    rows = {"id": [f"r{i}" for i in range(n)], "prompt": [["a", f"b{i}"] for i in range(n)]}
    pq.write_table(pa.table(rows), path)
    return path


def test_a_parquet_column_of_a_type_no_row_can_send_is_refused_from_the_schema(
    tmp_path: Path,
) -> None:
    """One error naming the column, its type and what it must be, instead of one per row."""
    inp = _listed_prompts(tmp_path / "in.parquet")
    message = refusal(config(inp, model="claude-haiku-4-5", max_tokens=5))
    assert (
        "column `prompt`: expected a string, but the column has type list<element: string>; "
        "convert the column, or rename it if it is not meant as the row's `prompt`"
    ) in message
    assert message.count("\n  - ") == 1
    system = pa.array([None] * 3, pa.null())  # all-None (pandas writes one so): no value to send
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c"], "system": system}), plain)
    check_every_row_can_be_built(config(plain, model="claude-haiku-4-5", max_tokens=5))


@pytest.mark.parametrize("command", ["run", "validate", "estimate"])
def test_a_mistyped_parquet_column_exits_2_once(
    tmp_path: Path, sim: SimulatorThread, command: str
) -> None:
    inp = _listed_prompts(tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = [command, str(inp), "-o", str(out), "--model", "claude-haiku-4-5", "--max-tokens", "5"]
    if command != "validate":
        args += ["--base-url", sim.base_url, "-q"]
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 2, result.output
    assert result.output.count("column `prompt`: expected a string") == 1
    assert "r0" not in result.output and "invalid" not in result.output  # no row by row
    assert not out.exists() and sim.stats.snapshot().requests == 0


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("command", ["run", "validate", "estimate"])
def test_a_template_typo_exits_2_from_every_command_whatever_the_format(
    tmp_path: Path, sim: SimulatorThread, name: str, command: str
) -> None:
    """Issue 23 (2): `--template 'Label: {reviw}'` over rows with a prompt gave 200 ok, and
    validate said 200 valid."""
    rows = [{**row, "review": f"review {i}"} for i, row in enumerate(prompts(20))]
    inp = write_input(tmp_path / name, rows)
    out = tmp_path / "out.parquet"
    args = [command, str(inp), "-o", str(out), "--model", "claude-haiku-4-5", "--max-tokens", "5"]
    args += ["--template", "Label: {reviw} {prompt}"]
    if command != "validate":
        args += ["--base-url", sim.base_url, "-q"]
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 2, result.output
    assert result.output.count("template: no column `reviw` (did you mean `review`?)") == 1
    assert not out.exists() and sim.stats.snapshot().requests == 0
