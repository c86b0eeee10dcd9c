"""A stopped run leaves what it finished readable: the output holds the rows finished so far,
in input order, marked partial (``store.partial``); the journal keeps them; a re-run
completes the output and sends nothing twice."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, journal_lines, prompts, write_jsonl

from batchrun import run
from batchrun.cli import cli
from batchrun.core.errors import FatalRunError, OutputError
from batchrun.formats.jsonl import read_json_lines
from batchrun.formats.marks import PARTIAL_KEY, Partial, mark_path
from batchrun.formats.registry import read_partial
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorThread
from batchrun.store.sink import Sink, journal_path, output_schema


class RefusingAfter(httpx.AsyncBaseTransport):
    """Loopback to the simulator for the first ``answered`` requests, then 401 for all: a
    key revoked mid-run (every further request is pointless, so the run stops)."""

    def __init__(self, answered: int) -> None:
        self.left = answered
        self.sent = 0
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        if self.left <= 0:
            body = {
                "type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            }
            return httpx.Response(401, json=body, headers={"request-id": "req_refused"})
        self.left -= 1
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows]


def read_rows(out: Path) -> list[dict[str, Any]]:
    if out.suffix == ".parquet":
        return list(pq.read_table(out).to_pylist())
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_a_budget_stop_leaves_the_finished_rows_marked_partial_and_a_rerun_completes_it(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = prompts(40)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    flags = {"model": "claude-sonnet-4-6", "max_tokens": 400, "concurrency": 4}
    stopped = run(job_config(inp, out, sim.base_url, max_cost=0.03, **flags))

    assert stopped.exit_code == 4 and stopped.final is None and stopped.partial is not None
    finished = stopped.partial.rows
    assert 0 < finished < len(rows) and stopped.partial.of == len(rows)
    assert stopped.partial.ok == finished == stopped.finished
    written = read_rows(out)
    # The rows finished so far, in input order: the journal's rows, sorted by input index.
    lines = journal_path(out).read_text(encoding="utf-8").splitlines()
    journaled = sorted(json.loads(line)["_index"] for line in lines)
    assert ids(written) == [rows[i]["id"] for i in journaled]
    assert all(r["status"] == "ok" and r["text"] for r in written)
    assert read_partial(out) == Partial(finished, len(rows))
    mark = json.loads(pq.read_schema(out).metadata[PARTIAL_KEY])
    assert mark == {"rows": finished, "of": len(rows)}

    # ``report`` reads it from the journal and says it is partial, in text and JSON.
    report = CliRunner().invoke(cli, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert f"partial: {finished:,} of {len(rows):,} rows" in report.output
    assert f"rows        {finished:,}: ok {finished:,}" in report.output
    as_json = json.loads(CliRunner().invoke(cli, ["report", str(out), "--json"]).output)
    assert as_json["sources"][0]["partial"] == {"rows": finished, "of": len(rows)}
    assert as_json["rows"] == finished

    answered = sim.stats.snapshot().answered_ok
    done = run(job_config(inp, out, sim.base_url, **flags))
    assert done.exit_code == 0 and done.skipped == finished and done.partial is None
    assert sim.stats.snapshot().answered_ok - answered == len(rows) - finished  # none twice
    assert ids(read_rows(out)) == ids(rows)
    assert read_partial(out) is None and PARTIAL_KEY not in (pq.read_schema(out).metadata or {})
    assert not journal_path(out).exists()


def test_a_fatal_error_leaves_a_partial_jsonl_output_and_the_cli_says_where(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = prompts(30)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    config = job_config(inp, out, sim.base_url, concurrency=1)
    with pytest.raises(FatalRunError, match="authentication_error"):
        run(config, runtime=Runtime(transport=RefusingAfter(12)))
    assert ids(read_rows(out)) == ids(rows[:12])
    assert read_partial(out) == Partial(12, 30) and mark_path(out).exists()
    assert journal_lines(out) == 12

    # Through the CLI: the error, then where the finished rows are and how to go on. (A
    # closed port: the run stops early, keeping the first requests' rows in error. It is
    # another base URL, another source: the rows the simulator answered are kept on purpose.)
    args = ["run", str(inp), "-o", str(out), "--base-url", "http://127.0.0.1:9", "-q"]
    args += ["--keep-other-source"]
    args += ["--model", "claude-haiku-4-5", "--max-tokens", "40", "-c", "4"]
    result = CliRunner().invoke(cli, args, env={"ANTHROPIC_API_KEY": TEST_KEY})
    assert result.exit_code == 1, result.stderr
    assert "batchrun: error: stopping early" in result.stderr
    shown = read_partial(out)
    assert shown is not None and shown.rows > 12 and shown.of == 30
    assert f"the rows finished so far are in {out} ({shown})" in result.stderr
    assert "Re-run the same command to resume" in result.stderr
    assert ids(read_rows(out)) == ids(rows[: shown.rows])

    answered = sim.stats.snapshot().answered_ok
    done = run(replace(config, resume=replace(config.resume, retry_errors=True)))
    assert done.exit_code == 0 and done.skipped == 12
    assert sim.stats.snapshot().answered_ok - answered == 18
    assert ids(read_rows(out)) == ids(rows)
    assert read_partial(out) is None and not mark_path(out).exists()


def test_a_stop_after_the_input_grew_keeps_the_earlier_output_rows(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = prompts(20)
    inp = write_jsonl(tmp_path / "in.jsonl", rows[:10])
    out = tmp_path / "out.parquet"
    assert run(job_config(inp, out, sim.base_url)).exit_code == 0
    first = read_rows(out)

    write_jsonl(inp, rows)  # ten more rows
    with pytest.raises(FatalRunError):
        run(
            job_config(inp, out, sim.base_url, concurrency=1),
            runtime=Runtime(transport=RefusingAfter(3)),
        )
    # The partial output has the ten earlier rows and the three new ones; since a partial
    # file is never read back, the journal now holds all thirteen.
    assert ids(read_rows(out)) == ids(rows[:13])
    assert read_partial(out) == Partial(13, 20)
    assert journal_lines(out) == 13

    answered = sim.stats.snapshot().answered_ok
    done = run(job_config(inp, out, sim.base_url))
    assert done.exit_code == 0 and done.skipped == 13
    assert sim.stats.snapshot().answered_ok - answered == 7
    final = read_rows(out)
    assert ids(final) == ids(rows)
    assert [r["text"] for r in final[:10]] == [r["text"] for r in first]


def test_a_partial_output_without_its_journal_is_refused_before_sending(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = prompts(10)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    with pytest.raises(FatalRunError):
        run(
            job_config(inp, out, sim.base_url, concurrency=1),
            runtime=Runtime(transport=RefusingAfter(4)),
        )
    journal_path(out).unlink()
    answered = sim.stats.snapshot().answered_ok
    with pytest.raises(OutputError, match=r"partial output \(partial: 4 of 10 rows\).*missing"):
        run(job_config(inp, out, sim.base_url))
    assert sim.stats.snapshot().answered_ok == answered
    # --overwrite starts afresh, as the message offers.
    assert run(job_config(inp, out, sim.base_url, overwrite=True)).exit_code == 0
    assert ids(read_rows(out)) == ids(rows)


def _ok_row(i: int) -> dict[str, Any]:
    return {"id": f"r{i}", "status": "ok", "text": f"answer {i}"}


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_the_sink_writes_the_rows_it_has_in_order_and_completes_later(
    tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"out{suffix}"
    sink = Sink(out, chunk_rows=3)  # several merge chunks, some with no row at all
    sink.open()
    for i in (7, 0, 3, 2):
        sink.submit(i, _ok_row(i))
    counts = sink.write_finished(10)
    assert counts is not None and counts.partial == Partial(4, 10)
    assert (counts.ok, counts.error) == (4, 0)
    assert ids(read_rows(out)) == ["r0", "r2", "r3", "r7"]
    assert read_partial(out) == Partial(4, 10)
    assert journal_lines(out) == 4  # kept: the partial file is no source

    # Nothing new since: nothing is rewritten.
    reopened = Sink(out, chunk_rows=3)
    prior = reopened.open()
    assert prior.final_rows == 0 and sorted(prior.journal) == [0, 2, 3, 7]
    stamp = out.stat().st_mtime_ns
    assert reopened.write_finished(10) is None and out.stat().st_mtime_ns == stamp

    # Every row recorded after all: a stop writes the final file.
    last = Sink(out, chunk_rows=3)
    last.open()
    for i in (1, 4, 5, 6, 8, 9):
        last.submit(i, _ok_row(i))
    final = last.write_finished(10)
    assert final is not None and final.partial is None and final.rows == 10
    assert ids(read_rows(out)) == [f"r{i}" for i in range(10)]
    assert read_partial(out) is None and not journal_path(out).exists()
    assert not mark_path(out).exists()


def test_a_jsonl_mark_of_another_file_is_ignored(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    sink = Sink(out)
    sink.open()
    sink.submit(1, _ok_row(1))
    assert sink.write_finished(3) is not None and read_partial(out) == Partial(1, 3)
    out.write_text(json.dumps(_ok_row(0)) + "\n", encoding="utf-8")  # replaced by someone
    assert read_partial(out) is None


def test_the_journal_holds_every_row_of_a_partial_file(tmp_path: Path) -> None:
    """The invariant the design rests on, for an old final file plus new journal rows."""
    out = tmp_path / "out.parquet"
    sink = Sink(out, chunk_rows=2)
    sink.open()
    for i in range(5):
        sink.submit(i, _ok_row(i))
    sink.finalize(5)  # a complete output of five rows
    grown = Sink(out, chunk_rows=2)
    grown.open()
    grown.submit(6, _ok_row(6))
    grown.submit(2, {**_ok_row(2), "text": "answered again"})
    counts = grown.write_finished(8)
    assert counts is not None and counts.partial == Partial(6, 8)
    in_file = read_rows(out)
    in_journal = {
        r["_index"]: r
        for batch in read_json_lines(journal_path(out), _journal_schema())
        for r in batch.to_pylist()
    }
    assert sorted(in_journal) == [0, 1, 2, 3, 4, 6]
    assert ids(in_file) == ["r0", "r1", "r2", "r3", "r4", "r6"]
    assert in_file[2]["text"] == "answered again" == in_journal[2]["text"]


def _journal_schema() -> Any:
    from batchrun.store.journal import journal_schema

    return journal_schema(output_schema())
