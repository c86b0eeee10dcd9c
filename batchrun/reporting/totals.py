"""``batchrun report``: where the rows, the money and the time of one or more outputs went.

Outputs can hold millions of rows, so they are streamed in record batches and folded into
running totals; percentiles come from a log-bucketed histogram (buckets 2% wide, so a
percentile is within 1% of the exact value) instead of a list of every latency. Nothing
held in memory grows with the row count except a counter per minute of the run.

An output is read as a run would resume it (``store.latest``): the final file's rows, except
those a newer journal record replaces, then the journal's newest record per row. So a run
stopped by its budget or interrupted (journal only) reports just as well as a finished one.
This module reads and totals; ``render.report_text`` and ``render.report_html`` turn the totals
into text and a page for people.

Rows are grouped by the model they resolve to in the price table (``PriceTable.resolve``), so
``claude-haiku-4-5``, ``claude-haiku-4-5-20251001`` and a gateway's ``anthropic/claude-haiku-4.5``
are one model; the spellings seen are kept with it.

    rep = report([Path("out/analysis.parquet")])
    rep.latency.quantile(0.99)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.core.wording import option
from batchrun.cost.prices import PriceTable, Usage, cache_saving, default_prices
from batchrun.store.columns import STATUS_ERROR, STATUS_OK, USAGE_COLUMNS
from batchrun.store.latest import Source, latest_batches

COLUMNS = (
    "status",
    "model",
    "stop_reason",
    "error_type",
    "error_message",
    *USAGE_COLUMNS,
    "duplicate_of",
    "attempts",
    "latency_ms",
    "elapsed_ms",
    "finished_at",
    "via",
    "http_status",
)
NO_MODEL = "(none)"
RATE_LIMITED_STATUS = 429
RATE_LIMIT_ERROR = "rate_limit_error"
MAX_TOKENS = "max_tokens"
# Warn when more than this share of the answers stopped at max_tokens: they are cut off.
CUT_ANSWERS_SHARE = 0.5
MAX_SECONDS = 20_000  # per-second counts kept for runs up to about five hours
EXAMPLE_CHARS = 300


def mostly_cut(stop_reasons: Mapping[str, int]) -> bool:
    """True when more than half of the answers (rows with a stop reason) stopped at
    max_tokens."""
    answered = sum(stop_reasons.values())
    return answered > 0 and stop_reasons.get(MAX_TOKENS, 0) > CUT_ANSWERS_SHARE * answered


def cut_off_warning(stop_reasons: Mapping[str, int]) -> str | None:
    """The warning when most answers stopped at max_tokens (they are cut off), for the
    report and the run's summary alike; None otherwise."""
    if not mostly_cut(stop_reasons):
        return None
    answered = sum(stop_reasons.values())
    cut = stop_reasons.get(MAX_TOKENS, 0)
    return (
        f"{cut:,} of {answered:,} answers ({cut / answered:.0%}) stopped at max_tokens: they "
        f"are cut off. Raise {option('max_tokens')} (a re-run with "
        f"{option('resend_changed', True)} sends them again at the new limit)"
    )


# --- aggregation -------------------------------------------------------------------------


