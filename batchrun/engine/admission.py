"""The last check before a request goes out: "may this run still send?".

A driver may hand the engine a ``SendCheck``: an output on object storage hands its lease
(``remote.lease.Lease``), which another machine can take over while this process is stopped
or cut off. ``Gate.admit`` runs just before every attempt is sent (a retry too), after the
rate limits admitted it: ``fresh()`` first, which costs a clock reading; only when that says
no does it wait for ``confirm()`` (blocking, so on a worker thread, one at a time for all
requests). When ``confirm`` gives a reason, the gate closes for good: this request and every
later one are not sent (``AdmissionClosed``, a row left for a later run), the driver is told
once (``on_close``), and requests already sent finish and are recorded as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class SendCheck(Protocol):
    """Whether this run may still send (see the module's docstring)."""

    def fresh(self) -> bool:
        """Cheap: True when sending now is surely allowed."""
        ...

    def confirm(self) -> str | None:
        """Blocking: None when sending is allowed after all, else why the run must stop."""
        ...


class AdmissionClosed(Exception):
    """The gate is closed: the request was not sent (a later run sends it)."""


class Gate:
    """Asks ``check`` before each request; see the module's docstring."""

    def __init__(self, check: SendCheck, on_close: Callable[[str], None]) -> None:
        self._check = check
        self._on_close = on_close
        self._confirming: asyncio.Lock | None = None
        self.closed: str | None = None  # why the gate closed

    async def admit(self) -> None:
        """Return when the request may go; raise AdmissionClosed when it may not."""
        if self.closed is None and self._check.fresh():
            return
        if self._confirming is None:
            self._confirming = asyncio.Lock()
        async with self._confirming:  # one renewal for every request waiting on it
            if self.closed is None and not self._check.fresh():
                reason = await asyncio.to_thread(self._check.confirm)
                if reason is not None and self.closed is None:
                    self.closed = reason
                    self._on_close(reason)
        if self.closed is not None:
            raise AdmissionClosed(self.closed)
