"""``batchrun.run(rows, ...)`` from Python: rows in memory in, the output as a pyarrow Table out.

Whole runs against the simulator over loopback (the ``sim`` fixture, a test key through
``environ=``), or the in-process one (``simulate=True``); each input type; a real running
event loop, as in Jupyter; resuming through ``output=``; the README's example, run as given.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from support import (
    TEST_KEY,
    RecordingTransport,
    against,
    assert_answers,
    questions,
    wait_until,
)

import batchrun
from batchrun.public.frames import SUMMARY_KEY
from batchrun.public.run import _Worker
from batchrun.simulator import SimulatorThread
from batchrun.store.resume import read_state
from batchrun.store.sink import journal_path, output_schema

MODEL = "claude-haiku-4-5"
ENV = {"ANTHROPIC_API_KEY": TEST_KEY}
# Columns that differ between two runs of the same rows.
_TIMING = ["latency_ms", "elapsed_ms", "finished_at", "request_id", "message_id"]


# --- what comes back ----------------------------------------------------------------------------


def test_rows_come_back_as_a_table_with_the_file_schema_and_the_summary(
    sim: SimulatorThread,
) -> None:
    rows = questions(12)
    table = batchrun.run(rows, **against(sim, keep_columns=["n"]))

    assert table.schema.remove_metadata() == output_schema(["n"])
    assert_answers(table, rows)
    assert table.column("n").to_pylist() == [str(i) for i in range(12)]
    summary = batchrun.summary_of(table)
    assert summary["ok"] == summary["total_rows"] == 12
    assert summary["error"] == summary["skipped"] == 0
    assert summary["complete"] is True and summary["exit_code"] == 0
    assert summary["cost_usd"] == pytest.approx(sum(table.column("cost_usd").to_pylist()))
    assert summary["input_tokens"] == sum(table.column("input_tokens").to_pylist())
    assert summary["final"] == {"rows": 12, "ok": 12, "error": 0, "of": None}
    assert summary["output"] is None  # the output was temporary
    assert "input" not in summary  # ... and so was the input


def test_a_row_the_api_would_refuse_is_an_error_row_not_an_exception() -> None:
    rows = [{"prompt": "fine"}, {"prompt": "too hot", "temperature": 3}]
    table = batchrun.run(rows, model=MODEL, max_tokens=10, simulate=True, quiet=True)

    assert table.column("status").to_pylist() == ["ok", "error"]
    assert table.column("error_type").to_pylist() == [None, "invalid_request"]
    assert "temperature" in table.column("error_message")[1].as_py()
    summary = batchrun.summary_of(table)
    assert (summary["ok"], summary["error"], summary["exit_code"]) == (1, 1, 3)


@pytest.mark.slow
def test_rows_go_through_message_batches_with_via_batches() -> None:
    rows = questions(4)
    table = batchrun.run(rows, model=MODEL, max_tokens=20, simulate=True, quiet=True, via="batches")

    assert_answers(table, rows)
    assert set(table.column("via").to_pylist()) == {"batches"}
    summary = batchrun.summary_of(table)
    assert (summary["via"], summary["batches_created"], summary["complete"]) == ("batches", 1, True)


def test_a_table_without_the_summary_is_refused_by_summary_of() -> None:
    with pytest.raises(ValueError, match="carries no batchrun summary"):
        batchrun.summary_of(pa.table({"id": ["a"]}))


def test_the_summary_is_json_in_the_schema_metadata() -> None:
    table = batchrun.run([{"prompt": "hi"}], model=MODEL, max_tokens=5, simulate=True, quiet=True)
    assert SUMMARY_KEY == b"batchrun.summary"
    assert b'"ok": 1' in table.schema.metadata[SUMMARY_KEY]


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
    table = batchrun.run(KINDS[kind](rows), **against(sim, keep_columns=["n"]))

    assert table.schema.remove_metadata() == output_schema(["n"])
    assert_answers(table, rows)
    assert table.column("n").to_pylist() == [str(i) for i in range(10)]


def test_a_dataset_runs_in_its_own_order_after_a_shuffle(sim: SimulatorThread) -> None:
    datasets = pytest.importorskip("datasets")
    rows = questions(8)
    shuffled = datasets.Dataset.from_list(rows).shuffle(seed=3)

    table = batchrun.run(shuffled, **against(sim))

    order = shuffled["id"]
    assert order != [row["id"] for row in rows]  # the shuffle moved rows
    assert_answers(table, sorted(rows, key=lambda row: order.index(row["id"])))


def test_a_dataset_dict_asks_for_a_split() -> None:
    datasets = pytest.importorskip("datasets")
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(questions(2))})
    with pytest.raises(TypeError, match=r"one split of the dataset, e.g. rows\['train'\]"):
        batchrun.run(splits, model=MODEL, max_tokens=5, simulate=True)


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
    table = batchrun.run(frame, model=MODEL, max_tokens=10, simulate=True, quiet=True)
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
    )
    assert table.select(kept).to_pylist() == [
        {
            "day": "2024-01-02",
            "price": "1.10",
            "count": "3",
            "score": None,
            "tags": '["a", "b"]',
            "where": "a/b.txt",
        }
    ]


@pytest.mark.parametrize(
    ("rows", "error", "message"),
    [
        (
            [{"prompt": "a"}, {"prompt": "b", "labels": {"x", "y"}}],
            batchrun.InputError,
            r"rows\[1\]: labels: a set value has no JSON form",
        ),
        (
            [{"prompt": "a"}, {"prompt": b"raw"}],
            batchrun.InputError,
            r"rows\[1\]: prompt: a bytes value has no JSON form: give a file's path or URL",
        ),
        (
            [{"prompt": "a", "x": float("inf")}],
            batchrun.InputError,
            r"rows\[0\]: x: a float value has no JSON form: infinity",
        ),
        ([{"prompt": "a"}, "b"], batchrun.InputError, r"rows\[1\]: each row must be a dict"),
        ([{1: "a"}], batchrun.InputError, r"rows\[0\]: has a key 1; keys must be strings"),
        ([], batchrun.InputError, "no rows to run"),
        ({"prompt": "a"}, TypeError, "rows must be a list of dicts"),
        ("rows.jsonl", TypeError, "to run a file, use batchrun.run.batchrun.load_config"),
    ],
    ids=["set", "bytes", "infinity", "not-a-dict", "key", "empty", "one-dict", "a-path"],
)
def test_rows_that_cannot_be_written_are_refused_by_row_and_column(
    rows: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        batchrun.run(rows, model=MODEL, max_tokens=5, simulate=True, quiet=True)


def test_a_dataframe_arrow_cannot_convert_names_its_column() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"prompt": ["a", "b"], "mixed": [1, "b"]})
    with pytest.raises(batchrun.InputError, match="column mixed"):
        batchrun.run(frame, model=MODEL, max_tokens=5, simulate=True, quiet=True)


# --- settings -----------------------------------------------------------------------------------


def test_an_unknown_setting_gets_the_job_files_did_you_mean() -> None:
    with pytest.raises(batchrun.ConfigError, match=r"unknown setting `max_token` .did you mean"):
        batchrun.run([{"prompt": "a"}], model=MODEL, max_token=5, simulate=True)


@pytest.mark.parametrize("key", ["input", "input_format", "csv_delimiter"])
def test_settings_of_the_input_file_are_refused(key: str) -> None:
    with pytest.raises(batchrun.ConfigError, match=f"`{key}` describes an input file"):
        batchrun.run([{"prompt": "a"}], model=MODEL, max_tokens=5, simulate=True, **{key: "x"})


def test_a_bad_setting_value_is_refused_as_load_config_refuses_it() -> None:
    with pytest.raises(batchrun.ConfigError, match="`concurrency` must be"):
        batchrun.run([{"prompt": "a"}], model=MODEL, max_tokens=5, simulate=True, concurrency=0)


def test_the_job_settings_shape_the_requests(sim: SimulatorThread) -> None:
    sent = RecordingTransport()
    rows = [{"id": "a", "topic": "tea"}, {"id": "b", "topic": "rain"}]
    table = batchrun.run(
        rows,
        **against(sim, max_tokens=7, concurrency=1),
        system="Be brief.",
        template="One line on {topic}.",
        temperature=0.5,
        transport=sent,
    )
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
    )  # fmt: skip
    assert table.column("status").to_pylist() == ["ok"]
    assert table.column("structured_json")[0].as_py() is not None


def test_file_columns_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.txt").write_text("Plain text to summarize.\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # a notebook's folder
    rows = [{"id": "n", "document": "notes.txt", "prompt": "Summarize."}]

    table = batchrun.run(rows, model=MODEL, max_tokens=10, simulate=True, quiet=True)
    assert table.column("status").to_pylist() == ["ok"]

    (tmp_path / "media").mkdir()
    elsewhere = batchrun.run(
        rows, model=MODEL, max_tokens=10, simulate=True, quiet=True, media_root="media"
    )
    assert elsewhere.column("error_type").to_pylist() == ["invalid_request"]
    assert "notes.txt" in elsewhere.column("error_message")[0].as_py()


# --- the RunConfig form, unchanged -------------------------------------------------------------


def test_a_run_config_still_returns_its_summary(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "hi"}\n', encoding="utf-8")
    config = batchrun.load_config(
        source, {"output": str(tmp_path / "out.parquet"), "model": MODEL, "max_tokens": 5,
                 "simulate": True, "quiet": True},
    )  # fmt: skip
    summary = batchrun.run(config)
    assert isinstance(summary, batchrun.RunSummary)
    assert summary.final == batchrun.FinalCounts(rows=1, ok=1, error=0)
    again = asyncio.run(batchrun.run_async(config))
    assert isinstance(again, batchrun.RunSummary) and again.skipped == 1


def test_a_run_config_takes_no_settings_beside_it(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "hi"}\n', encoding="utf-8")
    config = batchrun.load_config(source, {"model": MODEL, "max_tokens": 5, "simulate": True})
    with pytest.raises(TypeError, match=r"not from concurrency=: give them to load_config"):
        batchrun.run(config, concurrency=3)


# --- inside a running event loop (Jupyter) -----------------------------------------------------


def test_run_and_run_async_inside_a_running_event_loop(sim: SimulatorThread) -> None:
    rows = questions(6)
    threads: list[str] = []

    async def main() -> tuple[pa.Table, pa.Table]:
        threads.append(threading.current_thread().name)
        # As a notebook cell does: a plain call while the loop runs, then an await.
        blocking = batchrun.run(rows, **against(sim))
        awaited = await batchrun.run_async(rows, **against(sim))
        return blocking, awaited

    blocking, awaited = asyncio.run(main())
    assert threads == ["MainThread"]
    assert_answers(blocking, rows)
    assert_answers(awaited, rows)
    assert blocking.drop_columns(_TIMING).equals(awaited.drop_columns(_TIMING))


def test_an_error_inside_a_running_loop_reaches_the_caller() -> None:
    async def main() -> None:
        batchrun.run([{"prompt": "a"}], model=MODEL, max_tokens=5, simulate=True, max_token=1)

    with pytest.raises(batchrun.ConfigError, match="did you mean `max_tokens`"):
        asyncio.run(main())


def test_the_worker_thread_stops_its_job_when_cancelled() -> None:
    """What an interrupt does to ``run`` inside a running loop: the job is cancelled."""
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    worker = _Worker(forever())
    worker.start()
    started.wait()
    worker.cancel()
    worker.join()
    with pytest.raises(asyncio.CancelledError):
        worker.outcome()


# --- output=: journaled like the command line, resumable ---------------------------------------


@pytest.mark.parametrize("kind", ["list", "pandas"])
def test_a_second_call_with_the_same_rows_and_output_sends_nothing(
    sim: SimulatorThread, tmp_path: Path, kind: str
) -> None:
    rows = questions(9)
    output = tmp_path / "labels.parquet"
    first_sent, second_sent = RecordingTransport(), RecordingTransport()

    first = batchrun.run(KINDS[kind](rows), **against(sim), output=output, transport=first_sent)
    stamp = read_state(output)
    second = batchrun.run(KINDS[kind](rows), **against(sim), output=output, transport=second_sent)

    assert len(first_sent.bodies) == 9 and second_sent.bodies == []
    assert batchrun.summary_of(first)["output"] == str(output)
    summary = batchrun.summary_of(second)
    assert (summary["ok"], summary["skipped"], summary["complete"]) == (0, 9, True)
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
    stopped = batchrun.run(rows, **against(sim, concurrency=1, max_cost=0.0004), output=output)

    summary = batchrun.summary_of(stopped)
    assert summary["complete"] is False and summary["budget_stop"]
    assert summary["exit_code"] == 4
    done = stopped.num_rows
    assert 0 < done < 10 and summary["partial"]["rows"] == done
    assert journal_path(output).exists()
    assert_answers(stopped, rows[:done])

    sent = RecordingTransport()
    finished = batchrun.run(rows, **against(sim), output=output, transport=sent)
    assert len(sent.bodies) == 10 - done
    assert batchrun.summary_of(finished)["complete"] is True
    assert_answers(finished, rows)


def test_an_output_that_cannot_be_read_back_is_refused(tmp_path: Path) -> None:
    with pytest.raises(batchrun.ConfigError, match=r"must end in \.parquet or \.jsonl"):
        batchrun.run([{"prompt": "a"}], model=MODEL, max_tokens=5, output=tmp_path / "o.csv")


# --- imports ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_frame_libraries_load_only_when_given_their_frames() -> None:
    # pyarrow's first pa.array() imports pandas when it is installed: that is not batchrun's.
    probe = textwrap.dedent(
        """
        import sys
        import pyarrow
        pyarrow.array([1])
        frames = ("pandas", "polars", "datasets")
        before = {m for m in frames if m in sys.modules}
        import batchrun
        batchrun.run([{"prompt": "a"}], model="claude-haiku-4-5", max_tokens=5, simulate=True,
                     quiet=True)
        print(",".join(m for m in frames if m in sys.modules and m not in before))
        """
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


# --- the README's "From Python" example --------------------------------------------------------

README_EXAMPLE = """\
import batchrun
import pandas as pd

