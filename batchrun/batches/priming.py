"""Batch cache priming: a batch's shared prefix is written to the prompt cache before the batch
that reads it is created (issue 28).

Requests of one batch are processed together, best effort (docs/api-facts.md §8.4:
30-98 % of cache hits): requests that reach a cold prefix at once all miss and all pay the
write, as online requests sent together do (§10: an entry is readable only once the answer
that writes it has begun). Online, batchrun sends a prefix group's first request alone
(``engine.warmup``); a batch cannot hold one request back, and ``max_tokens: 0`` (a request
that only warms the cache) is not allowed in a batch (§8.2). Such a request sent online
(§1.1) is not used either: no source says an entry an online request writes is read by a
batch's requests, whereas caching inside batches is documented (§8.4). So a round of
batches is primed the way the Message Batches API honours:

* each prefix group (``rows.prefix``: requests that share batchrun's cache marks) with at
  least ``MIN_SHARED`` rows to send in the round (``GroupCounts``, counted in the pass that
  reads the rows before sending) sends its first row first, alone, in a batch of its own (a
  single-request batch, one for each group); the batch after it is created only once that
  batch has ended and been collected, so its entry is written before any request of the
  group's batches is processed. The warming request is a row of the job: its answer is the
  row's, and what it cost is in the summary and the job's spend like any row's; nothing is
  paid for a request made only to warm;
* the marks of those groups' requests carry the 1-hour ttl (§10; §8.4: a batch can take
  longer than five minutes to be processed), unless the job set ``cache_ttl``
  itself; a group with one row to send writes an entry no one reads, and keeps its marks;
* the warming batch is journaled like every batch, and which groups it warmed and when
  (``BatchJournal.warmed``): a re-run within ``WARM_FOR`` of it does not warm them again.

``estimate --via batches`` prices the same: one 1-hour write per group, at the batch price,
and batch-priced reads for the rest (``estimation.caching.CachePlan.settle``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from batchrun.engine.outcome import Work
from batchrun.store.batch_journal import BatchJournal

PRIME_TTL = "1h"
MIN_SHARED = 2  # rows of a group to send in a round for its prefix to be worth warming
# A group warmed this long ago counts as cold again: the entry lives an hour from its last
# read, and reads are not seen from here; a margin for the clock and the processing.
WARM_FOR = timedelta(minutes=50)
MAX_GROUPS = 10_000  # groups counted per round; more (rows that each share little) are not

# batchrun's own marks, as every request's JSON writes them (compact, keys sorted; a schema's
# order kept elsewhere does not reach into a mark): a mark of the user's own never shares a
# request with batchrun's (``rows.prefix.place_breakpoints``), and a mark written with a ttl
# (``cache_ttl``) is the job's choice, left as it is.
_PLAIN_MARK = b'"cache_control":{"type":"ephemeral"}'
_PRIMED_MARK = b'"cache_control":{"ttl":"' + PRIME_TTL.encode() + b'","type":"ephemeral"}'


class GroupCounts:
    """How many rows of each prefix group a round sends (a bounded count, in the pass that
    reads the rows before sending)."""

    def __init__(self, limit: int = MAX_GROUPS) -> None:
        self._limit = limit
        self.counts: dict[str, int] = {}

    def counting(self, works: Iterable[Work]) -> Iterator[Work]:
        """``works`` as they are, each counted on the way."""
        for work in works:
            key = work.prefix_key
            if key is not None and work.body is not None:
                if key in self.counts:
                    self.counts[key] += 1
                elif len(self.counts) < self._limit:
                    self.counts[key] = 1
            yield work


def shared_groups(counts: Mapping[str, int]) -> set[str]:
    """The groups whose prefix a round reads more than once: primed, with 1-hour marks."""
    return {key for key, count in counts.items() if count >= MIN_SHARED}


def warm_groups(journal: BatchJournal, now: datetime) -> set[str]:
    """The groups a warming batch of this output warmed within ``WARM_FOR`` (created, not
    abandoned): not warmed again."""
    return {
        key
        for entry in journal.entries.values()
        if entry.warms and not entry.abandoned and now - entry.at < WARM_FOR
        for key in entry.warms
    }


class Priming:
    """One round's priming: which groups share a prefix (``shared``), which are warm already
    (``warm``), and, as batches are built (the builder's thread), which row warms a group
    (``warms``) and the 1-hour marks of the shared groups' requests (``primed``)."""

    def __init__(self, shared: set[str], warm: set[str]) -> None:
        self.shared = shared
        self.warm = set(warm)

    def warms(self, work: Work) -> bool:
        """Whether ``work`` is the row that warms its group: its group's first to be sent, in
        a round where the group shares its prefix and is not warm yet."""
        key = work.prefix_key
        if key is None or key not in self.shared or key in self.warm:
            return False
        self.warm.add(key)
        return True

    def primed(self, work: Work) -> bytes | None:
        """``work``'s request with its marks at the 1-hour ttl when its group shares its
        prefix (its body's marks too); None: sent as it is."""
        if work.prefix_key is None or work.prefix_key not in self.shared or work.body is None:
            return None
        content = work.content
        if content is None or _PLAIN_MARK not in content:
            return None
        _set_ttl(work.body)
        return content.replace(_PLAIN_MARK, _PRIMED_MARK)


def _set_ttl(value: Any) -> None:
    """Every plain mark in ``value`` (a request body) given the 1-hour ttl, in place."""
    if isinstance(value, dict):
        control = value.get("cache_control")
        if isinstance(control, dict) and control == {"type": "ephemeral"}:
            value["cache_control"] = {"type": "ephemeral", "ttl": PRIME_TTL}
        for inner in value.values():
            _set_ttl(inner)
    elif isinstance(value, list):
        for inner in value:
            _set_ttl(inner)
