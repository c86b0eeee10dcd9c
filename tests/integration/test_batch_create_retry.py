"""Batch create goes through the one retry loop (client.retry), the same policy as online sends.

A create the server refuses with ``x-should-retry: false`` is not sent again, whatever its
status; a retryable failure is retried (after looking for the batch when the failure may hide
one). Whole runs against the simulator over loopback; the first create is answered by a stand-in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import job_config, no_wait, prompts, write_jsonl

from batchrun import run
from batchrun.client.retry import is_retryable
from batchrun.core.errors import ApiStatusError, FatalRunError
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.batch_journal import BatchJournal, batch_journal_path


@pytest.fixture
def bsim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.1)) as s:
        yield s


class FailFirstCreates(httpx.AsyncBaseTransport):
    """Answers the first ``times`` batch creates itself, with ``status`` and ``headers``."""

    def __init__(self, status: int, headers: dict[str, str], times: int = 1) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._status, self._headers, self._left = status, headers, times
        self.creates = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/batches"):
            self.creates += 1
            if self._left > 0:
                self._left -= 1
                body = {"type": "error", "error": {"type": "api_error", "message": "refused"}}
                return httpx.Response(
                    self._status, headers=self._headers, content=json.dumps(body).encode()
                )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _run(tmp_path: Path, sim: SimulatorThread, transport: FailFirstCreates) -> Any:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(6))
    out = tmp_path / "out.parquet"
    config = job_config(inp, out, sim.base_url, via="batches", poll_interval=0.05)
    return run(
        config,
        runtime=Runtime(transport=transport, sleep=no_wait),
    ), out


@pytest.mark.parametrize("status", [409, 500, 529])
def test_a_create_refused_with_should_retry_false_is_not_sent_again(
    tmp_path: Path, bsim: SimulatorThread, status: int
) -> None:
    transport = FailFirstCreates(status, {"x-should-retry": "false"}, times=99)
    with pytest.raises(FatalRunError, match="could not create batch"):
        _run(tmp_path, bsim, transport)
    assert transport.creates == 1
    assert bsim.stats.snapshot().batch_requests_submitted == 0


def test_the_online_policy_says_the_same() -> None:
    for status in (409, 500, 529):
        refused = ApiStatusError("refused", status=status, should_retry=False)
        assert not is_retryable(refused)
        assert is_retryable(ApiStatusError("busy", status=status))


def test_a_refused_create_that_cannot_hide_a_batch_frees_its_rows(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    transport = FailFirstCreates(409, {"x-should-retry": "false"}, times=99)
    with pytest.raises(FatalRunError):
        _run(tmp_path, bsim, transport)
    journal = BatchJournal.load(batch_journal_path(tmp_path / "out.parquet"))
    assert journal.open_entries() == []  # abandoned: the next run submits the rows again


def test_an_overloaded_create_is_retried_and_the_rows_submitted_once(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    transport = FailFirstCreates(529, {}, times=2)
    summary, _ = _run(tmp_path, bsim, transport)
    assert summary.exit_code == 0 and summary.retries == 2
    assert transport.creates == 3
    assert bsim.stats.snapshot().batch_requests_submitted == 6


def test_a_create_that_may_have_hidden_a_batch_is_looked_for_then_sent_once(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    # A 500 may come after the batch was made: the next attempt first lists the batches.
    transport = FailFirstCreates(500, {}, times=1)
    summary, out = _run(tmp_path, bsim, transport)
    assert summary.exit_code == 0 and summary.batches_created == 1
    assert transport.creates == 2
    assert bsim.stats.snapshot().batch_requests_submitted == 6
    journal = BatchJournal.load(batch_journal_path(out))
    assert [e.batch_id is None for e in journal.entries.values()] == [True, False]
