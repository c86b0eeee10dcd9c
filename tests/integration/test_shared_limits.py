"""One rate limit for many workers (``--rate-limit-store``), against a real Redis server.

In layers: the Lua scripts driven directly; two limiters in one process sharing one store
(counts, and a fake sleep that says where admission would wait); the fallback when Redis dies
(a fake clock). Whole runs of several ``python -m batchrun run`` processes sharing a store are
in tests/system/test_shared_limits_processes.py. Redis's own clock runs on during
a test, so the scripts' counts are taken at refill rates too slow to add a request in the
time a test takes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from support.local_server import free_port
from support.redis_server import RedisServer

from batchrun.core.errors import ConfigError
from batchrun.limits.headers import HeaderReading
from batchrun.limits.limiter import RateLimiter
from batchrun.limits.shared import SCRIPTS, RedisBuckets, split_store_url
from batchrun.limits.values import Limits, LimitsConfig

MODEL = "claude-haiku-4-5"

NONE = -1


# --------------------------------------------------------------------------- the scripts


class Scripts:
    """The store's Lua scripts on one model's hash, called the way RedisBuckets calls them."""

    def __init__(self, client: redis.Redis, worker: str = "w1") -> None:
        self._scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}
        self.worker = worker
        self.keys = ["t:limits:m", "t:workers"]

    def call(self, name: str, caps: tuple[float, ...], *rest: float, margin: float = 0.0) -> Any:
        args = [self.worker, 30, 3600, margin, *caps, *rest]
        return self._scripts[name](keys=self.keys, args=args)

    def take(self, caps: tuple[float, ...], need: tuple[float, ...]) -> tuple[int, float]:
        status, wait, _ = self.call("take", caps, *need)
        return int(status), float(wait)

    def admitted(self, caps: tuple[float, ...], need: tuple[float, ...], tries: int) -> int:
        return sum(self.take(caps, need)[0] == 0 for _ in range(tries))


RPM_6 = (6.0, NONE, NONE)  # refills 0.1 request a second: a test's duration adds none


def test_a_new_shared_bucket_lets_one_probe_through_then_makes_the_rest_wait(
    redis_client: redis.Redis,
) -> None:
    scripts = Scripts(redis_client)
    assert scripts.take(RPM_6, (1, 0, 0)) == (0, 0.0)
    status, wait = scripts.take(RPM_6, (1, 0, 0))
    assert status == 1 and 0 < wait <= 10.0  # a whole request at 0.1 a second


def test_the_probes_answer_sets_the_level_and_later_readings_only_lower_it(
    redis_client: redis.Redis,
) -> None:
    scripts = Scripts(redis_client)
    scripts.take(RPM_6, (1, 0, 0))
    scripts.call("observe", RPM_6, NONE, NONE, NONE, 4, NONE, NONE)  # remaining 4 of 6
    scripts.call("observe", RPM_6, NONE, NONE, NONE, 5, NONE, NONE)  # no raise after the probe
    assert scripts.admitted(RPM_6, (1, 0, 0), tries=10) == 4
    scripts.call("give", RPM_6, 2, 0, 0)  # two refunds
    assert scripts.admitted(RPM_6, (1, 0, 0), tries=10) == 2


def test_all_three_buckets_must_hold_the_reservation_and_nothing_is_taken_otherwise(
    redis_client: redis.Redis,
) -> None:
    scripts = Scripts(redis_client)
    caps = (NONE, 60.0, 6.0)  # token buckets start full: 60 input, 6 output
    assert scripts.take(caps, (1, 50, 1))[0] == 0
    status, _ = scripts.take(caps, (1, 20, 1))  # only 10 input tokens left
    assert status == 1
    assert scripts.take(caps, (1, 10, 5))[0] == 0  # the refused one took no output tokens


def test_a_limit_learned_by_one_worker_lowers_every_workers_capacity(
    redis_client: redis.Redis,
) -> None:
    one, other = Scripts(redis_client, "w1"), Scripts(redis_client, "w2")
    caps = (NONE, 600.0, NONE)
    one.call("observe", caps, NONE, 30, NONE, NONE, NONE, NONE)  # the API says ITPM is 30
    assert other.take(caps, (1, 40, 0))[0] == 1  # would fit 600, not 30
    assert other.take(caps, (1, 30, 0))[0] == 0


def test_a_pause_holds_every_worker_and_empties_the_buckets(redis_client: redis.Redis) -> None:
    one, other = Scripts(redis_client, "w1"), Scripts(redis_client, "w2")
    caps = (NONE, 600.0, NONE)
    one.call("pause", caps, 30)
    status, left = other.take(caps, (1, 1, 0))
    assert status == 2 and 0 < left <= 30
    level = float(redis_client.hget("t:limits:m", "l1") or 0)
    assert level < 1  # emptied (plus the refill since)


def test_each_call_registers_its_worker_and_counts_the_workers(redis_client: redis.Redis) -> None:
    for worker in ("w1", "w2", "w3"):
        *_, workers = Scripts(redis_client, worker).call("take", RPM_6, 0, 0, 0)
    assert workers == 3


def test_the_prefix_parameter_is_batchruns_not_redis() -> None:
    assert split_store_url("redis://h:1/2?prefix=org-a&ssl_cert_reqs=none") == (
        "redis://h:1/2?ssl_cert_reqs=none",
        "org-a",
    )


def test_a_store_that_does_not_answer_is_refused_before_the_run() -> None:
    with pytest.raises(ConfigError, match="Redis does not answer"):
        RedisBuckets(f"redis://127.0.0.1:{free_port()}/0")


# --------------------------------------------------------------------------- limiters sharing


class Held:
    """A limiter's sleep seam that records where admission would wait, then stops the limiter
    (its waiting acquire is cancelled): counts with no real waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.limiter: RateLimiter | None = None

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        assert self.limiter is not None
        self.limiter.stop()


