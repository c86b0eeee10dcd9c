"""The arithmetic of ``--via auto --deadline D``: when the batch lane must give way to the
online lane, and what earlier runs of the output taught about both. Pure: a clock is passed
in, nothing is sent (the run itself is ``batches.auto``).

Two lanes answer a job's rows: Message Batches (half the price, no answer before a batch
ends) and online requests (full price, a pace the job can measure). The plan:

* the online lane's time for N rows is ``N x request_s / concurrency`` (or N at the rate
  limit's rpm, when slower), ``request_s`` measured by this run's pilot or an earlier run;
* a batch's turnaround is the longest one recorded for this output (``BatchHistory``); a
  batch cancelled before it ended counts as having taken at least that long;
* batches are used when the history says they end ``margin`` before the deadline, or when
  there is no history; the rows go online at the *fallback moment*::

      fallback = deadline - online time (rows still waiting) - cancel allowance - margin

  which moves later as batches are collected (fewer rows wait). At that moment the batch
  lane stops submitting and cancels its running batches (``batches.run``).

The cancel allowance is the longest cancel recorded (cancel asked -> batch ended), else
``CANCEL_REQUESTS`` requests' time (no less than ``MIN_CANCEL_S``): the API ends a cancel once
the requests in progress are done (docs/api-facts.md §8.3), which takes about one request.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from batchrun.client.batch_endpoints import BatchStatus
from batchrun.core.jsoncodec import compact
from batchrun.core.timestamps import utc_now
from batchrun.cost.budget import Budget
from batchrun.cost.models import local_input_tokens
from batchrun.cost.prices import PriceTable

HISTORY_SUFFIX = ".batch-times.json"
HISTORY_KEPT = 20  # batches (and cancels) remembered: the recent ones say most
DEFAULT_REQUEST_S = 10.0  # an online request's time when nothing measured it (conservative)
CANCEL_REQUESTS = 3.0  # a cancel ends once the requests in progress are done: ~ a request
MIN_CANCEL_S = 2.0
MARGIN_SHARE = 0.05  # of the time the deadline gives, kept free for the unforeseen
MIN_MARGIN_S = 2.0
MAX_MARGIN_S = 600.0

Clock = Callable[[], datetime]


def history_path(output: Path) -> Path:
    """``OUTPUT.batch-times.json``: how long this output's batches and online requests took."""
    return output.with_name(output.name + HISTORY_SUFFIX)


@dataclass
class BatchHistory:
    """What earlier runs measured, kept small: the last ``HISTORY_KEPT`` batches (rows,
    seconds from creation to end, and whether it ended by itself or was cancelled first: then
    the seconds are a lower bound), cancel durations, and the online seconds per request."""

    batches: list[dict[str, Any]] = field(default_factory=list)
    cancels: list[float] = field(default_factory=list)
    request_s: float | None = None

    @classmethod
    def load(cls, path: Path) -> BatchHistory:
        """The history at ``path``; empty when missing or unreadable (it only guides)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                [
                    {
                        "rows": int(b["rows"]),
                        "seconds": float(b["seconds"]),
                        "ended": bool(b["ended"]),
                    }
                    for b in data.get("batches", [])
                ][-HISTORY_KEPT:],
                [float(s) for s in data.get("cancels", [])][-HISTORY_KEPT:],
                None if data.get("request_s") is None else float(data["request_s"]),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls()

    def save(self, path: Path) -> None:
        """Written whole and renamed into place: a reader never sees half of it."""
        data = {
            "batches": self.batches[-HISTORY_KEPT:],
            "cancels": self.cancels[-HISTORY_KEPT:],
            "request_s": self.request_s,
        }
        spare = path.with_name(path.name + ".tmp")
        with contextlib.suppress(OSError):  # a history not kept only makes the next plan vaguer
            spare.write_text(compact(data) + "\n", encoding="utf-8")
            os.replace(spare, path)

    def batch_ended(self, rows: int, seconds: float, *, by_itself: bool) -> None:
        self.batches.append({"rows": rows, "seconds": round(seconds, 3), "ended": by_itself})
        del self.batches[:-HISTORY_KEPT]

    def cancel_took(self, seconds: float) -> None:
        self.cancels.append(round(max(seconds, 0.0), 3))
        del self.cancels[:-HISTORY_KEPT]

    @property
    def turnaround_s(self) -> float | None:
        """The longest batch recorded (a cancelled one took at least its time); None: none."""
        if not self.batches:
            return None
        return max(float(b["seconds"]) for b in self.batches)

    @property
    def ended_s(self) -> float | None:
        """The longest batch recorded that ended by itself; None: none did."""
        ended = [float(b["seconds"]) for b in self.batches if b["ended"]]
        return max(ended) if ended else None

    @property
    def known(self) -> bool:
        """Whether a batch ended by itself and took at least as long as any cancelled one:
        then the turnaround is known, not only bounded below."""
        ended = self.ended_s
        return ended is not None and ended >= (self.turnaround_s or 0.0)

    @property
    def cancel_s(self) -> float | None:
        return max(self.cancels) if self.cancels else None


@dataclass(frozen=True)
class Pace:
    """The online lane's pace: seconds per request on each of ``concurrency`` slots, and the
    rate limit's requests per minute when one is known."""

    request_s: float
    concurrency: int
    rpm: int | None = None

    def seconds(self, rows: int) -> float:
        """How long ``rows`` requests take online."""
        if rows <= 0:
            return 0.0
        spent = rows * self.request_s / max(self.concurrency, 1)
        if self.rpm:
            spent = max(spent, rows * 60.0 / self.rpm)
        return spent


