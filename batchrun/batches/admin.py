"""``batchrun batches list|cancel SOURCE``: the job's Message Batches, as the API sees them.

The job's batch journal says which batches belong to it; the API says how far each got.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchrun.client.batch_endpoints import BatchesApi, BatchStatus
from batchrun.config.load import RunConfig
from batchrun.core.sync import run_sync
from batchrun.runs.claim import check_credentials
from batchrun.runs.compose import job_client
from batchrun.runs.runtime import DEFAULT, Runtime
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


def list_batches(config: RunConfig, runtime: Runtime = DEFAULT) -> list[JobBatch]:
    """Every batch the job's journal knows, with its status from the API (from sync code,
    a notebook's cell included: ``core.sync``)."""
    return run_sync(list_batches_async(config, runtime))


async def list_batches_async(config: RunConfig, runtime: Runtime = DEFAULT) -> list[JobBatch]:
    """``list_batches`` on the running event loop."""
    return await _visit(config, runtime, cancel=False)


def cancel_batches(config: RunConfig, runtime: Runtime = DEFAULT) -> list[JobBatch]:
    """Cancel the job's batches still processing; return every batch, as after the cancel.

    Results already produced stay available: re-running the job collects them, and the
    cancelled requests come back as ``canceled`` rows (see ``--resubmit-expired``).
    """
    return run_sync(cancel_batches_async(config, runtime))


async def cancel_batches_async(config: RunConfig, runtime: Runtime = DEFAULT) -> list[JobBatch]:
    """``cancel_batches`` on the running event loop."""
    return await _visit(config, runtime, cancel=True)


async def _visit(config: RunConfig, runtime: Runtime, *, cancel: bool) -> list[JobBatch]:
    check_credentials(config.client, runtime.transport)
    journal = BatchJournal.load(batch_journal_path(config.output.path))
    found: list[JobBatch] = []
    async with job_client(config, runtime) as client:
        api = BatchesApi(client, max_retries=config.engine.max_retries, sleep=runtime.sleep)
        for entry in journal.entries.values():
            status = None
            if entry.batch_id is not None and not entry.collected:
                status = await api.retrieve(entry.batch_id)
                if cancel and status.processing_status == "in_progress":
                    status = await api.cancel(entry.batch_id)
            found.append(JobBatch(entry, status))
    return found
