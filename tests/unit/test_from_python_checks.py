"""``batchrun.run(rows, ...)`` refuses what it cannot run before starting: unknown or file-only
settings, bad values, rows or frames that cannot be written, an output it cannot read back;
and its worker thread stops its job when cancelled (whole runs:
tests/integration/test_from_python.py)."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from support import (
    questions,
)

import batchrun
from batchrun.core.sync import Worker
from batchrun.formats.registry import output_formats, said

MODEL = "claude-haiku-4-5"


def test_a_table_without_the_summary_is_refused_by_summary_of() -> None:
    with pytest.raises(ValueError, match="carries no batchrun summary"):
        batchrun.summary_of(pa.table({"id": ["a"]}))


def test_a_dataset_dict_asks_for_a_split() -> None:
    datasets = pytest.importorskip("datasets")
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(questions(2))})
    with pytest.raises(TypeError, match=r"one split of the dataset, e.g. rows\['train'\]"):
        batchrun.run(splits, model=MODEL, max_tokens=5, simulate=True)


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


def test_a_run_config_takes_no_settings_beside_it(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "hi"}\n', encoding="utf-8")
    config = batchrun.load_config(source, {"model": MODEL, "max_tokens": 5, "simulate": True})
    with pytest.raises(TypeError, match=r"not from concurrency=: give them to load_config"):
        batchrun.run(config, concurrency=3)


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

    worker = Worker(forever())
    worker.start()
    started.wait()
    worker.cancel()
    worker.join()
    with pytest.raises(asyncio.CancelledError):
        worker.outcome()


def test_an_output_that_cannot_be_read_back_is_refused(tmp_path: Path) -> None:
    # .parquet or .jsonl (and any format added since that is read back: the registry's).
    readable = said([s for fmt in output_formats() if fmt.from_python for s in fmt.suffixes])
    assert readable.startswith(".parquet") and ".jsonl" in readable and ".csv" not in readable
    with pytest.raises(batchrun.ConfigError, match=f"must end in {re.escape(readable)}"):
        batchrun.run([{"prompt": "a"}], model=MODEL, max_tokens=5, output=tmp_path / "o.csv")
