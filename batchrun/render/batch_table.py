"""``batchrun batches list|cancel``: the job's Message Batches as a table a person reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchrun.batches.admin import JobBatch


def format_batches(batches: list[JobBatch], journal: str) -> str:
    """A table a person reads."""
    if not batches:
        return f"batchrun: no batches recorded in {journal}"
    lines = [f"batchrun: batches of this job ({journal})"]
    for batch in batches:
        entry, status = batch.entry, batch.status
        counts = ""
        if status is not None:
            counts = "  " + ", ".join(f"{n:,} {name}" for name, n in status.counts.items() if n)
        lines.append(
            f"  {entry.key:<5} {entry.batch_id or '-':<34} {batch.state:<12} "
            f"{entry.count:>7,} rows  created {entry.at:%Y-%m-%d %H:%M}Z{counts}"
        )
    return "\n".join(lines)
