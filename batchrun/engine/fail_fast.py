"""Stop a run whose first requests all fail the same way, before it fails every row.

Until the API has answered once, failures that say nothing is there (no connection, or an
answer that is not the Messages API's) are retried only a little (``QUICK_RETRIES`` times,
``QUICK_WAIT_S`` at most between), so a wrong --base-url or no network stops the run in
seconds, with its cause, rather than after minutes of backoff per row. After the first answer
every failure gets the full retry policy again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchrun.client.response import MALFORMED
from batchrun.client.retry import RETRYABLE_STATUSES
from batchrun.core.errors import (
    CONNECTION_ERROR,
    TIMEOUT,
    ApiConnectionError,
    ApiError,
    ApiResponseError,
    FatalRunError,
)
from batchrun.core.scrub import url_without_secrets
from batchrun.core.wording import option
from batchrun.store.columns import STATUS_OK

# Error types of a row that got no answer at all: the API was never heard from.
UNREACHABLE_TYPES = frozenset({CONNECTION_ERROR, TIMEOUT})

# Before the API's first answer: retries of a failure that says nothing is there, and the
# longest wait before each. A refused connection fails in milliseconds, so five rows of
# three attempts take a second or two; a flaky start still gets its retries.
QUICK_RETRIES = 2
QUICK_WAIT_S = 0.25

_UNREACHABLE = ("unreachable",)
_NOT_THE_API = ("not the API",)


def is_non_api_answer(exc: BaseException) -> bool:
    """A 2xx that is no Messages API reply at all: not JSON, not a message, not an event
    stream (a proxy's login page, a web server at the wrong --base-url)."""
    return (
        isinstance(exc, ApiResponseError)
        and exc.error_type == MALFORMED
        and exc.status is not None
        and 200 <= exc.status < 300
    )


def says_nothing_is_there(exc: BaseException) -> bool:
    """A failure that, before any answer, suggests no API at the base URL: no connection at
    all (refused, reset, DNS), or an answer that is not the API's. Timeouts are not: an API
    can be slow to answer its first requests."""
    return isinstance(exc, ApiConnectionError) or is_non_api_answer(exc)


def is_an_answer(exc: BaseException) -> bool:
    """A failed attempt that still shows the API is there: an HTTP error status, or an
    error the API reported inside its reply."""
    return isinstance(exc, ApiError) and exc.status is not None and not is_non_api_answer(exc)


class FailFast:
    """Stops a run whose first requests all fail the same way, before it fails them all.

    A model name that does not exist (404) or a parameter the API refuses for every row
    would otherwise fail a million rows one by one; so would an API that cannot be reached
    (a wrong --base-url, no network, a proxy in the way), each row after minutes of retries,
    and a server that answers with something else (an HTML page with 200). Once any row
    succeeds, per-row errors are just per-row errors.

    The sender tells it when the API first answers (``answered``) and asks it which failures
    get only quick retries until then (``quick_retries``).
    """

    LIMIT = 5

    def __init__(self, base_url: str = "") -> None:
        self._armed = True
        self._answered = False
        self._last: tuple[Any, ...] | None = None
        self._count = 0
        self._base_url = url_without_secrets(base_url)

    @property
    def heard_from_api(self) -> bool:
        return self._answered

    def answered(self) -> None:
        """The API answered a request (a reply or an error status): it is there."""
        self._answered = True

    def quick_retries(self, exc: BaseException) -> int | None:
        """How many retries ``exc`` may have at most, or None for the full retry policy."""
        if self._answered or not says_nothing_is_there(exc):
            return None
        return QUICK_RETRIES

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

    def _kind(self, row: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """What a failure says of the rows to come, or None when it says nothing."""
        status = row["http_status"]
        if status is None:
            # No answer at all, retries spent: every row would go the same way. Messages vary
            # (refused, reset, timed out), so only the kind is compared.
            return _UNREACHABLE if row["error_type"] in UNREACHABLE_TYPES else None
        if status in RETRYABLE_STATUSES or status >= 500:
            return None  # a transient failure: says nothing of the rest
        if status < 300:
            if row["error_type"] == MALFORMED and not self._answered:
                return _NOT_THE_API  # no reply of the API's yet, only something else
            return None  # answered, but the answer broke the job's json_schema: a per-row error
        return (status, row["error_type"], row["error_message"])

    def _message(self, row: Mapping[str, Any]) -> str:
        where = self._base_url or "the API"
        cause = (
            f"{row['error_type']} after {row['attempts']} attempt(s) each: {row['error_message']}"
        )
        if self._last == _UNREACHABLE:
            return (
                f"stopping early: the first {self._count} requests all got no answer from "
                f"{where} ({cause}). Check the network and {option('base_url')}; the rows in "
                f"error are kept: run again with {option('retry_errors', True)} to send them"
            )
        if self._last == _NOT_THE_API:
            return (
                f"stopping early: the first {self._count} requests were all answered by "
                f"{where} with something that is not the Messages API (HTTP "
                f"{row['http_status']} {cause}), such as a web page or a proxy's login page. "
                f"Check {option('base_url')}: the API's root, such as https://api.anthropic.com; "
                f"the rows in error are kept: run again with {option('retry_errors', True)} to "
                "send them"
            )
        return (
            f"stopping early: the first {self._count} requests all failed with HTTP "
            f"{row['http_status']} {row['error_type']}: {row['error_message']}"
        )
