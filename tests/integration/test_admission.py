"""The engine's last check before each request (``engine.admission``): once the driver's
``SendCheck`` says the run may not send (an object-store output's lease taken over), no
request goes out, the ones in flight are recorded, and the engine says why."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from support import job_config, prompts, write_jsonl

from batchrun.engine.engine import Engine
from batchrun.engine.outcome import RowSettings, Work, prepare
from batchrun.engine.tally import RowTally
from batchrun.formats.inputs import read_rows
from batchrun.runs.compose import job_client, job_engine
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorThread

LOST = "the lease of s3://b/out.parquet was taken over by run x on host-b"


class LosesAfter:
    """Fresh for the first ``admits`` asks; then ``confirm`` (on a worker thread) says no."""

    def __init__(self, admits: int) -> None:
        self.left = admits
        self.confirms: list[str] = []

    def fresh(self) -> bool:
        self.left -= 1
        return self.left >= 0

    def confirm(self) -> str | None:
        self.confirms.append(threading.current_thread().name)
        return LOST


def test_a_send_check_that_says_no_stops_the_run_before_the_next_request(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(60))
    config = job_config(inp, tmp_path / "out.parquet", sim.base_url, concurrency=4)
    check = LosesAfter(25)
    notes: list[str] = []
    rows: list[dict[str, Any]] = []

    async def go() -> Engine:
        async with job_client(config, Runtime()) as client:
            engine = job_engine(
                config, client, RowTally(), Runtime(), notify=notes.append, send_check=check
            )
            works = (prepare(row, RowSettings.of(config)) for row in read_rows(config.input.path))

            def record(work: Work, row: dict[str, Any]) -> None:
                rows.append(row)

            await engine.run(works, record)
            return engine

    engine = asyncio.run(go())
    assert engine.closed_by == LOST
    assert sim.stats.snapshot().requests == 25  # not one more
    assert len(rows) == 25 and all(r["status"] == "ok" for r in rows)  # in flight: recorded
    assert len(check.confirms) == 1 and check.confirms[0] != threading.main_thread().name
    assert [n for n in notes if LOST in n] == [
        f"batchrun: {LOST}; sending nothing more, finishing the requests in flight"
    ]


def test_a_batch_run_whose_send_check_says_no_creates_no_more_batches(tmp_path: Path) -> None:
    """The same gate stands before each Message Batch a run creates (``batches.run``):
    once the lease is lost, no batch is created; those created keep running on the API."""
    from batchrun.batches.run import _BatchJob, _open_journal
    from batchrun.client.batch_endpoints import BatchesApi
    from batchrun.runs.output import RunOutput
    from batchrun.runs.plan import RowCounter
    from batchrun.runs.summary import RunSummary
    from batchrun.simulator import SimulatorConfig

    inp = write_jsonl(tmp_path / "in.jsonl", prompts(40))
    with SimulatorThread(SimulatorConfig(batch_processing_s=30)) as bsim:
        config = job_config(
            inp, tmp_path / "out.parquet", bsim.base_url, via="batches", batch_max_requests=10
        )
        check = LosesAfter(1)  # the first batch may go; asked again, the lease is lost

        async def go() -> _BatchJob:
            output = RunOutput(config.output, config.storage)
            output.open()
            async with job_client(config, Runtime()) as client:
                api = BatchesApi(client, max_retries=0)
                summary = RunSummary(input=config.input.path, output=config.output.path)
                job = _BatchJob(
                    config, api, _open_journal(config), output.sink, summary, bytearray(),
                    RowCounter(), asyncio.sleep, None, check,
                )  # fmt: skip
                await job.submit(
                    prepare(row, RowSettings.of(config)) for row in read_rows(config.input.path)
                )
            await output.close()
            return job

        job = asyncio.run(go())
        assert job.closed_by == LOST and job.stopping
        assert bsim.stats.snapshot().batches_created == 1
        assert job.summary.batches_created == 1
        assert len(check.confirms) == 1
