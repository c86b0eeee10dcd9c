"""What a 429 or a run of 529s says, and how far admission slows for it; pure, no clock.

A 429 is not always an empty bucket: the API also answers 429 for a short acceleration burst,
a gateway may inject them, and the response headers often say plenty is left. Pausing the
whole model for every one of them idles the pool for most of a run with scattered 429s, so
the limiter asks this module first (:func:`judge_429`):

* **bucket empty**: the 429's own ``anthropic-ratelimit-*-remaining`` headers, or those of
  the latest answers when the 429 carries none, are at or near zero (``EMPTY_SHARE`` of the
  limit), or 429s cluster (``CLUSTER_SHARE`` of the answers of the last ``WINDOW_S``, at
  least ``CLUSTER_MIN`` of them). Every request of the model waits for the retry-after, and
  is released gradually after it (``limiter``).
* **otherwise** only the request that got the 429 waits for its retry-after, as the official
  SDK does, and admission slows in proportion (:class:`Window`): the model's concurrency is
  cut by the share of recent answers that were refused, and grows back by
  ``GROWTH_PER_ROUND_TRIP`` slots per round trip of answers (AIMD). A stray 429 in a hundred
  answers costs about 1 % for a moment; a limit that keeps refusing more and more is met with
  cuts that converge on it.

An overload storm (``STORM_SHARE`` of recent answers 529, at least ``STORM_MIN``) is cut the
same proportional way; each 529 keeps its own jittered backoff in the retry loop.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from batchrun.limits.headers import HeaderReading

EMPTY_SHARE = 0.05
"""A ``-remaining`` at or below this share of its ``-limit`` says the bucket is empty."""

WINDOW_S = 5.0
"""How far back "recent answers" go, for clustered 429s and overload storms."""

CLUSTER_SHARE = 0.25
"""429s clustering: at least this share of the recent answers were refused..."""

CLUSTER_MIN = 5
"""...and at least this many: the first few 429s of a run say nothing of a share."""

STORM_SHARE = 0.5
"""An overload storm: at least this share of the recent answers were 529 (overloaded)..."""

STORM_MIN = 8
"""...and at least this many."""

HEADERS_FRESH_S = 2.0
"""Another answer's ``-remaining`` older than this says nothing of the bucket now."""

MIN_WINDOW = 1.0
"""A cut never leaves fewer than this many requests of a model in flight."""

GROWTH_PER_ROUND_TRIP = 2.0
"""Slots a cut window grows back per round trip of answers (additive increase).

At most one cut per round trip (generations, see ``Window``), each of ``share x window``, so
the window settles where ``share x window`` equals this: about ``2 / share``. With 3 % of the
answers refused that is ~67, above any pool of 32, so scattered 429s cost next to nothing; with
10 % it is ~20 and with 20 % ~10, the real limit taking over long before 429s cluster. One slot
per round trip (TCP's choice) would settle at ~33 for 3 %, slowing a 32-request pool.
"""


class Answer(enum.Enum):
    """What one attempt came back with, as far as admission cares."""

    OK = "ok"
    REFUSED = "429"
    OVERLOADED = "529"
    OTHER = "other"


class Verdict(enum.Enum):
    """What a 429 calls for."""

    PAUSE = "bucket empty"  # every request of the model waits out the retry-after
    SLOW = "slow down"  # only this request waits; admission is cut in proportion


def says_empty(reading: HeaderReading) -> bool:
    """The reading's ``-remaining`` is at or near zero (``EMPTY_SHARE`` of its limit).

    >>> says_empty(HeaderReading(limit=1000, remaining=20))
    True
    >>> says_empty(HeaderReading(limit=1000, remaining=900))
    False
    """
    if reading.remaining is None:
        return False
    if reading.limit is None or reading.limit <= 0:
        return reading.remaining <= 0
    return reading.remaining <= EMPTY_SHARE * reading.limit


@dataclass(frozen=True)
class Shares:
    """The recent answers of one model: how many, and how many were 429 and 529."""

    answers: int = 0
    refused: int = 0
    overloaded: int = 0

    @property
    def refused_share(self) -> float:
        return self.refused / self.answers if self.answers else 0.0

    @property
    def overloaded_share(self) -> float:
        return self.overloaded / self.answers if self.answers else 0.0

    @property
    def clustered(self) -> bool:
        """429s cluster: enough of them, and a large enough share of the answers."""
        return self.refused >= CLUSTER_MIN and self.refused_share >= CLUSTER_SHARE

    @property
    def storm(self) -> bool:
        """Most recent answers were 529: the API is overloaded, not just unlucky."""
        return self.overloaded >= STORM_MIN and self.overloaded_share >= STORM_SHARE