class LogHistogram:
    """Counts of positive values in buckets 2% wide: constant memory, percentiles within 1%."""

    GROWTH = 1.02
    FLOOR = 1e-3  # values below (zero latencies) share the lowest bucket

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.n = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, values: pa.Array) -> None:
        """Fold an Arrow array of numbers in (nulls are skipped)."""
        values = pc.drop_null(values).cast(pa.float64())
        if len(values) == 0:
            return
        low, high = pc.min_max(values).values()
        self.min = min(self.min, float(low.as_py()))
        self.max = max(self.max, float(high.as_py()))
        self.total += float(pc.sum(values).as_py())
        self.n += len(values)
        floored = pc.max_element_wise(values, self.FLOOR)
        keys = pc.floor(pc.divide(pc.ln(floored), math.log(self.GROWTH))).cast(pa.int64())
        counted = pc.value_counts(keys)
        for key, count in zip(
            counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
        ):
            self.counts[key] += count

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (nearest rank), or None when empty."""
        if self.n == 0:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                middle = float(self.GROWTH ** (key + 0.5))
                return min(max(middle, self.min), self.max)
        return self.max

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def bins(self, count: int = 40) -> list[tuple[float, float, int]]:
        """About ``count`` equal-width bins on a log scale: (low, high, rows)."""
        if self.n == 0:
            return []
        keys = sorted(self.counts)
        first, last = keys[0], keys[-1] + 1
        width = max(1, math.ceil((last - first) / count))
        out: list[tuple[float, float, int]] = []
        for start in range(first, last, width):
            rows = sum(self.counts.get(k, 0) for k in range(start, start + width))
            out.append((self.GROWTH**start, self.GROWTH ** (start + width), rows))
        return out


@dataclass
class TokenTotals:
    """Tokens and cost summed over rows: the output's columns of the same names."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, sums: Mapping[str, Any]) -> None:
        """Add each column's sum (``sums[name]``, a null one counted as 0)."""
        for name in TOTALLED:
            setattr(self, name, getattr(self, name) + (sums[name] or 0))


TOTALLED = tuple(f.name for f in fields(TokenTotals))


@dataclass
class ModelTotals(TokenTotals):
    """One model's rows, tokens and cost (error rows carry the model asked for)."""

    rows: int = 0
    ok: int = 0
    unpriced: int = 0  # answered rows with no price, even now
    # How the rows spelt the model (``claude-haiku-4-5-20251001``, ``anthropic/...``): rows.
    spellings: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: rows and ok first, then the totals (cost to the millionth)."""
        return {"rows": self.rows, "ok": self.ok, **vars(self), "cost_usd": round(self.cost_usd, 6)}


@dataclass
class SourceTotals:
    """One output's share of the report: its rows, outcome and cost."""

    source: Source
    ok: int = 0
    error: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0

    @property
    def state(self) -> str:
        """``final``, ``partial`` or ``journal only`` (see ``store.latest``)."""
        return output_state(self.source)


def output_state(source: Source) -> str:
    """What an output was found as: ``final``, ``partial`` (a stopped run's rows) or
    ``journal only`` (the run has not finished)."""
    if source.partial is not None:
        return "partial"
    return "final" if source.final else "journal only"


@dataclass
class ErrorTotals:
    count: int = 0
    example: str = ""


