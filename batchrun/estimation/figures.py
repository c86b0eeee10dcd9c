"""What an estimate says: per model and in total, tokens, cost ranges and duration."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from batchrun.cost.prices import PER_MILLION, ModelPrice
from batchrun.cost.projection import (
    HIGH_Q,
    LOW_Q,
    MID_Q,
    Pending,
    Projection,
    percentile,
)
from batchrun.limits.values import Limits

Level = Literal["offline", "exact", "pilot"]


# --- results -------------------------------------------------------------------------------


@dataclass
class ModelLine:
    """One model's part of the job. Ranges are (10th percentile, median, 90th percentile)."""

    model: str
    price: ModelPrice | None
    rows: int = 0  # valid input rows for this model
    answered: int = 0  # answered (ok) in the output already
    failed: int = 0  # in error in the output and not re-sent (no --retry-errors)
    pending: int = 0  # to send
    answered_input: int = 0
    answered_output: int = 0
    paid_usd: float = 0.0  # what the answered rows cost
    unpriced_answers: int = 0
    pending_input: int = 0  # estimated or counted input of the pending rows
    pending_ceiling: int = 0  # sum of their max_tokens
    # Output the pending rows spend thinking, as batchrun assumes it (cost.models
    # THINKING_TOKENS_ASSUMED, at most each row's max_tokens), and the effort it assumed;
    # 0 and None for rows whose model does not think.
    pending_thinking: int = 0
    thinking_effort: str | None = None
    input_mid: float | None = None  # pending input after calibration (pilot)
    output_range: tuple[float, float, float] | None = None  # pending rows' output
    cost_range: tuple[float, float, float] | None = None  # pending rows, online, uncached
    # What the run would do that the rows alone do not say (issue 17): rows filled from an
    # identical request instead of being sent ($0; not in ``pending``), and, per prefix
    # group, the first request writing the shared prefix to the cache and the others reading
    # it. Prefix tokens are totals over the requests that write or read them.
    duplicates: int = 0
    answer_cached: int = 0  # --answer-cache: rows an earlier job's answer fills, for $0
    cache_groups: int = 0
    cache_writes: int = 0
    cache_reads: int = 0
    prefix_write_tokens: float = 0.0
    prefix_read_tokens: float = 0.0
    cache_ttl: str = "5m"  # the ttl of batchrun's marks: a 1 h write costs 2x, a 5 m one 1.25x

    @property
    def input_tokens(self) -> int:
        pending = self.input_mid if self.input_mid is not None else self.pending_input
        return self.answered_input + round(pending)

    @property
    def output_ceiling(self) -> int:
        return self.answered_output + self.pending_ceiling

    def output_expected(self) -> tuple[int, int, int] | None:
        if self.pending and self.output_range is None:
            return None
        low, mid, high = self.output_range or (0.0, 0.0, 0.0)
        base = self.answered_output
        return base + round(low), base + round(mid), base + round(high)

    def cost_floor(self, batch_factor: Decimal = Decimal(1), cached: bool = True) -> float | None:
        """Answered rows plus the pending rows' input and the thinking a thinking model is
        assumed to do (``pending_thinking``, paid as output even before any text): less
        only if it thinks less than assumed. ``cached``: with the cache writes and reads the
        run would make (else all input at the plain input price)."""
        pending = self._pending_cost(output=self.pending_thinking, cached=cached)
        return None if pending is None else self.paid_usd + pending * float(batch_factor)

    def cost_ceiling(self, batch_factor: Decimal = Decimal(1), cached: bool = True) -> float | None:
        """Every pending answer using all of max_tokens."""
        pending = self._pending_cost(output=self.pending_ceiling, cached=cached)
        return None if pending is None else self.paid_usd + pending * float(batch_factor)

    def cost_expected(
        self, batch_factor: Decimal = Decimal(1), cached: bool = True
    ) -> tuple[float, ...] | None:
        if self.price is None or (self.pending and self.cost_range is None):
            return None
        f = float(batch_factor)
        shift = self.cache_delta() if cached else 0.0
        return tuple(self.paid_usd + (c + shift) * f for c in self.cost_range or (0.0, 0.0, 0.0))

    def cache_delta(self) -> float:
        """USD caching changes the pending rows' cost by (negative: it saves), at full price.

        The prefix tokens are in the input already, at the input price; a write replaces
        that by the write price, a read by the read price.
        """
        if self.price is None or not (self.prefix_write_tokens or self.prefix_read_tokens):
            return 0.0
        rates = self.price.rates_for(self._per_row_input())
        write = rates.cache_write_1h if self.cache_ttl == "1h" else rates.cache_write_5m
        delta = Decimal(round(self.prefix_write_tokens)) * (write - rates.input) + Decimal(
            round(self.prefix_read_tokens)
        ) * (rates.cache_read - rates.input)
        return float(delta / PER_MILLION)

    def _per_row_input(self) -> int:
        tokens = self.input_mid if self.input_mid is not None else self.pending_input
        return int(tokens / self.pending) if self.pending else 0

    def _pending_cost(self, output: int, cached: bool = True) -> float | None:
        if self.price is None:
            return None
        tokens = self.input_mid if self.input_mid is not None else self.pending_input
        rates = self.price.rates_for(self._per_row_input())
        plain = float((rates.input * round(tokens) + rates.output * output) / PER_MILLION)
        return plain + (self.cache_delta() if cached else 0.0)


