"""Fault injection for the simulator: names, spec parsing and the per-request choice; pure.

A fault is what goes wrong with one request instead of a normal answer. Rates come from a
spec such as ``"429=0.05,529=0.02,reset=0.01"``; a script of exact faults (tests) is used
before the rates. At most one fault hits a request, and the choice is drawn from a seeded
``random.Random`` so that a run with the same seed and the same request order repeats.

    429 / 529 / 500 / 503   the API's error envelope with that status (429 adds retry-after)
    reset                   the connection is closed with no response at all
    hang                    no answer until ``hang_seconds`` pass (or the simulator stops)
    malformed               200 with a body that is not valid JSON (or a broken SSE event)
    cut                     SSE: the stream stops half way, without message_stop
    sse_error               SSE: an ``error`` event (overloaded_error) after a few events
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FAULT_NAMES: tuple[str, ...] = (
    "429",
    "529",
    "500",
    "503",
    "reset",
    "hang",
    "malformed",
    "cut",
    "sse_error",
)
"""Every fault the simulator can inject (what each does: the module docstring)."""

STREAM_ONLY: frozenset[str] = frozenset({"cut", "sse_error"})
"""Faults that only make sense inside an SSE stream."""


@dataclass(frozen=True)
class StatusFault:
    """An error answer: HTTP status, the envelope's ``error.type`` and its message."""

    status: int
    error_type: str
    message: str


STATUS_FAULTS: dict[str, StatusFault] = {
    "429": StatusFault(429, "rate_limit_error", "Number of requests has exceeded your rate limit"),
    "529": StatusFault(529, "overloaded_error", "Overloaded"),
    "500": StatusFault(500, "api_error", "Internal server error"),
    "503": StatusFault(503, "api_error", "Service unavailable"),
}
"""The faults answered with an error envelope, as the API words them."""


def check_fault_name(name: str) -> str:
    """Return ``name`` if it is a known fault, else raise ValueError naming it."""
    if name not in FAULT_NAMES:
        known = ", ".join(FAULT_NAMES)
        raise ValueError(f"unknown fault {name!r} (known: {known})")
    return name


def check_rates(rates: Mapping[str, float]) -> dict[str, float]:
    """Validate fault rates: known names, each within 0..1, and at most 1 in total.

    The total matters because a request takes at most one fault.
    """
    checked: dict[str, float] = {}
    for name, rate in rates.items():
        check_fault_name(name)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise ValueError(f"fault {name!r}: rate must be a number, got {rate!r}")
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"fault {name!r}: rate {rate} is outside 0..1")
        checked[name] = float(rate)
    total = sum(checked.values())
    if total > 1.0 + 1e-9:
        raise ValueError(f"fault rates add up to {total:g}, more than 1")
    return checked


def parse_fault_spec(spec: str) -> dict[str, float]:
    """Parse ``"429=0.05,529=0.02"`` into ``{"429": 0.05, "529": 0.02}``; empty gives ``{}``.

    >>> parse_fault_spec("reset=0.5, hang=0.25")
    {'reset': 0.5, 'hang': 0.25}
    """
    rates: dict[str, float] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"fault spec item {item!r} is not NAME=RATE")
        check_fault_name(name)
        if name in rates:
            raise ValueError(f"fault {name!r} is given twice")
        try:
            rates[name] = float(value)
        except ValueError:
            raise ValueError(f"fault {name!r}: rate {value.strip()!r} is not a number") from None
    return check_rates(rates)


def effective_fault(fault: str | None, streaming: bool) -> str | None:
    """Adapt a stream-only fault to a non-streaming request.

    A cut non-streaming answer is a dropped connection (``reset``); an in-stream
    ``overloaded_error`` becomes the status that carries the same error, ``529``.
    """
    if streaming or fault not in STREAM_ONLY:
        return fault
    return "reset" if fault == "cut" else "529"


class FaultPicker:
    """Chooses the fault (or None) for each request: scripted ones first, then by rates.

    Not thread-safe; the simulator calls it from its event loop only.
    """

    def __init__(self, rates: Mapping[str, float], seed: int) -> None:
        self._table = self._cumulative(check_rates(rates))
        self._rng = random.Random(seed)
        self._script: deque[str | None] = deque()

    @staticmethod
    def _cumulative(rates: Mapping[str, float]) -> tuple[tuple[float, str], ...]:
        """Rates as (upper bound, name) steps over [0, 1), in FAULT_NAMES order."""
        steps: list[tuple[float, str]] = []
        bound = 0.0
        for name in FAULT_NAMES:
            rate = rates.get(name, 0.0)
            if rate > 0.0:
                bound += rate
                steps.append((bound, name))
        return tuple(steps)

    def script(self, faults: Iterable[str | None]) -> None:
        """Queue exact faults (None = answer normally) for the next requests, in order."""
        items = [None if f is None else check_fault_name(f) for f in faults]
        self._script.extend(items)

    @property
    def scripted_left(self) -> int:
        """How many scripted faults are still queued."""
        return len(self._script)

    def clear_script(self) -> None:
        """Drop the scripted faults not yet used."""
        self._script.clear()

    def pick(self) -> str | None:
        """The fault for the next request, before adapting it to streaming or not."""
        if self._script:
            return self._script.popleft()
        if not self._table:
            return None
        draw = self._rng.random()
        for bound, name in self._table:
            if draw < bound:
                return name
        return None
