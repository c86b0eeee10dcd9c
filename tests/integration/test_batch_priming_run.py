"""Batch cache priming on the simulator (issue 28): the warming row goes first, alone, and its
batch has ended before the batch that reads its prefix is created; that batch's marks carry
the 1-hour ttl; a re-run within the hour warms nothing again; the estimate prices a 1-hour
write and batch-priced reads. The simulator runs a batch's requests together (those due at
one look read only what earlier looks wrote), so without priming a cold prefix is written by
every request that reaches it at once."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from support import batch_config, job_config, no_wait, write_jsonl

from batchrun import run
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread

BATCHES = "/v1/messages/batches"


@pytest.fixture
def bsim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.2)) as s:
        yield s


class Recording(httpx.AsyncBaseTransport):
    """The simulator's answers as they are; each batch created (its requests) and each poll
    that saw a batch ended, in the order they happened."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.events: list[tuple[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == BATCHES:
            body = json.loads(await request.aread())
            self.events.append(("create", body["requests"]))
        response = await self._inner.handle_async_request(request)
        if (
            request.method == "GET"
            and path.startswith(f"{BATCHES}/msgbatch")
            and not path.endswith("/results")
        ):
            data = json.loads(await response.aread())
            if data["processing_status"] == "ended":
                self.events.append(("ended", data["id"]))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

    def creates(self) -> list[list[dict[str, Any]]]:
        return [requests for kind, requests in self.events if kind == "create"]


def _system() -> str:
    """A job prompt past Haiku 4.5's 4,096-token minimum, shared with no other test."""
    return f"Grading rubric {uuid.uuid4().hex}. " + "Judge the answer on its merits. " * 800


def _rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": f"r{i}", "prompt": f"Answer {i}: the river is {i} km long."}
        for i in range(start, start + n)
    ]


def _marks(request: dict[str, Any]) -> list[dict[str, Any]]:
    system = request["params"]["system"]
    return [block["cache_control"] for block in system if "cache_control" in block]


def test_the_warming_row_goes_first_and_the_batch_reads_its_one_hour_entry(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    system = _system()
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(12))
    out = tmp_path / "out.parquet"
    config = batch_config(inp, out, bsim.base_url, system=system, max_tokens=20)
    seen = Recording()
    summary = run(config, runtime=Runtime(transport=seen))
    assert summary.exit_code == 0 and summary.ok == 12
    creates = seen.creates()
    assert [len(requests) for requests in creates] == [1, 11]  # the warming row, then the rest
    assert creates[0][0]["custom_id"] == "r0"
    kinds = [kind for kind, _ in seen.events]
    assert kinds.index("ended") < kinds.index("create", 1)  # warmed before the batch exists
    for requests in creates:
        for request in requests:
            assert _marks(request) == [{"type": "ephemeral", "ttl": "1h"}]
    assert summary.cache_groups_warmed == 1 and summary.batches_created == 2
    table = pq.read_table(out).to_pylist()
    warming, rest = table[0], table[1:]
    assert warming["cache_creation_1h_input_tokens"] > 4096
    assert warming["cache_read_input_tokens"] == 0
    for row in rest:  # every row of the batch read the entry; none wrote it again
        assert row["cache_read_input_tokens"] == warming["cache_creation_1h_input_tokens"]
        assert row["cache_creation_input_tokens"] == 0 and row["via"] == "batches"
    assert summary.cost_usd == pytest.approx(sum(row["cost_usd"] for row in table))
    journal = out.with_name(out.name + ".batches").read_text().splitlines()
    warmed = [r for r in map(json.loads, journal) if r["event"] == "warmed"]
    assert len(warmed) == 1 and len(warmed[0]["groups"]) == 1  # what a re-run reads


