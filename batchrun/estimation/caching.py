"""What the run would cache and deduplicate, counted as the run would do it (issue 17).

Two things make a run bill less than its rows' tokens say, and the estimate counts both:

duplicates
    a pending row whose request is identical (its ``request_hash``) to an earlier pending
    row's, or to a row already answered in the output, is not sent: it gets that answer,
    for $0 (``--no-dedup`` turns this off).
prefix groups
    requests with a cache breakpoint share a prefix group (``Work.prefix_key``). The run
    sends a group's first request alone and the rest once it has answered, so the group
    pays one cache write (1.25x the input price for a 5 m entry, 2x for 1 h) and every other
    request reads it (0.1x). Rows without a group pay plain input.

The prefix length of a group, in order of trust: what answered rows of the group were billed
for it (``cache_creation`` + ``cache_read`` tokens: a pilot measures it); the local estimate
``rows.prefix`` placed the breakpoint by, scaled by the ratio of counted to estimated input
of the group's rows (``--exact``) or by the answered rows' billed/estimated ratio; else the
local estimate as it is.

    plan = CachePlan()
    plan.pending("g1", "claude-haiku-4-5", body, counted=None)
    plan.settle(lines, ratios={"claude-haiku-4-5": 1.0}, ttl="5m")
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchrun.batches.priming import MIN_SHARED
from batchrun.cost.models import tokenizer_factor
from batchrun.cost.prices import PriceTable, default_prices
from batchrun.estimation.figures import ModelLine
from batchrun.rows.tokens import estimate_input_tokens

DIGEST_BYTES = 16  # of a request_hash kept to spot duplicates: collisions are negligible


def marked_prefix(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The part of ``body`` up to and including its deepest ``cache_control`` mark, marks
    left out; None when nothing is marked. The cached prefix runs tools, system, messages."""
    messages = body.get("messages") or []
    for turn_index in range(len(messages) - 1, -1, -1):
        turn = messages[turn_index]
        content = turn.get("content") if isinstance(turn, Mapping) else None
        if not isinstance(content, list):
            continue
        for block_index in range(len(content) - 1, -1, -1):
            if _marked(content[block_index]):
                cut = {**turn, "content": _unmarked(content[: block_index + 1])}
                return {**_head(body, "system"), "messages": [*messages[:turn_index], cut]}
    system = body.get("system")
    if isinstance(system, list):
        for index in range(len(system) - 1, -1, -1):
            if _marked(system[index]):
                return {**_head(body, "tools"), "system": _unmarked(system[: index + 1])}
    tools = body.get("tools") or []
    for index in range(len(tools) - 1, -1, -1):
        if _marked(tools[index]):
            return {"tools": _unmarked(tools[: index + 1])}
    return None


def marked_prefix_tokens(body: Mapping[str, Any], factor: float = 1.0) -> int:
    """The local estimate of the cached prefix's tokens (0 when nothing is marked): the same
    estimate ``rows.prefix`` compares with the model's minimum, on the model's tokenizer
    (``factor``: ``cost.models.tokenizer_factor``)."""
    prefix = marked_prefix(body)
    return 0 if prefix is None else estimate_input_tokens({"messages": [], **prefix}, factor)


def _head(body: Mapping[str, Any], through: str) -> dict[str, Any]:
    """The body's tools (and system, when ``through`` is "system"), marks left out."""
    out: dict[str, Any] = {}
    if body.get("tools"):
        out["tools"] = _unmarked(body["tools"])
    if through == "system" and body.get("system") is not None:
        system = body["system"]
        out["system"] = _unmarked(system) if isinstance(system, list) else system
    return out


def _marked(block: Any) -> bool:
    return isinstance(block, Mapping) and block.get("cache_control") is not None


def _unmarked(blocks: list[Any]) -> list[Any]:
    return [
        {k: v for k, v in b.items() if k != "cache_control"} if isinstance(b, Mapping) else b
        for b in blocks
    ]


