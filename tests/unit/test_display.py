"""The live display: its lines as pure functions, the timer's redraws, the plain log mode,
and the batch mode's row count (each row once)."""

from __future__ import annotations

import io
from array import array
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from support import job_config, prompts, write_jsonl

from batchrun.batches.run import _BatchJob
from batchrun.client.batch_endpoints import BatchStatus
from batchrun.live.frames import (
    MAX_BATCH_LINES,
    BatchView,
    Pace,
    Rates,
    Snapshot,
    clock_text,
    compact,
    eta_s,
    frame,
    plain_line,
)
from batchrun.live.progress import Progress, is_live_terminal
from batchrun.runs.plan import RowCounter
from batchrun.runs.summary import RunSummary
from batchrun.store.batch_journal import BatchJournal, IntentRows

ESC = "\x1b"


def busy_snapshot(**changes: Any) -> Snapshot:
    """A large online run in full swing: every figure present, and wide."""
    values: dict[str, Any] = {
        "done": 1_234_567,
        "total": 10_000_000,
        "in_flight": 512,
        "ok": 1_230_000,
        "error": 4_567,
        "retries": 98_765,
        "rate_limited_429s": 12_345,
        "rate_wait_s": 3_723.0,
        "input_tokens": 987_654_321,
        "output_tokens": 123_456_789,
        "cost_usd": 1234.5678,
        "projected_cost": 9999.99,
        "budget": 20_000.0,
    }
    values.update(changes)
    return Snapshot(**values)


BUSY_PACE = Pace(rows=456.7, input_tokens=123_456.0, output_tokens=23_456.0, cost_usd=0.75)


def batch_view(i: int, processing: int = 60, succeeded: int = 40) -> BatchView:
    return BatchView(
        f"msgbatch_01HZXK{i:020d}",
        "in_progress",
        {"processing": processing, "succeeded": succeeded, "errored": 3, "expired": 0},
    )


# -- the lines, as pure functions ----------------------------------------------------------


@pytest.mark.parametrize("width", [20, 40, 80, 100, 160, 250])
def test_every_line_fits_the_width_it_is_given(width: int) -> None:
    many = [batch_view(i) for i in range(MAX_BATCH_LINES + 3)]
    for snapshot in (busy_snapshot(), busy_snapshot(total=None, batches=many, in_flight=None)):
        lines = frame(snapshot, BUSY_PACE, 98_765.0, width)
        assert lines
        assert all(len(line) <= width - 1 for line in lines), lines
        assert not any(ESC in line for line in lines)


def test_at_80_and_160_columns_no_figure_of_the_run_is_hidden() -> None:
    for width in (80, 160):
        text = "\n".join(frame(busy_snapshot(), BUSY_PACE, 65.0, width))
        for figure in (
            "1,234,567/10,000,000 rows",
            "457 rows/s",
            "ETA ",
            "elapsed 1:05",
            "in flight 512",
            "error 4,567",
            "retries 98,765",
            "429s 12,345",
            "rate-limit wait 1:02:03",
            "spent $1,234.57 of $20,000 budget",
            "$45.0000/min",
            "projected $9,999.99",
            "tokens/min in 7.4M out 1.4M",
        ):
            assert figure in text, (width, figure, text)
    assert len(frame(busy_snapshot(), BUSY_PACE, 65.0, 160)) == 3  # wide: one line each
    assert len(frame(busy_snapshot(), BUSY_PACE, 65.0, 80)) > 3  # narrow: wrapped, not cut


def test_the_bar_is_left_out_where_the_figures_need_the_room() -> None:
    wide = frame(busy_snapshot(), BUSY_PACE, 65.0, 160)[0]
    narrow = frame(busy_snapshot(), BUSY_PACE, 65.0, 60)[0]
    assert wide.startswith("[") and "]" in wide and "12%" in wide
    assert not narrow.startswith("[") and "1,234,567/10,000,000 rows" in narrow


def test_before_any_row_is_done_the_eta_is_unknown_not_zero() -> None:
    first = frame(Snapshot(done=0, total=20, in_flight=20), Pace(), 12.0, 100)
    assert "0/20 rows" in first[0] and "ETA ?" in first[0] and "elapsed 0:12" in first[0]
    assert "in flight 20" in first[1]


def test_many_batches_are_folded_into_one_line() -> None:
    batches = [batch_view(i) for i in range(MAX_BATCH_LINES + 2)]
    lines = frame(
        Snapshot(done=0, total=None, batches=batches, batches_collected=1), Pace(), 0, 160
    )
    shown = [line for line in lines if "msgbatch_" in line]
    assert len(shown) == MAX_BATCH_LINES - 1
    assert "in_progress" in shown[0] and "43/103 rows" in shown[0] and "processing 60" in shown[0]
    folded = [line for line in lines if "more batches" in line]
    assert folded == ["  ... 3 more batches  3 in_progress  129/309 rows"]
    assert any(f"batches {len(batches)} running, 1 collected" in line for line in lines)


