"""``batchrun batches list|cancel SOURCE``: the job's Message Batches, as the API sees them.

The job's batch journal says which batches belong to it; the API says how far each got.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from batchrun.client.batch_endpoints import BatchesApi, BatchStatus
from batchrun.config.load import RunConfig
from batchrun.engine.connect import open_client
from batchrun.runs.claim import check_credentials
from batchrun.store.batch_journal import BatchEntry, BatchJournal, batch_journal_path


@dataclass(frozen=True)
class JobBatch:
    """One of the job's batches: what the journal recorded and, if it has an id, its status."""

    entry: BatchEntry
    status: BatchStatus | None

    @property
    def state(self) -> str:
        if self.entry.abandoned:
            return "never created"
        if self.entry.batch_id is None:
            return "unknown (run the job to reconcile)"
        if self.entry.collected:
            return "collected"
        return self.status.processing_status if self.status else "unknown"


def list_batches(
    config: RunConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> list[JobBatch]:
    """Every batch the job's journal knows, with its status from the API."""
    return asyncio.run(_visit(config, transport, cancel=False))


def cancel_batches(
    config: RunConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> list[JobBatch]:
    """Cancel the job's batches still processing; return every batch, as after the cancel.

    Results already produced stay available: re-running the job collects them, and the
    cancelled requests come back as ``canceled`` rows (see ``--resubmit-expired``).
    """
    return asyncio.run(_visit(config, transport, cancel=True))


async def _visit(
    config: RunConfig, transport: httpx.AsyncBaseTransport | None, *, cancel: bool
) -> list[JobBatch]:
    check_credentials(config, transport)
    journal = BatchJournal.load(batch_journal_path(config.output))
    found: list[JobBatch] = []
    async with open_client(config, transport) as client:
        api = BatchesApi(client, max_retries=config.max_retries)
        for entry in journal.entries.values():
            status = None
            if entry.batch_id is not None and not entry.collected:
                status = await api.retrieve(entry.batch_id)
                if cancel and status.processing_status == "in_progress":
                    status = await api.cancel(entry.batch_id)
            found.append(JobBatch(entry, status))
    return found
