"""``estimate --via auto --deadline D``: the cost range of a job split between the lanes as
the run would plan it (``batches.deadline``), from what earlier runs of the output recorded.

The low end is the expected case: the rows at the batch price, but for those the plan sends
online anyway (the pilot that measures the online pace, or every row when the history says
no batch ends in time). The high end is the worst case the history allows: with no batch of
this output timed yet, the batches may not end before the fallback, and every row may go
online at the full price.
"""

from __future__ import annotations

from datetime import datetime

from batchrun.batches.auto import PILOT_ROWS
from batchrun.batches.deadline import (
    DEFAULT_REQUEST_S,
    BatchHistory,
    DeadlinePlan,
    Pace,
    history_path,
    span,
)
from batchrun.config.load import RunConfig
from batchrun.config.settings import DEFAULT_CONCURRENCY
from batchrun.core.deadline import deadline_moment
from batchrun.core.timestamps import utc_now
from batchrun.estimation.figures import AutoCost, Estimate


def online_shares(
    plan: DeadlinePlan, rows: int, now: datetime, pilot: int, *, known: bool, paced: bool
) -> tuple[float, float, str]:
    """(share of ``rows`` expected online, share online at worst, why): pure arithmetic.
    ``known``: the history knows how long batches take (not only a lower bound); ``paced``:
    the online pace was measured (else the run measures it with ``pilot`` rows first)."""
    if rows <= 0:
        return 0.0, 0.0, "no row left to send"
    first = min(pilot, rows) / rows
    why = plan.why_online(now, rows)
    if why is not None and (paced or not plan.batches_in_time(now)):
        return 1.0, 1.0, f"every row online: {why}"
    if not paced:
        return (
            first,
            1.0,
            f"the online pace is not measured yet: the run sends {pilot:,} rows online first "
            "to measure it, and moves the rest online if the deadline needs it",
        )
    if not known:
        return (
            first,
            1.0,
            "how long a batch of this output takes is not known yet: if the batches do not "
            "end before the fallback, every row still waiting goes online at the full price",
        )
    return (
        first,
        first,
        f"earlier batches of this output ended within {span(plan.turnaround_s or 0)}, which "
        "the deadline allows",
    )


def auto_cost(config: RunConfig, est: Estimate, now: datetime | None = None) -> AutoCost | None:
    """The range for ``--via auto``; None without a deadline or a price."""
    text = config.batches.deadline
    if text is None:
        return None
    start = now or utc_now()
    deadline = deadline_moment(text, start)
    history = BatchHistory.load(history_path(config.output.path))
    concurrency = (
        DEFAULT_CONCURRENCY if config.engine.concurrency_auto else config.engine.concurrency
    )
    measured = history.request_s or est.latency_s
    request_s = measured or DEFAULT_REQUEST_S
    rpm = config.engine.limits.for_model(config.defaults.model or "").rpm
    plan = DeadlinePlan.make(start, deadline, Pace(request_s, concurrency, rpm), history)
    pilot = 0 if history.request_s is not None else min(PILOT_ROWS, concurrency)
    low_share, high_share, why = online_shares(
        plan, est.pending, start, pilot, known=history.known, paced=measured is not None
    )
    batch_low, batch_high = _ends(est, batch=True)
    online_low, online_high = _ends(est, batch=False)
    if None in (batch_low, batch_high, online_low, online_high):
        return AutoCost(text, low_share, high_share, None, None, why)
    assert batch_low is not None and batch_high is not None
    assert online_low is not None and online_high is not None
    return AutoCost(
        text,
        low_share,
        high_share,
        batch_low + low_share * (online_low - batch_low),
        batch_high + high_share * (online_high - batch_high),
        why,
    )


def _ends(est: Estimate, *, batch: bool) -> tuple[float | None, float | None]:
    """The low and high ends of the job's cost in one lane: the 10-90% range when it was
    projected, else the floor and the ceiling."""
    expected = est.total_cost(batch)
    if expected is not None:
        return expected[0], expected[2]
    if est.unknown_models and len(est.unknown_models) == len(est.models):
        return None, None
    return est.total_floor(batch), est.total_ceiling(batch)
