"""Warm before the herd: one request writes a prefix group's cache entry, then the rest read it.

A cache entry becomes readable only once the request that writes it has begun its answer
(docs/api-facts.md §10), so N requests sent together with a cold prefix all miss and all
pay the write (1.25× the input price for that prefix, 2× with a 1-hour ttl). Here the first
request of each group (``Work.prefix_key``, set where ``--cache auto`` placed a breakpoint)
goes alone; the group's next rows stand aside (``Pool.stand_aside``: they free their slot, so
other groups and rows with no shared prefix keep flowing) until that request's answer has
begun (streamed: its event stream opened) or ended.
One write is paid per group, not ``concurrency`` writes.

If the first request fails without an answer, the next row of the group takes its place.
An entry lives for its ttl after its last use; a group unused for longer is cold again and
warmed the same way. A group whose answers wrote the prefix again after they had read it
was evicted early (``rewarmed``): that is counted and told in the summary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchrun.engine.pool import StandAside, Stopped
from batchrun.store.columns import STATUS_OK

# Seconds an entry lives after its last use, by the ``ttl`` of its cache_control.
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
# A group idle for this share of its ttl is treated as cold: a lone request costs one round
# trip, a herd that misses an entry that just expired costs ``concurrency`` writes.
_STALE_SHARE = 0.9


def ttl_seconds(control: Mapping[str, Any] | None) -> float:
    """How long an entry written under ``control`` (a cache_control mark) stays readable."""
    ttl = (control or {}).get("ttl") or "5m"
    return TTL_SECONDS.get(str(ttl), TTL_SECONDS["5m"])


@dataclass
class _Group:
    warm: bool = False
    warming: bool = False  # its first request is in flight
    last_used: float = 0.0  # when a request of the group last started (monotonic)
    reads_seen: bool = False  # an answer read the entry since it was last written
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def wake_all(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


class Warmup:
    """Admits the rows of each prefix group: the first alone, the rest once it has answered.

    ``admit(key, stand_aside, stopping)`` returns when the row may be sent (at once, or after
    the group warmed), and raises ``Stopped`` when admission stopped while it waited (the row
    is then neither sent nor recorded: a re-run sends it). ``answered(key, row)`` is told
    every outcome of a row admitted.
    """

    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._groups: dict[str, _Group] = {}
        self.groups_warmed = 0  # writes made alone: one per group, and one per cold spell
        self.rewarmed = 0  # times a warm group's entry was found evicted and written again

    async def admit(self, key: str, stand_aside: StandAside, stopping: Callable[[], bool]) -> None:
        group = self._groups.setdefault(key, _Group())
        while not stopping():
            now = self._clock()
            if group.warm and now - group.last_used > self._ttl_s * _STALE_SHARE:
                group.warm = False  # idle past its ttl: the entry is gone, warm it again
            if group.warm:
                group.last_used = now
                return
            if not group.warming:
                group.warming = True
                group.last_used = now
                self.groups_warmed += 1
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            group.waiters.append(waiter)
            async with stand_aside():
                await waiter
        raise Stopped

    def started(self, key: str) -> None:
        """A streamed answer of group ``key`` began: its entry is readable, the rest may go."""
        group = self._groups.get(key)
        if group is not None and group.warming:
            group.warming, group.warm = False, True
            group.wake_all()

    def answered(self, key: str, row: Mapping[str, Any] | None) -> None:
        """The outcome of a row of group ``key`` (None: it was not sent after all)."""
        group = self._groups.get(key)
        if group is None:
            return
        got_answer = row is not None and (
            row.get("status") == STATUS_OK or row.get("message_id") is not None
        )
        if group.warming and got_answer:
            group.warming, group.warm = False, True
            group.wake_all()
        elif group.warming:
            # No answer (an error, a stop): the entry may not exist; the next row goes alone.
            group.warming = False
            group.wake_all()
        if row is not None and got_answer:
            self._note_usage(group, row)

    def _note_usage(self, group: _Group, row: Mapping[str, Any]) -> None:
        if (row.get("cache_read_input_tokens") or 0) > 0:
            group.reads_seen = True
        elif (row.get("cache_creation_input_tokens") or 0) > 0 and group.reads_seen:
            group.reads_seen = False  # read before, written now: it had been evicted
            self.rewarmed += 1

    def release(self) -> None:
        """Wake every row waiting (admission stopped); they raise ``Stopped``."""
        for group in self._groups.values():
            group.wake_all()
