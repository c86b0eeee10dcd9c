"""Arrow IPC outputs (``-o out.arrow``, ``batchrun.formats.arrow_ipc``): written with
pyarrow.ipc's file format, one record batch per chunk, read back by ``pyarrow.ipc.open_file``
and by batchrun's own resume, report and merge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from click.testing import CliRunner
from support import RecordingTransport, job_config, prompts, reply_tag, write_jsonl

import batchrun
from batchrun.cli import cli
from batchrun.core.errors import FatalRunError
from batchrun.formats.marks import PARTIAL_KEY, Partial
from batchrun.formats.registry import output_for, read_partial
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorThread
from batchrun.store.columns import blank_row
from batchrun.store.sink import Sink, journal_path, output_schema


def read_arrow(path: Path) -> tuple[pa.Table, int]:
    """The file as pyarrow reads it (a memory map, no decoding), and its record batches."""
    with pa.memory_map(str(path), "r") as source:
        reader = ipc.open_file(source)
        return reader.read_all(), reader.num_record_batches


def answer(i: int) -> dict[str, object]:
    row = blank_row(f"r{i}")
    row.update(status="ok", text=f"answer {i}", output_tokens=i)
    return row


def test_an_arrow_output_is_one_record_batch_per_chunk_with_the_output_schema(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.arrow"
    assert output_for(out).name == "arrow"
    sink = Sink(out, ["topic"], chunk_rows=4)
    sink.open()
    for i in reversed(range(10)):  # finishing order is not input order
        sink.submit(i, {**answer(i), "topic": f"t{i}"})
    counts = sink.finalize(10)
    assert (counts.rows, counts.ok) == (10, 10)
    table, batches = read_arrow(out)
    assert batches == 3  # 4 + 4 + 2 rows: the final step's chunks
    assert table.schema.equals(output_schema(["topic"]))
    assert table.column("id").to_pylist() == [f"r{i}" for i in range(10)]
    assert table.column("topic").to_pylist() == [f"t{i}" for i in range(10)]
    assert not journal_path(out).exists()


def test_a_run_into_an_arrow_file_resumes_and_reports(tmp_path: Path, sim: SimulatorThread) -> None:
    rows = prompts(12)
    inp = write_jsonl(tmp_path / "in.jsonl", rows[:8])
    out = tmp_path / "labels.arrow"
    config = job_config(inp, out, sim.base_url, concurrency=1)
    with pytest.raises(FatalRunError):
        batchrun.run(
            config, runtime=Runtime(transport=_RefusingAfter(3))
        )  # stopped: a partial output
    assert read_partial(out) == Partial(3, 8)
    table, _ = read_arrow(out)
    assert PARTIAL_KEY in (table.schema.metadata or {}) and table.num_rows == 3

    done = batchrun.run(config)  # completes it from the journal
    assert done.exit_code == 0 and done.skipped == 3 and read_partial(out) is None

    write_jsonl(inp, rows)  # four more rows: the eight are read back from the Arrow file
    recording = RecordingTransport()
    more = batchrun.run(config, runtime=Runtime(transport=recording))
    assert more.exit_code == 0 and more.skipped == 8 and len(recording.bodies) == 4
    table, _ = read_arrow(out)
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    texts = table.column("text").to_pylist()
    assert all(t.startswith(reply_tag(r["prompt"])) for t, r in zip(texts, rows, strict=True))

    report = CliRunner().invoke(cli, ["report", str(out), "--json"])
    assert report.exit_code == 0, report.output
    assert json.loads(report.output)["rows"] == 12


def test_shards_of_an_arrow_output_merge_into_one(tmp_path: Path, sim: SimulatorThread) -> None:
    rows = [{"id": f"r{i:02d}", "prompt": f"say {i}"} for i in range(30)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "labels.arrow"
    config = job_config(inp, out, sim.base_url)
    for index in range(3):
        assert batchrun.run_shard(config, index, 3).exit_code == 0
    merged = subprocess.run(
        [sys.executable, "-m", "batchrun", "merge", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert merged.returncode == 0, merged.stderr
    table, _ = read_arrow(out)
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    assert set(table.column("status").to_pylist()) == {"ok"}


def test_python_returns_the_table_an_arrow_output_holds(tmp_path: Path) -> None:
    out = tmp_path / "labels.arrow"
    rows = [{"id": "a", "prompt": "hi"}, {"id": "b", "prompt": "there"}]
    table = batchrun.run(
        rows, output=out, model="claude-haiku-4-5", max_tokens=5, simulate=True, quiet=True
    ).table
    assert table.column("id").to_pylist() == ["a", "b"]
    assert batchrun.summary_of(table)["outcome"] == "complete"
    on_disk, _ = read_arrow(out)
    assert on_disk.select(["id", "text"]).equals(table.select(["id", "text"]))


class _RefusingAfter(httpx.AsyncBaseTransport):
    """The simulator for the first ``answered`` requests, then 401 (a key revoked mid-run)."""

    def __init__(self, answered: int) -> None:
        self.left = answered
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.left <= 0:
            body = {"type": "error", "error": {"type": "authentication_error", "message": "no"}}
            return httpx.Response(401, json=body)
        self.left -= 1
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
