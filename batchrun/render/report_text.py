"""``batchrun report`` as text: the totals of ``reporting.totals`` for a person at a terminal.

Example::

    print(format_report(report([Path("out/analysis.parquet")])))
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from batchrun.core.humanize import duration_ms, duration_s, money
from batchrun.reporting.totals import LogHistogram, ModelTotals, Report, iso_seconds
from batchrun.store.latest import Source


def source_state(source: Source) -> str:
    """What state an output was found in, in a few words."""
    if source.partial is not None:
        return f"{source.partial}: the run stopped; re-run it to finish"
    if source.final:
        return "final + journal" if source.journal else "final"
    return "journal only: the run has not finished"


def format_report(rep: Report) -> str:
    """The report a person reads in a terminal."""
    lines = _source_lines(rep)
    ok_share = f" ({rep.ok / rep.rows:.1%} ok)" if rep.rows else ""
    lines.append(f"  rows        {rep.rows:,}: ok {rep.ok:,}, error {rep.error:,}{ok_share}")
    lines.extend(f"  warning     {warning}" for warning in rep.warnings())
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
    if rep.cache_saved_usd or rep.duplicates:
        lines.append(f"  saved       {saved_detail(rep)}")
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
        lines.append(
            f"  retries     {rep.retries:,} (attempts past the first)"
            + (f"; {_rows(rep.rate_limited)} ended on a 429" if rep.rate_limited else "")
        )
    lines.append("  throughput  " + _throughput_line(rep))
    return "\n".join(lines)


def _source_lines(rep: Report) -> list[str]:
    """One output: its header. Several: one line each (rows, outcome, cost, state), and the
    lines after them are the totals of all."""
    if len(rep.sources) <= 1 or len(rep.per_source) != len(rep.sources):
        return [
            f"batchrun report: {s.path} ({s.rows:,} rows; {source_state(s)})" for s in rep.sources
        ]
    width = max(len(str(t.source.path)) for t in rep.per_source)
    out = [f"batchrun report: {len(rep.sources)} outputs"]
    for t in rep.per_source:
        unpriced = f" + {t.unpriced:,} unpriced" if t.unpriced else ""
        out.append(
            f"  output      {t.source.path!s:<{width}}  {t.source.rows:>9,} rows: "
            f"ok {t.ok:,}, error {t.error:,}  {money(t.cost_usd)}{unpriced}  "
            f"({source_state(t.source)})"
        )
    out.append(f"  all outputs {rep.rows:,} rows")
    return out


def spellings_note(name: str, totals: ModelTotals) -> str:
    """The ways the rows spelt a model, most rows first, when there were several ("" when
    there was one: the model's name says enough)."""
    spelt = sorted(totals.spellings.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(spelt) < 2:
        return ""
    return "as " + ", ".join(f"{spelling} ({rows:,})" for spelling, rows in spelt)


def saved_detail(rep: Report) -> str:
    """What caching and dedup saved, in tokens and dollars."""
    parts = []
    if rep.cache_saved_usd or rep.cache_read_input_tokens:
        parts.append(
            f"caching {money(rep.cache_saved_usd)} ({rep.cache_read_input_tokens:,} tokens read "
            f"at 0.1x, {rep.cache_creation_input_tokens:,} written)"
        )
    if rep.duplicates:
        parts.append(
            f"dedup {money(rep.dedup_saved_usd)} ({rep.duplicates:,} rows filled from an "
            "identical request)"
        )
    return "; ".join(parts)


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
        note = spellings_note(name, m)
        if note:
            out.append(f"      {note}")
    return out


def _latency_line(hist: LogHistogram) -> str:
    if hist.n == 0:
        return "no data"
    parts = [f"p{int(q * 100)} {duration_ms(hist.quantile(q))}" for q in (0.5, 0.9, 0.99)]
    return "  ".join(parts) + f"  max {duration_ms(hist.max)}"


def _throughput_line(rep: Report) -> str:
    if rep.first_finished is None or rep.last_finished is None:
        return "no finish times"
    first, last = iso_seconds(rep.first_finished), iso_seconds(rep.last_finished)
    window = f"{first} to {last}: {duration_s(rep.span_s)}"
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


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counter.most_common())


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
