"""``batchrun.run(rows, ...)`` from Python: rows in memory in, the output as a pyarrow Table out.

Whole runs against the simulator over loopback (the ``sim`` fixture, a test key through
``environ=``), or the in-process one (``simulate=True``); each input type; a real running
event loop, as in Jupyter; resuming through ``output=``; the README's example, run as given.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from support import (
    RecordingTransport,
    against,
    assert_answers,
    questions,
)

import batchrun
from batchrun.public.frames import SUMMARY_KEY
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorThread
from batchrun.store.resume import read_state
from batchrun.store.sink import journal_path, output_schema

MODEL = "claude-haiku-4-5"

# Columns that differ between two runs of the same rows.
_TIMING = ["latency_ms", "elapsed_ms", "finished_at", "request_id", "message_id"]


# --- what comes back ----------------------------------------------------------------------------


def _typed_schema(**kept: pa.DataType) -> pa.Schema:
    """The output's schema with ``kept`` columns of these types (``store.typed``)."""
    schema = output_schema(list(kept))
    for name, kind in kept.items():
        schema = schema.set(schema.get_field_index(name), pa.field(name, kind))
    return schema


def test_rows_come_back_as_a_table_with_the_file_schema_and_the_summary(
    sim: SimulatorThread,
) -> None:
    rows = questions(12)
    table = batchrun.run(rows, **against(sim, keep_columns=["n"])).table

    # The kept column keeps its type: the rows' integers (store.typed)
    assert table.schema.remove_metadata() == _typed_schema(n=pa.int64())
    assert_answers(table, rows)
    assert table.column("n").to_pylist() == list(range(12))
    # The summary is run --json's object (one shape: RunResult.to_dict, summary_of, --json).
    summary = batchrun.summary_of(table)
    assert summary["rows"]["ok"] == summary["rows"]["input"] == 12
    assert summary["rows"]["error"] == summary["rows"]["skipped"] == 0
    assert summary["outcome"] == "complete" and summary["exit_code"] == 0
    assert summary["cost_usd"] == pytest.approx(sum(table.column("cost_usd").to_pylist()))
    assert summary["tokens"]["input"] == sum(table.column("input_tokens").to_pylist())
    assert summary["output_rows"] == {"rows": 12, "ok": 12, "error": 0, "of": None}
    assert summary["output"] is None  # the output was temporary
    assert summary["input"] == "the rows given to run()"


def test_a_row_the_api_would_refuse_is_an_error_row_not_an_exception() -> None:
    rows = [{"prompt": "fine"}, {"prompt": "too hot", "temperature": 3}]
    table = batchrun.run(rows, model=MODEL, max_tokens=10, simulate=True, quiet=True).table

    assert table.column("status").to_pylist() == ["ok", "error"]
    assert table.column("error_type").to_pylist() == [None, "invalid_request"]
    assert "temperature" in table.column("error_message")[1].as_py()
    summary = batchrun.summary_of(table)
    assert (summary["rows"]["ok"], summary["rows"]["error"], summary["exit_code"]) == (1, 1, 3)


@pytest.mark.slow
def test_rows_go_through_message_batches_with_via_batches() -> None:
    rows = questions(4)
    table = batchrun.run(
        rows, model=MODEL, max_tokens=20, simulate=True, quiet=True, via="batches"
    ).table

    assert_answers(table, rows)
    assert set(table.column("via").to_pylist()) == {"batches"}
    summary = batchrun.summary_of(table)
    created = summary["batches"]["created"]
    assert (summary["via"], created, summary["outcome"]) == ("batches", 1, "complete")


def test_the_summary_is_json_in_the_schema_metadata() -> None:
    table = batchrun.run(
        [{"prompt": "hi"}], model=MODEL, max_tokens=5, simulate=True, quiet=True
    ).table
    assert SUMMARY_KEY == b"batchrun.summary"
    assert b'"exit_code": 0' in table.schema.metadata[SUMMARY_KEY]


