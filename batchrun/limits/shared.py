"""One rate limit for many workers: the limiter's buckets kept in Redis (``--rate-limit-store``).

N processes (or Ray workers) sending to one organisation's limit each see only their own
requests, so each paced to the whole limit sends N times too much. With
``--rate-limit-store redis://HOST:PORT/DB`` every worker's :class:`~batchrun.limits.limiter.
RateLimiter` keeps its RPM / ITPM / OTPM buckets in one Redis hash per model instead, through
:class:`RedisBuckets` (the limiter's ``store`` seam):

* **Admission** is one Lua script (one round trip): refill the three buckets, check the
  broadcast pause, take the reservation if all three hold it (with the limiter's safety
  margin), else answer how long to wait. Settling (``give``), the ``-remaining`` / ``-limit``
  headers (``observe``) and a 429's pause (``pause``) are one script each. Scripts run
  atomically in Redis, so two workers can never both take the last token.
* **Time** is Redis's (``TIME``), so the machines' clocks do not matter; what the limiter is
  told is a duration.
* **Learned limits** from any worker's headers are kept beside the buckets and lower the
  capacity every worker passes in (configured limits stay a ceiling, as alone).
* **The pause** after a 429 whose evidence says the bucket is empty is broadcast: the hash
  holds its end, and every worker's next admission adopts it (``Admission.paused``).
* **A new shared bucket is probed**: its request bucket starts with room for one request and
  does not refill until the first answer's ``-remaining`` sets the level (the only time a
  reading may raise it), a 429 pauses it, or ``HEARTBEAT_S / 6`` pass. A cluster starting
  against a bucket that other jobs drained so draws one 429, not one per worker's first
  burst; against a full one it costs a single round trip.
* **No refunds during a pause**: a 429 is not counted by the API, so alone its request is
  given back; shared, the 429s that arrive during the pause they caused would refill the
  bucket the server just said is empty, and let through more requests to meet more 429s.
* **Workers** register on every call in a sorted set scored by Redis time; entries older than
  ``HEARTBEAT_S`` are dropped. The count is remembered for the fallback.

If Redis goes away (any error or a timeout of ``TIMEOUT_S``), the store warns once and carries
on with local buckets holding this worker's share: each limit divided by the workers it last
saw registered, starting empty (what the others already took is unknown), so together the
workers still stay under the limit. It does not rejoin Redis later in the run: a restarted
Redis would start full buckets the server does not have. No request fails because of the
store: it only ever changes how long admission waits.

Keys: ``PREFIX:limits:MODEL`` (hash) and ``PREFIX:workers`` (sorted set), ``PREFIX`` being
``batchrun`` or the URL's ``prefix`` query parameter (``redis://host:6379/0?prefix=team-a``)
for organisations (API keys) that share one Redis but not one limit. Hashes expire after
``KEY_TTL_S`` without use.

redis-py is an optional dependency (``batchrun[redis]``); it is imported only when a store is
opened, so ``import batchrun`` never loads it, and a missing one is a one-line error naming
the ``pip install`` (``core.extras``). The URL may hold Redis's password: it is shown only
through ``core.scrub``, in messages and in warnings alike, and so is whatever redis-py says.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from batchrun.core.errors import ConfigError
from batchrun.core.extras import require_extra
from batchrun.core.scrub import Scrubber, url_secrets, url_without_secrets
from batchrun.core.wording import option
from batchrun.limits.buckets import Bucket
from batchrun.limits.headers import HeaderReading
from batchrun.limits.limiter import Admission
from batchrun.limits.values import Limits

TIMEOUT_S = 1.0
"""A Redis call that takes longer than this counts as Redis gone."""

HEARTBEAT_S = 30.0
"""A worker not heard from in this long is no longer counted among those sharing the limit."""

KEY_TTL_S = 3_600
"""A model's shared state unused this long is dropped (its learned limits with it)."""

