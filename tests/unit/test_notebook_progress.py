"""The notebook's display (``live.notebook``): a tqdm bar set from the driver's counts on each
beat of its timer, closed with the final counts; nothing at all when quiet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchrun.live.frames import Pace, Snapshot
from batchrun.live.notebook import NotebookProgress, in_notebook, postfix
from batchrun.runs.runtime import Runtime


class FakeBar:
    """What NotebookProgress asks of a tqdm bar."""

    def __init__(self, **kwargs: Any) -> None:
        self.total = kwargs["total"]
        self.n = 0
        self.postfix = ""
        self.refreshed = 0
        self.closed = False
        self.written: list[str] = []

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def refresh(self) -> None:
        self.refreshed += 1

    def write(self, text: str, file: Any = None) -> None:
        self.written.append(text)

    def close(self) -> None:
        self.closed = True


def _progress(snapshot: Callable[[], Snapshot], quiet: bool = False) -> tuple[Any, list[Any]]:
    bars: list[FakeBar] = []
    beats: list[Callable[[], None]] = []

    def bar(**kwargs: Any) -> FakeBar:
        bars.append(FakeBar(**kwargs))
        return bars[-1]

    def ticker(interval: float, tick: Callable[[], None]) -> Callable[[], None]:
        beats.append(tick)
        return lambda: beats.clear()

    clock = iter(float(t) for t in range(100))
    shown = NotebookProgress(
        None, snapshot, quiet=quiet, bar=bar, ticker=ticker, clock=lambda: next(clock)
    )
    return shown, [bars, beats]


def test_the_bar_follows_the_counts_on_each_beat_and_keeps_the_last() -> None:
    state = {"done": 0}

    def snapshot() -> Snapshot:
        done = state["done"]
        return Snapshot(done=done, total=50, error=1, cost_usd=0.01 * done, projected_cost=0.5)

    shown, (bars, beats) = _progress(snapshot)
    (bar,) = bars
    state["done"] = 20
    beats[0]()
    assert (bar.n, bar.total) == (20, 50)
    assert bar.postfix == "$0.2000 (~$0.5000 in all), 1 error"
    shown.log("batchrun: warning: something")
    assert bar.written == ["batchrun: warning: something"]
    state["done"] = 50
    shown.close()
    assert bar.n == 50 and bar.closed and not beats  # the timer stopped, the bar stays
    assert bar.postfix == "$0.5000, 1 error"  # done: no projection to show


def test_quiet_draws_nothing() -> None:
    shown, (bars, beats) = _progress(lambda: Snapshot(done=0, total=1), quiet=True)
    shown.advance()
    shown.log("x")
    shown.close()
    assert bars == [] and beats == []


def test_a_text_status_is_shown_after_the_rows_counted() -> None:
    assert postfix(Snapshot(done=1, total=None, note="count_tokens calls=3"), Pace()) == (
        "count_tokens calls=3"
    )


def test_outside_a_notebook_the_runtime_keeps_the_terminal_display() -> None:
    assert not in_notebook()
    shown = Runtime().progress(3, lambda: "x", quiet=True)
    assert type(shown).__name__ == "Progress"
