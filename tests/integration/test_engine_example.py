"""The example in the engine's docstring, run against the built-in simulator (the engine
through httpx.MockTransport: tests/unit/test_engine.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from batchrun import load_config
from batchrun.config.load import RunConfig
from batchrun.engine.outcome import RowSettings, prepare
from batchrun.engine.tally import RowTally
from batchrun.formats.inputs import read_rows
from batchrun.runs.compose import job_client, job_engine
from batchrun.runs.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]


def test_the_docstring_example_runs_against_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the example names jobs/label_sentiment.toml

    async def answer(config: RunConfig) -> tuple[list[dict[str, Any]], RowTally]:
        rows: list[dict[str, Any]] = []
        tally = RowTally()
        async with job_client(config, Runtime()) as client:
            engine = job_engine(config, client, tally, Runtime())
            works = (prepare(row, RowSettings.of(config)) for row in read_rows(config.input.path))
            await engine.run(works, lambda work, row: rows.append(row))
        return rows, tally

    config = load_config(Path("jobs/label_sentiment.toml"), {"simulate": True, "quiet": True})
    rows, tally = asyncio.run(answer(config))
    assert len(rows) == 200 and tally.ok == 200