# --- each input type ----------------------------------------------------------------------------


def _pandas(rows: list[dict[str, Any]]) -> object:
    pd = pytest.importorskip("pandas")
    return pd.DataFrame(rows)


def _polars(rows: list[dict[str, Any]]) -> object:
    pl = pytest.importorskip("polars")
    return pl.DataFrame(rows)


def _polars_lazy(rows: list[dict[str, Any]]) -> object:
    pl = pytest.importorskip("polars")
    return pl.DataFrame(rows).lazy()


def _dataset(rows: list[dict[str, Any]]) -> object:
    datasets = pytest.importorskip("datasets")
    return datasets.Dataset.from_list(rows)


def _iterable_dataset(rows: list[dict[str, Any]]) -> object:
    datasets = pytest.importorskip("datasets")
    return datasets.Dataset.from_list(rows).to_iterable_dataset()


def _reader(rows: list[dict[str, Any]]) -> object:
    table = pa.Table.from_pylist(rows)
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=3))


def _generator(rows: list[dict[str, Any]]) -> object:
    return (dict(row) for row in rows)


KINDS: dict[str, Callable[[list[dict[str, Any]]], object]] = {
    "list": list,
    "generator": _generator,
    "pyarrow-table": pa.Table.from_pylist,
    "pyarrow-reader": _reader,
    "pandas": _pandas,
    "polars": _polars,
    "polars-lazy": _polars_lazy,
    "datasets": _dataset,
    "datasets-iterable": _iterable_dataset,
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_input_type_gives_the_same_table(sim: SimulatorThread, kind: str) -> None:
    rows = questions(10)
    table = batchrun.run(KINDS[kind](rows), **against(sim, keep_columns=["n"])).table

    assert table.schema.remove_metadata() == _typed_schema(n=pa.int64())
    assert_answers(table, rows)
    assert table.column("n").to_pylist() == list(range(10))


def test_a_dataset_runs_in_its_own_order_after_a_shuffle(sim: SimulatorThread) -> None:
    datasets = pytest.importorskip("datasets")
    rows = questions(8)
    shuffled = datasets.Dataset.from_list(rows).shuffle(seed=3)

    table = batchrun.run(shuffled, **against(sim)).table

    order = shuffled["id"]
    assert order != [row["id"] for row in rows]  # the shuffle moved rows
    assert_answers(table, sorted(rows, key=lambda row: order.index(row["id"])))


def test_a_dataframe_with_messages_as_json_text_reads_as_a_parquet_file_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pd = pytest.importorskip("pandas")
    monkeypatch.chdir(tmp_path)  # rows with `messages` may name files: they resolve here
    frame = pd.DataFrame(
        {
            "id": ["a", "b"],
            "messages": [
                '[{"role": "user", "content": "Hello"}]',
                '[{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]',
            ],
        }
    )
    table = batchrun.run(frame, model=MODEL, max_tokens=10, simulate=True, quiet=True).table
    assert table.column("status").to_pylist() == ["ok", "ok"]


def test_notebook_values_become_json_and_nan_is_missing() -> None:
    np = pytest.importorskip("numpy")
    rows = [
        {
            "prompt": "hi",
            "day": datetime.date(2024, 1, 2),
            "price": decimal.Decimal("1.10"),
            "count": np.int64(3),
            "score": float("nan"),
            "tags": ("a", "b"),
            "where": Path("a/b.txt"),
        }
    ]
    kept = ["day", "price", "count", "score", "tags", "where"]
    table = batchrun.run(
        rows, model=MODEL, max_tokens=5, simulate=True, quiet=True, keep_columns=kept
    ).table
    # As JSON has them: dates, decimals and paths as text, numbers as numbers, NaN missing
    assert table.select(kept).to_pylist() == [
        {
            "day": "2024-01-02",
            "price": "1.10",
            "count": 3,
            "score": None,
            "tags": ["a", "b"],
            "where": "a/b.txt",
        }
    ]


def test_the_job_settings_shape_the_requests(sim: SimulatorThread) -> None:
    sent = RecordingTransport()
    rows = [{"id": "a", "topic": "tea"}, {"id": "b", "topic": "rain"}]
    table = batchrun.run(
        rows,
        **against(sim, max_tokens=7, concurrency=1),
        system="Be brief.",
        template="One line on {topic}.",
        temperature=0.5,
        runtime=Runtime(transport=sent),
    ).table
    assert table.column("status").to_pylist() == ["ok", "ok"]
    assert [body["messages"][0]["content"] for body in sent.bodies] == [
        "One line on tea.",
        "One line on rain.",
    ]
    assert {(b["system"], b["max_tokens"], b["temperature"]) for b in sent.bodies} == {
        ("Be brief.", 7, 0.5)
    }


def test_a_json_schema_may_be_given_as_a_dict() -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    table = batchrun.run(
        [{"prompt": "label it"}], model=MODEL, max_tokens=200, simulate=True, quiet=True,
        json_schema=schema,
    ).table  # fmt: skip
    assert table.column("status").to_pylist() == ["ok"]
    assert table.column("structured_json")[0].as_py() is not None


def test_file_columns_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.txt").write_text("Plain text to summarize.\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # a notebook's folder
    rows = [{"id": "n", "document": "notes.txt", "prompt": "Summarize."}]

    table = batchrun.run(rows, model=MODEL, max_tokens=10, simulate=True, quiet=True).table
    assert table.column("status").to_pylist() == ["ok"]

    (tmp_path / "media").mkdir()
    elsewhere = batchrun.run(
        rows, model=MODEL, max_tokens=10, simulate=True, quiet=True, media_root="media"
    ).table
    assert elsewhere.column("error_type").to_pylist() == ["invalid_request"]
    assert "notes.txt" in elsewhere.column("error_message")[0].as_py()


# --- the RunConfig form, unchanged -------------------------------------------------------------


def test_a_run_config_returns_the_same_result_type(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "hi"}\n', encoding="utf-8")
    config = batchrun.load_config(
        source, {"output": str(tmp_path / "out.parquet"), "model": MODEL, "max_tokens": 5,
                 "simulate": True, "quiet": True},
    )  # fmt: skip
    result = batchrun.run(config)  # the one result type, whatever run was given
    assert isinstance(result, batchrun.RunResult) and isinstance(
        result.summary, batchrun.RunSummary
    )
    assert result.final == batchrun.FinalCounts(rows=1, ok=1, error=0) and result.exit_code == 0
    assert result.table.column("status").to_pylist() == ["ok"]  # read from the output file
    assert result.to_dict()["output"] == str(tmp_path / "out.parquet")
    again = asyncio.run(batchrun.run_async(config))
    assert isinstance(again, batchrun.RunResult) and again.skipped == 1


# --- inside a running event loop (Jupyter) -----------------------------------------------------


def test_run_and_run_async_inside_a_running_event_loop(sim: SimulatorThread) -> None:
    rows = questions(6)
    threads: list[str] = []

    async def main() -> tuple[pa.Table, pa.Table]:
        threads.append(threading.current_thread().name)
        # As a notebook cell does: a plain call while the loop runs, then an await.
        blocking = batchrun.run(rows, **against(sim)).table
        awaited = (await batchrun.run_async(rows, **against(sim))).table
        return blocking, awaited

    blocking, awaited = asyncio.run(main())
    assert threads == ["MainThread"]
    assert_answers(blocking, rows)
    assert_answers(awaited, rows)
    assert blocking.drop_columns(_TIMING).equals(awaited.drop_columns(_TIMING))


# --- output=: journaled like the command line, resumable ---------------------------------------


@pytest.mark.parametrize("kind", ["list", "pandas"])
def test_a_second_call_with_the_same_rows_and_output_sends_nothing(
    sim: SimulatorThread, tmp_path: Path, kind: str
) -> None:
    rows = questions(9)
    output = tmp_path / "labels.parquet"
    first_sent, second_sent = RecordingTransport(), RecordingTransport()

    first = batchrun.run(
        KINDS[kind](rows), **against(sim), output=output, runtime=Runtime(transport=first_sent)
    ).table
    stamp = read_state(output)
    second = batchrun.run(
        KINDS[kind](rows), **against(sim), output=output, runtime=Runtime(transport=second_sent)
    ).table

    assert len(first_sent.bodies) == 9 and second_sent.bodies == []
    assert batchrun.summary_of(first)["output"] == str(output)
    summary = batchrun.summary_of(second)
    assert (summary["rows"]["ok"], summary["rows"]["skipped"], summary["outcome"]) == (
        0,
        9,
        "complete",
    )
    assert_answers(second, rows)
    assert first.drop_columns(_TIMING).equals(second.drop_columns(_TIMING))
    # The temporary input was the same bytes both times: the fast resume path's stamp.
    assert stamp is not None and read_state(output) is not None
    assert read_state(output).input == stamp.input  # type: ignore[union-attr]


def test_a_run_the_budget_stopped_returns_what_finished_and_resumes(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    rows = questions(10)
    output = tmp_path / "labels.jsonl"
    # Each request's worst case is about $0.0001 (20 output tokens at $5/M): a few fit.
    stopped = batchrun.run(
        rows, **against(sim, concurrency=1, max_cost=0.0004), output=output
    ).table

    summary = batchrun.summary_of(stopped)
    assert summary["outcome"] == "partial" and summary["budget_stop"]
    assert summary["exit_code"] == 4
    done = stopped.num_rows
    assert 0 < done < 10 and summary["output_rows"]["rows"] == done
    assert journal_path(output).exists()
    assert_answers(stopped, rows[:done])

    sent = RecordingTransport()
    finished = batchrun.run(
        rows, **against(sim), output=output, runtime=Runtime(transport=sent)
    ).table
    assert len(sent.bodies) == 10 - done
    assert batchrun.summary_of(finished)["outcome"] == "complete"
    assert_answers(finished, rows)


# --- the README's "From Python" example --------------------------------------------------------

README_EXAMPLE = """\
import batchrun
import pandas as pd

reviews = pd.DataFrame({"id": ["r1", "r2", "r3"],
                        "review": ["Loved it", "Broke in a day", "It is a chair"]})
result = batchrun.run(reviews, model="claude-haiku-4-5", max_tokens=5,
                      template="One word, positive, negative or neutral: {review}",
                      output="labels.parquet",  # journaled: run it again to resume
                      simulate=True)            # drop this to ask Claude (ANTHROPIC_API_KEY)
print(result.to_dict()["cost_usd"])
table = result.table
labels = reviews.merge(table.to_pandas()[["id", "status", "text"]], on="id")
"""


def _run_example(where: Path) -> dict[str, Any]:
    names: dict[str, Any] = {}
    exec(compile(README_EXAMPLE, str(where / "example.py"), "exec"), names)
    return names


def test_the_readme_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pandas")
    monkeypatch.chdir(tmp_path)
    names = _run_example(tmp_path)

    labels = names["labels"]
    assert list(labels["id"]) == ["r1", "r2", "r3"]
    assert list(labels["status"]) == ["ok"] * 3
    assert (tmp_path / "labels.parquet").exists()
    assert float(capsys.readouterr().out) > 0
    # Run again (a restarted kernel): it resumes, sending nothing.
    again = _run_example(tmp_path)
    assert batchrun.summary_of(again["table"])["rows"]["skipped"] == 3


def test_the_readme_example_runs_in_a_notebook_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pandas")
    monkeypatch.chdir(tmp_path)

    async def cell() -> dict[str, Any]:
        return _run_example(tmp_path)

    assert list(asyncio.run(cell())["labels"]["status"]) == ["ok"] * 3
