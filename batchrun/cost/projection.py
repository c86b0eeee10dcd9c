"""Project a job's tokens and cost from rows already answered (a pilot sample); pure.

The unknown before a run is how long the answers will be. A pilot answers a random sample of
rows for real; this module turns their usage into a range for the rows still to send.

Method (a bootstrap predictive interval), repeated ``replicates`` times:

1. resample the answered rows with replacement (the pilot's own sampling error);
2. per model, the ratio of billed to locally estimated input tokens in that resample
   calibrates the local estimate of the pending rows (their input is known up to that ratio);
3. each group of pending rows (same model and ``max_tokens``) draws one output length per row
   from the resampled answers, each cut at the group's ``max_tokens`` (the spread from row to
   row; past ``EXACT_DRAWS`` rows the sum of draws is taken from its normal approximation,
   which is what it converges to);
4. the cost of that replicate is priced from those tokens.

The 10th, 50th and 90th percentiles of the replicates give the range and the central value.
What it cannot see: rows unlike any in the sample (a pilot drawn at random makes that
unlikely, and a bigger pilot more so). Prompt caching and duplicates of the pending rows are
applied afterwards by ``estimation.caching``, as a fixed shift of every replicate.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from batchrun.cost.prices import PER_MILLION, PriceTable

REPLICATES = 2000
MAX_SAMPLE = 5000  # answered rows used at most (a random subset): enough, and keeps it fast
EXACT_DRAWS = 200
LOW_Q, MID_Q, HIGH_Q = 0.10, 0.50, 0.90


@dataclass(frozen=True)
class Observed:
    """One answered row: what the local estimate said and what the API billed."""

    model: str
    estimated_input: int
    input_tokens: int  # all input: uncached + cache writes + cache reads
    output_tokens: int


@dataclass(frozen=True)
class Pending:
    """Rows still to send that share a model and ``max_tokens``."""

    model: str
    max_tokens: int
    rows: int
    estimated_input: int


@dataclass
class Projection:
    """Replicate values per model and in total (the same replicate index across models)."""

    replicates: int
    sample: int
    input_tokens: dict[str, list[float]] = field(default_factory=dict)
    output_tokens: dict[str, list[float]] = field(default_factory=dict)
    cost: dict[str, list[float]] = field(default_factory=dict)  # only models with a price
    total_output: list[float] = field(default_factory=list)
    total_cost: list[float] = field(default_factory=list)  # models with a price
    pooled_models: set[str] = field(default_factory=set)  # no answers of their own


def project(
    observed: Sequence[Observed],
    pending: Sequence[Pending],
    prices: PriceTable,
    *,
    calibrate: bool = True,
    replicates: int = REPLICATES,
    seed: int = 0,
) -> Projection | None:
    """Bootstrap the pending rows' tokens and cost; None without any answered row.

    ``calibrate`` False keeps the pending rows' input as given (they were counted exactly).
    """
    if not observed:
        return None
    rng = random.Random(seed)
    sample = list(observed)
    if len(sample) > MAX_SAMPLE:
        sample = rng.sample(sample, MAX_SAMPLE)
    proj = Projection(replicates=replicates, sample=len(sample))
    models = sorted({p.model for p in pending})
    seen = {o.model for o in sample}
    proj.pooled_models = {m for m in models if m not in seen}
    for model in models:
        proj.input_tokens[model] = []
        proj.output_tokens[model] = []
        if prices.lookup(model) is not None:
            proj.cost[model] = []
    rows_of = {m: sum(g.rows for g in pending if g.model == m) for m in models}
    n = len(sample)
    for _ in range(replicates):
        resample = [sample[rng.randrange(n)] for _ in range(n)]
        by_model: dict[str, list[Observed]] = defaultdict(list)
        for o in resample:
            by_model[o.model].append(o)
        pooled_ratio = _ratio(resample) if calibrate else 1.0
        totals = {m: [0.0, 0.0] for m in models}
        for group in pending:
            own = by_model.get(group.model) or resample
            ratio = (_ratio(own) if own is not resample else pooled_ratio) if calibrate else 1.0
            outputs = [min(o.output_tokens, group.max_tokens) for o in own]
            totals[group.model][0] += ratio * group.estimated_input
            totals[group.model][1] += _draw_total(outputs, group.rows, group.max_tokens, rng)
        replicate_cost = 0.0
        replicate_output = 0.0
        for model in models:
            input_tokens, output_tokens = totals[model]
            proj.input_tokens[model].append(input_tokens)
            proj.output_tokens[model].append(output_tokens)
            replicate_output += output_tokens
            if model in proj.cost:
                cost = _cost(prices, model, input_tokens, output_tokens, rows_of[model])
                proj.cost[model].append(cost)
                replicate_cost += cost
        proj.total_output.append(replicate_output)
        proj.total_cost.append(replicate_cost)
    return proj


def _ratio(rows: Sequence[Observed]) -> float:
    estimated = sum(o.estimated_input for o in rows)
    return sum(o.input_tokens for o in rows) / estimated if estimated > 0 else 1.0


def _draw_total(outputs: list[int], rows: int, cap: int, rng: random.Random) -> float:
    """The output tokens of ``rows`` rows, each drawn from ``outputs``."""
    if rows <= 0:
        return 0.0
    if rows <= EXACT_DRAWS:
        k = len(outputs)
        return float(sum(outputs[rng.randrange(k)] for _ in range(rows)))
    mean = statistics.fmean(outputs)
    spread = statistics.pstdev(outputs) if len(outputs) > 1 else 0.0
    total = rows * mean + spread * math.sqrt(rows) * rng.gauss(0.0, 1.0)
    return min(max(total, rows * min(outputs)), rows * cap)


def _cost(
    prices: PriceTable, model: str, input_tokens: float, output_tokens: float, rows: int
) -> float:
    """USD at the model's standard rates (long-context rates by the group's mean input)."""
    price = prices.lookup(model)
    assert price is not None
    rates = price.rates_for(int(input_tokens / rows) if rows else 0)
    tokens_cost = rates.input * round(input_tokens) + rates.output * round(output_tokens)
    return float(tokens_cost / PER_MILLION)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` by linear interpolation (``values`` non-empty)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