class Duplicates:
    """Request hashes seen: of rows answered in the output, then of pending rows."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def answered(self, request_hash: str | None) -> None:
        digest = _digest(request_hash)
        if digest is not None:
            self._seen.add(digest)

    def is_duplicate(self, request_hash: str | None) -> bool:
        """True if an identical request was seen before; else remembers this one."""
        digest = _digest(request_hash)
        if digest is None:
            return False
        if digest in self._seen:
            return True
        self._seen.add(digest)
        return False


def _digest(request_hash: str | None) -> bytes | None:
    if not request_hash:
        return None
    try:
        return bytes.fromhex(request_hash)[:DIGEST_BYTES]
    except ValueError:
        return request_hash.encode()[: DIGEST_BYTES * 2]


@dataclass
class _Group:
    model: str
    local_prefix: int  # the local estimate of its prefix, from its first request seen
    pending: int = 0  # its requests to send (duplicates left out)
    local_input: int = 0  # their estimated input...
    counted_input: int = 0  # ...and, with --exact, their counted input
    measured: list[int] = field(default_factory=list)  # cached tokens of its answered rows


class CachePlan:
    """The prefix groups of a job: their requests to send and what answered rows measured."""

    def __init__(self, prices: PriceTable | None = None) -> None:
        self._groups: dict[str, _Group] = {}
        self._prices = prices or default_prices()  # the tokenizer of each group's model

    def _group(self, key: str, model: str, body: Mapping[str, Any]) -> _Group:
        group = self._groups.get(key)
        if group is None:
            name = body.get("model")
            factor = tokenizer_factor(name if isinstance(name, str) else None, self._prices)
            group = self._groups[key] = _Group(model, marked_prefix_tokens(body, factor))
        return group

    def pending(
        self, key: str, model: str, body: Mapping[str, Any], local: int, counted: int | None
    ) -> None:
        """One request of group ``key`` to send: ``local`` its estimated input, ``counted``
        its input from count_tokens (None without --exact, or when the count failed)."""
        group = self._group(key, model, body)
        group.pending += 1
        if counted is not None:
            group.local_input += local
            group.counted_input += counted

    def answered(self, key: str, model: str, body: Mapping[str, Any], cached_tokens: int) -> None:
        """An answered row of group ``key`` that paid or read ``cached_tokens`` of cache."""
        self._group(key, model, body).measured.append(cached_tokens)

    def prefix_tokens(self, key: str, ratio: float = 1.0) -> float:
        """The group's prefix in tokens (see the module docstring for which figure wins)."""
        group = self._groups[key]
        if group.measured:
            return float(statistics.median(group.measured))
        if group.local_input:
            return group.local_prefix * group.counted_input / group.local_input
        return group.local_prefix * ratio

    def settle(
        self,
        lines: Mapping[str, ModelLine],
        ratios: Mapping[str, float],
        ttl: str,
        primed_ttl: str | None = None,
    ) -> None:
        """Put each group's writes and reads into its model's line: one write (its first
        request, sent alone), a read for every other request. ``ratios``: billed/estimated
        input per model from answered rows, for groups nothing measured or counted.

        ``primed_ttl``: a Message Batches run primes each group with ``MIN_SHARED`` rows to
        send or more (``batches.priming``), its first row alone in a batch first and every
        mark of the group at this ttl: those groups' lines are priced at it (the batch
        price is applied to the whole line after). A line's writes share one ttl, so a
        lone row's write in a line with a primed group is priced at it too: at most the
        difference between the two write prices on that row's prefix, never less than it
        costs."""
        for key, group in self._groups.items():
            line = lines.get(group.model)
            if line is None or not group.pending:
                continue
            if primed_ttl is not None and group.pending >= MIN_SHARED:
                line.cache_ttl = primed_ttl
            elif line.cache_ttl != primed_ttl:  # no primed group in the line yet
                line.cache_ttl = ttl
            prefix = self.prefix_tokens(key, ratios.get(group.model, 1.0))
            if prefix <= 0:
                continue  # the answered rows of the group were not cached: neither will be
            line.cache_groups += 1
            line.cache_writes += 1
            line.cache_reads += group.pending - 1
            line.prefix_write_tokens += prefix
            line.prefix_read_tokens += prefix * (group.pending - 1)