@dataclass
class Report(TokenTotals):
    """Totals over every row of the outputs read."""

    sources: list[Source] = field(default_factory=list)
    rows: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    stop_reasons: Counter[str] = field(default_factory=Counter)
    errors: dict[str, ErrorTotals] = field(default_factory=dict)
    models: dict[str, ModelTotals] = field(default_factory=dict)
    vias: dict[str, ModelTotals] = field(default_factory=dict)  # online / batches
    # What caching saved: the cache tokens as plain input minus what they cost (models with
    # a price); and dedup: rows filled from an identical request, and what that request cost.
    cache_saved_usd: float = 0.0
    duplicates: int = 0
    dedup_saved_usd: float = 0.0
    priced_now: int = 0  # rows whose cost_usd was null and the current table priced
    unpriced: int = 0
    unpriced_models: set[str] = field(default_factory=set)
    latency: LogHistogram = field(default_factory=LogHistogram)
    elapsed: LogHistogram = field(default_factory=LogHistogram)
    attempts: Counter[int] = field(default_factory=Counter)
    first_finished: datetime | None = None
    last_finished: datetime | None = None
    ok_per_minute: Counter[int] = field(default_factory=Counter)  # minute since epoch
    error_per_minute: Counter[int] = field(default_factory=Counter)
    # The same per second, for the chart of a short run; dropped (None) past MAX_SECONDS keys.
    ok_per_second: Counter[int] | None = field(default_factory=Counter)
    error_per_second: Counter[int] | None = field(default_factory=Counter)
    # Filled by ``report`` (not constructor arguments): each output's totals, in read order,
    # and, by the minute (and second, like the above) a row finished, the retries it took
    # (attempts past the first, for any reason) and the rows that ended on a 429.
    per_source: list[SourceTotals] = field(default_factory=list, init=False)
    rate_limited: int = field(default=0, init=False)  # rows that ended in error on a 429
    retries_per_minute: Counter[int] = field(default_factory=Counter, init=False)
    rate_limited_per_minute: Counter[int] = field(default_factory=Counter, init=False)
    retries_per_second: Counter[int] | None = field(default_factory=Counter, init=False)
    rate_limited_per_second: Counter[int] | None = field(default_factory=Counter, init=False)

    @property
    def ok(self) -> int:
        return self.statuses.get(STATUS_OK, 0)

    @property
    def error(self) -> int:
        return self.statuses.get(STATUS_ERROR, 0)

    @property
    def span_s(self) -> float:
        """Seconds from the first answer to the last."""
        if self.first_finished is None or self.last_finished is None:
            return 0.0
        return (self.last_finished - self.first_finished).total_seconds()

    @property
    def active_minutes(self) -> int:
        """Minutes in which at least one row finished (a resumed run's pauses excluded)."""
        return len(set(self.ok_per_minute) | set(self.error_per_minute))

    @property
    def rows_per_minute(self) -> float | None:
        """Rows finished per minute of the run's active time (pauses between runs excluded)."""
        minutes = min(self.span_s / 60, self.active_minutes)
        return self.rows / minutes if minutes > 0 else None

    @property
    def retries(self) -> int:
        """Attempts past the first, over every row."""
        return sum((attempts - 1) * rows for attempts, rows in self.attempts.items() if attempts)

    @property
    def answered(self) -> int:
        """Rows the model answered (those with a stop reason)."""
        return sum(self.stop_reasons.values())

    @property
    def cut_at_max_tokens(self) -> int:
        return self.stop_reasons.get(MAX_TOKENS, 0)

    @property
    def mostly_cut(self) -> bool:
        """True when more than half of the answers stopped at max_tokens."""
        return mostly_cut(self.stop_reasons)

    def warnings(self) -> list[str]:
        """What a person should act on, one sentence each (text, HTML and JSON alike)."""
        cut = cut_off_warning(self.stop_reasons)
        return [] if cut is None else [cut]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``batchrun report --json``)."""
        return {
            "sources": [
                {
                    "path": str(s.path),
                    "rows": s.rows,
                    "final": s.final,
                    "journal": s.journal,
                    "partial": (
                        {"rows": s.partial.rows, "of": s.partial.of} if s.partial else None
                    ),
                    **self._source_totals(i),
                }
                for i, s in enumerate(self.sources)
            ],
            "rows": self.rows,
            "status": dict(self.statuses.most_common()),
            "stop_reasons": dict(self.stop_reasons.most_common()),
            "errors": {
                k: {"count": v.count, "example": v.example}
                for k, v in sorted(self.errors.items(), key=lambda kv: -kv[1].count)
            },
            "tokens": {
                "input": self.input_tokens,
                "output": self.output_tokens,
                "cache_creation_input": self.cache_creation_input_tokens,
                "cache_read_input": self.cache_read_input_tokens,
            },
            "cost_usd": round(self.cost_usd, 6),
            "saved": {
                "caching_usd": round(self.cache_saved_usd, 6),
                "cache_read_tokens": self.cache_read_input_tokens,
                "cache_write_tokens": self.cache_creation_input_tokens,
                "dedup_rows": self.duplicates,
                "dedup_usd": round(self.dedup_saved_usd, 6),
            },
            "rows_priced_at_report_time": self.priced_now,
            "rows_without_price": self.unpriced,
            "models": {name: m.to_dict() for name, m in sorted(self.models.items())},
            "via": {
                name: {k: v for k, v in m.to_dict().items() if k != "spellings"}
                for name, m in sorted(self.vias.items())
            },
            "latency_ms": _percentiles(self.latency),
            "elapsed_ms": _percentiles(self.elapsed),
            "attempts": {str(k): v for k, v in sorted(self.attempts.items())},
            "retries": self.retries,
            "rows_rate_limited": self.rate_limited,
            "answers_cut_at_max_tokens": {
                "rows": self.cut_at_max_tokens,
                "of_answers": self.answered,
                "most": self.mostly_cut,
            },
            "warnings": self.warnings(),
            "first_finished_at": iso_seconds(self.first_finished),
            "last_finished_at": iso_seconds(self.last_finished),
            "span_s": round(self.span_s, 3),
            "rows_per_minute": _round(self.rows_per_minute, 2),
        }

    def _source_totals(self, index: int) -> dict[str, Any]:
        if index >= len(self.per_source):
            return {}
        t = self.per_source[index]
        return {
            "state": t.state,
            "ok": t.ok,
            "error": t.error,
            "cost_usd": round(t.cost_usd, 6),
            "rows_without_price": t.unpriced,
        }


def report(paths: Iterable[Path], prices: PriceTable | None = None) -> Report:
    """Read every output in ``paths`` (streamed) and total it.

    Answered rows whose ``cost_usd`` is null (no price when they ran) are priced now from
    ``prices`` when it knows the model, cache writes taken as 5 m; they are counted apart.

    >>> rep = report([Path("out/analysis.parquet")])  # doctest: +SKIP
    >>> rep.ok, rep.cost_usd, rep.latency.quantile(0.5)  # doctest: +SKIP
    """
    table = prices or default_prices()
    rep = Report()
    for path in paths:
        before = (rep.ok, rep.error, rep.cost_usd, rep.unpriced)
        twins: Counter[str] = Counter()  # ids of rows sent for duplicates: duplicates each
        for batch in latest_batches(path, COLUMNS, found=rep.sources):
            _fold(rep, batch, table)
            _count_into(twins, batch.column("duplicate_of"))
        if twins:
            rep.duplicates += sum(twins.values())
            rep.dedup_saved_usd += _twins_cost(path, twins)
        ok, error, cost, unpriced = before
        rep.per_source.append(
            SourceTotals(
                rep.sources[-1],
                ok=rep.ok - ok,
                error=rep.error - error,
                cost_usd=rep.cost_usd - cost,
                unpriced=rep.unpriced - unpriced,
            )
        )
    return rep


def _fold(rep: Report, batch: pa.RecordBatch, prices: PriceTable) -> None:
    rep.rows += batch.num_rows
    status = batch.column("status")
    _count_into(rep.statuses, status)
    _count_into(rep.stop_reasons, batch.column("stop_reason"))
    rep.add({name: _sum(batch.column(name)) for name in TOTALLED})
    rep.latency.add(batch.column("latency_ms"))
    rep.elapsed.add(batch.column("elapsed_ms"))
    _count_into(rep.attempts, batch.column("attempts"))
    rep.rate_limited += _sum(pc.cast(_rate_limited(batch), pa.int64()))
    _fold_times(rep, batch)
    _fold_errors(rep, batch)
    _fold_groups(rep.models, batch, "model", prices.resolve)
    _fold_groups(rep.vias, _with_via(batch), "via")
    _price_unpriced(rep, batch, prices)
    rep.cache_saved_usd += _cache_saved(batch, prices)


def _cache_saved(batch: pa.RecordBatch, prices: PriceTable) -> float:
    """What the batch's cache writes and reads saved against plain input, by model and by
    how the rows were sent (batch price). Writes the ttl split does not cover count as 5 m."""
    table = pa.Table.from_batches([_with_via(batch)]).select(
        [
            "model",
            "via",
            "cache_creation_input_tokens",
            "cache_creation_1h_input_tokens",
            "cache_read_input_tokens",
        ]
    )
    grouped = table.group_by(["model", "via"]).aggregate(
        [
            ("cache_creation_input_tokens", "sum"),
            ("cache_creation_1h_input_tokens", "sum"),
            ("cache_read_input_tokens", "sum"),
        ]
    )
    saved = 0.0
    for row in grouped.to_pylist():
        written = row["cache_creation_input_tokens_sum"] or 0
        one_hour = min(row["cache_creation_1h_input_tokens_sum"] or 0, written)
        read = row["cache_read_input_tokens_sum"] or 0
        price = prices.lookup(row["model"])
        if price is None or not (written or read):
            continue
        factor = prices.batch_price_factor if row["via"] == "batches" else Decimal(1)
        saved += float(cache_saving(price.rates, written - one_hour, one_hour, read, factor))
    return saved


def _twins_cost(path: Path, twins: Counter[str]) -> float:
    """The cost of the rows sent for duplicates (each ``twins[id]`` times): a second read
    of the output, keeping only those rows, so memory grows with duplicates, not rows."""
    total = 0.0
    wanted = pa.array(list(twins), pa.string())
    for batch in latest_batches(path, ("id", "cost_usd", "duplicate_of")):
        sent = batch.filter(
            pc.and_(
                pc.is_null(batch.column("duplicate_of")),
                pc.is_in(batch.column("id"), value_set=wanted),
            )
        )
        for row_id, cost in zip(
            sent.column("id").to_pylist(), sent.column("cost_usd").to_pylist(), strict=True
        ):
            total += (cost or 0.0) * twins[row_id]
    return total


def _fold_times(rep: Report, batch: pa.RecordBatch) -> None:
    finished = batch.column("finished_at")
    if finished.null_count == len(finished):
        return
    low, high = (v.as_py() for v in pc.min_max(finished).values())
    rep.first_finished = low if rep.first_finished is None else min(rep.first_finished, low)
    rep.last_finished = high if rep.last_finished is None else max(rep.last_finished, high)
    ms = finished.cast(pa.int64())
    is_ok = pc.equal(batch.column("status"), STATUS_OK)
    is_error = pc.invert(is_ok)
    minutes = pc.divide(ms, 60_000)
    _count_into(rep.ok_per_minute, minutes.filter(is_ok))
    _count_into(rep.error_per_minute, minutes.filter(is_error))
    # A row never sent (invalid) has 0 attempts and an older output none: no retries either.
    retries = pc.max_element_wise(pc.subtract(pc.fill_null(batch.column("attempts"), 1), 1), 0)
    limited = _rate_limited(batch)
    _sum_into(rep.retries_per_minute, minutes, retries)
    _count_into(rep.rate_limited_per_minute, minutes.filter(limited))
    if rep.ok_per_second is not None and rep.error_per_second is not None:
        seconds = pc.divide(ms, 1000)
        _count_into(rep.ok_per_second, seconds.filter(is_ok))
        _count_into(rep.error_per_second, seconds.filter(is_error))
        if rep.retries_per_second is not None and rep.rate_limited_per_second is not None:
            _sum_into(rep.retries_per_second, seconds, retries)
            _count_into(rep.rate_limited_per_second, seconds.filter(limited))
        if len(rep.ok_per_second) + len(rep.error_per_second) > MAX_SECONDS:
            rep.ok_per_second = rep.error_per_second = None
            rep.retries_per_second = rep.rate_limited_per_second = None


def _rate_limited(batch: pa.RecordBatch) -> pa.Array:
    """Rows in error whose last answer was a 429 (by status, or by the error type): their
    retries ran out, or the wait the 429 asked for was longer than --max-retry-wait."""
    on_429 = pc.or_kleene(
        pc.equal(batch.column("http_status"), RATE_LIMITED_STATUS),
        pc.equal(batch.column("error_type"), RATE_LIMIT_ERROR),
    )
    return pc.fill_null(pc.and_(pc.equal(batch.column("status"), STATUS_ERROR), on_429), False)


def _fold_errors(rep: Report, batch: pa.RecordBatch) -> None:
    errors = batch.filter(pc.equal(batch.column("status"), STATUS_ERROR))
    if not errors.num_rows:
        return
    types = errors.column("error_type").to_pylist()
    messages = errors.column("error_message").to_pylist()
    for error_type, message in zip(types, messages, strict=True):
        totals = rep.errors.setdefault(error_type or "unknown", ErrorTotals())
        totals.count += 1
        if not totals.example and message:
            totals.example = message[:EXAMPLE_CHARS]


def _with_via(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Outputs written before batch mode have no ``via``: their rows were sent online."""
    i = batch.schema.get_field_index("via")
    return batch.set_column(i, "via", pc.fill_null(batch.column(i), "online"))