def judge_429(
    own: Mapping[int, HeaderReading],
    recent: Mapping[int, HeaderReading],
    shares: Shares,
) -> Verdict:
    """Whether a 429 says the model's bucket is empty (pause it) or not (slow down).

    ``own``: the 429's rate-limit headers by dimension; ``recent``: the freshest readings of
    other answers (``HEADERS_FRESH_S``), used when the 429 carries none; ``shares``: the
    recent answers, this 429 included.

    >>> plenty = {0: HeaderReading(limit=1000, remaining=800)}
    >>> judge_429(plenty, {}, Shares(answers=100, refused=3))
    <Verdict.SLOW: 'slow down'>
    >>> judge_429({0: HeaderReading(limit=1000, remaining=0)}, {}, Shares(100, 1))
    <Verdict.PAUSE: 'bucket empty'>
    >>> judge_429({}, {}, Shares(answers=20, refused=10))
    <Verdict.PAUSE: 'bucket empty'>
    """
    if any(says_empty(reading) for reading in own.values()):
        return Verdict.PAUSE
    if shares.clustered:
        return Verdict.PAUSE
    if not own and any(says_empty(reading) for reading in recent.values()):
        return Verdict.PAUSE
    return Verdict.SLOW


class RecentAnswers:
    """The answers of the last ``WINDOW_S`` seconds, counted by kind; times are passed in."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self._window_s = window_s
        self._answers: deque[tuple[float, Answer]] = deque()
        self._counts = dict.fromkeys(Answer, 0)

    def add(self, answer: Answer, now: float) -> None:
        self._answers.append((now, answer))
        self._counts[answer] += 1
        self._forget(now)

    def shares(self, now: float) -> Shares:
        self._forget(now)
        return Shares(
            answers=len(self._answers),
            refused=self._counts[Answer.REFUSED],
            overloaded=self._counts[Answer.OVERLOADED],
        )

    def _forget(self, now: float) -> None:
        horizon = now - self._window_s
        answers = self._answers
        while answers and answers[0][0] < horizon:
            _, old = answers.popleft()
            self._counts[old] -= 1


class Window:
    """AIMD on one model's concurrency: cut in proportion to refusals, regrow additively.

    ``limit`` is None while nothing was cut: admission is then bounded by the pool alone.
    A cut takes the share given off what is in flight (never below ``MIN_WINDOW``); each
    answer that succeeds adds ``GROWTH_PER_ROUND_TRIP / limit``, that many slots per round trip
    of answers, and once the limit is back above the most ever in flight it is lifted. Cuts
    come in generations (``cuts``): a refusal of a request admitted before the latest cut
    belongs to the burst that cut already answered, so it does not cut again.
    """

    __slots__ = ("cuts", "highest", "in_flight", "limit")

    def __init__(self) -> None:
        self.limit: float | None = None
        self.in_flight = 0
        self.highest = 0  # the most in flight at once, the limit to grow back to
        self.cuts = 0

    def admitted(self) -> None:
        self.in_flight += 1
        self.highest = max(self.highest, self.in_flight)

    def finished(self, ok: bool) -> None:
        self.in_flight = max(self.in_flight - 1, 0)
        if ok and self.limit is not None:
            self.limit += GROWTH_PER_ROUND_TRIP / self.limit
            if self.limit >= self.highest:
                self.limit = None

    @property
    def full(self) -> bool:
        """No more may be admitted until one in flight finishes."""
        return self.limit is not None and self.in_flight >= self.limit

    def cut(self, share: float, generation: int | None = None) -> bool:
        """Cut by ``share`` (0..1) of what is in flight; True if this started a new cut.

        ``generation`` is the ``cuts`` count when the refused request was admitted.
        """
        if generation is not None and generation < self.cuts:
            return False
        base = self.in_flight if self.limit is None else min(self.limit, self.in_flight)
        share = min(max(share, 0.0), 1.0)
        self.limit = max(MIN_WINDOW, max(base, 1) * (1.0 - share))
        self.cuts += 1
        return True
