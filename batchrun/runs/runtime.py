"""The seams of a run, in one object: what a test, a notebook or a gateway replaces.

``Runtime`` carries the HTTP transport (``httpx.MockTransport`` in tests, a gateway's own),
the wait between retries (a test's no-op), the live display (where it draws, and the display
itself: in a Jupyter kernel, a ``tqdm.auto`` bar, ``live.notebook``), and who is handed each
output row as it is journaled (``batchrun.iter_answers``). It is passed once, from the public
API or the command line down to the driver, which hands each part to the layer that uses it;
no function between takes the seams one by one.

    runtime = Runtime(transport=httpx.MockTransport(handler), sleep=no_wait)
    summary = await run_online(config, runtime)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

import httpx

from batchrun.live.notebook import NotebookProgress, in_notebook
from batchrun.live.progress import Progress, Status

Sleep = Callable[[float], Awaitable[None]]


class ProgressView(Protocol):
    """What a driver tells the person watching: rows done, and one-line events."""

    def advance(self, n: int = 1) -> None: ...

    def log(self, message: str) -> None: ...

    def close(self) -> None: ...


# (total rows or None, the driver's counts, quiet) -> the display for one run.
ShowProgress = Callable[[int | None, Status, bool], ProgressView]


@dataclass(frozen=True)
class Runtime:
    """A run's seams; every one has the real thing as its default."""

    transport: httpx.AsyncBaseTransport | None = None  # None: the configured HTTP backend
    sleep: Sleep = asyncio.sleep  # waits between retries and during 429 pauses
    progress_stream: IO[str] | None = None  # where the live display draws; None: stderr
    show_progress: ShowProgress | None = None  # None: the live display, or a notebook's bar
    # Handed each output row once it is journaled, in finishing order (online runs).
    on_row: Callable[[dict[str, Any]], None] | None = None

    def progress(self, total: int | None, status: Status, *, quiet: bool) -> ProgressView:
        """The display for one run of ``total`` rows (None: unknown): a bar in a notebook,
        the live lines (or a line now and then) elsewhere."""
        if self.show_progress is not None:
            return self.show_progress(total, status, quiet)
        if self.progress_stream is None and in_notebook():
            return NotebookProgress(total, status, quiet=quiet)
        return Progress(total, status, quiet=quiet, stream=self.progress_stream)


DEFAULT = Runtime()
