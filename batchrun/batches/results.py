"""A batch's results: spooled to disk as they stream in, then read back in input order.

The results endpoint returns one JSON line per request in no particular order, and a batch
may hold 100,000 of them. Each line goes straight to a spool file beside the output and only
its offset is kept (by position in the batch's intent), so the results are never all in
memory; the rows are then joined to them in input order, one at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
from array import array
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from batchrun.core.errors import ApiResponseError, OutputError
from batchrun.engine.outcome import VIA_BATCHES, RowSettings, Work, error_row, ok_row
from batchrun.rows.checks import without_surrogates
from batchrun.store.row_state import LAPSED_REASONS


class ResultSpool:
    """Result lines on disk, found again by their position in the batch."""

    def __init__(self, path: Path, positions: Mapping[str, int]) -> None:
        self.path = path
        self._positions = positions
        self._offsets = array("q", [-1]) * len(positions)
        self._file: Any = None
        self.unknown = 0  # lines whose custom_id is not in the batch (ignored)

    def __enter__(self) -> ResultSpool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def fill(self, lines: AsyncIterator[dict[str, Any]]) -> int:
        """Write every line to a fresh spool; return how many belong to the batch."""
        self.close()
        self._offsets = array("q", [-1]) * len(self._positions)
        self.unknown = 0
        found = 0
        try:
            with self.path.open("wb") as out:
                async for record in lines:
                    position = self._positions.get(str(record.get("custom_id")))
                    if position is None:
                        self.unknown += 1
                        continue
                    self._offsets[position] = out.tell()
                    out.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
                    found += 1
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        return found

    def get(self, position: int) -> dict[str, Any] | None:
        """The result line of the request at ``position``, or None when none came."""
        offset = self._offsets[position]
        if offset < 0:
            return None
        if self._file is None:
            self._file = self.path.open("rb")
        self._file.seek(offset)
        record: dict[str, Any] = json.loads(self._file.readline())
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


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
