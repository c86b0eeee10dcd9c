"""Tools and structured output: tool_calls_json, --json-schema, schema_mismatch rows.

The pure parts (the schema's checks for output_config.format, the answer's types, the way a
model is asked) are tests/unit/test_structured_schema.py's; the typed columns of a run's
output are tests/integration/test_typed_output.py's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, RecordingTransport, write_jsonl
from test_conformance import assert_conforms

from batchrun import load_config, run
from batchrun.cli import cli
from batchrun.core.errors import ConfigError
from batchrun.rows.structured import (
    TOOL_NAME,
    load_schema,
    structured_answer,
)
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorThread
from batchrun.store.columns import COLUMN_NAMES

ROOT = Path(__file__).resolve().parents[2]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["pos", "neg"]}, "n": {"type": "integer"}},
    "required": ["label"],
}


def message(tool_input: Any, name: str = TOOL_NAME) -> dict[str, Any]:
    block = {"type": "tool_use", "id": "toolu_1", "name": name, "input": tool_input}
    return {"content": [block], "stop_reason": "tool_use"}


def test_a_fitting_answer_is_its_compact_json() -> None:
    assert structured_answer(message({"label": "pos", "n": 2}), SCHEMA) == (
        '{"label":"pos","n":2}',
        None,
        None,
    )


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (message({"label": "maybe"}), "at label: 'maybe' is not one of"),
        (message({"n": 1}), "at (root): 'label' is a required property"),
        (message({"label": "pos", "n": "2"}), "at n: '2' is not of type 'integer'"),
        (message({"label": "pos"}, name="other"), "no record_output call (stop_reason tool_use)"),
    ],
)
def test_answers_that_do_not_fit_say_why(reply: dict[str, Any], reason: str) -> None:
    answer, error_type, why = structured_answer(reply, SCHEMA)
    assert answer is None and error_type == "schema_mismatch"
    assert why is not None and reason in why


def test_schema_files_are_checked_once(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(SCHEMA), encoding="utf-8")
    assert load_schema(path) == SCHEMA
    for text, reason in (
        ("{", "not valid JSON"),
        ('{"type": "string"}', '"type": "object"'),
        ('{"type": "object", "required": 5}', "not a valid JSON Schema"),
    ):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=reason):
            load_schema(path)
    with pytest.raises(ConfigError, match="not found"):
        load_schema(tmp_path / "missing.json")


def test_the_job_key_asks_every_request_for_the_schema(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    job = tmp_path / "job.toml"
    job.write_text(f'input = "{inp.name}"\njson_schema = "s.json"\n', encoding="utf-8")
    config = load_config(job, {"model": "m", "max_tokens": 50}, environ={})
    assert config.engine.json_schema == SCHEMA
    structured = config.defaults.structured
    assert structured is not None and structured.schema == SCHEMA
    # output_config.format wants every object closed: added, as the schema lists its keys
    assert structured.format == {**SCHEMA, "additionalProperties": False}
    assert config.defaults.tools is None and config.defaults.tool_choice is None
    with pytest.raises(ConfigError, match="drop `tools`"):
        load_config(job, {"model": "m", "max_tokens": 50, "tools": [{"name": "t"}]}, environ={})


def test_structured_json_sits_after_tool_calls() -> None:
    i = COLUMN_NAMES.index("structured_json")
    assert COLUMN_NAMES[i - 1] == "tool_calls_json" and COLUMN_NAMES[i + 1] == "input_tokens"


def test_row_tools_land_in_tool_calls_json(tmp_path: Path, sim: SimulatorThread) -> None:
    tool = {
        "name": "lookup",
        "input_schema": {
            "type": "object",
            "required": ["q"],
            "properties": {"q": {"type": "string"}},
        },
    }
    rows = [
        {"id": "forced", "prompt": "Look it up", "tools": [tool],
         "tool_choice": {"type": "tool", "name": "lookup"}},
        {"id": "free", "prompt": "Just talk", "tools": json.dumps([tool])},
    ]  # fmt: skip
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    settings = {"output": str(out), "model": "claude-haiku-4-5", "max_tokens": 50,
                "base_url": sim.base_url, "quiet": True}  # fmt: skip
    recorder = RecordingTransport()
    summary = run(
        load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY}),
        runtime=Runtime(transport=recorder),
    )
    assert summary.exit_code == 0
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    calls = json.loads(got[0]["tool_calls_json"])
    assert [set(c) for c in calls] == [{"id", "name", "input"}]
    assert calls[0]["name"] == "lookup" and calls[0]["input"] == {"q": "sim"}
    assert calls[0]["id"].startswith("toolu_") and got[0]["stop_reason"] == "tool_use"
    assert got[1]["tool_calls_json"] is None and got[1]["stop_reason"] != "tool_use"
    assert got[0]["structured_json"] is None  # only --json-schema fills it
    for body in recorder.bodies:
        assert_conforms(body)


def test_a_structured_run_fills_structured_json_or_says_why(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    # The simulator answers a schema's enum values and ignores `pattern`: the second schema
    # therefore gets answers that break it, which must become schema_mismatch rows, more of
    # them than the fail-fast limit: answers that break the schema do not stop a run.
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"review {i}"} for i in range(7)])
    strict = {**SCHEMA, "properties": {"label": {"type": "string", "pattern": "^[0-9]+$"}}}
    for name, schema in (("ok", SCHEMA), ("strict", strict)):
        (tmp_path / f"{name}.json").write_text(json.dumps(schema), encoding="utf-8")
    outs = {}
    for name in ("ok", "strict"):
        out = tmp_path / f"{name}.parquet"
        settings = {"output": str(out), "model": "claude-haiku-4-5", "max_tokens": 50,
                    "json_schema": str(tmp_path / f"{name}.json"),
                    "base_url": sim.base_url, "quiet": True}  # fmt: skip
        summary = run(load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY}))
        outs[name] = (summary, out)
    ok_summary, ok_out = outs["ok"]
    assert ok_summary.exit_code == 0
    for row in pq.read_table(ok_out).to_pylist():
        answer = json.loads(row["structured_json"])
        assert answer["label"] in ("pos", "neg") and isinstance(answer["n"], int)
        assert row["status"] == "ok" and row["error_type"] is None
        assert (row["answer_label"], row["answer_n"]) == (answer["label"], answer["n"])
    strict_summary, strict_out = outs["strict"]
    assert strict_summary.exit_code == 3
    for row in pq.read_table(strict_out).to_pylist():
        assert row["status"] == "error" and row["error_type"] == "schema_mismatch"
        assert "does not match '^[0-9]+$'" in row["error_message"]
        assert row["structured_json"] is None and row["text"]  # the reply is kept
        assert row["answer_label"] is None  # an error row's answer columns are null
        assert row["output_tokens"] > 0 and row["cost_usd"] is not None  # and was paid for


def test_the_sample_structured_job_runs_from_the_cli(tmp_path: Path, sim: SimulatorThread) -> None:
    out = tmp_path / "labels.jsonl"
    result = CliRunner().invoke(
        cli,
        ["run", str(ROOT / "jobs" / "label_structured.toml"), "-o", str(out),
         "--base-url", sim.base_url, "-q"],
        env={"ANTHROPIC_API_KEY": TEST_KEY},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 200
    sentiments = {json.loads(r["structured_json"])["sentiment"] for r in rows}
    assert sentiments <= {"positive", "negative", "neutral"} and len(sentiments) > 1
    assert all(r["answer_sentiment"] == json.loads(r["structured_json"])["sentiment"] for r in rows)
