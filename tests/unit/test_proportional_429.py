"""A stray 429 must not stop the world (issue 18): what a 429 says, and what it costs.

Pure decision rules first (``limits.congestion``), then whole runs through
``httpx.MockTransport`` with a recorded retry sleep (against the simulator with scattered
429s: tests/integration/test_proportional_429_runs.py). The limiter's side of it, on a
virtual clock, is in ``test_ratelimit.py``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from support import job_config, prompts, write_jsonl

from batchrun import run
from batchrun.limits.congestion import (
    CLUSTER_MIN,
    GROWTH_PER_ROUND_TRIP,
    MIN_WINDOW,
    STORM_MIN,
    Answer,
    RecentAnswers,
    Shares,
    Verdict,
    Window,
    judge_429,
    says_empty,
)
from batchrun.limits.headers import HeaderReading
from batchrun.limits.values import INPUT, REQUESTS
from batchrun.runs.runtime import Runtime
from batchrun.simulator import make_reply

PLENTY = {REQUESTS: HeaderReading(limit=1_000, remaining=800)}

EMPTY = {REQUESTS: HeaderReading(limit=1_000, remaining=0)}

FEW_REFUSED = Shares(answers=100, refused=3)


# --------------------------------------------------------------------------- pure rules


def test_a_429_whose_headers_say_plenty_is_left_only_slows_down() -> None:
    assert judge_429(PLENTY, {}, FEW_REFUSED) is Verdict.SLOW


def test_a_429_whose_headers_say_the_bucket_is_empty_pauses() -> None:
    assert judge_429(EMPTY, {}, FEW_REFUSED) is Verdict.PAUSE
    tokens = {INPUT: HeaderReading(limit=80_000, remaining=1_000), **PLENTY}  # 1.25 % left
    assert judge_429(tokens, {}, FEW_REFUSED) is Verdict.PAUSE


def test_a_429_without_headers_goes_by_the_latest_answers_headers() -> None:
    assert judge_429({}, EMPTY, FEW_REFUSED) is Verdict.PAUSE
    assert judge_429({}, PLENTY, FEW_REFUSED) is Verdict.SLOW
    assert judge_429({}, {}, FEW_REFUSED) is Verdict.SLOW
    # The 429's own headers are newer than any other answer's: they decide.
    assert judge_429(PLENTY, EMPTY, FEW_REFUSED) is Verdict.SLOW


def test_clustered_429s_pause_whatever_the_headers_say() -> None:
    clustered = Shares(answers=12, refused=6)
    assert clustered.clustered
    assert judge_429(PLENTY, {}, clustered) is Verdict.PAUSE
    assert judge_429({}, {}, clustered) is Verdict.PAUSE


def test_a_few_429s_are_no_cluster_however_large_their_share() -> None:
    first = Shares(answers=CLUSTER_MIN - 1, refused=CLUSTER_MIN - 1)
    assert not first.clustered
    assert judge_429({}, {}, first) is Verdict.SLOW
    assert not Shares(answers=1_000, refused=60).clustered  # 6 %: scattered, not a cluster


@pytest.mark.parametrize(
    ("reading", "empty"),
    [
        (HeaderReading(limit=50, remaining=0), True),
        (HeaderReading(limit=50, remaining=2), True),  # 4 %
        (HeaderReading(limit=50, remaining=10), False),
        (HeaderReading(limit=None, remaining=0), True),
        (HeaderReading(limit=None, remaining=3), False),
        (HeaderReading(limit=50, remaining=None), False),
    ],
)
def test_what_counts_as_an_empty_bucket(reading: HeaderReading, empty: bool) -> None:
    assert says_empty(reading) is empty


def test_recent_answers_forget_what_is_older_than_the_window() -> None:
    recent = RecentAnswers(window_s=5.0)
    for t in range(4):
        recent.add(Answer.REFUSED, float(t))
    recent.add(Answer.OK, 4.0)
    recent.add(Answer.OVERLOADED, 4.0)
    assert recent.shares(4.0) == Shares(answers=6, refused=4, overloaded=1)
    assert recent.shares(7.5) == Shares(answers=3, refused=1, overloaded=1)  # t < 2.5 gone
    assert recent.shares(100.0) == Shares()


def test_an_overload_storm_needs_most_recent_answers_to_be_529() -> None:
    assert Shares(answers=STORM_MIN * 2, overloaded=STORM_MIN).storm
    assert not Shares(answers=STORM_MIN * 4, overloaded=STORM_MIN).storm  # 25 %
    assert not Shares(answers=STORM_MIN - 1, overloaded=STORM_MIN - 1).storm


def window_with(in_flight: int) -> Window:
    window = Window()
    for _ in range(in_flight):
        window.admitted()
    return window


def test_a_cut_is_proportional_to_the_share_refused() -> None:
    window = window_with(32)
    assert window.limit is None and not window.full
    assert window.cut(0.25)
    assert window.limit == pytest.approx(24.0)
    assert window.full  # 32 in flight: nothing more until fewer than 24 are
    for _ in range(8):
        window.finished(ok=False)
    assert window.full
    window.finished(ok=False)
    assert not window.full


def test_a_cut_never_leaves_less_than_one_in_flight() -> None:
    window = window_with(3)
    window.cut(1.0)
    assert window.limit == MIN_WINDOW


def test_the_window_grows_back_additively_per_round_trip_and_is_then_lifted() -> None:
    window = window_with(20)
    window.cut(0.5)  # to 10
    for _ in range(10):  # a round trip: ten answers of ten in flight
        window.finished(ok=True)
        window.admitted()
    assert window.limit is not None
    grown = window.limit - 10.0
    assert GROWTH_PER_ROUND_TRIP * 0.9 < grown <= GROWTH_PER_ROUND_TRIP  # not doubled
    for _ in range(1_000):
        window.finished(ok=True)
        window.admitted()
    assert window.limit is None  # back above the most ever in flight: no cap left


def test_failures_free_their_slot_without_growing_the_window() -> None:
    window = window_with(10)
    window.cut(0.5)
    window.finished(ok=False)
    assert window.limit == pytest.approx(5.0) and window.in_flight == 9


def test_refusals_of_requests_sent_before_a_cut_do_not_cut_again() -> None:
    window = window_with(32)
    generation = window.cuts  # what the 32 in flight were admitted under
    assert window.cut(0.1, generation)
    assert not window.cut(0.1, generation)  # the same burst: already answered
    assert window.limit == pytest.approx(32 * 0.9)
    assert window.cut(0.1, window.cuts)  # a request admitted after the cut: a new one


# --------------------------------------------------------------------------- whole runs


def rate_limited(retry_after: str, remaining: int) -> httpx.Response:
    envelope = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    headers = {
        "retry-after": retry_after,
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": str(remaining),
    }
    return httpx.Response(429, json=envelope, headers=headers)


def run_four_rows_refused_together(tmp_path: Path, remaining: int) -> tuple[Any, list[float]]:
    """Four rows in flight together are answered 429 (retry-after 7), then 200."""
    sent: list[str] = []
    slept: list[float] = []
    all_in = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompt = body["messages"][0]["content"]
        sent.append(prompt)
        if sent.count(prompt) == 1:
            if len(sent) == 4:
                all_in.set()
            await all_in.wait()
            return rate_limited("7", remaining)
        return httpx.Response(200, json=make_reply(body).message)

    async def record(seconds: float) -> None:
        slept.append(seconds)

    inp = write_jsonl(tmp_path / "in.jsonl", prompts(4))
    out = tmp_path / "out.parquet"
    config = job_config(inp, out, "https://api.anthropic.com", concurrency=4)
    summary = run(
        config,
        runtime=Runtime(transport=httpx.MockTransport(handler), sleep=record),
    )
    assert summary.exit_code == 0
    assert [r["status"] for r in pq.read_table(out).to_pylist()] == ["ok"] * 4
    assert len(sent) == 8 and summary.rate_limited_429s == 4
    return summary, slept


def test_429s_with_plenty_left_hold_back_only_their_own_request(tmp_path: Path) -> None:
    summary, slept = run_four_rows_refused_together(tmp_path, remaining=900)
    assert summary.rate_pauses == 0
    assert summary.rate_429s_retried == 4
    assert summary.rate_slowdowns >= 1
    assert sorted(round(s) for s in slept) == [7, 7, 7, 7]  # each its own retry-after


@pytest.mark.slow
def test_429s_saying_the_bucket_is_empty_pause_the_model_once(tmp_path: Path) -> None:
    summary, slept = run_four_rows_refused_together(tmp_path, remaining=0)
    assert summary.rate_pauses == 1
    assert summary.rate_429s_retried == 0
    assert [round(s) for s in slept if s >= 1.0] == [7]  # one pause, not four waits
