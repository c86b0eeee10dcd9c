"""What is sent is what was asked (issue 23, items 2 and 3).

A job's template builds every row's user message, in every input format and from Python,
with a row's ``prompt`` one of its columns; what it would leave unsent is refused before
sending. ``system`` and ``template`` take ``@FILE`` as the JSON settings do: the file's text
is sent, never the name; ``@@`` sends a leading ``@``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, RecordingTransport, job_config, reply_tag, write_jsonl

import batchrun
from batchrun import load_config, run
from batchrun.cli import cli
from batchrun.config.atfile import AtFileError
from batchrun.runs.preflight import UnbuildableJobError
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorThread

MODEL = "claude-haiku-4-5"
ENV = {"ANTHROPIC_API_KEY": TEST_KEY}
REVIEWS = [
    {"id": f"r{i}", "prompt": text}
    for i, text in enumerate(["Loved it.", "Broke in a day.", "It is a chair.", "Fine, I guess."])
]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` as JSON lines, a JSON array, CSV or Parquet, by ``path``'s extension."""
    if path.suffix == ".jsonl":
        return write_jsonl(path, rows)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif path.suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def sent_prompts(recorder: RecordingTransport) -> list[Any]:
    return sorted(body["messages"][0]["content"] for body in recorder.bodies)


# --- the template applies whenever it is given ---------------------------------------------------


@pytest.mark.parametrize("name", ["in.jsonl", "in.json", "in.csv", "in.parquet"])
def test_a_template_applies_to_rows_with_a_prompt_in_every_format(
    tmp_path: Path, sim: SimulatorThread, name: str
) -> None:
    """Issue 23 (2): `--template 'Classify: {prompt}'` was ignored for rows with a prompt
    (input tokens identical with and without it)."""
    inp = write_rows(tmp_path / name, REVIEWS)
    out = tmp_path / "out.jsonl"
    recorder = RecordingTransport()
    summary = run(
        job_config(inp, out, sim.base_url, template="Classify: {prompt}"),
        runtime=Runtime(transport=recorder),
    )
    assert summary.exit_code == 0
    assert sent_prompts(recorder) == sorted(f"Classify: {row['prompt']}" for row in REVIEWS)
    answers = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    # Each answer belongs to the templated prompt.
    for row, answer in zip(REVIEWS, answers, strict=True):
        assert answer["text"].startswith(reply_tag(f"Classify: {row['prompt']}"))


@pytest.mark.parametrize("as_table", [False, True])
def test_the_python_api_applies_the_template_to_a_prompt_column(
    sim: SimulatorThread, as_table: bool
) -> None:
    rows: Any = pa.Table.from_pylist(REVIEWS) if as_table else REVIEWS
    recorder = RecordingTransport()
    table = batchrun.run(
        rows,
        model=MODEL,
        max_tokens=5,
        template="Classify: {prompt}",
        base_url=sim.base_url,
        environ=ENV,
        quiet=True,
        runtime=Runtime(transport=recorder),
    ).table
    assert table.column("status").to_pylist() == ["ok"] * len(REVIEWS)
    assert sent_prompts(recorder) == sorted(f"Classify: {row['prompt']}" for row in REVIEWS)


def test_the_python_api_refuses_a_template_column_no_row_has(sim: SimulatorThread) -> None:
    rows = [{**row, "review": "x"} for row in REVIEWS]
    with pytest.raises(UnbuildableJobError, match=r"no column `reviw` \(did you mean `review`\?\)"):
        batchrun.run(
            rows,
            model=MODEL,
            max_tokens=5,
            template="Label: {reviw} {prompt}",
            base_url=sim.base_url,
            environ=ENV,
            quiet=True,
        )
    assert sim.stats.snapshot().requests == 0