def _fold_groups(
    into: dict[str, ModelTotals],
    batch: pa.RecordBatch,
    key: str,
    name_of: Callable[[str | None], str] | None = None,
) -> None:
    """Rows, tokens and cost per value of ``key`` (model, or how rows were sent); ``name_of``
    merges values that mean the same (a model's spellings), which are then kept."""
    table = pa.Table.from_batches([batch]).select([key, *TOTALLED])
    table = table.append_column(
        "ok", pc.cast(pc.equal(batch.column("status"), STATUS_OK), pa.int64())
    )
    grouped = table.group_by(key).aggregate(
        [([], "count_all"), ("ok", "sum"), *((name, "sum") for name in TOTALLED)]
    )
    for row in grouped.to_pylist():
        value = row[key]
        name = name_of(value) if name_of is not None else value or NO_MODEL
        totals = into.setdefault(name, ModelTotals())
        if name_of is not None:
            spelt = value or NO_MODEL
            totals.spellings[spelt] = totals.spellings.get(spelt, 0) + row["count_all"]
        totals.rows += row["count_all"]
        totals.ok += row["ok_sum"] or 0
        totals.add({name: row[f"{name}_sum"] for name in TOTALLED})


def _price_unpriced(rep: Report, batch: pa.RecordBatch, prices: PriceTable) -> None:
    """Answered rows without cost_usd: price them now if the table knows the model."""
    mask = pc.and_(
        pc.equal(batch.column("status"), STATUS_OK), pc.is_null(batch.column("cost_usd"))
    )
    missing = batch.filter(mask)
    if not missing.num_rows:
        return
    for row in missing.to_pylist():
        usage = Usage(
            input_tokens=row["input_tokens"] or 0,
            output_tokens=row["output_tokens"] or 0,
            cache_write_5m=row["cache_creation_input_tokens"] or 0,
            cache_read=row["cache_read_input_tokens"] or 0,
            batch=row["via"] == "batches",
        )
        cost = prices.cost(row["model"], usage)
        model = prices.resolve(row["model"])
        if cost is None:
            rep.unpriced += 1
            rep.unpriced_models.add(model)
            rep.models[model].unpriced += 1
            continue
        rep.priced_now += 1
        rep.cost_usd += float(cost)
        rep.models[model].cost_usd += float(cost)
        rep.vias[row["via"] or "online"].cost_usd += float(cost)


