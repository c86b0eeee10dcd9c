"""What the engine counts as rows go through it: rows, tokens, cost, retries, 429s.

Fields marked ``ADDS`` add up when two tallies are combined (``add``): a Message Batches
run and its ``--finish-online`` pass, or the shards of one job. Other fields are state (the
limits in force, the concurrency chosen) that the newer tally replaces.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchrun.limits.values import Limits
from batchrun.store.columns import STATUS_OK

# The metadata of a field that ``RowTally.add`` sums (numbers) or merges (counters).
ADDS = {"adds": True}


@dataclass(kw_only=True)
class RowTally:
    """Counts of the rows the engine finished, and of what it took to finish them."""

    ok: int = field(default=0, metadata=ADDS)
    error: int = field(default=0, metadata=ADDS)
    invalid: int = field(
        default=0, metadata=ADDS
    )  # of `error`: rows never sent because they break an API rule
    retries: int = field(default=0, metadata=ADDS)
    stop_reasons: Counter[str] = field(default_factory=Counter, metadata=ADDS)
    error_types: Counter[str] = field(default_factory=Counter, metadata=ADDS)
    input_tokens: int = field(default=0, metadata=ADDS)
    output_tokens: int = field(default=0, metadata=ADDS)
    cache_creation_input_tokens: int = field(default=0, metadata=ADDS)
    cache_creation_5m_input_tokens: int = field(
        default=0, metadata=ADDS
    )  # of cache_creation_input_tokens: the split by ttl, where the API gives it
    cache_creation_1h_input_tokens: int = field(default=0, metadata=ADDS)
    cache_read_input_tokens: int = field(default=0, metadata=ADDS)
    cost_usd: float = field(default=0.0, metadata=ADDS)  # this run's answers, from their own usage
    unpriced: int = field(
        default=0, metadata=ADDS
    )  # answers whose model has no price (cost_usd null)
    rate_limited_429s: int = field(
        default=0, metadata=ADDS
    )  # responses answered 429 rate_limit_error, retried or not
    rate_pauses: int = field(
        default=0, metadata=ADDS
    )  # whole-model pauses: a 429 said the bucket is empty, or 429s clustered
    rate_429s_retried: int = field(
        default=0, metadata=ADDS
    )  # 429s waited out by their own request alone (no pause of the model)
    rate_slowdowns: int = field(
        default=0, metadata=ADDS
    )  # proportional cuts of a model's concurrency (scattered 429s, a 529 storm)
    rate_wait_s: float = field(
        default=0.0, metadata=ADDS
    )  # wall seconds rate limits held admission back
    deduplicated: int = field(
        default=0, metadata=ADDS
    )  # rows given the answer of an identical request instead of being sent (engine.dedup)
    dedup_sampled: int = field(
        default=0, metadata=ADDS
    )  # of those, rows whose request samples (temperature above 0): a copy, not a sample
    dedup_saved_usd: float = field(
        default=0.0, metadata=ADDS
    )  # what those answers cost the rows that were sent
    dedup_resent: int = field(
        default=0, metadata=ADDS
    )  # duplicates sent anyway: their twin's answer had left the bounded table (no plan)
    answer_cache_hits: int = field(
        default=0, metadata=ADDS
    )  # rows filled from --answer-cache instead of being sent (engine.answer_cache)
    answer_cache_saved_usd: float = field(
        default=0.0, metadata=ADDS
    )  # what those answers cost the jobs that paid for them
    answer_cache_stored: int = field(default=0, metadata=ADDS)  # answers this run added to it
    answer_cache_failures: int = field(
        default=0, metadata=ADDS
    )  # reads or writes of the cache that failed (those rows were sent, or not kept)
    sample_requests: int = field(
        default=0, metadata=ADDS
    )  # --samples K: the requests' rows folded into voted rows (engine.samples)
    agreement_total: float = field(
        default=0.0, metadata=ADDS
    )  # the voted rows' agreement, summed (its mean: agreement_total / agreement_rows)
    agreement_rows: int = field(default=0, metadata=ADDS)
    cache_groups_warmed: int = field(
        default=0, metadata=ADDS
    )  # prefix groups whose first request went alone to write the cache (engine.warmup)
    cache_rewarmed: int = field(
        default=0, metadata=ADDS
    )  # times a group's reads stopped (entry evicted) and it was written again
    dropped: Counter[str] = field(
        default_factory=Counter, metadata=ADDS
    )  # rows sent without a sampling setting their model refuses, by setting (--drop-unsupported)
    elapsed_s: float = field(default=0.0, metadata=ADDS)
    rate_limits: dict[str, Limits] = field(default_factory=dict)  # per model, as enforced
    concurrency_chosen: int | None = None  # what --concurrency auto settled on

    @property
    def finished(self) -> int:
        return self.ok + self.error

    @property
    def rows_per_second(self) -> float:
        return self.finished / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def count(self, row: Mapping[str, Any], dropped: Iterable[str] = ()) -> None:
        """Count one finished output row, sent without the settings ``dropped``
        (--drop-unsupported left them out for its model)."""
        if dropped:  # (most rows drop nothing: Counter.update costs even for none)
            self.dropped.update(dropped)
        if row["status"] == STATUS_OK:
            self.ok += 1
        else:
            self.error += 1
            self.error_types[row["error_type"] or "unknown"] += 1
        if row["stop_reason"]:
            self.stop_reasons[row["stop_reason"]] += 1
        self.add_usage(row)
        if row["cost_usd"] is None and row["status"] == STATUS_OK:
            self.unpriced += 1

    def add_usage(self, row: Mapping[str, Any]) -> None:
        """Add what ``row`` used and cost, and nothing of how it ended (a row cut off between
        its samples is not finished: ``engine.samples.Samples.cut``)."""
        self.input_tokens += row["input_tokens"] or 0
        self.output_tokens += row["output_tokens"] or 0
        self.cache_creation_input_tokens += row["cache_creation_input_tokens"] or 0
        self.cache_creation_5m_input_tokens += row.get("cache_creation_5m_input_tokens") or 0
        self.cache_creation_1h_input_tokens += row.get("cache_creation_1h_input_tokens") or 0
        self.cache_read_input_tokens += row["cache_read_input_tokens"] or 0
        if row["cost_usd"] is not None:
            self.cost_usd += row["cost_usd"]

    def uncount_error(self, error_type: str, rows: int = 1) -> None:
        """Take back ``rows`` error rows of one type (a lapsed row answered later)."""
        self.error -= rows
        self.error_types[error_type] -= rows
        if self.error_types[error_type] <= 0:
            del self.error_types[error_type]

    def add(self, other: RowTally) -> None:
        """Add ``other``'s counts to these; its state (limits, concurrency) replaces ours."""
        for f in dataclasses.fields(RowTally):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.metadata.get("adds"):
                if isinstance(mine, Counter):
                    mine.update(theirs)
                else:
                    setattr(self, f.name, mine + theirs)
        if other.rate_limits:
            self.rate_limits = dict(other.rate_limits)
        if other.concurrency_chosen is not None:
            self.concurrency_chosen = other.concurrency_chosen
