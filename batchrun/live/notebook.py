"""The progress of a run in a notebook: a ``tqdm.auto`` bar (a widget in Jupyter, where the
terminal's live lines would be a line of text every 15 seconds), moved on a timer with the rows
done, their rate (tqdm's), the cost and the errors.

The same interface as the terminal's display (``live.progress.Progress``: ``advance``,
``log``, ``close``) and the same counts (the driver's ``Snapshot``), so a driver never asks
where it is drawn. Chosen by ``runs.runtime.Runtime.progress`` when the code runs in a Jupyter
kernel (``in_notebook``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from batchrun.live.frames import Pace, Rates, Snapshot
from batchrun.live.progress import Status, Ticker, loop_ticker

REFRESH_EVERY_S = 0.5  # a widget redrawn twice a second: every comm message costs the kernel

BarFactory = Callable[..., Any]  # tqdm's signature: total=, desc=, unit=, ...


def in_notebook() -> bool:
    """True in a Jupyter kernel (IPython's ZMQ shell): where a widget can be shown."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    get = getattr(ipython, "get_ipython", None)
    shell = get() if get is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _auto_bar(**kwargs: Any) -> Any:
    from tqdm.auto import tqdm  # a widget in Jupyter, text elsewhere

    return tqdm(**kwargs)


class NotebookProgress:
    """Rows done of ``total`` on a tqdm bar: its postfix the rate, the cost (and what the
    whole run would cost at that pace) and the errors; log lines printed above it."""

    def __init__(
        self,
        total: int | None,
        status: Status,
        *,
        quiet: bool = False,
        bar: BarFactory = _auto_bar,
        ticker: Ticker = loop_ticker,
        clock: Callable[[], float] = time.monotonic,
        refresh_every: float = REFRESH_EVERY_S,
    ) -> None:
        self._status = status
        self._total = total
        self._done = 0
        self._clock = clock
        self._rates = Rates()
        self._pace = Pace()
        self._closed = quiet
        self._bar: Any = None
        self._stop_ticker: Callable[[], None] = lambda: None
        if not quiet:
            self._bar = bar(total=total, desc="batchrun", unit="row", dynamic_ncols=True)
            self._stop_ticker = ticker(refresh_every, self.tick)

    def advance(self, n: int = 1) -> None:
        """Count ``n`` finished rows (the bar moves on the next beat)."""
        self._done += n

    def tick(self) -> None:
        """The timer's beat: the bar set to the driver's counts."""
        if self._closed or self._bar is None:
            return
        snapshot = self._snapshot()
        self._pace = self._rates.add(self._clock(), snapshot)
        bar = self._bar
        if snapshot.total is not None and bar.total != snapshot.total:
            bar.total = snapshot.total
        bar.n = snapshot.done
        bar.set_postfix_str(postfix(snapshot, self._pace), refresh=False)
        bar.refresh()

    def log(self, message: str) -> None:
        """A line for the user, above the bar."""
        if self._bar is None:
            return
        self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        """Stop the timer; the bar shows the final counts and stays."""
        if self._closed:
            return
        self.tick()
        self._closed = True
        self._stop_ticker()
        self._bar.close()

    def _snapshot(self) -> Snapshot:
        status = self._status()
        if isinstance(status, Snapshot):
            return status
        return Snapshot(done=self._done, total=self._total, note=status or None)


def postfix(snapshot: Snapshot, pace: Pace) -> str:
    """What the bar shows after its count and rate (tqdm's own): the cost, what the run
    would cost at that pace, and the errors."""
    parts = []
    if snapshot.cost_usd is not None:
        cost = f"${snapshot.cost_usd:.4f}"
        if snapshot.projected_cost is not None and snapshot.done != snapshot.total:
            cost += f" (~${snapshot.projected_cost:.4f} in all)"
        parts.append(cost)
    if snapshot.error is not None:
        parts.append(f"{snapshot.error:,} error" + ("s" if snapshot.error != 1 else ""))
    if snapshot.note:
        parts.append(snapshot.note)
    return ", ".join(parts)