def test_without_priming_every_request_of_the_first_look_writes_the_prefix(
    tmp_path: Path, bsim: SimulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baseline the priming test is measured against: the same job, priming off."""
    monkeypatch.setattr("batchrun.batches.priming.MIN_SHARED", 10**9)
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(12))
    out = tmp_path / "out.parquet"
    seen = Recording()
    summary = run(
        batch_config(inp, out, bsim.base_url, system=_system(), max_tokens=20),
        runtime=Runtime(transport=seen),
    )
    assert summary.exit_code == 0 and [len(r) for r in seen.creates()] == [12]
    table = pq.read_table(out).to_pylist()
    writes = sum(1 for row in table if row["cache_creation_input_tokens"])
    assert writes == 12  # one wave (CACHE_WAVE): requests that reached it together all wrote it
    assert all(_marks(r) == [{"type": "ephemeral"}] for r in seen.creates()[0])


def test_a_re_run_within_the_hour_does_not_warm_again(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    system = _system()
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(6))
    out = tmp_path / "out.parquet"
    config = batch_config(inp, out, bsim.base_url, system=system, max_tokens=20)
    first = run(config)
    assert first.exit_code == 0 and first.cache_groups_warmed == 1
    write_jsonl(inp, _rows(12))
    seen = Recording()
    second = run(config, runtime=Runtime(transport=seen))
    assert second.exit_code == 0 and second.ok == 6
    assert second.cache_groups_warmed == 0 and [len(r) for r in seen.creates()] == [6]
    table = pq.read_table(out).to_pylist()
    assert all(row["cache_read_input_tokens"] > 4096 for row in table[6:])


def test_the_estimate_prices_a_one_hour_write_and_batch_priced_reads(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    from batchrun.estimation.passes import estimate

    system = _system()
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(12))
    by_batch = estimate(batch_config(inp, tmp_path / "a.parquet", bsim.base_url, system=system))
    online = estimate(job_config(inp, tmp_path / "b.parquet", bsim.base_url, system=system))
    line, line_online = by_batch.models["claude-haiku-4-5"], online.models["claude-haiku-4-5"]
    assert (line.cache_groups, line.cache_writes, line.cache_reads) == (1, 1, 11)
    assert line.cache_ttl == "1h" and line_online.cache_ttl == "5m"
    assert line.prefix_write_tokens == pytest.approx(line_online.prefix_write_tokens)
    # the 1-hour write costs 2x input where the 5-minute one costs 1.25x
    price = line.price
    assert price is not None
    rates = price.rates_for(0)
    extra = line.prefix_write_tokens * float(rates.cache_write_1h - rates.cache_write_5m) / 1e6
    assert line.cache_delta() - line_online.cache_delta() == pytest.approx(extra)
    # and the whole line at the batch price
    assert by_batch.total_ceiling(batch=True) == pytest.approx((online.total_ceiling() + extra) / 2)


def test_a_warming_batch_a_stop_left_is_waited_for_and_not_sent_again(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(12))
    out = tmp_path / "out.parquet"
    config = batch_config(inp, out, bsim.base_url, system=_system(), max_tokens=20)
    # The first run stops (as on Ctrl-C) at its first poll: the warming batch's.
    stopping = OnPoll(lambda: os.kill(os.getpid(), signal.SIGINT))
    first = run(config, runtime=Runtime(transport=stopping, sleep=no_wait))
    assert first.interrupted == "SIGINT" and [len(r) for r in stopping.creates()] == [1]
    seen = Recording()
    second = run(config, runtime=Runtime(transport=seen))
    assert second.exit_code == 0 and second.ok == 12 and second.cache_groups_warmed == 0
    kinds = [kind for kind, _ in seen.events]
    assert kinds[0] == "ended" and [len(r) for r in seen.creates()] == [11]
    table = pq.read_table(out).to_pylist()
    assert all(row["cache_read_input_tokens"] > 4096 for row in table[1:])
    assert sum(row["cache_creation_input_tokens"] > 0 for row in table) == 1


class OnPoll(Recording):
    """``Recording``, and ``on_poll`` runs at each poll of a batch."""

    def __init__(self, on_poll: Callable[[], None]) -> None:
        super().__init__()
        self._on_poll = on_poll

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and "/batches/msgbatch" in path and "/results" not in path:
            self._on_poll()
        return await super().handle_async_request(request)


@pytest.mark.parametrize("flags", [{"cache": "off"}, {"cache_ttl": "5m"}], ids=str)
def test_the_jobs_own_cache_choice_stands(
    tmp_path: Path, bsim: SimulatorThread, flags: dict[str, str]
) -> None:
    """``cache off`` places no mark, so nothing is primed; an explicit ttl is kept as set
    (the group is still warmed first: its entry then lives as long as the job asked)."""
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(6))
    seen = Recording()
    config = batch_config(inp, tmp_path / "o.parquet", bsim.base_url, system=_system(), **flags)
    summary = run(config, runtime=Runtime(transport=seen))
    assert summary.exit_code == 0 and summary.ok == 6
    sizes = [len(r) for r in seen.creates()]
    requests = [request for batch in seen.creates() for request in batch]
    if flags.get("cache") == "off":
        assert sizes == [6] and summary.cache_groups_warmed == 0
        assert all(_marks(request) == [] for request in requests)
    else:
        assert sizes == [1, 5] and summary.cache_groups_warmed == 1
        assert all(_marks(r) == [{"type": "ephemeral", "ttl": "5m"}] for r in requests)


def test_the_batch_lane_of_via_auto_primes_nothing(tmp_path: Path, bsim: SimulatorThread) -> None:
    """A warming batch is waited for whole, a turnaround the deadline's plan did not count:
    the batch lane of --via auto sends its rows' batches at once, marks as they are."""
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(30))
    out = tmp_path / "out.parquet"
    config = job_config(
        inp,
        out,
        bsim.base_url,
        via="auto",
        deadline="60s",
        poll_interval=0.1,
        system=_system(),
        max_tokens=20,
    )
    seen = Recording()
    summary = run(config, runtime=Runtime(transport=seen)).summary
    assert summary.exit_code == 0 and summary.ok == 30
    creates = seen.creates()
    assert creates and all(len(requests) > 1 for requests in creates)  # no one-row batch
    for requests in creates:  # the 5-minute marks: no batch of the lane waits for a warming
        for request in requests:
            assert _marks(request) == [{"type": "ephemeral"}]