def test_the_plain_line_has_no_ansi_and_keeps_the_greppable_keys() -> None:
    line = plain_line(busy_snapshot(), BUSY_PACE, 65.0)
    assert ESC not in line and "\n" not in line
    assert line.startswith("batchrun: 1,234,567/10,000,000 rows, 456.7 rows/s")
    for key in ("in_flight=512", "err=4567", "429s=12345", "cost=$1234.5678", "max=$20000"):
        assert key in line


def test_a_text_status_is_shown_as_it_is() -> None:
    lines = frame(Snapshot(done=3, total=None, note="count_tokens calls=3"), Pace(), 1.0, 80)
    assert lines[0].startswith("3 rows") and lines[-1] == "count_tokens calls=3"


def test_the_eta_follows_the_recent_pace_not_the_average_since_the_start() -> None:
    rates = Rates(window=60.0)
    rates.add(0.0, Snapshot(done=0, total=2000))
    rates.add(600.0, Snapshot(done=10, total=2000))  # a slow first ten minutes
    for t in range(610, 700, 10):  # then 10 rows/s
        rates.add(float(t), Snapshot(done=10 + (t - 600) * 10, total=2000))
    now = Snapshot(done=1010, total=2000)
    pace = rates.add(700.0, now)
    assert pace.rows == pytest.approx(10.0)  # since the start: 1.4 rows/s
    assert eta_s(now, pace) == pytest.approx(99.0)


def test_numbers_read_short() -> None:
    assert [clock_text(s) for s in (0, 59.9, 61, 3600, 90_061)] == [
        "0:00",
        "0:59",
        "1:01",
        "1:00:00",
        "25:01:01",
    ]
    assert [compact(v) for v in (7, 999, 1_000, 12_345, 2_500_000)] == [
        "7",
        "999",
        "1.0k",
        "12.3k",
        "2.5M",
    ]


# -- the timer and the terminal ------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ManualTicker:
    """Stands in for the timer: remembers the beat and its interval; the test ticks."""

    def __init__(self) -> None:
        self.interval: float | None = None
        self.beat: Callable[[], None] | None = None
        self.stopped = False

    def __call__(self, interval: float, beat: Callable[[], None]) -> Callable[[], None]:
        self.interval, self.beat = interval, beat

        def stop() -> None:
            self.stopped = True

        return stop

    def tick(self) -> None:
        assert self.beat is not None
        self.beat()


def live_progress(
    counts: dict[str, int], stream: io.StringIO, clock: FakeClock, ticker: ManualTicker
) -> Progress:
    return Progress(
        20,
        lambda: Snapshot(done=counts["done"], total=20, in_flight=counts["in_flight"]),
        stream=stream,
        interactive=True,
        clock=clock,
        ticker=ticker,
        width=lambda: 80,
    )


def test_the_timer_redraws_while_no_row_finishes_and_in_place() -> None:
    stream, clock, ticker = Tty(), FakeClock(), ManualTicker()
    counts = {"done": 0, "in_flight": 20}
    live_progress(counts, stream, clock, ticker)  # the ticker's beat reaches it
    assert ticker.interval is not None and ticker.interval <= 0.5  # at least twice a second
    clock.now += 5
    ticker.tick()
    first = stream.getvalue()
    assert "0/20 rows" in first and "elapsed 0:05" in first and "in flight 20" in first
    assert ESC not in first  # nothing drawn before: nothing to go back over
    clock.now += 15  # still nothing finished: the clock moves all the same
    ticker.tick()
    second = stream.getvalue()[len(first) :]
    assert second.startswith("\r\x1b[2A\x1b[J") and "elapsed 0:20" in second
    counts.update(done=10, in_flight=10)
    clock.now += 1
    ticker.tick()
    assert "10/20 rows" in stream.getvalue() and "ETA " in stream.getvalue()


def test_a_log_line_goes_above_the_live_lines_which_are_drawn_again() -> None:
    stream, clock, ticker = Tty(), FakeClock(), ManualTicker()
    progress = live_progress({"done": 3, "in_flight": 5}, stream, clock, ticker)
    ticker.tick()
    before = len(stream.getvalue())
    progress.log("batchrun: HTTP 429 rate_limit_error for m: paused for 60.0 min")
    after = stream.getvalue()[before:]
    erase, rest = after[: len("\r\x1b[2A\x1b[J")], after[len("\r\x1b[2A\x1b[J") :]
    assert erase == "\r\x1b[2A\x1b[J"
    assert rest.startswith("batchrun: HTTP 429 rate_limit_error for m: paused for 60.0 min\n")
    assert "3/20 rows" in rest.splitlines()[1]


def test_close_stops_the_timer_and_erases_the_lines() -> None:
    stream, clock, ticker = Tty(), FakeClock(), ManualTicker()
    progress = live_progress({"done": 20, "in_flight": 0}, stream, clock, ticker)
    ticker.tick()
    progress.close()
    assert ticker.stopped and stream.getvalue().endswith("\r\x1b[2A\x1b[J")
    drawn = len(stream.getvalue())
    ticker.tick()  # a beat already on its way when the run ended draws nothing
    progress.log("after the end")
    assert stream.getvalue()[drawn:] == "after the end\n"


