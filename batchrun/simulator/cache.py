"""The simulator's prompt cache: a repeated cacheable prefix is read, not written again.

Modelled on the API's prompt caching (Anthropic docs, "Prompt caching"):

* the cacheable prefix runs through ``tools``, then ``system``, then ``messages``, up to and
  including a block marked with ``cache_control`` (a *breakpoint*; a top-level
  ``cache_control`` marks the last block of the last message);
* a prefix shorter than the model's minimum (``min_cacheable_tokens``, from the model table:
  4,096 for Haiku 4.5 and Opus 4.5/4.6, 512 for the newest) is not cached (the API silently
  skips it);
* a request reads the longest earlier-written prefix it starts with, matched exactly (the
  model and every block up to the breakpoint; the marks themselves are not part of it), and
  writes the segments after it up to its last breakpoint, each at its breakpoint's ``ttl``
  (``5m`` or ``1h``);
* what a request writes becomes readable only once its answer starts: the server looks up
  (``lookup``) when the request arrives and commits (``commit``) when it answers, so N
  requests sent together with a cold prefix all miss and all pay the write, as with the API;
* an entry lives ``ttl`` from its last use (reads refresh it), by an injectable clock.

Usage then reports ``cache_read_input_tokens``, ``cache_creation_input_tokens`` with its
5 m / 1 h split, and the rest as ``input_tokens``, as the API does.

The cache is one per process (``SHARED``), like an organization's cache, unless a simulator
is given its own. Tests that depend on the shared one use prompts of their own.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from batchrun.core.frozen import frozen
from batchrun.simulator.models import packaged_models

MIN_CACHEABLE_TOKENS = 1024
"""The smallest cacheable prefix of a model the table gives no minimum (a gateway's name)."""


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix the simulator caches for ``model``: the model table's minimum
    (``batchrun/cost/prices.toml``, read as data: ``models``), else ``MIN_CACHEABLE_TOKENS``."""
    minimum = packaged_models().facts_for(model).min_cacheable_tokens
    return MIN_CACHEABLE_TOKENS if minimum is None else minimum


_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
_MAX_ENTRIES = 10_000

Counter = Callable[[Mapping[str, Any]], int]


@frozen  # made for every request: frozen to the type checker, quick to make
class CacheUsage:
    """How a request's input splits between cache reads, cache writes and plain input."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0

    @property
    def written(self) -> int:
        return self.write_5m + self.write_1h


@dataclass(frozen=True)
class _Breakpoint:
    key: str
    tokens: int
    ttl: str


@frozen  # made for every request: frozen to the type checker, quick to make
class CacheLookup:
    """What a request reads and will write; its writes are readable once committed."""

    usage: CacheUsage
    writes: tuple[tuple[str, str], ...] = ()  # (prefix key, ttl)


class PromptCache:
    """Prefixes written so far, by digest; bounded, thread-safe, with a clock seam."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: OrderedDict[str, float] = OrderedDict()  # key -> expiry
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def lookup(self, body: Mapping[str, Any], count: Counter) -> CacheLookup:
        """On arrival: the longest readable prefix is read (and refreshed); the rest, up to
        the last breakpoint, is to be written. Nothing becomes readable until ``commit``."""
        minimum = min_cacheable_tokens(str(body.get("model")))
        points = [p for p in breakpoints(body, count) if p.tokens >= minimum]
        if not points:
            return CacheLookup(CacheUsage())
        now = self._clock()
        with self._lock:
            hit = -1
            for i, point in enumerate(points):
                expiry = self._entries.get(point.key)
                if expiry is not None and expiry > now:
                    hit = i
            for point in points[: hit + 1]:  # a read keeps the entries it uses alive
                if point.key in self._entries:
                    self._entries[point.key] = now + _TTL_SECONDS[point.ttl]
                    self._entries.move_to_end(point.key)
        read = points[hit].tokens if hit >= 0 else 0
        write = {"5m": 0, "1h": 0}
        previous = read
        for point in points[hit + 1 :]:
            write[point.ttl] += max(point.tokens - previous, 0)
            previous = max(previous, point.tokens)
        usage = CacheUsage(read=read, write_5m=write["5m"], write_1h=write["1h"])
        return CacheLookup(usage, tuple((p.key, p.ttl) for p in points[hit + 1 :]))

    def commit(self, lookup: CacheLookup) -> None:
        """The answer has started: what the request wrote is readable from now on."""
        if not lookup.writes:
            return
        now = self._clock()
        with self._lock:
            for key, ttl in lookup.writes:
                self._entries[key] = now + _TTL_SECONDS[ttl]
                self._entries.move_to_end(key)
            while len(self._entries) > _MAX_ENTRIES:
                self._entries.popitem(last=False)

    def apply(self, body: Mapping[str, Any], count: Counter) -> CacheUsage:
        """Look up and commit at once: a request answered the moment it arrives (batches)."""
        found = self.lookup(body, count)
        self.commit(found)
        return found.usage


SHARED = PromptCache()
"""The process's cache, used by every simulator in it."""


def breakpoints(body: Mapping[str, Any], count: Counter) -> list[_Breakpoint]:
    """Each ``cache_control`` mark as (digest of the prefix through it, its tokens, ttl)."""
    model = str(body.get("model"))
    tools = list(body.get("tools") or ())
    system = body.get("system")
    system_blocks = list(system) if isinstance(system, list) else []
    messages = list(body.get("messages") or ())
    found: list[_Breakpoint] = []

    def mark(control: Any, prefix: dict[str, Any]) -> None:
        if not isinstance(control, Mapping) or control.get("type") != "ephemeral":
            return
        ttl = control.get("ttl") if control.get("ttl") in _TTL_SECONDS else "5m"
        tokens = count({"model": model, "messages": [], **prefix})  # on its tokenizer
        unmarked = json.dumps([model, _without_marks(prefix)], sort_keys=True, default=str)
        digest = hashlib.sha256(unmarked.encode()).hexdigest()
        found.append(_Breakpoint(digest, tokens, str(ttl)))

    for i, tool in enumerate(tools):
        if isinstance(tool, Mapping):
            mark(tool.get("cache_control"), {"tools": tools[: i + 1]})
    for i, block in enumerate(system_blocks):
        if isinstance(block, Mapping):
            mark(block.get("cache_control"), {"tools": tools, "system": system_blocks[: i + 1]})
    base: dict[str, Any] = {"tools": tools, "system": system}
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if isinstance(block, Mapping):
                partial = [*messages[:i], {**message, "content": content[: j + 1]}]
                mark(block.get("cache_control"), {**base, "messages": partial})
    automatic = body.get("cache_control")
    if automatic is not None and messages:
        mark(automatic, {**base, "messages": messages})
    return found


def _without_marks(value: Any) -> Any:
    """``value`` without its ``cache_control`` marks: they say where to cache, they are not
    content, so requests marking the same blocks differently still match."""
    if isinstance(value, Mapping):
        return {k: _without_marks(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, (list, tuple)):
        return [_without_marks(v) for v in value]
    return value