def test_a_prompt_the_template_leaves_out_stops_the_run(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    """The template always builds the message: a prompt column it does not use would be
    dropped without a word, so the job is refused, naming the fix."""
    inp = write_rows(tmp_path / "in.csv", [{**row, "review": "ok"} for row in REVIEWS])
    args = ["run", str(inp), "-o", str(tmp_path / "out.parquet"), "--base-url", sim.base_url]
    args += ["--model", MODEL, "--max-tokens", "5", "--template", "Label: {review}", "-q"]
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 2, result.output
    assert (
        "the input has a `prompt` column: the job's template builds each row's user message "
        "and does not use prompt, which would not be sent: put {prompt} in the template where "
        "it belongs (e.g. 'Classify: {prompt}'), or rename the column"
    ) in result.output
    assert sim.stats.snapshot().requests == 0


def test_rows_the_preflight_cannot_see_are_refused_one_by_one(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    """A later row with messages, under a job template: that row's error, the rest sent."""
    rows: list[dict[str, Any]] = [{"id": "a", "title": "One"}, {"id": "b", "title": "Two"}]
    rows.append({"id": "c", "messages": [{"role": "user", "content": "hi"}]})
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    summary = run(job_config(inp, out, sim.base_url, template="About {title}"))
    assert summary.exit_code == 3
    got = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert got["a"]["status"] == got["b"]["status"] == "ok"
    assert got["c"]["error_type"] == "invalid_request"
    assert (
        "messages: the job's template builds each row's user message" in (got["c"]["error_message"])
    )


# --- @FILE for the text settings -----------------------------------------------------------------


def test_system_and_template_read_from_files_given_as_flags(
    tmp_path: Path, sim: SimulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23 (3): `--system @prompt.txt` sent the text "@prompt.txt". Flag values are
    relative to the working directory, as every path flag is."""
    monkeypatch.chdir(tmp_path)
    system = "Answer positive, negative or neutral.\nOne word only.\n"
    (tmp_path / "prompt.txt").write_text(system, encoding="utf-8")
    (tmp_path / "template.txt").write_text("Review: {prompt}\n\nLabel:", encoding="utf-8")
    inp = write_jsonl(tmp_path / "in.jsonl", REVIEWS)
    recorder = RecordingTransport()
    flags = {"system": "@prompt.txt", "template": "@template.txt"}
    summary = run(
        job_config(inp, tmp_path / "out.jsonl", sim.base_url, **flags),
        runtime=Runtime(transport=recorder),
    )
    assert summary.exit_code == 0
    assert {body["system"] for body in recorder.bodies} == {system}
    assert sent_prompts(recorder) == sorted(f"Review: {r['prompt']}\n\nLabel:" for r in REVIEWS)


def test_a_job_files_text_files_are_relative_to_the_job_file(
    tmp_path: Path, sim: SimulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = tmp_path / "jobs"
    (jobs / "prompts").mkdir(parents=True)
    (jobs / "prompts" / "system.txt").write_text("Be terse, «précis».", encoding="utf-8")
    write_jsonl(jobs / "in.jsonl", REVIEWS)
    job = jobs / "label.toml"
    job.write_text(
        'input = "in.jsonl"\noutput = "out.jsonl"\nsystem = "@prompts/system.txt"\n'
        'template = "@@{prompt}"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # elsewhere: the job file's folder is what counts
    recorder = RecordingTransport()
    settings = {"model": MODEL, "max_tokens": 5, "base_url": sim.base_url, "quiet": True}
    summary = run(load_config(job, settings, ENV), runtime=Runtime(transport=recorder))
    assert summary.exit_code == 0
    assert {body["system"] for body in recorder.bodies} == {"Be terse, «précis»."}
    assert sent_prompts(recorder) == sorted(f"@{row['prompt']}" for row in REVIEWS)  # @@: one @


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (
            None,
            "cannot read prompt.tx ({folder}/prompt.tx): no such file (did you mean `prompt.txt`?)",
        ),
        (b"\xff\xfeoops", "not UTF-8 text (byte 0xff at offset 0); save it as UTF-8"),
    ],
)
def test_a_text_file_that_cannot_be_read_is_refused_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: bytes | None, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompt.txt").write_text("x", encoding="utf-8")
    if write is not None:
        (tmp_path / "prompt.tx").write_bytes(write)
    inp = write_jsonl(tmp_path / "in.jsonl", REVIEWS)
    with pytest.raises(AtFileError) as caught:
        load_config(inp, {"system": "@prompt.tx"}, {})
    text = str(caught.value)
    assert text.startswith("`system` = '@prompt.tx': ")
    assert message.format(folder=tmp_path) in text
    assert "to send text that starts with @, write @@ ('@@prompt.tx' sends '@prompt.tx')" in text


def test_on_the_command_line_a_missing_text_file_stops_before_anything(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", REVIEWS)
    out = tmp_path / "out.parquet"
    args = ["run", str(inp), "-o", str(out), "--base-url", sim.base_url, "-q"]
    args += ["--model", MODEL, "--max-tokens", "5", "--system", "@nowhere.txt"]
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 1, result.output
    assert "batchrun: error: `system` = '@nowhere.txt': cannot read nowhere.txt" in result.output
    assert not out.exists() and sim.stats.snapshot().requests == 0


def test_the_json_settings_read_their_files_with_the_same_reader(tmp_path: Path) -> None:
    """One mechanism: a JSON flag's file that is not UTF-8 is told as a text setting's is."""
    inp = write_jsonl(tmp_path / "in.jsonl", REVIEWS)
    tools = tmp_path / "tools.json"
    tools.write_bytes(b'\xef\xbb\xbf[{"name": "t", "input_schema": {"type": "object"}}]')
    args = ["validate", str(inp), "--model", MODEL, "--max-tokens", "5", "--tools", f"@{tools}"]
    assert CliRunner().invoke(cli, args).exit_code == 0  # a byte-order mark is no part of it
    tools.write_bytes(b"[\xff]")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert f"cannot read {tools}: not UTF-8 text (byte 0xff at offset 1)" in result.output