DEFAULT_PREFIX = "batchrun"

Caps = tuple[float, float, float]

_NONE = -1  # "no such limit" / "no reading" in a script's numeric arguments

# Shared by every script: the clock, the worker heartbeat, the hash read and refilled.
# State fields: u (last refill, Redis seconds), l0..l2 (levels), c0..c2 (capacities last
# used), L0..L2 (learned limits), p (pause end), q (1 while the request bucket is probed).
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[2], ARGV[3])
local workers = redis.call('ZCARD', KEYS[2])
local raw = redis.call('HMGET', KEYS[1], 'u', 'l0', 'l1', 'l2', 'L0', 'L1', 'L2', 'p', 'q')
local updated = tonumber(raw[1]) or now
local learned = {tonumber(raw[5]), tonumber(raw[6]), tonumber(raw[7])}
local pause_end = tonumber(raw[8]) or 0
local probe_until = tonumber(raw[9]) or 0
local probing = probe_until > now
local caps, levels = {}, {}
local function capacity(d, passed)
  local cap = tonumber(passed)
  if cap < 0 then cap = nil end
  local seen = learned[d]
  if seen ~= nil and (cap == nil or seen < cap) then cap = seen end
  return cap
end
local function refill(first)
  for d = 1, 3 do
    local cap = capacity(d, ARGV[first + d - 1])
    caps[d] = cap
    if cap ~= nil then
      local level = tonumber(raw[d + 1])
      if level == nil then
        if d == 1 then
          level = 1 + math.min(tonumber(ARGV[4]) * cap, math.max(cap - 1, 0))
          probing = true
          probe_until = now + tonumber(ARGV[2]) / 6
        else
          level = cap
        end
      elseif now > updated and not (d == 1 and probing) then
        level = level + (now - updated) * cap / 60
      end
      levels[d] = math.min(level, cap)
    end
  end
end
local function save()
  local fields = {'u', tostring(now), 'p', tostring(pause_end)}
  table.insert(fields, 'q')
  table.insert(fields, probing and tostring(probe_until) or '0')
  for d = 1, 3 do
    if levels[d] ~= nil then
      table.insert(fields, 'l' .. (d - 1))
      table.insert(fields, tostring(levels[d]))
    end
    if learned[d] ~= nil then
      table.insert(fields, 'L' .. (d - 1))
      table.insert(fields, tostring(learned[d]))
    end
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
"""

# ARGV: worker, heartbeat, ttl, margin, caps x3 (5..7), needs x3 (8..10).
# Returns {0, '0', workers} when taken, {1, wait, workers} to wait, {2, pause left, workers}.
_TAKE = (
    _PRELUDE
    + """
refill(5)
if pause_end > now then
  save()
  return {2, tostring(pause_end - now), workers}
end
local margin = tonumber(ARGV[4])
local wait = 0
for d = 1, 3 do
  local cap = caps[d]
  if cap ~= nil then
    local need = tonumber(ARGV[7 + d])
    local keep = math.min(margin * cap, math.max(cap - need, 0))
    local short = need + keep - levels[d]
    if short > 0 then wait = math.max(wait, short / (cap / 60)) end
  end
end
if wait <= 0 then
  for d = 1, 3 do
    if caps[d] ~= nil then levels[d] = levels[d] - tonumber(ARGV[7 + d]) end
  end
end
save()
if wait > 0 then return {1, tostring(wait), workers} end
return {0, '0', workers}
"""
)

# ARGV: worker, heartbeat, ttl, margin, caps x3 (5..7), deltas x3 (8..10). Returns workers.
_GIVE = (
    _PRELUDE
    + """
refill(5)
for d = 1, 3 do
  local delta = tonumber(ARGV[7 + d])
  -- No refund while paused: the server said the bucket is empty, and the refunds of the 429s
  -- that came with it would only let through more requests that meet the same 429.
  if caps[d] ~= nil and (delta < 0 or pause_end <= now) then
    levels[d] = math.min(caps[d], levels[d] + delta)
  end
