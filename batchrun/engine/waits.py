"""Long waits said out loud: a row held back for more than a few seconds tells the user what it
waits for, how long and why, so an hour-long retry-after is never an hour of silence.

Thousands of rows can wait at once for the same reason (a 529 storm, one 429 pause), so each
kind of wait is told at most once every ``NOTICE_EVERY_S``, with how many others were alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from batchrun.core.errors import ApiError
from batchrun.core.humanize import duration_s
from batchrun.core.wording import option

LONG_WAIT_S = 5.0  # a wait a person notices when nothing else moves
NOTICE_EVERY_S = 10.0  # at most one notice per kind of wait this often
HINT_ABOVE_S = 60.0  # a retry-after this long gets the --max-retry-wait hint


class WaitNotices:
    """Turns retry waits and 429 pauses of ``LONG_WAIT_S`` or more into one-line notices."""

    def __init__(
        self,
        notify: Callable[[str], None],
        *,
        capped: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._notify = notify
        self._capped = capped  # --max-retry-wait is set: no hint to set it
        self._clock = clock
        self._wall_clock = wall_clock
        self._last: dict[str, float] = {}
        self._alike: dict[str, int] = {}

    def retry(
        self, model: str, exc: BaseException, wait: float, *, paused: bool, attempt: int
    ) -> None:
        """Row about to wait ``wait`` s before attempt ``attempt`` (2 = the first retry);
        ``paused``: the wait is a 429 pause of admission for the whole model."""
        if wait < LONG_WAIT_S:
            return
        what = _failure(exc)
        key = f"{model}|{what}|{paused}"
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < NOTICE_EVERY_S:
            self._alike[key] = self._alike.get(key, 0) + 1
            return
        self._last[key] = now
        alike = self._alike.pop(key, 0)
        told_by = "the API's retry-after" if _retry_after(exc) is not None else "backoff"
        until = time.strftime("%H:%M:%S", time.localtime(self._wall_clock() + wait))
        if paused:
            text = (
                f"batchrun: {what} for {model}: sending to it is paused for "
                f"{duration_s(wait)}, until {until} ({told_by})"
            )
        else:
            text = (
                f"batchrun: {what}: a row waits {duration_s(wait)} before attempt {attempt}, "
                f"until {until} ({told_by})"
            )
        if alike:
            text += f"; {alike:,} more wait(s) like it since the last notice"
        if not self._capped and told_by != "backoff" and wait >= HINT_ABOVE_S:
            text += f"; {option('max_retry_wait', 'SECONDS')} caps such waits"
        self._notify(text)


def _retry_after(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, ApiError) else None


def _failure(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        status = f"HTTP {exc.status} " if exc.status is not None else ""
        return f"{status}{exc.error_type}"
    return type(exc).__name__
