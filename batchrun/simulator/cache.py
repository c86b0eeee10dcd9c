"""The simulator's prompt cache: a repeated cacheable prefix is read, not written again.

Modelled on the API's prompt caching (Anthropic docs, "Prompt caching"):

* the cacheable prefix runs through ``tools``, then ``system``, then ``messages``, up to and
  including a block marked with ``cache_control`` (a *breakpoint*; a top-level
  ``cache_control`` marks the last block of the last message);
* a prefix shorter than ``MIN_CACHEABLE_TOKENS`` is not cached (the API silently skips it);
* a request reads the longest earlier-written prefix it starts with, and writes the segments
  after it up to its last breakpoint, each at its breakpoint's ``ttl`` (``5m`` or ``1h``);
* an entry lives ``ttl`` from its last use (reads refresh it), per model.

Usage then reports ``cache_read_input_tokens``, ``cache_creation_input_tokens`` with its
5 m / 1 h split, and the rest as ``input_tokens``, as the API does.

The cache is one per process (``SHARED``), like an organization's cache: the server needs no
state of its own for it. Tests that depend on it use prompts of their own.
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

MIN_CACHEABLE_TOKENS = 1024
"""The smallest cacheable prefix (the API's minimum for Sonnet and Opus models)."""

_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
_MAX_ENTRIES = 10_000

Counter = Callable[[Mapping[str, Any]], int]


@dataclass(frozen=True)
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


class PromptCache:
    """Prefixes written so far, by digest; bounded, thread-safe, with a clock seam."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: OrderedDict[str, float] = OrderedDict()  # key -> expiry
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def apply(self, body: Mapping[str, Any], count: Counter) -> CacheUsage:
        """Look the request's breakpoints up, record the new ones, and say what was read."""
        points = [p for p in breakpoints(body, count) if p.tokens >= MIN_CACHEABLE_TOKENS]
        if not points:
            return CacheUsage()
        now = self._clock()
        with self._lock:
            hit = -1
            for i, point in enumerate(points):
                expiry = self._entries.get(point.key)
                if expiry is not None and expiry > now:
                    hit = i
            read = points[hit].tokens if hit >= 0 else 0
            write = {"5m": 0, "1h": 0}
            previous = read
            for i, point in enumerate(points):
                self._entries[point.key] = now + _TTL_SECONDS[point.ttl]
                self._entries.move_to_end(point.key)
                if i > hit:
                    write[point.ttl] += max(point.tokens - previous, 0)
                    previous = max(previous, point.tokens)
            while len(self._entries) > _MAX_ENTRIES:
                self._entries.popitem(last=False)
        return CacheUsage(read=read, write_5m=write["5m"], write_1h=write["1h"])


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
        tokens = count({"messages": [], **prefix})
        digest = hashlib.sha256(
            json.dumps([model, prefix], sort_keys=True, default=str).encode()
        ).hexdigest()
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
