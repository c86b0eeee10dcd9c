"""A run whose batches fill the organisation's batch queue (docs/api-facts.md §8.5) waits for
its own batches to end and creates the rest then: every row answered once, the queue never
overfilled, no retry spent. With no batch of its own to wait for, the run fails in words that
name the queue. Whole runs against the simulator's ``batch_queue_limit`` over loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, no_wait, prompts, reply_tag, rows_of, write_jsonl

from batchrun import run
from batchrun.cli import cli
from batchrun.core.errors import FatalRunError
from batchrun.live.progress import Status
from batchrun.runs.runtime import ProgressView, Runtime
from batchrun.simulator import Simulator, SimulatorConfig, SimulatorThread
from batchrun.simulator.batch_store import ListQuery, check_create_body
from batchrun.store.batch_journal import BatchJournal, batch_journal_path

QUEUE = 30
ROWS = 100
PER_BATCH = 20


class Notes(ProgressView):
    """The run's one-line events, kept."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def advance(self, n: int = 1) -> None:
        pass

    def log(self, message: str) -> None:
        self.lines.append(message)

    def close(self) -> None:
        pass

    def show(self, total: int | None, status: Status, quiet: bool) -> ProgressView:
        return self


@pytest.fixture
def qsim() -> Iterator[SimulatorThread]:
    config = SimulatorConfig(batch_processing_s=0.2, batch_queue_limit=QUEUE, retry_after=0)
    with SimulatorThread(config) as s:
        yield s


def test_a_full_queue_waits_for_the_runs_own_batches_then_creates_the_rest(
    tmp_path: Path, qsim: SimulatorThread
) -> None:
    src = prompts(ROWS)
    inp = write_jsonl(tmp_path / "in.jsonl", src)
    out = tmp_path / "out.parquet"
    notes = Notes()
    config = job_config(
        inp, out, qsim.base_url, via="batches", poll_interval=0.05, batch_max_requests=PER_BATCH
    )
    # Retries do not wait (no_wait): without the queue wait they would be spent at once.
    summary = run(config, runtime=Runtime(sleep=no_wait, show_progress=notes.show))

    got = rows_of(out)
    assert [r["id"] for r in got] == [p["id"] for p in src]
    for row, prompt in zip(got, src, strict=True):
        assert row["status"] == "ok" and row["text"].startswith(reply_tag(prompt["prompt"]))
    stats = qsim.stats.snapshot()
    assert stats.batch_requests_submitted == ROWS  # each custom id created once
    assert len(stats.batch_custom_ids) == ROWS
    assert set(stats.batch_custom_ids.values()) == {1}
    assert stats.batches_created == ROWS // PER_BATCH
    assert qsim.simulator.batches.queued_peak <= QUEUE
    assert summary.retries == 0  # no retry spent on a full queue
    assert summary.batches_created == summary.batches_collected == ROWS // PER_BATCH
    full = [n for n in notes.lines if "batch queue is full" in n]
    assert full == [
        "batchrun: the organisation's batch queue is full (20 requests of this run queued): "
        "the next batches are created as these end"
    ]
    # Every refused intent was abandoned (never created) and its rows journaled again.
    journal = BatchJournal.load(batch_journal_path(out), None)
    created = [e for e in journal.entries.values() if e.batch_id is not None]
    assert len(created) == ROWS // PER_BATCH
    assert all(e.collected for e in created)
    assert all(e.abandoned for e in journal.entries.values() if e.batch_id is None)


def _fill_queue(sim: SimulatorThread, count: int) -> None:
    """Another job's batch, still running for the whole test."""
    params = {
        "model": "claude-haiku-4-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "x"}],
    }
    body = {"requests": [{"custom_id": f"other-{i}", "params": params} for i in range(count)]}
    sim.simulator.batches.create(check_create_body(body), "2023-06-01")


def test_a_queue_full_of_other_jobs_batches_fails_in_words_naming_the_queue(
    tmp_path: Path,
) -> None:
    config = SimulatorConfig(batch_processing_s=600, batch_queue_limit=QUEUE, retry_after=0)
    with SimulatorThread(config) as sim:
        _fill_queue(sim, QUEUE)
        inp = write_jsonl(tmp_path / "in.jsonl", prompts(5))
        out = tmp_path / "out.parquet"
        job = job_config(inp, out, sim.base_url, via="batches", poll_interval=0.05, max_retries=2)
        with pytest.raises(FatalRunError, match="batch queue is most likely full") as failed:
            run(job, runtime=Runtime(sleep=no_wait))
        assert "none of its own running" in str(failed.value)
        stats = sim.stats.snapshot()
        assert stats.batches_created == 0  # none of ours was created
        assert stats.by_status[429] == 3  # today's retries kept: the create and 2 retries
        # The refused intent is abandoned: a re-run submits its rows.
        journal = BatchJournal.load(batch_journal_path(out), None)
        assert journal.entries and all(e.abandoned for e in journal.entries.values())


