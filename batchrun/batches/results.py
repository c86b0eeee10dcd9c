"""A batch's result line into its output row (``result_row``).

The results endpoint returns one JSON line per request in no particular order, and a batch
may hold 100,000 of them: ``batches.run`` makes each line's output row as it arrives, from
what ``batches.sent`` kept of the row, so the results are never all in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from batchrun.core.errors import ApiResponseError
from batchrun.engine.outcome import VIA_BATCHES, RowSettings, Work, error_row, ok_row
from batchrun.rows.checks import without_surrogates
from batchrun.store.row_state import LAPSED_REASONS


def result_row(
    work: Work,
    rows: RowSettings,
    record: Mapping[str, Any],
    batch_id: str,
    processing_ms: float | None,
) -> dict[str, Any]:
    """The output row for one result line: succeeded, errored, canceled, expired
    (docs/api-facts.md §8.3).

    The run's credentials are masked in an errored result's texts (``rows.scrub``)."""
    result = record.get("result")
    result = result if isinstance(result, dict) else {}
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message")
        if not isinstance(message, dict):
            raise ApiResponseError(
                f"batch {batch_id}: a succeeded result has no message",
                error_type="malformed_response",
            )
        row = ok_row(work, rows, _billed_as_batch(message), VIA_BATCHES)
    elif kind == "errored":
        envelope = _table(result.get("error"))
        inner = _table(envelope.get("error")) or envelope
        # An errored result's message comes from the API's file, not through the client's
        # error boundary: it is scrubbed here (a gateway may quote the key in it).
        scrub = rows.scrub
        row = error_row(
            work,
            rows,
            scrub(str(inner.get("type") or "api_error")),
            scrub(str(inner.get("message") or "")),
            None,
            1,
            VIA_BATCHES,
        )
        request_id = envelope.get("request_id")
        row["request_id"] = (
            without_surrogates(scrub(request_id)) if isinstance(request_id, str) else None
        )
    elif kind in LAPSED_REASONS:
        row = error_row(work, rows, str(kind), LAPSED_REASONS[str(kind)], None, 1, VIA_BATCHES)
    else:
        row = error_row(
            work, rows, "unknown_result", f"unknown result type {kind!r}", None, 1, VIA_BATCHES
        )
    row["batch_id"] = batch_id
    row["attempts"] = 1
    row["elapsed_ms"] = processing_ms
    return row


def processing_ms(created_at: datetime, ended_at: datetime | None) -> float | None:
    """How long the batch took, from creation to its end: each of its rows' elapsed time."""
    if ended_at is None:
        return None
    return (ended_at - created_at).total_seconds() * 1000.0


def _billed_as_batch(message: dict[str, Any]) -> dict[str, Any]:
    """Batch answers are billed at the batch rate; say so where the usage leaves it out."""
    usage = message.get("usage")
    if isinstance(usage, dict) and usage.get("service_tier") != "batch":
        return {**message, "usage": {**usage, "service_tier": "batch"}}
    return message


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