@dataclass
class PilotInfo:
    """What the pilot sample did."""

    requested: str
    size: int  # rows in the sample
    sent: int  # sent by this pilot (the rest were answered before)
    ok: int  # sample rows answered ok (used for the projection)
    spent_usd: float  # what this pilot's requests cost
    elapsed_s: float
    seed: int
    # Limits in force per model at the pilot's end: configured, or learned from the
    # anthropic-ratelimit-* response headers.
    limits: dict[str, Limits] = field(default_factory=dict)


@dataclass
class Duration:
    """How long sending the pending rows would take, and what sets the pace."""

    seconds: float | None
    bound: str
    detail: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AutoCost:
    """``--via auto --deadline``: the cost range as the run would split the rows
    (``estimation.deadline``): the shares of the rows to send expected online, low and high."""

    deadline: str
    online_share_low: float
    online_share_high: float
    cost_low: float | None  # None: no price
    cost_high: float | None
    why: str


@dataclass
class Estimate:
    """Everything ``batchrun estimate`` reports; ``to_dict`` for ``--json``."""

    level: Level
    exact: bool
    input: Path
    output: Path
    rows: int = 0
    invalid: int = 0
    models: dict[str, ModelLine] = field(default_factory=dict)
    batch_factor: Decimal = Decimal("0.5")
    pilot: PilotInfo | None = None
    projection: Projection | None = None
    projection_source: str = ""  # "pilot" | "answered rows" | ""
    counted: int = 0  # count_tokens calls made (--exact)
    count_failures: int = 0
    count_error: str = ""
    latency_s: float | None = None  # mean time per answered request (elapsed)
    duration: Duration = field(default_factory=lambda: Duration(None, "unknown"))
    notes: list[str] = field(default_factory=list)
    pending_groups: list[Pending] = field(default_factory=list, repr=False)
    source: str | None = None  # where the run's answers would come from (store.provenance)
    # Rows the output holds from other sources, counted as to send (a run asks them again
    # with --reask-other-source, or refuses) unless kept with --keep-other-source.
    other_sources: dict[str, int] = field(default_factory=dict)
    job_spent_usd: float | None = None  # what the job spent so far (store.spend); None: unknown
    max_cost: float | None = None  # --max-cost: the job's cap
    auto: AutoCost | None = None  # --via auto --deadline: the range between the lanes

    @property
    def answered(self) -> int:
        return sum(m.answered for m in self.models.values())

    @property
    def budget_left(self) -> float | None:
        """What --max-cost leaves the job (None without a cap, or when the spend is unknown)."""
        if self.max_cost is None or self.job_spent_usd is None:
            return None
        return max(self.max_cost - self.job_spent_usd, 0.0)

    @property
    def pending(self) -> int:
        return sum(m.pending for m in self.models.values())

    @property
    def paid_usd(self) -> float:
        return sum(m.paid_usd for m in self.models.values())

    @property
    def unknown_models(self) -> list[str]:
        return sorted(name for name, m in self.models.items() if m.price is None)

    @property
    def duplicates(self) -> int:
        return sum(m.duplicates for m in self.models.values())

    @property
    def answer_cached(self) -> int:
        return sum(m.answer_cached for m in self.models.values())

    @property
    def caches(self) -> bool:
        """True when the run would write or read the cache for some pending row."""
        return any(m.cache_delta() for m in self.models.values())

    def cache_delta(self) -> float:
        """USD caching changes the pending rows' cost by, over priced models (full price)."""
        return sum(m.cache_delta() for m in self.models.values())

    def total_cost(
        self, batch: bool = False, cached: bool = True
    ) -> tuple[float, float, float] | None:
        """The job's cost range over priced models (replicates summed, not percentiles).
        ``cached``: with the run's cache writes and reads; False: all input at the input price."""
        factor = float(self.batch_factor) if batch else 1.0
        if self.pending == 0:
            return (self.paid_usd,) * 3
        if self.projection is None:
            return None
        # Caching shifts every replicate alike: the prefix is known, the answers are not.
        shift = self.cache_delta() if cached else 0.0
        totals = [self.paid_usd + (c + shift) * factor for c in self.projection.total_cost]
        return _range(totals)

    def total_output(self) -> tuple[int, int, int] | None:
        answered = sum(m.answered_output for m in self.models.values())
        if self.pending == 0:
            return (answered,) * 3
        if self.projection is None:
            return None
        low, mid, high = _range(self.projection.total_output)
        return answered + round(low), answered + round(mid), answered + round(high)

    def total_floor(self, batch: bool = False, cached: bool = True) -> float:
        factor = self.batch_factor if batch else Decimal(1)
        return sum(m.cost_floor(factor, cached) or 0.0 for m in self.models.values())

    def total_ceiling(self, batch: bool = False, cached: bool = True) -> float:
        factor = self.batch_factor if batch else Decimal(1)
        return sum(m.cost_ceiling(factor, cached) or 0.0 for m in self.models.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data for scripts."""

        def rng(values: tuple[float, ...] | None, digits: int = 6) -> Any:
            if values is None:
                return None
            low, mid, high = values
            return {
                "p10": round(low, digits),
                "p50": round(mid, digits),
                "p90": round(high, digits),
            }

        models = {}
        for name, m in self.models.items():
            models[name] = {
                "name": m.price.name if m.price else None,
                "priced": m.price is not None,
                "rows": m.rows,
                "answered": m.answered,
                "failed_not_resent": m.failed,
                "pending": m.pending,
                "input_tokens": m.input_tokens,
                "output_tokens_expected": rng(_floats(m.output_expected()), 0),
                "output_tokens_ceiling": m.output_ceiling,
                # batchrun's assumption of the thinking the rows to send do (in the floor)
                "thinking_tokens_assumed": m.pending_thinking,
                "thinking_effort": m.thinking_effort,
                "paid_usd": round(m.paid_usd, 6),
                "cost_usd_online": rng(m.cost_expected()),
                "cost_usd_batch": rng(m.cost_expected(self.batch_factor)),
                "cost_usd_floor_online": _round(m.cost_floor()),
                "cost_usd_floor_batch": _round(m.cost_floor(self.batch_factor)),
                "cost_usd_ceiling_online": _round(m.cost_ceiling()),
                "cost_usd_ceiling_batch": _round(m.cost_ceiling(self.batch_factor)),
                "uncached": {
                    "cost_usd_online": rng(m.cost_expected(cached=False)),
                    "cost_usd_batch": rng(m.cost_expected(self.batch_factor, cached=False)),
                    "cost_usd_floor_online": _round(m.cost_floor(cached=False)),
                    "cost_usd_ceiling_online": _round(m.cost_ceiling(cached=False)),
                },
                "duplicates": m.duplicates,
                "answer_cached": m.answer_cached,
                "cache": {
                    "groups": m.cache_groups,
                    "writes": m.cache_writes,
                    "reads": m.cache_reads,
                    "prefix_tokens_written": round(m.prefix_write_tokens),
                    "prefix_tokens_read": round(m.prefix_read_tokens),
                    "ttl": m.cache_ttl,
                    "saves_usd_online": round(-m.cache_delta(), 6),
                },
            }
        return {
            "level": self.level,
            "exact_input": self.exact,
            "input": str(self.input),
            "output": str(self.output),
            "rows": self.rows,
            "invalid_rows": self.invalid,
            "answered_rows": self.answered,
            "pending_rows": self.pending,
            "models": models,
            "total": {
                "input_tokens": sum(m.input_tokens for m in self.models.values()),
                "output_tokens_expected": rng(_floats(self.total_output()), 0),
                "output_tokens_ceiling": sum(m.output_ceiling for m in self.models.values()),
                "paid_usd": round(self.paid_usd, 6),
                "cost_usd_online": rng(self.total_cost()),
                "cost_usd_batch": rng(self.total_cost(batch=True)),
                "cost_usd_floor_online": round(self.total_floor(), 6),
                "cost_usd_floor_batch": round(self.total_floor(batch=True), 6),
                "cost_usd_ceiling_online": round(self.total_ceiling(), 6),
                "cost_usd_ceiling_batch": round(self.total_ceiling(batch=True), 6),
                "unpriced_models": self.unknown_models,
                "duplicates": self.duplicates,
                "answer_cached": self.answer_cached,
                "cache_writes": sum(m.cache_writes for m in self.models.values()),
                "cache_reads": sum(m.cache_reads for m in self.models.values()),
                "caching_saves_usd_online": round(-self.cache_delta(), 6),
                "caching_saves_usd_batch": round(-self.cache_delta() * float(self.batch_factor), 6),
                "uncached": {
                    "cost_usd_online": rng(self.total_cost(cached=False)),
                    "cost_usd_batch": rng(self.total_cost(batch=True, cached=False)),
                    "cost_usd_floor_online": round(self.total_floor(cached=False), 6),
                    "cost_usd_ceiling_online": round(self.total_ceiling(cached=False), 6),
                },
            },
            "pilot": None if self.pilot is None else vars(self.pilot),
            "job": {
                "spent_usd": _round(self.job_spent_usd),
                "max_cost": self.max_cost,
                "left_usd": _round(self.budget_left),
            },
            "source": self.source,
            "other_sources": dict(self.other_sources),
            "projection": None
            if self.projection is None
            else {
                "source": self.projection_source,
                "sample_rows": self.projection.sample,
                "replicates": self.projection.replicates,
                "models_without_own_answers": sorted(self.projection.pooled_models),
            },
            "count_tokens": {
                "calls": self.counted,
                "failures": self.count_failures,
                "first_error": self.count_error or None,
            },
            "duration": {
                "seconds": _round(self.duration.seconds, 1),
                "bound": self.duration.bound,
                "detail": self.duration.detail,
            },
            "mean_latency_s": _round(self.latency_s, 3),
            "via_auto": None
            if self.auto is None
            else {
                "deadline": self.auto.deadline,
                "online_share": [
                    round(self.auto.online_share_low, 4),
                    round(self.auto.online_share_high, 4),
                ],
                "cost_usd": [_round(self.auto.cost_low), _round(self.auto.cost_high)],
                "why": self.auto.why,
            },
            "notes": self.notes,
        }


def _range(values: list[float]) -> tuple[float, float, float]:
    return percentile(values, LOW_Q), percentile(values, MID_Q), percentile(values, HIGH_Q)


def _floats(values: tuple[int, int, int] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)
