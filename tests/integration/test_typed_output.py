"""Structured outputs by constrained decoding, answers as typed columns, and kept columns and
ids that keep their types: whole runs against the simulator over loopback.

A ``--json-schema`` job on a model that takes ``output_config.format`` (every model batchrun
knows; Sonnet 5.5 takes no forced tool) is asked so, and its output holds the answer's fields
as ``answer_*`` columns typed from the schema, the kept columns and the id as the input typed
them: in Parquet, and as CSV and JSON lines write them. A resumed run gives the same types.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Literal

import httpx
import pandas
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
import pytest
from click.testing import CliRunner
from support import TEST_KEY, RecordingTransport, against, write_jsonl
from support.openapi import assert_conforms

import batchrun
from batchrun import load_config, run
from batchrun.cli import cli
from batchrun.core.errors import ConfigError
from batchrun.reporting.totals import report
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread

MODEL = "claude-sonnet-5-5"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "score": {"type": "number", "description": "from 0 to 1"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "flagged": {"type": "boolean"},
    },
    "required": ["label", "score", "tags", "flagged"],
    "additionalProperties": False,
}
# The answer's columns, typed from the schema; the kept integer and list, and the integer id.
TYPED = {
    "answer_label": pa.string(),
    "answer_score": pa.float64(),
    "answer_tags": pa.list_(pa.string()),
    "answer_flagged": pa.bool_(),
    "stars": pa.int64(),
    "topics": pa.list_(pa.string()),
    "id": pa.int64(),
}


def reviews(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": 1000 + i, "prompt": f"Review {i}: the mug is {'great' if i % 2 else 'chipped'}",
         "stars": i % 5 + 1, "topics": ["mug", "price"][: i % 3]}
        for i in range(start, start + n)
    ]  # fmt: skip


def job(tmp_path: Path, sim: SimulatorThread, out: Path, **flags: Any) -> Any:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA), encoding="utf-8")
    settings = {
        "output": str(out),
        "model": MODEL,
        "max_tokens": 300,
        "json_schema": str(schema),
        "keep_columns": ["stars", "topics"],
        "base_url": sim.base_url,
        "quiet": True,
        "concurrency": 4,
        **flags,
    }
    return load_config(tmp_path / "in.jsonl", settings, environ={"ANTHROPIC_API_KEY": TEST_KEY})


def test_a_json_schema_job_on_sonnet_5_5_is_asked_by_format_and_typed(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = reviews(10)
    write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    recorder = RecordingTransport()
    summary = run(job(tmp_path, sim, out), runtime=Runtime(transport=recorder))

    assert summary.exit_code == 0 and summary.ok == 10
    # Asked with output_config.format (no forced tool, which Sonnet 5.5 refuses), as the
    # simulator saw it, in a body the API's own schema takes
    assert sim.stats.structured == {"format": 10}
    for body in recorder.bodies:
        assert body["output_config"]["format"] == {"type": "json_schema", "schema": SCHEMA}
        # in the schema's own order: the answer writes its fields in that order
        assert list(body["output_config"]["format"]["schema"]["properties"]) == list(
            SCHEMA["properties"]
        )
        assert "tools" not in body and "tool_choice" not in body
        assert_conforms(body)
    table = pq.read_table(out)
    for name, kind in TYPED.items():
        assert table.schema.field(name).type == kind, name
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    assert table.column("stars").to_pylist() == [r["stars"] for r in rows]
    assert table.column("topics").to_pylist() == [r["topics"] for r in rows]
    for row in table.to_pylist():
        answer = json.loads(row["structured_json"])  # the JSON text stays
        assert row["status"] == "ok"
        assert [row[f"answer_{k}"] for k in SCHEMA["properties"]] == [
            answer[k] for k in SCHEMA["properties"]
        ]
    # The integer ids merge with the user's own frame, row for row
    merged = pandas.DataFrame(rows).merge(pandas.read_parquet(out), on="id")
    assert len(merged) == 10 and list(merged["stars_x"]) == list(merged["stars_y"])
    # The answer's columns come last, after the kept ones
    assert table.column_names[-6:] == [
        "stars",
        "topics",
        *(f"answer_{k}" for k in SCHEMA["properties"]),
    ]


def test_csv_and_json_lines_outputs_of_the_job_read_naturally(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = reviews(6)
    write_jsonl(tmp_path / "in.jsonl", rows)
    run(job(tmp_path, sim, tmp_path / "out.csv"))
    run(job(tmp_path, sim, tmp_path / "out.jsonl"))

    with (tmp_path / "out.csv").open(encoding="utf-8", newline="") as fh:
        lines = fh.read().splitlines()
    cells = list(csv.DictReader(lines))
    assert [c["id"] for c in cells] == [str(r["id"]) for r in rows]
    assert [json.loads(c["answer_tags"]) for c in cells] == [
        json.loads(c["structured_json"])["tags"] for c in cells
    ]
    assert {c["answer_flagged"] for c in cells} <= {"true", "false"}
    assert [c["topics"] for c in cells] == [json.dumps(r["topics"]) for r in rows]
    # numbers are written bare, texts quoted (a null stays an empty unquoted cell)
    first = next(csv.reader(lines[1:2]))
    header = next(csv.reader(lines[:1]))
    raw = lines[1]
    assert f",{first[header.index('stars')]}," in raw and '"stars"' not in raw

    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    assert [r["stars"] for r in records] == [r["stars"] for r in rows]
    assert [r["topics"] for r in records] == [r["topics"] for r in rows]
    for record in records:
        answer = json.loads(record["structured_json"])
        assert record["answer_tags"] == answer["tags"]
        assert isinstance(record["answer_score"], float)
        assert isinstance(record["answer_flagged"], bool)
    # Run again: each output is read back, typed, and nothing is sent twice
    before = sim.stats.requests
    for name in ("out.csv", "out.jsonl"):
        again = run(job(tmp_path, sim, tmp_path / name))
        assert again.exit_code == 0 and again.skipped == 6
    assert sim.stats.requests == before


@pytest.mark.parametrize("name", ["out.parquet", "out.csv", "out.jsonl"])
def test_a_resumed_typed_job_gives_the_same_output(
    tmp_path: Path, sim: SimulatorThread, name: str
) -> None:
    write_jsonl(tmp_path / "in.jsonl", reviews(12))
    whole = tmp_path / f"whole-{name}"
    run(job(tmp_path, sim, whole))
    # Half the job, then the rest: the earlier output is read back and typed again
    write_jsonl(tmp_path / "in.jsonl", reviews(6))
    halves = tmp_path / name
    assert run(job(tmp_path, sim, halves)).exit_code == 0
    write_jsonl(tmp_path / "in.jsonl", reviews(12))
    resumed = run(job(tmp_path, sim, halves))
    assert resumed.exit_code == 0 and resumed.skipped == 6

    def read(path: Path) -> list[dict[str, Any]]:
        if path.suffix == ".parquet":
            return pq.read_table(path).drop_columns(_TIMING).to_pylist()
        if path.suffix == ".jsonl":
            return [_without_timing(json.loads(x)) for x in path.read_text().splitlines()]
        with path.open(encoding="utf-8", newline="") as fh:
            return [_without_timing(r) for r in csv.DictReader(fh)]

    assert read(halves) == read(whole)
    if name.endswith(".parquet"):
        assert pq.read_schema(halves) == pq.read_schema(whole)


def test_a_stopped_typed_job_resumes_to_the_same_types(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    write_jsonl(tmp_path / "in.jsonl", reviews(8))
    out = tmp_path / "out.parquet"
    # The budget stops it after a few rows: a partial output, the rest in its journal
    stopped = run(job(tmp_path, sim, out, max_cost=0.004, concurrency=1))
    assert stopped.exit_code == 4
    partial = pq.read_table(out)
    assert 0 < partial.num_rows < 8
    assert all(partial.schema.field(k).type == v for k, v in TYPED.items())
    done = run(job(tmp_path, sim, out, max_cost=1.0))
    assert done.exit_code == 0
    table = pq.read_table(out)
    assert table.num_rows == 8 and all(table.schema.field(k).type == v for k, v in TYPED.items())
    assert table.slice(0, partial.num_rows).drop_columns(_TIMING).to_pylist() == (
        partial.drop_columns(_TIMING).to_pylist()
    )


def test_shards_of_a_typed_job_merge_into_the_whole_run_s_types(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    write_jsonl(tmp_path / "in.jsonl", reviews(20))
    whole = tmp_path / "whole.parquet"
    assert run(job(tmp_path, sim, whole)).exit_code == 0
    out = tmp_path / "out.parquet"
    config = job(tmp_path, sim, out)
    for index in range(3):
        assert batchrun.run_shard(config, index, 3).exit_code == 0
    counts = batchrun.merge_shards(config)
    assert (counts.rows, counts.ok) == (20, 20)
    assert pq.read_schema(out) == pq.read_schema(whole)
    merged, alone = pq.read_table(out), pq.read_table(whole)
    assert merged.drop_columns(_TIMING).to_pylist() == alone.drop_columns(_TIMING).to_pylist()
    # The merged output is a finished output: a plain run of it reads it back, sends nothing
    sent = sim.stats.requests
    assert run(config).skipped == 20 and sim.stats.requests == sent
    assert pq.read_schema(out) == pq.read_schema(whole)


@pytest.mark.parametrize("how", ["OUTPUT", "INPUT -o OUTPUT"])
def test_merge_from_the_command_line_finds_the_answer_s_schema_in_the_shards(
    tmp_path: Path, sim: SimulatorThread, how: str
) -> None:
    # Neither `batchrun merge OUTPUT` nor `merge INPUT -o OUTPUT` is told the schema: the
    # shards recorded it, and the merged output has the answer's columns all the same.
    write_jsonl(tmp_path / "in.jsonl", reviews(12))
    whole = tmp_path / "whole.parquet"
    assert run(job(tmp_path, sim, whole)).exit_code == 0
    out = tmp_path / "out.parquet"
    config = job(tmp_path, sim, out)
    for index in range(2):
        assert batchrun.run_shard(config, index, 2).exit_code == 0
    args = [str(out)] if how == "OUTPUT" else [str(tmp_path / "in.jsonl"), "-o", str(out)]
    result = CliRunner().invoke(cli, ["merge", *args, "-q"])
    assert result.exit_code == 0, result.output
    assert pq.read_schema(out) == pq.read_schema(whole)
    merged, alone = pq.read_table(out), pq.read_table(whole)
    assert merged.drop_columns(_TIMING).to_pylist() == alone.drop_columns(_TIMING).to_pylist()


def test_twins_get_the_typed_answer_and_the_report_totals_a_typed_output(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = reviews(6) + [{**r, "id": 2000 + i} for i, r in enumerate(reviews(3))]
    write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    summary = run(job(tmp_path, sim, out))
    assert summary.exit_code == 0 and sim.stats.requests == 6  # three rows are twins
    table = pq.read_table(out)
    assert all(table.schema.field(k).type == v for k, v in TYPED.items())
    got = {row["id"]: row for row in table.to_pylist()}
    for i in range(3):
        twin, original = got[2000 + i], got[1000 + i]
        assert twin["duplicate_of"] is not None
        assert [twin[f"answer_{k}"] for k in SCHEMA["properties"]] == [
            original[f"answer_{k}"] for k in SCHEMA["properties"]
        ]
    totals = report([out])
    assert (totals.ok, totals.error) == (9, 0)
    assert totals.cost_usd == pytest.approx(float(pq.read_table(out)["cost_usd"].to_numpy().sum()))


def test_a_typed_job_through_message_batches_gives_the_same_types(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", reviews(8))
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.2)) as bsim:
        online, batched = tmp_path / "online.parquet", tmp_path / "batched.parquet"
        assert run(job(tmp_path, bsim, online)).exit_code == 0
        summary = run(job(tmp_path, bsim, batched, via="batches", poll_interval=0.05))
        assert summary.exit_code == 0 and summary.ok == 8
        assert bsim.stats.snapshot().batch_requests_submitted == 8
    assert pq.read_schema(batched) == pq.read_schema(online)
    answers = [f"answer_{k}" for k in SCHEMA["properties"]]
    got, want = pq.read_table(batched), pq.read_table(online)
    for a, b in zip(got.to_pylist(), want.to_pylist(), strict=True):
        assert [a["id"], *(a[k] for k in answers)] == [b["id"], *(b[k] for k in answers)], (a, b)


def test_error_rows_have_null_answers_and_say_why(tmp_path: Path, sim: SimulatorThread) -> None:
    rows = reviews(3)
    rows[1]["prompt"] += " BATCHRUN_SIMULATE_REFUSAL"
    write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    assert run(job(tmp_path, sim, out)).exit_code == 3
    refused = pq.read_table(out).to_pylist()[1]
    assert (refused["status"], refused["error_type"]) == ("error", "refusal")
    assert refused["error_message"].startswith("the model refused to answer (stop_reason refusal)")
    assert all(refused[f"answer_{k}"] is None for k in SCHEMA["properties"])
    # Cut off at max_tokens: the JSON is incomplete, and said so
    short = tmp_path / "short.parquet"
    write_jsonl(tmp_path / "in.jsonl", reviews(3))
    assert run(job(tmp_path, sim, short, max_tokens=5)).exit_code == 3
    for row in pq.read_table(short).to_pylist():
        assert (row["error_type"], row["stop_reason"]) == ("max_tokens", "max_tokens")
        assert "cut off at max_tokens" in row["error_message"] and row["answer_label"] is None


def test_a_parquet_input_keeps_its_exact_types(tmp_path: Path, sim: SimulatorThread) -> None:
    import datetime
    import decimal

    when = datetime.datetime(2026, 12, 7, 12, 30, tzinfo=datetime.timezone.utc)
    table = pa.table(
        {
            "id": pa.array([7, 8, 9], pa.int32()),
            "prompt": ["a", "b", "c"],
            "day": pa.array([datetime.date(2026, 1, i) for i in (1, 2, 3)], pa.date32()),
            "at": pa.array([when, None, when], pa.timestamp("ms", tz="UTC")),
            "price": pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("-3.5")],
                              pa.decimal128(9, 2)),
            "ratio": pa.array([0.1 + 0.2, None, 1e300]),
            "meta": pa.array([{"k": 1, "v": ["x"]}, None, {"k": 2, "v": []}],
                             pa.struct([("k", pa.int64()), ("v", pa.list_(pa.string()))])),
            "kind": pa.array(["x", "y", "x"]).dictionary_encode(),
            "blob": pa.array([b"\x00", b"ab", None], pa.binary()),
        }
    )  # fmt: skip
    pq.write_table(table, tmp_path / "in.parquet")
    kept = ["day", "at", "price", "ratio", "meta", "kind", "blob"]
    for name in ("out.parquet", "out.jsonl", "out.csv"):
        config = load_config(
            tmp_path / "in.parquet",
            {"output": str(tmp_path / name), "model": "claude-haiku-4-5", "max_tokens": 10,
             "keep_columns": kept, "base_url": sim.base_url, "quiet": True},
            environ={"ANTHROPIC_API_KEY": TEST_KEY},
        )  # fmt: skip
        assert run(config).exit_code == 0
        again = run(config)  # read back typed, and nothing sent again
        assert again.exit_code == 0 and again.skipped == 3
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.field("id").type == pa.int32()
    for name in kept:
        want = table.schema.field(name).type
        if name == "kind":
            want = pa.string()  # a dictionary's values
        if name == "blob":
            want = pa.string()  # bytes have no text that casts back: text, as before
        assert out.schema.field(name).type == want, name
        if name != "blob":
            assert out.column(name).to_pylist() == table.column(name).cast(want).to_pylist()
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [7, 8, 9]
    assert lines[0]["meta"] == {"k": 1, "v": ["x"]} and lines[0]["day"] == "2026-01-01"


_TIMING = ["latency_ms", "elapsed_ms", "finished_at", "request_id", "message_id"]


def _without_timing(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in _TIMING}


def test_the_simulator_answers_what_the_api_refuses_with_its_400(sim: SimulatorThread) -> None:
    open_object = {"type": "object", "properties": {"a": {"type": "string"}}}
    response = httpx.post(
        f"{sim.base_url}/v1/messages",
        headers={"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"},
        json={
            "model": MODEL,
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "json_schema", "schema": open_object}},
        },
    )
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "'additionalProperties' must be explicitly set to false" in error["error"]["message"]


def test_a_schema_the_api_would_refuse_stops_the_job_once_naming_file_and_keyword(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    write_jsonl(tmp_path / "in.jsonl", reviews(3))
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"],
                                       "score": {"type": "number", "minimum": 0}}}  # fmt: skip
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema), encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        ["run", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.parquet"),
         "--model", MODEL, "--max-tokens", "100", "--json-schema", str(path),
         "--base-url", sim.base_url, "-q"],
        env={"ANTHROPIC_API_KEY": TEST_KEY},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"json_schema {path}: `minimum` at /properties/score is not taken" in result.output
    assert "Nothing was sent or written" in result.output
    assert sim.stats.requests == 0 and not (tmp_path / "out.parquet").exists()


def test_a_pydantic_model_gives_the_table_its_field_types(sim: SimulatorThread) -> None:
    class Person(pydantic.BaseModel):
        name: str
        age: int

    class Review(pydantic.BaseModel):
        label: Literal["positive", "negative"]
        score: float
        tags: list[str]
        flagged: bool
        author: Person
        note: str | None = None

    rows = [{"id": 10 + i, "prompt": f"review {i}", "stars": i} for i in range(4)]
    result = batchrun.run(
        rows, schema=Review, keep_columns=["stars"], **against(sim, model=MODEL, max_tokens=300)
    )
    table = result.table
    types = {name: table.schema.field(name).type for name in table.column_names}
    assert types["answer_label"] == pa.string() and types["answer_score"] == pa.float64()
    assert types["answer_tags"] == pa.list_(pa.string()) and types["answer_flagged"] == pa.bool_()
    assert types["answer_author"] == pa.struct([("name", pa.string()), ("age", pa.int64())])
    assert types["answer_note"] == pa.string()
    assert types["id"] == pa.int64() and types["stars"] == pa.int64()
    for row in table.to_pylist():
        review = Review.model_validate_json(row["structured_json"])
        assert row["answer_author"] == review.author.model_dump()
    # An integer id merges with the caller's own frame
    merged = pandas.DataFrame(rows).merge(table.to_pandas(), on="id")
    assert len(merged) == 4


def test_a_schema_given_twice_or_of_the_wrong_kind_is_refused(sim: SimulatorThread) -> None:
    with pytest.raises(ConfigError, match="`schema` or `json_schema`, not both"):
        batchrun.run([{"prompt": "x"}], schema=SCHEMA, json_schema=SCHEMA, **against(sim))
    with pytest.raises(ConfigError, match="not int"):
        batchrun.run([{"prompt": "x"}], schema=5, **against(sim))
