"""Exact dedup through Message Batches (issue 26): with the bounds of a run of millions made
tiny, twins far from their original (in later batches of the run), twins of rows in a batch
an earlier run left running, and twins of earlier answers are each filled, and every
distinct request is submitted once. The simulator counts what was submitted."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from support import batch_config, no_wait, write_jsonl

from batchrun import run
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread


@pytest.fixture
def bsim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.2)) as s:
        yield s


@pytest.fixture
def tiny_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twin finding spills past 16 digests, and about two answers are held in memory (the
    rest on disk): a run of a few hundred rows takes the paths a run of millions takes."""
    monkeypatch.setattr("batchrun.engine.twin_plan.CHUNK_ENTRIES", 16)
    monkeypatch.setattr("batchrun.engine.dedup.KEPT_BYTES", 2_000)


class OnPoll(httpx.AsyncBaseTransport):
    """The simulator's answers as they are; ``on_poll`` runs at each poll of a batch."""

    def __init__(self, on_poll: Callable[[], None]) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._on_poll = on_poll

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and "/batches/msgbatch" in path and "/results" not in path:
            self._on_poll()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _prompt(i: int) -> str:
    return f"Question {i}: name a river of length {i} km."


def _check_twins(out: Path, given: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row ok, in input order; each twin holds its own original's answer, for $0."""
    table = pq.read_table(out).to_pylist()
    assert [row["id"] for row in table] == [row["id"] for row in given]
    by_id = {row["id"]: row for row in table}
    prompt_of = {row["id"]: row["prompt"] for row in given}
    for row in table:
        assert row["status"] == "ok"
        if row["duplicate_of"] is not None:
            original = by_id[row["duplicate_of"]]
            assert original["duplicate_of"] is None and original["cost_usd"] > 0
            assert prompt_of[original["id"]] == prompt_of[row["id"]]
            assert row["text"] == original["text"] and row["cost_usd"] == 0.0
    return table


def test_twins_in_later_batches_of_the_run_are_submitted_once(
    tmp_path: Path, bsim: SimulatorThread, tiny_bounds: None
) -> None:
    # 300 rows in batches of 16: the last 120 repeat the first 120, eleven batches further on.
    rows = [{"id": f"r{i}", "prompt": _prompt(i if i < 180 else i - 180)} for i in range(300)]
    rows += [{"id": "late", "prompt": _prompt(7)}]  # a third row of one group
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    summary = run(batch_config(inp, out, bsim.base_url, batch_max_requests=16))
    stats = bsim.stats.snapshot()
    assert summary.exit_code == 0 and summary.ok == 301
    assert stats.batch_requests_submitted == 180 and summary.deduplicated == 121
    assert summary.batches_created == 12  # 180 requests, 16 a batch
    assert set(stats.batch_custom_ids.values()) == {1}
    table = _check_twins(out, rows)
    assert sum(row["duplicate_of"] is not None for row in table) == 121
    assert not [p for p in tmp_path.iterdir() if "scratch" in p.name]  # removed at the end


def test_twins_of_earlier_answers_are_filled_without_submitting(
    tmp_path: Path, bsim: SimulatorThread, tiny_bounds: None
) -> None:
    first = [{"id": f"a{i}", "prompt": _prompt(i)} for i in range(40)]
    inp = write_jsonl(tmp_path / "in.jsonl", first)
    out = tmp_path / "out.parquet"
    assert run(batch_config(inp, out, bsim.base_url, batch_max_requests=16)).exit_code == 0
    later = [{"id": f"b{i}", "prompt": _prompt(39 - i)} for i in range(30)]  # far back first
    later += [{"id": "new", "prompt": "Something else?"}]
    write_jsonl(inp, first + later)
    bsim.stats.reset()
    summary = run(batch_config(inp, out, bsim.base_url, batch_max_requests=16))
    assert summary.exit_code == 0 and summary.deduplicated == 30
    assert bsim.stats.snapshot().batch_requests_submitted == 1
    table = {row["id"]: row for row in _check_twins(out, first + later)}
    assert all(table[f"b{i}"]["duplicate_of"] == f"a{39 - i}" for i in range(30))
    bsim.stats.reset()
    assert run(batch_config(inp, out, bsim.base_url)).exit_code == 0  # and nothing after that
    assert bsim.stats.snapshot().batch_requests_submitted == 0


def test_twins_of_rows_in_a_batch_still_running_wait_for_it(
    tmp_path: Path, bsim: SimulatorThread, tiny_bounds: None
) -> None:
    first = [{"id": f"a{i}", "prompt": _prompt(i)} for i in range(20)]
    inp = write_jsonl(tmp_path / "in.jsonl", first)
    out = tmp_path / "out.parquet"
    config = batch_config(inp, out, bsim.base_url, batch_max_requests=8)
    # The first run stops (as on Ctrl-C) at its first poll: its three batches keep running.
    interrupt = OnPoll(lambda: os.kill(os.getpid(), signal.SIGINT))
    stopped = run(config, runtime=Runtime(transport=interrupt, sleep=no_wait))
    assert stopped.interrupted == "SIGINT" and len(stopped.batches_running) == 3
    later = [{"id": f"b{i}", "prompt": _prompt(i)} for i in range(20)]
    later += [{"id": "new", "prompt": "Something else?"}]
    write_jsonl(inp, first + later)
    summary = run(batch_config(inp, out, bsim.base_url, batch_max_requests=8))
    stats = bsim.stats.snapshot()
    assert summary.exit_code == 0 and summary.deduplicated == 20
    assert stats.batch_requests_submitted == 21  # the 20 first, once, and the new row
    assert set(stats.batch_custom_ids.values()) == {1}
    table = {row["id"]: row for row in _check_twins(out, first + later)}
    assert all(table[f"b{i}"]["duplicate_of"] == f"a{i}" for i in range(20))
