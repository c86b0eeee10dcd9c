"""The engine from plain Python: prepared requests in, outcome rows out, no files involved.

Through ``httpx.MockTransport`` (no sockets); the example in the engine's docstring runs
against the simulator in tests/integration/test_engine_example.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import canned_message, job_config, no_wait, prompts, write_jsonl

from batchrun.config.load import RunConfig
from batchrun.core.errors import FatalRunError
from batchrun.engine.outcome import RowSettings, Work, prepare
from batchrun.engine.tally import RowTally
from batchrun.formats.inputs import read_rows
from batchrun.runs.compose import job_client, job_engine
from batchrun.runs.runtime import Runtime


class Scripted:
    """A MockTransport handler: 429 for the first ``refuse`` requests, then answers."""

    def __init__(self, refuse: int = 0, status: int = 429) -> None:
        self.seen: list[dict[str, Any]] = []
        self._refuse, self._status = refuse, status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.seen.append(body)
        if len(self.seen) <= self._refuse:
            error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}
            return httpx.Response(self._status, json=error, headers={"retry-after": "0"})
        text = f"echo {body['messages'][0]['content']}"
        return httpx.Response(200, json=canned_message(body["model"], text))


def _works(config: RunConfig) -> list[Work]:
    return [prepare(row, RowSettings.of(config)) for row in read_rows(config.input.path)]


async def _answer(config: RunConfig, handler: Scripted, tally: RowTally) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with job_client(config, Runtime(transport=httpx.MockTransport(handler))) as client:
        engine = job_engine(config, client, tally, Runtime(sleep=no_wait))
        await engine.run(_works(config), lambda work, row: rows.append(row))
    return rows


def test_every_row_comes_out_once_with_its_answer(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    config = job_config(inp, tmp_path / "unused.parquet", "http://127.0.0.1:9")
    tally = RowTally()
    rows = asyncio.run(_answer(config, Scripted(), tally))
    assert sorted(r["id"] for r in rows) == [p["id"] for p in prompts(20)]
    assert all(r["status"] == "ok" and r["text"].startswith("echo Question") for r in rows)
    assert tally.ok == 20 and tally.input_tokens == 200 and tally.output_tokens == 60
    assert not (tmp_path / "unused.parquet").exists()  # the engine writes nothing


def test_429s_are_retried_and_counted(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(4))
    config = job_config(inp, tmp_path / "o.parquet", "http://127.0.0.1:9", concurrency=1)
    tally = RowTally()
    handler = Scripted(refuse=2)
    rows = asyncio.run(_answer(config, handler, tally))
    assert len(rows) == 4 and tally.ok == 4
    assert tally.retries == 2 and tally.rate_limited_429s == 2
    assert len(handler.seen) == 6


def test_an_invalid_row_is_an_error_row_and_never_sent(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi"}, {"id": "b"}])
    config = job_config(inp, tmp_path / "o.parquet", "http://127.0.0.1:9")
    tally = RowTally()
    handler = Scripted()
    rows = {r["id"]: r for r in asyncio.run(_answer(config, handler, tally))}
    assert rows["b"]["error_type"] == "invalid_request" and rows["a"]["status"] == "ok"
    assert tally.invalid == 1 and len(handler.seen) == 1


def test_a_run_whose_first_requests_all_fail_alike_stops(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(50))
    config = job_config(inp, tmp_path / "o.parquet", "http://127.0.0.1:9", concurrency=1)
    with pytest.raises(FatalRunError, match="stopping early"):
        asyncio.run(_answer(config, Scripted(refuse=10**6, status=404), RowTally()))
