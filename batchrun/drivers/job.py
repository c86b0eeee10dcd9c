"""``run``: a job to its end, online or through Message Batches, as its config says.

from batchrun import load_config, run
summary = run(load_config(Path("jobs/label_sentiment.toml"), {"simulate": True}))
print(summary.final)
"""

from __future__ import annotations

import asyncio
from collections.abc import Container
from typing import IO

import httpx

from batchrun.config.load import RunConfig
from batchrun.drivers.batches import run_batches_async
from batchrun.drivers.online import run_async
from batchrun.drivers.session import Sleep
from batchrun.drivers.summary import RunSummary


def run(
    config: RunConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress_stream: IO[str] | None = None,
    retry_sleep: Sleep = asyncio.sleep,
    only: Container[int] | None = None,
) -> RunSummary:
    """Run a job to the end and return its summary. See ``run_async``.

    A job with ``via = "batches"`` goes through the Message Batches API (``drivers.batches``).
    """
    if config.via == "batches":
        return asyncio.run(
            run_batches_async(
                config, transport=transport, progress_stream=progress_stream, sleep=retry_sleep
            )
        )
    return asyncio.run(
        run_async(
            config,
            transport=transport,
            progress_stream=progress_stream,
            retry_sleep=retry_sleep,
            only=only,
        )
    )
