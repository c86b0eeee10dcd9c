"""``--deadline`` read as a moment, and the arithmetic of ``--via auto``'s plan (fake clock)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from batchrun.batches.deadline import (
    HISTORY_KEPT,
    MIN_CANCEL_S,
    MIN_MARGIN_S,
    BatchHistory,
    BatchReserve,
    DeadlinePlan,
    DeadlineWatch,
    Pace,
    history_path,
)
from batchrun.client.batch_endpoints import BatchStatus
from batchrun.core.deadline import deadline_moment, duration_seconds
from batchrun.cost.prices import default_prices
from batchrun.estimation.deadline import online_shares
from batchrun.live.frames import Pace as FramePace
from batchrun.live.frames import Snapshot, frame, plain_line

START = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("45m", 2700), ("6h", 21600), ("1d", 86400), (" 1.5H ", 5400)],
)
def test_a_duration_counts_from_the_start(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds
    assert deadline_moment(text, START) == at(seconds)


def test_a_timestamp_is_itself_utc_when_it_says_no_offset() -> None:
    assert deadline_moment("2026-12-08T09:00:00Z", START) == datetime(
        2026, 12, 8, 9, tzinfo=timezone.utc
    )
    assert deadline_moment("2026-12-08T10:00:00+01:00", START) == datetime(
        2026, 12, 8, 9, tzinfo=timezone.utc
    )
    assert deadline_moment("2026-12-08T09:00:00", START).tzinfo is not None


@pytest.mark.parametrize("text", ["soon", "90", "5 minutes", "", "-5s"])
def test_anything_else_is_refused_saying_what_a_deadline_may_be(text: str) -> None:
    with pytest.raises(ValueError, match="is not a deadline: give a duration"):
        deadline_moment(text, START)


def test_a_zero_duration_leaves_no_time() -> None:
    with pytest.raises(ValueError, match="leaves no time"):
        deadline_moment("0s", START)


def test_the_online_pace_is_the_slower_of_the_slots_and_the_rate_limit() -> None:
    assert Pace(0.2, 16).seconds(2000) == pytest.approx(25.0)
    assert Pace(0.2, 16, rpm=600).seconds(2000) == pytest.approx(200.0)  # rpm binds
    assert Pace(0.2, 16).seconds(0) == 0


def plan(window_s: float, history: BatchHistory | None = None) -> DeadlinePlan:
    return DeadlinePlan.make(START, at(window_s), Pace(0.2, 16), history or BatchHistory())


def test_the_fallback_leaves_the_online_time_the_cancel_and_the_margin() -> None:
    p = plan(90)
    assert p.cancel_s == MIN_CANCEL_S  # 3 requests of 0.2 s is less than the floor
    assert p.margin_s == pytest.approx(4.5)  # 5% of 90 s
    # 2,000 rows take 25 s online: 90 - 25 - 2 - 4.5
    assert p.fallback_at(2000) == at(58.5)
    assert p.online_start(2000) == at(60.5)
    assert p.fallback_at(400) == at(78.5)  # fewer rows waiting: later
    assert plan(30).margin_s == MIN_MARGIN_S
    assert plan(10 * 86400).margin_s == 600  # capped


def test_a_recorded_cancel_replaces_the_allowance() -> None:
    history = BatchHistory()
    history.cancel_took(7.5)
    assert plan(90, history).cancel_s == 7.5


def test_history_decides_whether_batches_may_be_tried() -> None:
    nothing = plan(90)
    assert nothing.batches_in_time(START) and nothing.why_online(START, 2000) is None
    history = BatchHistory()
    history.batch_ended(2000, 15.0, by_itself=True)
    assert plan(90, history).why_online(START, 2000) is None
    history.batch_ended(2000, 600.0, by_itself=True)
    why = plan(90, history).why_online(START, 2000)
    assert why == (
        "earlier batches of this output took 10 min or more to end, and the deadline is 90 s away"
    )
    # Too many rows to leave time for a batch at all:
    crowded = plan(45).why_online(START, 20000)
    assert crowded is not None and "leaves no time for a batch" in crowded


def test_the_history_keeps_the_recent_batches_and_reads_back(tmp_path: Path) -> None:
    history = BatchHistory(request_s=0.3)
    for k in range(HISTORY_KEPT + 5):
        history.batch_ended(10, float(k), by_itself=True)
    history.batch_ended(10, 99.0, by_itself=False)  # cancelled: at least 99 s
    history.cancel_took(1.25)
    path = history_path(tmp_path / "out.parquet")
    assert path.name == "out.parquet.batch-times.json"
    history.save(path)
    again = BatchHistory.load(path)
    assert len(again.batches) == HISTORY_KEPT
    assert again.turnaround_s == 99.0 and again.ended_s == HISTORY_KEPT + 4
    assert not again.known  # the longest is only a lower bound
    assert again.cancels == [1.25] and again.request_s == 0.3
    path.write_text("not json")
    assert BatchHistory.load(path) == BatchHistory()  # only a guide: unreadable is empty


def status(batch_id: str, created: float, ended: float | None) -> BatchStatus:
    return BatchStatus(
        batch_id,
        "ended" if ended else "in_progress",
        {},
        at(created),
        None if ended is None else at(ended),
        None,
    )


def test_the_watch_falls_due_on_its_clock_and_records_what_batches_took() -> None:
    now = [START]
    history = BatchHistory()
    watch = DeadlineWatch(plan(90), history, lambda: now[0], rows=2000)
    assert not watch.due(2000)
    assert watch.seconds_until(2000) == pytest.approx(58.5)
    now[0] = at(58.5)
    assert watch.due(2000) and not watch.past_online_start(2000)
    now[0] = at(61)
    assert watch.past_online_start(2000)
    watch.batch_ended(100, status("b1", 1, 16))
    watch.cancel_asked("b2")  # at 61 s
    watch.batch_ended(200, status("b2", 2, 63))
    assert history.batches == [
        {"rows": 100, "seconds": 15.0, "ended": True},
        {"rows": 200, "seconds": 59.0, "ended": False},
    ]
    assert history.cancels == [2.0]


def test_the_estimate_shares_follow_what_is_known() -> None:
    p = plan(90)
    assert online_shares(p, 0, START, 16, known=False, paced=False)[:2] == (0.0, 0.0)
    low, high, why = online_shares(p, 2000, START, 16, known=False, paced=False)
    assert (low, high) == (16 / 2000, 1.0) and "not measured yet" in why
    low, high, why = online_shares(p, 2000, START, 0, known=False, paced=True)
    assert (low, high) == (0.0, 1.0) and "not known yet" in why
    history = BatchHistory()
    history.batch_ended(2000, 15.0, by_itself=True)
    assert online_shares(plan(90, history), 2000, START, 0, known=True, paced=True)[:2] == (0, 0)
    history.batch_ended(2000, 600.0, by_itself=True)
    low, high, why = online_shares(plan(90, history), 2000, START, 0, known=True, paced=True)
    assert (low, high) == (1.0, 1.0) and why.startswith("every row online")


def test_the_display_shows_the_time_to_the_deadline() -> None:
    snapshot = Snapshot(done=5, total=10, deadline_left_s=75, note="via auto: batches lane")
    assert "deadline in 1:15" in plain_line(snapshot, FramePace(), 3.0)
    lines = frame(snapshot, FramePace(), 3.0, 120)
    assert "deadline in 1:15" in lines[0] and lines[-1] == "via auto: batches lane"
    late = Snapshot(done=5, total=10, deadline_left_s=-4)
    assert "deadline passed 0:04 ago" in plain_line(late, FramePace(), 3.0)


def test_the_batch_reserve_takes_rows_while_their_worst_case_fits() -> None:
    prices = default_prices()
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}],
    }
    price = prices.lookup("claude-haiku-4-5")
    assert price is not None
    output_only = 1000 * price.rates_for(10).output / 1_000_000 * prices.batch_price_factor
    reserve = BatchReserve(output_only * Decimal("3.5"), prices)
    assert [reserve.take(body) for _ in range(4)] == [True, True, True, False]
    assert reserve.full and not reserve.take({**body, "max_tokens": 1})  # none after the first
    unpriced = BatchReserve(Decimal(100), prices)
    assert not unpriced.take({**body, "model": "no-such-model"}) and unpriced.full