def limiter_on(server: RedisServer, worker: str, rpm: int) -> tuple[RateLimiter, Held]:
    store = RedisBuckets(server.url + "?prefix=t", worker=worker)
    held = Held()
    limiter = RateLimiter(LimitsConfig(Limits(rpm=rpm)), sleep=held, margin=0.0, store=store)
    held.limiter = limiter
    return limiter, held


async def admit_until_held(limiter: RateLimiter) -> int:
    admitted = 0
    while True:
        try:
            await limiter.acquire(MODEL, 10, 10)
        except asyncio.CancelledError:
            return admitted
        admitted += 1


def test_two_limiters_sharing_a_store_admit_one_limits_worth_between_them(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    (first, _), (second, held) = limiter_on(redis_server, "a", 6), limiter_on(redis_server, "b", 6)

    async def scenario() -> tuple[int, int]:
        await first.acquire(MODEL, 10, 10)  # the probe
        first.observe(MODEL, {"anthropic-ratelimit-requests-remaining": "6"})
        return await admit_until_held(first), await admit_until_held(second)

    by_first, by_second = asyncio.run(scenario())
    # Alone, each would admit its whole bucket of 6; together they admit 6 (after the probe).
    assert by_first + by_second == 6
    assert by_second == 0 and held.waits  # the first took it all: the second waits


def test_a_pause_begun_by_one_limiter_holds_the_other(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    (first, _), (second, held) = (
        limiter_on(redis_server, "a", 600),
        limiter_on(redis_server, "b", 600),
    )
    first.pause(MODEL, 20.0)
    assert asyncio.run(admit_until_held(second)) == 0
    assert len(held.waits) == 1 and 0 < held.waits[0] <= 20.0
    assert second.stats.shared_pauses == 1 and first.stats.pauses == 1


# --------------------------------------------------------------------------- Redis goes away


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_when_redis_dies_each_worker_keeps_to_its_share_and_warns_once() -> None:
    warnings: list[str] = []
    clock = FakeClock()
    rpm = Limits(rpm=60)
    with RedisServer() as doomed:
        store = RedisBuckets(doomed.url, worker="a", warn=warnings.append, clock=clock)
        RedisBuckets(doomed.url, worker="b").take(MODEL, rpm, (0, 0, 0), 0.0)
        assert store.take(MODEL, rpm, (0, 0, 0), 0.0).wait == 0  # sees two workers
        assert store.workers == 2
    # Gone: the local share starts empty (what the others took is unknown) and fills to 30.
    held = store.take(MODEL, rpm, (1, 0, 0), 0.0)
    assert store.down and held.wait > 0 and not held.paused
    clock.now += 120.0
    admitted = sum(store.take(MODEL, rpm, (1, 0, 0), 0.0).wait == 0 for _ in range(100))
    assert admitted == 30
    store.give(MODEL, rpm, (1, 0, 0))
    store.observe(MODEL, rpm, {0: HeaderReading(limit=60, remaining=40)})
    store.pause(MODEL, rpm, 5.0)
    assert len(warnings) == 1 and "1/2 of each limit" in warnings[0]