end
save()
return workers
"""
)

# ARGV: worker, heartbeat, ttl, margin, caps x3 (5..7), header limits x3 (8..10),
# header remaining x3 (11..13), -1 where the headers said nothing. Returns workers.
_OBSERVE = (
    _PRELUDE
    + """
for d = 1, 3 do
  local limit = tonumber(ARGV[7 + d])
  if limit > 0 then learned[d] = limit end
end
refill(5)
for d = 1, 3 do
  local remaining = tonumber(ARGV[10 + d])
  if caps[d] ~= nil and remaining >= 0 then
    if d == 1 and probing then
      levels[d] = math.min(caps[d], remaining)
      probing = false
    else
      levels[d] = math.min(levels[d], remaining)
    end
  end
end
save()
return workers
"""
)

# ARGV: worker, heartbeat, ttl, margin, caps x3 (5..7), seconds (8). Returns workers.
_PAUSE = (
    _PRELUDE
    + """
refill(5)
pause_end = math.max(pause_end, now + tonumber(ARGV[8]))
probing = false
for d = 1, 3 do
  if levels[d] ~= nil then levels[d] = math.min(levels[d], 0) end
end
save()
return workers
"""
)

SCRIPTS = {"take": _TAKE, "give": _GIVE, "observe": _OBSERVE, "pause": _PAUSE}
"""The Lua scripts by name, for tests that drive them against Redis directly."""


def _warn_on_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def split_store_url(url: str) -> tuple[str, str]:
    """The Redis URL without batchrun's own ``prefix`` parameter, and that prefix.

    >>> split_store_url("redis://127.0.0.1:6379/0?prefix=team-a")
    ('redis://127.0.0.1:6379/0', 'team-a')
    >>> split_store_url("redis://localhost/1")
    ('redis://localhost/1', 'batchrun')
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for key, value in query if key == "prefix" and value), DEFAULT_PREFIX)
    rest = urlencode([(key, value) for key, value in query if key != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def _refusal(store: str, exc: BaseException, scrub: Scrubber, redis: Any) -> str:
    """Why the store at ``store`` (the setting, as the reader writes it) cannot be used."""
    said = scrub(str(exc) or type(exc).__name__)
    if isinstance(exc, ValueError):
        return f"{store}: not a Redis URL ({said}); give redis://[:PASSWORD@]HOST:PORT/DB"
    if isinstance(exc, redis.AuthenticationError) or _refused_credentials(exc):
        return (
            f"{store}: Redis refused the credentials ({said}); put the user and password it "
            "expects in the URL (redis://USER:PASSWORD@HOST:PORT/DB), or run without a "
            "shared limit"
        )
    return (
        f"{store}: Redis does not answer ({said}); start it, fix the URL, or run without a "
        "shared limit"
    )


def _refused_credentials(exc: BaseException) -> bool:
    """Redis's own words for a missing or wrong password (NOAUTH, WRONGPASS)."""
    return str(exc).startswith(("NOAUTH", "WRONGPASS", "invalid password"))


def _caps(limits: Limits) -> Caps:
    return tuple(float(_NONE if v is None else v) for v in limits.values())  # type: ignore[return-value]


class RedisBuckets:
    """The limiter's buckets in Redis, shared by every worker given the same URL.

    Implements the limiter's ``BucketStore`` seam. ``warn`` gets the one warning when Redis
    goes away; ``clock`` paces the local fallback buckets (tests pass a fake). Opening checks
    that Redis answers, and refuses with a ConfigError if not: a run that believes it shares a
    limit while it does not would draw the 429s it was meant to avoid.
    """

    def __init__(
        self,
        url: str,
        *,
        worker: str | None = None,
        warn: Callable[[str], None] = _warn_on_stderr,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        redis = require_extra("redis", "redis", option("rate_limit_store"))
        address, self.prefix = split_store_url(url)
        # The URL's password (and whatever redis-py quotes of it) masked in every message.
        self._scrub = Scrubber(url_secrets(url))
        self._warn = warn
        self._clock = clock
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.workers = 1  # as last seen registered (the fallback divides the limits by it)
        self.down = False
        self._fallback: dict[str, list[Bucket | None]] = {}
        self._budgets: list[SharedBudget] = []
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        try:
            self._client = redis.Redis.from_url(
                address, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
            )
            self._client.ping()
        except (ValueError, *self._errors) as exc:
            error = ConfigError(
                _refusal(
                    option("rate_limit_store", url_without_secrets(address)),
                    exc,
                    self._scrub,
                    redis,
                )
            )
            # A traceback prints the cause: kept only when it shows nothing of the URL's secrets.
            raise error from self._scrub.safe_cause(exc)
        self._scripts = {name: self._client.register_script(s) for name, s in SCRIPTS.items()}
        self._workers_key = f"{self.prefix}:workers"

    def scrub(self, exc: BaseException) -> str:
        """What redis-py said, as it may be shown: nothing of the URL's credentials."""
        return self._scrub(str(exc))

    def key(self, model: str) -> str:
        """The hash holding ``model``'s shared buckets."""
        return f"{self.prefix}:limits:{model}"

    def budget(self, job: str, output: str | None = None) -> SharedBudget:
        """The ``--max-cost`` spending of the job whose fingerprint is ``job``, in this Redis;
        ``output`` names the output this worker writes (its spending is kept under it)."""
        budget = SharedBudget(self, job, output)
        self._budgets.append(budget)
        return budget

    def close(self) -> None:
        """Leave the registered workers (the others' fallback share grows) and disconnect."""
        for budget in self._budgets:
            budget.leave()
        if not self.down:
            with contextlib.suppress(*self._errors):
                self._client.zrem(self._workers_key, self.worker)
        self._client.close()

    # ------------------------------------------------------------------ the seam

    def take(self, model: str, limits: Limits, need: Caps, margin: float) -> Admission:
        if not self.down:
            answer = self._run("take", model, limits, margin, need)
            if answer is not None:
                status, seconds = int(answer[0]), float(answer[1])
                if status == 0:
                    return Admission(0.0)
                if status == 1:
                    return Admission(seconds)
                return Admission(seconds, paused=True)
        return self._local_take(model, limits, need, margin)

    def give(self, model: str, limits: Limits, deltas: Caps) -> None:
        if self.down or self._run("give", model, limits, 0.0, deltas) is None:
            for bucket, delta in zip(self._local(model, limits), deltas, strict=True):
                if bucket is not None and delta:
                    bucket.give(delta, self._clock())

    def observe(self, model: str, limits: Limits, readings: Mapping[int, HeaderReading]) -> None:
        seen = [readings.get(dim) for dim in range(3)]
        told = tuple(
            float(_NONE if r is None or r.limit is None else r.limit) for r in seen
        ) + tuple(float(_NONE if r is None or r.remaining is None else r.remaining) for r in seen)
        if self.down or self._run("observe", model, limits, 0.0, told) is None:
            for bucket, reading in zip(self._local(model, limits), seen, strict=True):
                if bucket is not None and reading is not None and reading.remaining is not None:
                    bucket.lower_to(reading.remaining / self.workers, self._clock())

    def pause(self, model: str, limits: Limits, seconds: float) -> None:
        if self.down or self._run("pause", model, limits, 0.0, (seconds,)) is None:
            for bucket in self._local(model, limits):
                if bucket is not None:
                    bucket.lower_to(0.0, self._clock())

    # ------------------------------------------------------------------ Redis, or not

    def _run(
        self, name: str, model: str, limits: Limits, margin: float, rest: tuple[float, ...]
    ) -> Any:
        """Run one script; None (and the fallback from now on) if Redis did not answer."""
        args: list[str | float] = [self.worker, HEARTBEAT_S, KEY_TTL_S, margin]
        args += [*_caps(limits), *rest]
        try:
            answer = self._scripts[name](keys=[self.key(model), self._workers_key], args=args)
        except self._errors as exc:
            self._go_local(exc)
            return None
        self.workers = max(int(answer[2] if isinstance(answer, list) else answer), 1)
        return answer

    def _go_local(self, exc: BaseException) -> None:
        self.down = True
        self._warn(
            f"batchrun: the shared rate-limit store stopped answering ({self.scrub(exc)}); "
            f"this worker now keeps to 1/{self.workers} of each limit on its own for the rest "
            "of the run"
        )

    def _local(self, model: str, limits: Limits) -> list[Bucket | None]:
        """This worker's share of each limit, as local buckets (created empty)."""
        now = self._clock()
        buckets = self._fallback.setdefault(model, [None, None, None])
        for dim, limit in enumerate(limits.values()):
            share = None if limit is None else limit / self.workers
            bucket = buckets[dim]
            if share is None:
                buckets[dim] = None
            elif bucket is None:
                buckets[dim] = Bucket.per_minute(share, now, level=0.0)
            elif bucket.capacity != share:
                bucket.resize_per_minute(share, now)
        return buckets

    def _local_take(self, model: str, limits: Limits, need: Caps, margin: float) -> Admission:
        now = self._clock()
        buckets = self._local(model, limits)
        wait = max(
            (
                # A request larger than this worker's share still goes, once the share is full.
                bucket.delay(min(amount, bucket.capacity), now, margin * bucket.capacity)
                for bucket, amount in zip(buckets, need, strict=True)
                if bucket is not None
            ),
            default=0.0,
        )
        if wait > 0:
            return Admission(wait)
        for bucket, amount in zip(buckets, need, strict=True):
            if bucket is not None:
                bucket.take(amount, now)
        return Admission(0.0)


# --------------------------------------------------------------------------- the budget

BUDGET_HEARTBEAT_S = 900.0
"""A budget's worker not heard from in this long has crashed: its reservations are dropped.

Much longer than ``HEARTBEAT_S``: a worker calls only when a request starts or ends, and one
request may take minutes; dropping a live worker's reservation would let the others spend it.
"""

JOB_KEY_CHARS = 16
"""Of the job fingerprint's 64 hex digits: enough to keep jobs apart (as ``ray.parts``)."""

NANO_USD = Decimal(1_000_000_000)
"""Amounts are kept in Redis as whole nano-dollars: integers, so sums are exact in Lua's
doubles up to $9 million, and reservations are rounded up so the cap holds."""

# The budget's state: KEYS[1] a hash (``o:OUTPUT`` what was spent writing each output, across
# its runs; ``spent`` what workers with no output spent; ``r:WORKER`` each worker's
# reservations), KEYS[2] its workers by Redis time.
# ARGV: worker, heartbeat, ttl, then each script's own. A worker gone past the heartbeat
# (crashed) has its reservations dropped, so they do not hold the budget for ever.
_BUDGET_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local horizon = now - tonumber(ARGV[2])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', horizon)) do
  redis.call('HDEL', KEYS[1], 'r:' .. gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', horizon)
local function touch()
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
local function totals()
  local spent, reserved = 0, 0
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local head = string.sub(all[i], 1, 2)
    if all[i] == 'spent' or head == 'o:' then spent = spent + tonumber(all[i + 1]) end
    if head == 'r:' then reserved = reserved + tonumber(all[i + 1]) end
  end
  return {spent, reserved, redis.call('ZCARD', KEYS[2])}
end
"""

# ARGV[4] amount, ARGV[5] limit (nano-dollars). Reserve if spent + reserved + amount <= limit.
# Returns {1 if reserved else 0, spent, reserved, workers} (after).
_BUDGET_RESERVE = (
    _BUDGET_PRELUDE
    + """
touch()
local before = totals()
if before[1] + before[2] + tonumber(ARGV[4]) <= tonumber(ARGV[5]) then
  redis.call('HINCRBY', KEYS[1], 'r:' .. ARGV[1], ARGV[4])
  local after = totals()
  return {1, after[1], after[2], after[3]}
end
return {0, before[1], before[2], before[3]}
"""
)

# ARGV[4] the reservation, ARGV[5] the real cost (nano-dollars), ARGV[6] the field it is
# spent under (``o:OUTPUT``; ``spent`` when absent). Returns {spent, reserved, workers} (after).
_BUDGET_SETTLE = (
    _BUDGET_PRELUDE
    + """
touch()
local mine = 'r:' .. ARGV[1]
if ARGV[4] ~= '0' then
  -- Dropped (this worker was taken for crashed) or never there: it holds nothing.
  if redis.call('HINCRBY', KEYS[1], mine, '-' .. ARGV[4]) <= 0 then
    redis.call('HDEL', KEYS[1], mine)
  end
end
if ARGV[5] ~= '0' then redis.call('HINCRBY', KEYS[1], ARGV[6] or 'spent', ARGV[5]) end
return totals()
"""
)

# ARGV[4] an output's field (``o:OUTPUT``), ARGV[5] what its earlier runs spent (nano-dollars,
# from its own ledger), ARGV[6] '1' to set it whatever it held (a new job: --overwrite).
# Otherwise the larger stays: Redis may have counted an answer the output never recorded (a
# worker killed between the two), or may have forgotten (the key expired). Returns totals.
_BUDGET_SEED = (
    _BUDGET_PRELUDE
    + """
touch()
local held = tonumber(redis.call('HGET', KEYS[1], ARGV[4]) or '0')
if ARGV[6] == '1' or tonumber(ARGV[5]) > held then
  redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
end
return totals()
"""
)

_BUDGET_LEAVE = (
    _BUDGET_PRELUDE
    + """
redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return totals()
"""
)

BUDGET_SCRIPTS = {
    "reserve": _BUDGET_RESERVE,
    "settle": _BUDGET_SETTLE,
    "seed": _BUDGET_SEED,
    "leave": _BUDGET_LEAVE,
}
"""The budget's Lua scripts by name, for tests that drive them against Redis directly."""


def to_nano(amount: Decimal) -> int:
    """``amount`` USD in whole nano-dollars, rounded up (a reservation never shrinks).

    >>> to_nano(Decimal("0.0000012341"))
    1235
    """
    return int((amount * NANO_USD).to_integral_value(rounding=ROUND_CEILING))


class SharedBudget:
    """One job's ``--max-cost`` spending in Redis, shared by every worker of the job.

    Implements ``cost.budget.SpendingStore``: ``reserve`` takes an amount only if what every
    worker spent and holds reserved leaves room for it under the cap, ``settle`` replaces a
    reservation by the real cost; each is one atomic script. Made by
    :meth:`RedisBuckets.budget`, whose connection, worker name and warning it uses.

    The job is its fingerprint (``store.resume.job_fingerprint``: model, prompt, template,
    max_tokens... everything but the rows, with where answers come from), so the shards of a
    job, or workers given parts of its input, share one budget wherever their outputs are.
    What each output's runs spent is kept under the output (``o:OUTPUT``), across its runs:
    a worker first adds what its output's own ledger says earlier runs spent (``seed``;
    ``store.spend``), so a re-run counts it even after Redis forgot the budget (unused for
    ``KEY_TTL_S``), and to spend more, raise ``--max-cost``. If Redis goes away, the worker
    warns once and keeps on its own to its share: the budget left when last seen divided by
    the workers then registered (``share``).
    """

    def __init__(self, owner: RedisBuckets, job: str, output: str | None = None) -> None:
        self._owner = owner
        self.key = f"{owner.prefix}:budget:{job[:JOB_KEY_CHARS]}"
        # Where this worker's spending is kept: under its output, or with no output, together.
        self._field = "spent"
        if output is not None:
            digest = hashlib.sha256(output.encode("utf-8", "surrogatepass")).hexdigest()
            self._field = f"o:{digest[:JOB_KEY_CHARS]}"
        self._workers_key = f"{self.key}:workers"
        self._scripts = {
            name: owner._client.register_script(text) for name, text in BUDGET_SCRIPTS.items()
        }
        self._joined = False
        self.down = False
        self.workers = max(owner.workers, 1)
        self.left: Decimal | None = None  # the cap less every worker's spent and reserved
        self._before = Decimal(0)  # what the output's earlier runs spent (``seed``)

    def reserve(self, amount: Decimal, limit: Decimal) -> tuple[bool, Decimal, Decimal] | None:
        """Reserve ``amount`` under ``limit``: (reserved?, spent by all, reserved by all)
        after; None when Redis is gone (the caller keeps to ``share`` from now on)."""
        answer = self._run("reserve", to_nano(amount), to_nano(limit), limit=limit)
        if answer is None:
            return None
        spent, reserved = (Decimal(int(value)) / NANO_USD for value in answer[1:3])
        return bool(int(answer[0])), spent, reserved

    def settle(self, reserved: Decimal, actual: Decimal, limit: Decimal) -> bool:
        """Replace a reservation by the real cost; False when Redis is gone."""
        answer = self._run("settle", to_nano(reserved), to_nano(actual), self._field, limit=limit)
        return answer is not None

    def seed(self, spent_before: Decimal, *, reset: bool = False) -> None:
        """Count what this worker's output spent in earlier runs (its own ledger), before it
        reserves anything: the larger of that and what Redis holds for it; with ``reset``
        (a new job, ``--overwrite``) exactly that."""
        self._before = spent_before
        if self.down or self._owner.down:
            return  # the first reservation warns
        with contextlib.suppress(*self._owner._errors):  # ... as it does here
            self._call("seed", self._field, to_nano(spent_before), int(reset))
            self._joined = True

    def share(self, limit: Decimal) -> Decimal:
        """What this worker may still reserve on its own once Redis is gone."""
        return self._left_seen(limit) / self.workers

    def _left_seen(self, limit: Decimal) -> Decimal:
        """The budget left when Redis last answered (before it did: less this output's
        earlier runs)."""
        left = limit - self._before if self.left is None else self.left
        return max(left, Decimal(0))

    def leave(self) -> None:
        """This worker is done: its name (and any reservation) leaves the budget."""
        if self._joined and not self.down:
            with contextlib.suppress(*self._owner._errors):
                self._call("leave")

    def _run(self, name: str, *rest: int | str, limit: Decimal) -> Any:
        if self.down or self._owner.down:
            self.down = True
            return None
        try:
            answer = self._call(name, *rest)
            self._joined = True
        except self._owner._errors as exc:
            self.down = True
            share = self.share(limit)
            self._owner._warn(
                f"batchrun: the shared budget stopped answering ({self._owner.scrub(exc)}); "
                f"this worker now keeps to ${share:.4f} more on its own (1/{self.workers} of the "
                f"${self._left_seen(limit):.4f} left when "
                "last seen)"
            )
            return None
        self._note(answer[-3:], limit)
        return answer

    def _note(self, totals: list[Any], limit: Decimal) -> None:
        spent, reserved, workers = (int(value) for value in totals)
        self.left = limit - Decimal(spent + reserved) / NANO_USD
        self.workers = max(workers, 1)

    def _call(self, name: str, *rest: int | str) -> Any:
        args: list[str | float] = [self._owner.worker, BUDGET_HEARTBEAT_S, KEY_TTL_S, *rest]
        return self._scripts[name](keys=[self.key, self._workers_key], args=args)
