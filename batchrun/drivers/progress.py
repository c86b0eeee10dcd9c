"""Progress display: a live tqdm bar on a terminal, plain periodic lines otherwise, or nothing.

One interface for all three, so the runner never asks where its output goes. Log lines go
through the bar (``tqdm.write``) so they never tear it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

from tqdm import tqdm

# Refreshing the postfix costs string formatting; a few times a second is all an eye needs.
_POSTFIX_EVERY_S = 0.25
_LINE_EVERY_S = 10.0


class Progress:
    """Shows rows done out of ``total``; ``status_line()`` of the caller fills the postfix."""

    def __init__(
        self,
        total: int | None,
        status_line: Callable[[], str],
        *,
        quiet: bool = False,
        stream: IO[str] | None = None,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        line_every: float = _LINE_EVERY_S,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._status_line = status_line
        self._quiet = quiet
        self._clock = clock
        self._line_every = line_every
        self._total = total
        self._done = 0
        self._started = clock()
        self._last_refresh = self._started
        if interactive is None:
            interactive = bool(getattr(self._stream, "isatty", lambda: False)())
        self._bar: Any = None
        if interactive and not quiet:
            self._bar = tqdm(
                total=total, file=self._stream, unit="row", dynamic_ncols=True, smoothing=0.05
            )

    def advance(self, n: int = 1) -> None:
        """Count ``n`` finished rows."""
        self._done += n
        now = self._clock()
        if self._bar is not None:
            self._bar.update(n)
            if now - self._last_refresh >= _POSTFIX_EVERY_S:
                self._bar.set_postfix_str(self._status_line(), refresh=False)
                self._last_refresh = now
        elif not self._quiet and now - self._last_refresh >= self._line_every:
            self._last_refresh = now
            self._write(self._plain_line(now))

    def log(self, message: str) -> None:
        """One line for the user (warnings, events), printed above the bar."""
        if self._quiet:
            return
        if self._bar is not None:
            self._bar.write(message, file=self._stream)
        else:
            self._write(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._status_line(), refresh=False)
            self._bar.close()
            self._bar = None

    def _plain_line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        of = f"/{self._total}" if self._total is not None else ""
        return (
            f"batchrun: {self._done}{of} rows, {self._done / elapsed:.1f} rows/s, "
            f"{self._status_line()}"
        )

    def _write(self, line: str) -> None:
        print(line, file=self._stream, flush=True)
