"""Progress display: a few live lines on a terminal, a plain line every few seconds in a log,
or nothing (``--quiet``).

One interface for all three, so a driver never asks where its output goes. The driver hands
over a callable that returns its counts (a ``display.Snapshot``, or for a simple pass one
line of text); a timer reads it and redraws, so the display moves while requests are in
flight and no row has finished yet. Log lines (``log``) go above the live lines, which are
erased and drawn again beneath them, so they never tear.

A hand-made renderer rather than tqdm or rich: a tqdm bar is one line whose postfix is cut at
the terminal's width, and rich would be a dependency for what is a cursor-up, a clear and a
few lines of text (``display`` makes them, as pure functions).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO

from batchrun.live.frames import Pace, Rates, Snapshot, frame, plain_line

REFRESH_EVERY_S = 0.25  # four redraws a second: smooth to the eye, cheap to format
LINE_EVERY_S = 15.0  # a log line every so often: enough to see a run is alive, not a flood
# VT100: to the start of the line, N lines up; erase from the cursor to the end of the screen.
_UP = "\r\x1b[{n}A"
_CLEAR_BELOW = "\x1b[J"

Status = Callable[[], "Snapshot | str"]
# start(interval, tick) calls tick() every interval seconds until the returned stop() is called.
Ticker = Callable[[float, Callable[[], None]], Callable[[], None]]


def loop_ticker(interval: float, tick: Callable[[], None]) -> Callable[[], None]:
    """Ticks from a task on the running event loop: the counts it reads are the loop's, so
    they are never read half-updated. Without a running loop, no timer: the display then
    moves on ``advance`` and ``log`` only."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return lambda: None

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval)
            tick()

    task = loop.create_task(beat())

    def stop() -> None:
        task.cancel()

    return stop


def terminal_width(stream: IO[str]) -> int:
    """Columns of the terminal ``stream`` writes to (stdout may be a file: ``run --json``)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return shutil.get_terminal_size().columns


def is_live_terminal(stream: IO[str], term: str | None) -> bool:
    """A terminal that understands cursor movement: a tty, and not TERM=dumb (Emacs shells,
    some CI consoles)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and term != "dumb"


class Progress:
    """Rows done out of ``total``; ``status()`` of the caller tells the rest.

    ``status`` returns a ``Snapshot`` (whose ``done`` then wins over ``advance``'s count) or a
    line of text shown under the row count. Seams: ``clock``, ``ticker`` (the timer), and
    ``width`` (the terminal's columns, asked on each draw); ``interactive`` forces the mode.
    """

    def __init__(
        self,
        total: int | None,
        status: Status,
        *,
        quiet: bool = False,
        stream: IO[str] | None = None,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        line_every: float = LINE_EVERY_S,
        refresh_every: float = REFRESH_EVERY_S,
        ticker: Ticker = loop_ticker,
        width: Callable[[], int] | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._status = status
        self._quiet = quiet
        self._clock = clock
        self._line_every = line_every
        self._total = total
        self._done = 0
        self._started = clock()
        self._last_line = self._started
        self._rates = Rates()
        self._pace = Pace()
        self._drawn = 0  # live lines on the screen now, below the log
        self._width = width if width is not None else lambda: terminal_width(self._stream)
        if interactive is None:
            interactive = is_live_terminal(self._stream, environ.get("TERM"))
        self._live = interactive and not quiet
        self._closed = quiet
        self._stop_ticker: Callable[[], None] = lambda: None
        if not quiet:
            self._stop_ticker = ticker(refresh_every if self._live else 1.0, self.tick)

    def advance(self, n: int = 1) -> None:
        """Count ``n`` finished rows."""
        self._done += n

    def tick(self) -> None:
        """The timer's beat: redraw the live lines, or write the plain line when it is due."""
        if self._closed:
            return
        now = self._clock()
        snapshot = self._snapshot()
        self._pace = self._rates.add(now, snapshot)
        if self._live:
            self._draw(snapshot, now)
        elif now - self._last_line >= self._line_every:
            self._last_line = now
            self._write(plain_line(snapshot, self._pace, now - self._started) + "\n")

    def log(self, message: str) -> None:
        """One line for the user (warnings, events), printed above the live lines."""
        if self._quiet:
            return
        if not self._live or self._closed:
            self._write(message + "\n")
            return
        self._write(self._erase() + message + "\n")
        self._drawn = 0
        self._draw(self._snapshot(), self._clock())

    def close(self) -> None:
        """Stop the timer and erase the live lines (the summary takes their place)."""
        if self._closed:
            return
        self._closed = True
        self._stop_ticker()
        if self._live and self._drawn:
            self._write(self._erase())
            self._drawn = 0

    # -- drawing --------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        status = self._status()
        if isinstance(status, Snapshot):
            return status
        return Snapshot(done=self._done, total=self._total, note=status or None)

    def _draw(self, snapshot: Snapshot, now: float) -> None:
        lines = frame(snapshot, self._pace, now - self._started, self._width())
        self._write(self._erase() + "".join(line + "\n" for line in lines))
        self._drawn = len(lines)

    def _erase(self) -> str:
        return _UP.format(n=self._drawn) + _CLEAR_BELOW if self._drawn else ""

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()