@dataclass(frozen=True)
class DeadlinePlan:
    """When the rows must leave the batch lane, for a deadline and what is known."""

    start: datetime
    deadline: datetime
    pace: Pace
    turnaround_s: float | None  # from the history; None: not known
    cancel_s: float

    @classmethod
    def make(
        cls, start: datetime, deadline: datetime, pace: Pace, history: BatchHistory
    ) -> DeadlinePlan:
        cancel = history.cancel_s
        if cancel is None:
            cancel = max(CANCEL_REQUESTS * pace.request_s, MIN_CANCEL_S)
        return cls(start, deadline, pace, history.turnaround_s, cancel)

    @property
    def margin_s(self) -> float:
        window = (self.deadline - self.start).total_seconds()
        return min(max(MARGIN_SHARE * window, MIN_MARGIN_S), MAX_MARGIN_S)

    def online_start(self, rows: int) -> datetime:
        """The last moment ``rows`` can start online and end by the deadline, less the margin."""
        return self.deadline - timedelta(seconds=self.pace.seconds(rows) + self.margin_s)

    def fallback_at(self, rows: int) -> datetime:
        """When the batch lane must stop and cancel, ``rows`` still waiting for an answer."""
        return self.online_start(rows) - timedelta(seconds=self.cancel_s)

    def batches_in_time(self, now: datetime) -> bool:
        """Whether the history allows a batch created now to end before the deadline."""
        if self.turnaround_s is None:
            return True
        return now + timedelta(seconds=self.turnaround_s + self.margin_s) <= self.deadline

    def why_online(self, now: datetime, rows: int) -> str | None:
        """Why every row goes online from the start; None when batches are worth a try."""
        if not self.batches_in_time(now):
            return (
                f"earlier batches of this output took {span(self.turnaround_s or 0)} or more "
                f"to end, and the deadline is {span((self.deadline - now).total_seconds())} away"
            )
        if self.fallback_at(rows) <= now:
            return (
                f"the {rows:,} rows take about {span(self.pace.seconds(rows))} online, which "
                f"leaves no time for a batch before the deadline "
                f"({span((self.deadline - now).total_seconds())} away)"
            )
        return None


class DeadlineWatch:
    """What the batch lane asks while it runs (``batches.run``): is it time to move the rows
    online, and how long until then; it records what batches took, for the next plan."""

    def __init__(
        self, plan: DeadlinePlan, history: BatchHistory, clock: Clock = utc_now, *, rows: int = 0
    ):
        self.plan = plan
        self.rows = rows  # the rows the lane set out with, when its input cannot tell cheaply
        self.history = history
        self.clock = clock
        self.fell_back_at: datetime | None = None
        self.cancelled: dict[str, datetime] = {}  # batch id -> when its cancel was asked
        self.late_cancels = 0  # cancels that had not ended when the rows had to go online

    def due(self, rows_waiting: int) -> bool:
        return self.clock() >= self.plan.fallback_at(rows_waiting)

    def seconds_until(self, rows_waiting: int) -> float:
        return (self.plan.fallback_at(rows_waiting) - self.clock()).total_seconds()

    def past_online_start(self, rows_waiting: int) -> bool:
        return self.clock() >= self.plan.online_start(rows_waiting)

    def fall_back(self) -> None:
        if self.fell_back_at is None:
            self.fell_back_at = self.clock()

    def cancel_asked(self, batch_id: str) -> None:
        self.cancelled.setdefault(batch_id, self.clock())

    def batch_ended(self, rows: int, status: BatchStatus) -> None:
        """Record an ended batch: its turnaround, or, cancelled by this run, a lower bound of
        it (created -> cancel asked) and how long the cancel took."""
        if status.ended_at is None:
            return
        asked = self.cancelled.get(status.id)
        if asked is None:
            took = (status.ended_at - status.created_at).total_seconds()
            self.history.batch_ended(rows, took, by_itself=True)
            return
        self.history.batch_ended(rows, (asked - status.created_at).total_seconds(), by_itself=False)
        self.history.cancel_took((status.ended_at - asked).total_seconds())


def span(seconds: float) -> str:
    """``45 s``, ``12 min``, ``6.5 h``: a duration as a person says it."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class BatchReserve:
    """``--max-cost`` in the batch lane of ``--via auto``: a created batch is paid for every
    row it answers, and cannot be stopped as rows are answered, so rows are submitted only
    while the worst cases of all submitted so far, at the batch price, fit what the budget
    leaves the job (``cost.budget``'s worst case: the input with its margin, all of
    ``max_tokens``). The first row that does not fit, and every row after it, is left to the
    online lane, whose budget admits rows as an online run does, against what the job has
    really spent by then."""

    def __init__(self, room: Decimal, prices: PriceTable) -> None:
        self.room = room
        self.prices = prices
        self._worst = Budget(room, prices)  # only its worst-case arithmetic is used
        self.reserved = Decimal(0)
        self.full = False  # a row did not fit: no more rows go into batches

    def take(self, body: Mapping[str, Any]) -> bool:
        """Reserve ``body``'s worst case at the batch price; False when it does not fit (or
        its model has no price: the online lane then stops and says so)."""
        if self.full:
            return False
        worst = self._worst.worst_case(body, local_input_tokens(body, self.prices))
        if worst is None or self.reserved + worst * self.prices.batch_price_factor > self.room:
            self.full = True
            return False
        self.reserved += worst * self.prices.batch_price_factor
        return True
