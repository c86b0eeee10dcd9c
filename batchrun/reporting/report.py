"""``batchrun report``: where the rows, the money and the time of one or more outputs went.

Outputs can hold millions of rows, so they are streamed in record batches and folded into
running totals; percentiles come from a log-bucketed histogram (buckets 2% wide, so a
percentile is within 1% of the exact value) instead of a list of every latency. Nothing
held in memory grows with the row count except a counter per minute of the run.

An output is read as a run would resume it: the final file's rows, except those a newer
journal record replaces, then the journal's newest record per row. So a run stopped by its
budget or interrupted (journal only) reports just as well as a finished one.

    rep = report([Path("out/analysis.parquet")])
    print(format_report(rep))
    rep.latency.quantile(0.99)
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchrun.core.errors import OutputError
from batchrun.core.humanize import duration_ms, duration_s, money
from batchrun.cost.prices import PriceTable, Usage, default_prices
from batchrun.store.columns import STATUS_ERROR, STATUS_OK
from batchrun.store.sink import (
    JOURNAL_SUFFIX,
    conform,
    journal_path,
    output_schema,
    read_json_lines,
)

INDEX = "_index"
BATCH_ROWS = 65_536
COLUMNS = (
    "status",
    "model",
    "stop_reason",
    "error_type",
    "error_message",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cost_usd",
    "attempts",
    "latency_ms",
    "elapsed_ms",
    "finished_at",
    "via",
)
NO_MODEL = "(none)"
MAX_SECONDS = 20_000  # per-second counts kept for runs up to about five hours
EXAMPLE_CHARS = 300

# --- reading outputs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One output as read: where its rows came from."""

    path: Path
    rows: int
    final: bool  # a final file was read
    journal: bool  # a journal was read (the run had not finished, or is running)


