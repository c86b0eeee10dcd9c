"""Collecting a batch: results become output rows as they download, from what the batch kept
of its rows when this run built it (``batches.sent``). Whole runs against the simulator over
loopback, its traffic passed through a transport that can cut a download or edit the input."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import batch_config, no_wait, prompts, rows_of, submitted_once, write_jsonl

from batchrun import run
from batchrun.batches import run as batch_run
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread


@pytest.fixture
def bsim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.2)) as s:
        yield s


class _Cut(httpx.AsyncByteStream):
    """The first ``keep`` bytes of a body, then a dropped connection."""

    def __init__(self, body: bytes, keep: int) -> None:
        self._body, self._keep = body, keep

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._body[: self._keep]
        raise httpx.ReadError("connection reset by peer")


class Through(httpx.AsyncBaseTransport):
    """The simulator's answers, as they are, but: the first results download is cut after
    half its lines; ``on_poll`` runs at each poll of a batch."""

    def __init__(self, on_poll: Callable[[], None] = lambda: None) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._on_poll = on_poll
        self.cut = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and "/batches/msgbatch" in path and "/results" not in path:
            self._on_poll()
        response = await self._inner.handle_async_request(request)
        if request.method == "GET" and path.endswith("/results") and not self.cut:
            body = await response.aread()
            lines = body.splitlines(keepends=True)
            self.cut += 1
            keep = len(b"".join(lines[: len(lines) // 2])) + 5  # into the next line
            return httpx.Response(200, headers=response.headers, stream=_Cut(body, keep))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_a_download_cut_midway_is_fetched_again_and_records_each_row_once(
    tmp_path: Path,
) -> None:
    """Answered rows and errored ones alike (an errored row may be recorded again by design
    in other places: here it must not be, or the summary counts it twice)."""
    n = 24
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    transport = Through()
    settings = SimulatorConfig(batch_processing_s=0.2, batch_error_rate=0.5, seed=7)
    with SimulatorThread(settings) as sim:
        summary = run(
            batch_config(inp, out, sim.base_url),
            runtime=Runtime(transport=transport, sleep=no_wait),
        )
        submitted_once(sim, n)
    got = rows_of(out)
    assert transport.cut == 1
    assert [r["id"] for r in got] == [p["id"] for p in prompts(n)]
    errored = sum(r["status"] == "error" for r in got)
    assert 0 < errored < n
    assert (summary.ok, summary.error) == (n - errored, errored)


def test_a_batch_this_run_built_is_collected_without_reading_the_input_again(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    """Its rows are what was sent: an input edited while the batch runs changes none of them
    (the next run's resume check sees the edit), and leaves no file beside the output."""
    n = 5
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    edited = [{**p, "id": f"other-{i}", "prompt": "changed"} for i, p in enumerate(prompts(n))]
    transport = Through(on_poll=lambda: write_jsonl(inp, edited))
    summary = run(
        batch_config(inp, out, bsim.base_url), runtime=Runtime(transport=transport, sleep=no_wait)
    )
    assert summary.exit_code == 0 and summary.ok == n
    assert [r["id"] for r in rows_of(out)] == [p["id"] for p in prompts(n)]
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.parquet."))
    assert not [name for name in left if name.endswith((".sent", ".body", ".results", ".tmp"))]


class SlowCreates(httpx.AsyncBaseTransport):
    """Holds each of the first ``held`` batch creates until the body of the next batch is on
    disk beside the output (at most ``patience`` seconds), and notes whether it was."""

    def __init__(self, folder: Path, held: int, patience: float = 20.0) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._folder, self._held, self._patience = folder, held, patience
        self.next_built: list[bool] = []

    def _bodies(self) -> int:
        return sum(1 for p in self._folder.iterdir() if p.name.endswith(".body"))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        creating = request.method == "POST" and request.url.path.endswith("/batches")
        if creating and len(self.next_built) < self._held:
            waited = 0.0
            while self._bodies() < 2 and waited < self._patience:
                await asyncio.sleep(0.01)
                waited += 0.01
            self.next_built.append(self._bodies() >= 2)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_the_next_batch_is_built_while_the_last_one_uploads(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    n = 6
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    transport = SlowCreates(tmp_path, held=2)  # the third and last has no next one
    summary = run(
        batch_config(inp, out, bsim.base_url, batch_max_requests=2),
        runtime=Runtime(transport=transport, sleep=no_wait),
    )
    assert summary.exit_code == 0 and summary.ok == n and summary.batches_created == 3
    assert transport.next_built == [True, True]
    assert [r["id"] for r in rows_of(out)] == [p["id"] for p in prompts(n)]
    submitted_once(bsim, n)


@pytest.mark.parametrize("resumed", [False, True], ids=["same run", "next run"])
def test_kept_columns_reach_the_rows_of_a_batch_whichever_run_collects_it(
    tmp_path: Path, bsim: SimulatorThread, resumed: bool
) -> None:
    """Collected by the run that built it (from what it kept) or by the next one (from the
    input read again), a batch's rows carry their kept columns with the input's types, like
    online rows (the kept texts are typed by the committer)."""
    rows = [{**p, "topic": f"rivers é{i}", "n": i} for i, p in enumerate(prompts(4))]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    config = batch_config(inp, out, bsim.base_url, keep_columns=["topic", "n"])
    if resumed:
        # The first run stops (as on Ctrl-C) at its first poll: its batch keeps running.
        interrupt = Through(on_poll=lambda: os.kill(os.getpid(), signal.SIGINT))
        first = run(config, runtime=Runtime(transport=interrupt, sleep=no_wait))
        assert first.interrupted == "SIGINT" and first.batches_running
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".sent")]
    summary = run(config)
    assert summary.exit_code == 0 and summary.ok == len(rows)
    got = rows_of(out)
    assert [(r["id"], r["topic"], r["n"]) for r in got] == [
        (p["id"], p["topic"], p["n"]) for p in rows
    ]
    submitted_once(bsim, len(rows))


def test_a_cancelled_run_waits_for_its_builder_thread(
    tmp_path: Path, bsim: SimulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The builder thread cannot be cancelled: a run cancelled while it builds a batch
    ends only once the thread has stopped, so no row is recorded after the run is over."""
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(4))
    config = batch_config(inp, tmp_path / "out.parquet", bsim.base_url)
    inside, go = threading.Event(), threading.Event()
    builder_done: list[bool] = []
    real = batch_run._BatchJob._sendable

    def held(self: Any, works: Any) -> Iterator[Any]:
        for n, item in enumerate(real(self, works)):
            if n == 1:
                inside.set()
                go.wait(timeout=30)
            yield item
        builder_done.append(True)

    monkeypatch.setattr(batch_run._BatchJob, "_sendable", held)

    async def main() -> bool:
        task = asyncio.ensure_future(batch_run.run_batches_async(config))
        await asyncio.to_thread(inside.wait, 30)
        task.cancel()
        threading.Timer(0.3, go.set).start()  # the builder goes on a moment later
        with pytest.raises(asyncio.CancelledError):
            await task
        return bool(builder_done)

    assert asyncio.run(main())