def _count_into(counter: Counter[Any], values: pa.Array) -> None:
    values = pc.drop_null(values)
    if len(values) == 0:
        return
    counted = pc.value_counts(values)
    for value, count in zip(
        counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
    ):
        counter[value] += count


def _sum_into(counter: Counter[Any], keys: pa.Array, values: pa.Array) -> None:
    """Add up ``values`` by ``keys`` (rows with a null key are left out); zeros are not kept."""
    table = pa.table({"key": keys, "value": values}).filter(pc.is_valid(keys))
    if not table.num_rows:
        return
    grouped = table.group_by("key").aggregate([("value", "sum")])
    for key, total in zip(
        grouped.column("key").to_pylist(), grouped.column("value_sum").to_pylist(), strict=True
    ):
        if total:
            counter[key] += total


def _sum(values: pa.Array) -> Any:
    total = pc.sum(values).as_py()
    return total or 0


def _percentiles(hist: LogHistogram) -> dict[str, float | None]:
    return {
        "p50": _round(hist.quantile(0.50), 1),
        "p90": _round(hist.quantile(0.90), 1),
        "p99": _round(hist.quantile(0.99), 1),
        "mean": _round(hist.mean, 1),
        "max": _round(hist.max if hist.n else None, 1),
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def iso_seconds(moment: datetime | None) -> str | None:
    """A moment as RFC 3339 UTC to the second (``2026-11-01T12:00:09Z``), for people and JSON."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