reviews = pd.DataFrame({"id": ["r1", "r2", "r3"],
                        "review": ["Loved it", "Broke in a day", "It is a chair"]})
table = batchrun.run(reviews, model="claude-haiku-4-5", max_tokens=5,
                     template="One word, positive, negative or neutral: {review}",
                     output="labels.parquet",  # journaled: run it again to resume
                     simulate=True)            # drop this to ask Claude (ANTHROPIC_API_KEY)
print(batchrun.summary_of(table)["cost_usd"])
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
    assert batchrun.summary_of(again["table"])["skipped"] == 3


def test_the_readme_example_runs_in_a_notebook_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pandas")
    monkeypatch.chdir(tmp_path)

    async def cell() -> dict[str, Any]:
        return _run_example(tmp_path)

    assert list(asyncio.run(cell())["labels"]["status"]) == ["ok"] * 3


# --- an interrupt while run() waits inside a running loop, in a real process ------------------

NOTEBOOK_CHILD = """
import asyncio, json, os, signal, sys
import httpx
import batchrun

url, output, ready = sys.argv[1:4]
rows = [{"id": f"q{i}", "prompt": f"What is {i} + {i}?"} for i in range(10)]


class StallsOnTheFourth(httpx.AsyncBaseTransport):
    # Forwards three requests; at the fourth it says so and waits for ever.
    def __init__(self):
        self.inner, self.seen = httpx.AsyncHTTPTransport(), 0

    async def handle_async_request(self, request):
        self.seen += 1
        if self.seen == 4:
            open(ready, "w").close()
            await asyncio.Event().wait()
        return await self.inner.handle_async_request(request)


async def cell():
    # What ipykernel does while a cell runs: SIGINT raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        batchrun.run(rows, model="claude-haiku-4-5", max_tokens=20, base_url=url,
                     environ={"ANTHROPIC_API_KEY": os.environ["TEST_KEY"]}, quiet=True,
                     concurrency=1, output=output, transport=StallsOnTheFourth())
    except KeyboardInterrupt:
        print("KeyboardInterrupt")


asyncio.run(cell())
"""


@pytest.mark.slow
def test_an_interrupt_in_a_notebook_stops_the_run_and_a_second_call_resumes(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    output, ready = tmp_path / "labels.parquet", tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", NOTEBOOK_CHILD, sim.base_url, str(output), str(ready)],
        env={**os.environ, "TEST_KEY": TEST_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # three rows answered and journaled, the fourth stalled
    wait_until(ready.exists, 60, "the child's fourth request", alive=[child])
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)

    assert (child.returncode, out.strip()) == (0, "KeyboardInterrupt"), err
    assert journal_path(output).exists()
    sent = RecordingTransport()
    rows = [{"id": f"q{i}", "prompt": f"What is {i} + {i}?"} for i in range(10)]
    table = batchrun.run(rows, **against(sim), output=output, transport=sent)
    assert len(sent.bodies) == 7  # the three answered before the interrupt are not sent again
    assert_answers(table, rows)