def latest_batches(
    path: Path, columns: Sequence[str] = COLUMNS, *, found: list[Source] | None = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of ``path``'s rows with an ``_index`` column, newest record per row.

    ``path`` is an output dataset (``.parquet``/``.jsonl``), with or without its journal,
    or a journal itself. Appends a ``Source`` describing what was read to ``found``.
    """
    output, journal = _locate(path)
    schema = _schema(columns)
    latest = _journal_latest(journal, columns) if journal is not None else {}
    rows = 0
    if output is not None:
        position = 0
        replaced = _keys(latest) if latest else None
        for batch in _final_batches(output, schema):
            indexes = pa.array(range(position, position + batch.num_rows), pa.int64())
            position += batch.num_rows
            out = _with_index(batch, indexes)
            if replaced is not None:  # rows a newer journal record replaces come from it
                out = out.filter(pc.invert(pc.is_in(indexes, value_set=replaced)))
            rows += out.num_rows
            if out.num_rows:
                yield out
    if journal is not None:
        for batch in _journal_batches(journal, schema, latest):
            rows += batch.num_rows
            yield batch
    if found is not None:
        found.append(Source(path, rows, output is not None, journal is not None))


def _locate(path: Path) -> tuple[Path | None, Path | None]:
    if path.name.endswith(JOURNAL_SUFFIX):
        if not path.exists():
            raise OutputError(f"{path}: no such journal")
        return None, path
    journal = journal_path(path)
    has_journal = journal.exists() and journal.stat().st_size > 0
    if path.exists():
        if path.is_dir():
            raise OutputError(f"{path} is a directory, not an output dataset")
        return path, journal if has_journal else None
    if has_journal:
        return None, journal
    raise OutputError(f"{path}: no such output (and no {journal.name} beside it)")


def _schema(columns: Sequence[str]) -> pa.Schema:
    full = output_schema()
    return pa.schema([full.field(name) for name in columns])


def _final_batches(path: Path, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    try:
        if path.suffix.lower() == ".parquet":
            pf = pq.ParquetFile(path)
            present = [n for n in schema.names if n in pf.schema_arrow.names]
            for batch in pf.iter_batches(BATCH_ROWS, columns=present):
                yield conform(batch, schema)
        else:
            for batch in read_json_lines(path, schema):
                yield conform(batch, schema)
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"cannot read {path}: {exc}") from exc


def _journal_latest(journal: Path, columns: Sequence[str]) -> dict[int, int]:
    """Row index -> the journal position (0-based record number) of its newest record."""
    latest: dict[int, int] = {}
    position = 0
    for batch in _journal_records(journal, pa.schema([pa.field(INDEX, pa.int64())])):
        for k, index in enumerate(batch.column(0).to_pylist()):
            if index is not None:
                latest[index] = position + k
        position += batch.num_rows
    return latest


def _journal_batches(
    journal: Path, schema: pa.Schema, latest: Mapping[int, int]
) -> Iterator[pa.RecordBatch]:
    jschema = pa.schema([pa.field(INDEX, pa.int64()), *schema])
    position = 0
    for batch in _journal_records(journal, jschema):
        indexes = batch.column(0).to_pylist()
        keep = [i is not None and latest.get(i) == position + k for k, i in enumerate(indexes)]
        position += batch.num_rows
        out = batch.filter(pa.array(keep, pa.bool_()))
        if out.num_rows:
            yield out


def _journal_records(journal: Path, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The journal's records in order; line by line past a line a crash left damaged."""
    yielded = 0
    try:
        for batch in read_json_lines(journal, schema):
            conformed = conform(batch, schema)
            yielded += conformed.num_rows
            yield conformed
    except pa.ArrowInvalid:
        yield from _tolerant_batches(journal, schema, skip=yielded)
    except OSError as exc:
        raise OutputError(f"cannot read {journal}: {exc}") from exc


def _tolerant_batches(journal: Path, schema: pa.Schema, skip: int) -> Iterator[pa.RecordBatch]:
    """Parse line by line, dropping lines that are not records; the first ``skip`` records
    were already read by the fast path."""
    rows: list[dict[str, Any]] = []
    with journal.open("rb") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or not isinstance(record.get(INDEX), int):
                continue
            if skip:
                skip -= 1
                continue
            rows.append({name: record.get(name) for name in schema.names})
            if len(rows) >= BATCH_ROWS:
                yield _from_rows(rows, schema)
                rows = []
    if rows:
        yield _from_rows(rows, schema)


def _from_rows(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    for row in rows:
        stamp = row.get("finished_at")
        if isinstance(stamp, str):
            row["finished_at"] = _parse_time(stamp)
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _with_index(batch: pa.RecordBatch, indexes: pa.Array) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([indexes, *batch.columns], names=[INDEX, *batch.schema.names])


def _keys(latest: Mapping[int, int]) -> pa.Array:
    return pa.array(list(latest), pa.int64())


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
class ModelTotals:
    """One model's rows, tokens and cost (error rows carry the model asked for)."""

    rows: int = 0
    ok: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0  # answered rows with no price, even now


@dataclass
class ErrorTotals:
    count: int = 0
    example: str = ""


@dataclass
class Report:
    """Totals over every row of the outputs read."""

    sources: list[Source] = field(default_factory=list)
    rows: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    stop_reasons: Counter[str] = field(default_factory=Counter)
    errors: dict[str, ErrorTotals] = field(default_factory=dict)
    models: dict[str, ModelTotals] = field(default_factory=dict)
    vias: dict[str, ModelTotals] = field(default_factory=dict)  # online / batches
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0
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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``batchrun report --json``)."""
        return {
            "sources": [
                {"path": str(s.path), "rows": s.rows, "final": s.final, "journal": s.journal}
                for s in self.sources
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
            "rows_priced_at_report_time": self.priced_now,
            "rows_without_price": self.unpriced,
            "models": {
                name: {**vars(m), "cost_usd": round(m.cost_usd, 6)}
                for name, m in sorted(self.models.items())
            },
            "via": {
                name: {**vars(m), "cost_usd": round(m.cost_usd, 6)}
                for name, m in sorted(self.vias.items())
            },
            "latency_ms": _percentiles(self.latency),
            "elapsed_ms": _percentiles(self.elapsed),
            "attempts": {str(k): v for k, v in sorted(self.attempts.items())},
            "first_finished_at": _iso(self.first_finished),
            "last_finished_at": _iso(self.last_finished),
            "span_s": round(self.span_s, 3),
            "rows_per_minute": _round(self.rows_per_minute, 2),
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
        for batch in latest_batches(path, found=rep.sources):
            _fold(rep, batch, table)
    return rep


def _fold(rep: Report, batch: pa.RecordBatch, prices: PriceTable) -> None:
    rep.rows += batch.num_rows
    status = batch.column("status")
    _count_into(rep.statuses, status)
    _count_into(rep.stop_reasons, batch.column("stop_reason"))
    for name in (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ):
        setattr(rep, name, getattr(rep, name) + _sum(batch.column(name)))
    rep.cost_usd += float(_sum(batch.column("cost_usd")))
    rep.latency.add(batch.column("latency_ms"))
    rep.elapsed.add(batch.column("elapsed_ms"))
    _count_into(rep.attempts, batch.column("attempts"))
    _fold_times(rep, batch)
    _fold_errors(rep, batch)
    _fold_groups(rep.models, batch, "model")
    _fold_groups(rep.vias, _with_via(batch), "via")
    _price_unpriced(rep, batch, prices)


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
    if rep.ok_per_second is not None and rep.error_per_second is not None:
        seconds = pc.divide(ms, 1000)
        _count_into(rep.ok_per_second, seconds.filter(is_ok))
        _count_into(rep.error_per_second, seconds.filter(is_error))
        if len(rep.ok_per_second) + len(rep.error_per_second) > MAX_SECONDS:
            rep.ok_per_second = rep.error_per_second = None


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


def _fold_groups(into: dict[str, ModelTotals], batch: pa.RecordBatch, key: str) -> None:
    """Rows, tokens and cost per value of ``key`` (model, or how rows were sent)."""
    table = pa.Table.from_batches([batch]).select(
        [
            key,
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "cost_usd",
        ]
    )
    table = table.append_column(
        "ok", pc.cast(pc.equal(batch.column("status"), STATUS_OK), pa.int64())
    )
    grouped = table.group_by(key).aggregate(
        [
            ([], "count_all"),
            ("ok", "sum"),
            ("input_tokens", "sum"),
            ("output_tokens", "sum"),
            ("cache_creation_input_tokens", "sum"),
            ("cache_read_input_tokens", "sum"),
            ("cost_usd", "sum"),
        ]
    )
    for row in grouped.to_pylist():
        totals = into.setdefault(row[key] or NO_MODEL, ModelTotals())
        totals.rows += row["count_all"]
        totals.ok += row["ok_sum"] or 0
        totals.input_tokens += row["input_tokens_sum"] or 0
        totals.output_tokens += row["output_tokens_sum"] or 0
        totals.cache_creation_input_tokens += row["cache_creation_input_tokens_sum"] or 0
        totals.cache_read_input_tokens += row["cache_read_input_tokens_sum"] or 0
        totals.cost_usd += row["cost_usd_sum"] or 0.0


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
        model = row["model"] or NO_MODEL
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


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- text ----------------------------------------------------------------------------------


def format_report(rep: Report) -> str:
    """The report a person reads in a terminal."""
    lines = []
    for s in rep.sources:
        state = "final" if s.final and not s.journal else "final + journal" if s.final else ""
        state = state or "journal only: the run has not finished"
        lines.append(f"batchrun report: {s.path} ({s.rows:,} rows; {state})")
    if len(rep.sources) > 1:
        lines.append(f"  all outputs  {rep.rows:,} rows")
    ok_share = f" ({rep.ok / rep.rows:.1%} ok)" if rep.rows else ""
    lines.append(f"  rows        {rep.rows:,}: ok {rep.ok:,}, error {rep.error:,}{ok_share}")
    if rep.stop_reasons:
        lines.append("  stop        " + _counts(rep.stop_reasons))
    if rep.errors:
        lines.append("  errors")
        for name, err in sorted(rep.errors.items(), key=lambda kv: -kv[1].count):
            example = f'  e.g. "{_one_line(err.example, 70)}"' if err.example else ""
            lines.append(f"    {name:<24} {err.count:>9,}{example}")
    lines.append(
        f"  tokens      in {rep.input_tokens:,}  out {rep.output_tokens:,}  "
        f"cache write {rep.cache_creation_input_tokens:,}  "
        f"cache read {rep.cache_read_input_tokens:,}"
    )
    lines.append(f"  cost        {money(rep.cost_usd)}" + _cost_notes(rep))
    lines.extend(_model_table(rep))
    if set(rep.vias) - {"online"}:
        lines.append(
            "  sent via    "
            + "; ".join(
                f"{name} {m.rows:,} rows, {money(m.cost_usd)}"
                + (" (Message Batches: half price)" if name == "batches" else "")
                for name, m in sorted(rep.vias.items())
            )
        )
    lines.append("  latency     " + _latency_line(rep.latency) + "  (last attempt)")
    lines.append("  elapsed     " + _latency_line(rep.elapsed) + "  (first send to answer)")
    if rep.attempts:
        total = sum(rep.attempts.values())
        mean = sum(k * v for k, v in rep.attempts.items()) / total
        spread = ", ".join(f"{k}: {v:,}" for k, v in sorted(rep.attempts.items()))
        lines.append(f"  attempts    mean {mean:.2f}  ({spread})")
    lines.append("  throughput  " + _throughput_line(rep))
    return "\n".join(lines)


def _cost_notes(rep: Report) -> str:
    notes = []
    if rep.priced_now:
        notes.append(f"{rep.priced_now:,} rows priced now from the current table")
    if rep.unpriced:
        models = ", ".join(sorted(rep.unpriced_models))
        notes.append(f"{rep.unpriced:,} answered rows have no price ({models}): not included")
    return f"  ({'; '.join(notes)})" if notes else ""


def _model_table(rep: Report) -> list[str]:
    if not rep.models:
        return []
    width = max(24, *(len(name) for name in rep.models))
    out = [
        f"    {'model':<{width}} {'rows':>9} {'ok':>9} {'input tok':>13} "
        f"{'output tok':>12} {'cost':>11}"
    ]
    for name, m in sorted(rep.models.items(), key=lambda kv: (-kv[1].cost_usd, kv[0])):
        out.append(
            f"    {name:<{width}} {m.rows:>9,} {m.ok:>9,} {m.input_tokens:>13,} "
            f"{m.output_tokens:>12,} {money(m.cost_usd):>11}"
            + (f"  ({m.unpriced:,} unpriced)" if m.unpriced else "")
        )
    return out


def _latency_line(hist: LogHistogram) -> str:
    if hist.n == 0:
        return "no data"
    parts = [f"p{int(q * 100)} {duration_ms(hist.quantile(q))}" for q in (0.5, 0.9, 0.99)]
    return "  ".join(parts) + f"  max {duration_ms(hist.max)}"


def _throughput_line(rep: Report) -> str:
    if rep.first_finished is None or rep.last_finished is None:
        return "no finish times"
    window = f"{_iso(rep.first_finished)} to {_iso(rep.last_finished)}: {duration_s(rep.span_s)}"
    if set(rep.vias) == {"batches"}:
        # A batch's rows all finish when they are collected: a rate would measure the download.
        return (
            f"n/a for Message Batches ({rep.rows:,} rows collected from {window}; "
            "elapsed shows each batch's processing time)"
        )
    rate = rep.rows_per_minute
    per_min = f"{rate:,.1f} rows/min" if rate is not None else "n/a"
    paused = ""
    if rep.active_minutes and rep.span_s / 60 > rep.active_minutes + 1:
        paused = f", {rep.active_minutes:,} active minutes"
    collected = "; batch rows count when collected" if "batches" in rep.vias else ""
    return f"{per_min} ({rep.rows:,} rows from {window}{paused}{collected})"


def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counter.most_common())


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