def test_without_a_terminal_a_plain_line_comes_every_so_often_and_no_ansi() -> None:
    stream, clock, ticker = io.StringIO(), FakeClock(), ManualTicker()
    progress = Progress(
        20,
        lambda: Snapshot(done=4, total=20, in_flight=8, ok=4, error=0),
        stream=stream,
        clock=clock,
        ticker=ticker,
        line_every=15.0,
        environ={"TERM": "xterm-256color"},
    )
    clock.now += 14
    ticker.tick()
    assert stream.getvalue() == ""
    clock.now += 1
    ticker.tick()
    ticker.tick()  # not due again yet
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batchrun: 4/20 rows")
    assert "in_flight=8" in lines[0]
    progress.log("batchrun: a row waits 12.0 s before attempt 3")
    progress.close()
    assert stream.getvalue().splitlines()[1] == "batchrun: a row waits 12.0 s before attempt 3"
    assert ESC not in stream.getvalue()


def test_term_dumb_is_not_a_live_terminal() -> None:
    assert is_live_terminal(Tty(), "xterm-256color")
    assert not is_live_terminal(Tty(), "dumb")
    assert not is_live_terminal(io.StringIO(), "xterm-256color")
    stream, ticker = Tty(), ManualTicker()
    progress = Progress(
        5, lambda: "x", stream=stream, ticker=ticker, clock=FakeClock(), environ={"TERM": "dumb"}
    )
    ticker.tick()
    progress.log("told")
    progress.close()
    assert stream.getvalue() == "told\n"


def test_quiet_shows_nothing_and_starts_no_timer() -> None:
    stream, ticker = Tty(), ManualTicker()
    progress = Progress(5, lambda: "x", quiet=True, stream=stream, interactive=True, ticker=ticker)
    progress.advance()
    progress.log("a warning")
    progress.close()
    assert ticker.beat is None and stream.getvalue() == ""


def test_a_text_status_counts_rows_by_advance() -> None:
    stream, clock, ticker = Tty(), FakeClock(), ManualTicker()
    progress = Progress(
        None,
        lambda: "count_tokens calls=2",
        stream=stream,
        interactive=True,
        clock=clock,
        ticker=ticker,
        width=lambda: 80,
    )
    progress.advance(2)
    ticker.tick()
    assert stream.getvalue().splitlines()[0].startswith("2 rows")
    assert "count_tokens calls=2" in stream.getvalue()


# -- batch mode: each row counted once -----------------------------------------------------


class NoSink:
    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}

    def submit(self, index: int, row: dict[str, Any]) -> None:
        self.rows[index] = row


def answered(i: int) -> dict[str, Any]:
    return {
        "id": f"row-{i}",
        "status": "ok",
        "error_type": None,
        "stop_reason": "end_turn",
        "input_tokens": 10,
        "output_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cost_usd": 0.001,
    }


def status_of(batch_id: str, processing: int, succeeded: int, state: str) -> BatchStatus:
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    counts = {"processing": processing, "succeeded": succeeded, "errored": 0}
    counts.update(canceled=0, expired=0)
    return BatchStatus(batch_id, state, counts, at, None, None)


def test_batch_rows_are_counted_once_while_running_collecting_and_collected(
    tmp_path: Path,
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(10))
    config = job_config(inp, tmp_path / "out.parquet", "http://127.0.0.1:9", via="batches")
    journal = BatchJournal(tmp_path / "out.parquet.batches")
    summary = RunSummary(input=inp, output=config.output.path, via="batches", todo=10)
    unused: Any = None  # the API and the retry sleep: snapshot() asks neither
    job = _BatchJob(
        config, unused, journal, cast(Any, NoSink()), summary, bytearray(10), RowCounter(), unused
    )
    rows = IntentRows(array("q", range(10)), [f"row-{i}" for i in range(10)], ["h"] * 10)
    entry = journal.intend(datetime.now(timezone.utc), 100, "c", rows)
    journal.created(entry, "msgbatch_1")

    job.statuses[entry.key] = status_of("msgbatch_1", 6, 4, "in_progress")
    shown = job.snapshot()
    assert (shown.done, shown.total) == (4, 10)  # the API's count, before any result is read
    assert [(b.id, b.state, b.finished, b.total) for b in shown.batches] == [
        ("msgbatch_1", "in_progress", 4, 10)
    ]

    job.statuses[entry.key] = status_of("msgbatch_1", 0, 10, "ended")
    for i in range(6):  # collecting: six results recorded, four to go
        job._record(i, answered(i), from_batch=entry.key)
        assert job.snapshot().done == 10  # never 10 + the rows recorded so far
    for i in range(6, 10):
        job._record(i, answered(i), from_batch=entry.key)
    journal.collected(entry)
    summary.batches_collected += 1
    shown = job.snapshot()
    assert (shown.done, shown.total, shown.ok) == (10, 10, 10)
    assert shown.batches == [] and shown.batches_collected == 1
    assert "10/10 rows" in frame(shown, Pace(), 30.0, 80)[0]
