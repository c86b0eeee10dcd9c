"""Stop a run whose first requests all fail the same way, before it fails every row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchrun.api.retry import RETRYABLE_STATUSES
from batchrun.core.errors import CONNECTION_ERROR, TIMEOUT, FatalRunError
from batchrun.core.scrub import url_without_secrets
from batchrun.store.columns import STATUS_OK

# Error types of a row that got no answer at all: the API was never heard from.
UNREACHABLE_TYPES = frozenset({CONNECTION_ERROR, TIMEOUT})


class FailFast:
    """Stops a run whose first requests all fail the same way, before it fails them all.

    A model name that does not exist (404) or a parameter the API refuses for every row
    would otherwise fail a million rows one by one; so would an API that cannot be reached
    (a wrong --base-url, no network, a proxy in the way), each row after minutes of retries.
    Once any row succeeds, per-row errors are just per-row errors.
    """

    LIMIT = 5

    def __init__(self, base_url: str = "") -> None:
        self._armed = True
        self._last: tuple[Any, ...] | None = None
        self._count = 0
        self._base_url = url_without_secrets(base_url)

    def observe(self, row: Mapping[str, Any]) -> None:
        if not self._armed:
            return
        if row["status"] == STATUS_OK:
            self._armed = False
            return
        key = self._kind(row)
        if key is None:
            return
        self._count = self._count + 1 if key == self._last else 1
        self._last = key
        if self._count >= self.LIMIT:
            raise FatalRunError(self._message(row))

    @staticmethod
    def _kind(row: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """What a failure says of the rows to come, or None when it says nothing."""
        status = row["http_status"]
        if status is None:
            # No answer at all, retries spent: every row would go the same way. Messages vary
            # (refused, reset, timed out), so only the kind is compared.
            return ("unreachable",) if row["error_type"] in UNREACHABLE_TYPES else None
        if status in RETRYABLE_STATUSES or status >= 500:
            return None  # a transient failure: says nothing of the rest
        if status < 300:
            return None  # answered, but the answer broke the job's json_schema: a per-row error
        return (status, row["error_type"], row["error_message"])

    def _message(self, row: Mapping[str, Any]) -> str:
        if self._last == ("unreachable",):
            return (
                f"stopping early: the first {self._count} requests all got no answer from "
                f"{self._base_url or 'the API'} ({row['error_type']} after {row['attempts']} "
                f"attempt(s) each: {row['error_message']}). Check the network and --base-url; "
                "the rows in error are kept: run again with --retry-errors to send them"
            )
        return (
            f"stopping early: the first {self._count} requests all failed with HTTP "
            f"{row['http_status']} {row['error_type']}: {row['error_message']}"
        )