def test_the_simulator_answers_a_full_queue_with_a_429_and_retry_after() -> None:
    async def scenario() -> None:
        config = SimulatorConfig(batch_processing_s=600, batch_queue_limit=2, retry_after=7)
        headers = {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"}
        params = {
            "model": "claude-haiku-4-5",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "x"}],
        }
        body = {"requests": [{"custom_id": f"r{i}", "params": params} for i in range(3)]}
        async with (
            Simulator(config) as sim,
            httpx.AsyncClient(base_url=sim.base_url, headers=headers) as client,
        ):
            refused = await client.post("/v1/messages/batches", json=body)
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "7"
            error = refused.json()["error"]
            assert error["type"] == "rate_limit_error"
            assert "limit of 2" in error["message"]

    asyncio.run(scenario())


def test_via_auto_cancels_for_its_deadline_while_waiting_for_room(tmp_path: Path) -> None:
    """The queue wait is the round's wait: ``--via auto``'s deadline watch still cancels the
    running batch there, and the rows not yet in a batch go online; each row answered once."""
    rows = 60
    config = SimulatorConfig(
        latency_mean=0.02, batch_processing_s=4.0, batch_queue_limit=QUEUE, retry_after=0
    )
    with SimulatorThread(config) as sim:
        src = prompts(rows)
        inp = write_jsonl(tmp_path / "in.jsonl", src)
        out = tmp_path / "out.parquet"
        job = job_config(
            inp,
            out,
            sim.base_url,
            via="auto",
            deadline="6s",
            poll_interval=0.1,
            batch_max_requests=PER_BATCH,
        )
        summary = run(job, runtime=Runtime(sleep=no_wait)).summary
        got = rows_of(out)
        stats = sim.stats.snapshot()
        store = sim.simulator.batches
        in_batches = sum(
            b["request_counts"]["succeeded"]
            for b in store.list_batches(ListQuery(limit=1000))["data"]
        )
    assert summary.exit_code == 0
    assert [r["id"] for r in got] == [p["id"] for p in src]
    assert all(r["status"] == "ok" for r in got)
    assert set(stats.batch_custom_ids.values()) == {1}  # no row put in two batches
    assert in_batches + stats.answered_ok == rows  # each answer paid once
    assert store.queued_peak <= QUEUE
    assert stats.by_status[429] == 1  # the second batch refused once, then waited for room
    deadline = summary.deadline
    assert deadline is not None and deadline.plan is not None and "cancelled" in deadline.plan


def test_cli_simulate_takes_a_batch_queue_limit() -> None:
    runner = CliRunner()
    assert "--batch-queue-limit" in runner.invoke(cli, ["simulate", "--help"]).output
    refused = runner.invoke(cli, ["simulate", "--batch-queue-limit", "0"])
    assert refused.exit_code == 2 and "--batch-queue-limit" in refused.output
    assert SimulatorConfig(batch_queue_limit=5).batch_settings().queue_limit == 5


class HoldSome(httpx.AsyncBaseTransport):
    """The simulator, except that the batches created second and third read as still in
    progress until a fourth is created (or ``most_s`` passed): they end late."""

    def __init__(self, most_s: float) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._created: list[str] = []
        self._most_s = most_s
        self._began: float | None = None
        self.fourth_created_while_held = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        path = request.url.path
        if request.method == "POST" and path.endswith("/messages/batches"):
            await response.aread()
            if response.status_code == 200:
                if len(self._created) == 3:
                    self.fourth_created_while_held = self._holding()
                self._created.append(response.json()["id"])
            return response
        late = self._created[1:3]
        if request.method == "GET" and path.rsplit("/", 1)[-1] in late and self._holding():
            await response.aread()
            status = response.json()
            status.update(processing_status="in_progress", ended_at=None, results_url=None)
            return httpx.Response(200, json=status, headers={"content-type": "application/json"})
        return response

    def _holding(self) -> bool:
        if len(self._created) > 3:
            return False
        now = time.monotonic()
        if self._began is None:
            self._began = now
        return now - self._began < self._most_s

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_a_full_queue_takes_the_room_of_the_first_batch_to_end(tmp_path: Path) -> None:
    # Room for three batches of 10; the second and third end late: the fourth is created in
    # the room the first left, not once all three have ended.
    config = SimulatorConfig(batch_processing_s=0.1, batch_queue_limit=30, retry_after=0)
    with SimulatorThread(config) as sim:
        src = prompts(50)
        inp = write_jsonl(tmp_path / "in.jsonl", src)
        out = tmp_path / "out.parquet"
        flags = {"via": "batches", "poll_interval": 0.02, "batch_max_requests": 10}
        transport = HoldSome(most_s=10.0)
        summary = run(
            job_config(inp, out, sim.base_url, **flags),
            runtime=Runtime(transport=transport, sleep=no_wait),
        )
        stats = sim.stats.snapshot()
        peak = sim.simulator.batches.queued_peak
    assert transport.fourth_created_while_held
    assert summary.exit_code == 0 and summary.ok == 50 and summary.retries == 0
    assert stats.batch_requests_submitted == 50 and set(stats.batch_custom_ids.values()) == {1}
    assert peak <= 30
    assert [r["id"] for r in rows_of(out)] == [p["id"] for p in src]
