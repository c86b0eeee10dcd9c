"""``batchrun report --html``: the report as one self-contained page with inline SVG charts.

Why hand-written SVG: the five charts are bars and lines on two kinds of axis, a few hundred
lines of code, and the page must open anywhere (a laptop, a CI artifact, an email) with no
network and no JavaScript; a plotting library would add a heavy dependency for less control.
Everything is escaped, so prompts and error messages in the data cannot inject markup.

    Path("report.html").write_text(render_html(report([Path("out/a.parquet")])))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape

from batchrun.core.humanize import duration_ms, duration_s, money
from batchrun.core.version import VERSION as __version__
from batchrun.render.report_text import saved_detail, source_state, spellings_note
from batchrun.reporting.totals import LogHistogram, ModelTotals, Report

# Colours: one hue per kind of token, used by every chart, plus status colours.
INPUT = "#3b6fb6"
CACHE_WRITE = "#8fb3e0"
CACHE_READ = "#b9d7c9"
OUTPUT = "#e08a3c"
OK = "#2e8b57"
ERROR = "#c8423b"
INK = "#1f2933"
MUTED = "#6b7785"
GRID = "#e4e8ee"
RETRY = "#d9a23a"

MAX_BARS = 120
WIDTH = 540
# Chart text is 11 px sans-serif; this is wider than its average glyph (digits are 0.56 em),
# so a width reckoned from it is an upper bound used to keep labels apart and inside the SVG.
CHAR_WIDTH = 6.6
LABEL_GAP = 6


def render_html(rep: Report, *, title: str = "batchrun report") -> str:
    """The whole page as a string."""
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    warnings = "".join(f"<div class='warn'>{escape(w)}</div>" for w in rep.warnings())
    body = [
        f"<header><h1>{escape(title)}</h1>{_sources(rep)}</header>",
        warnings,
        _cards(rep),
        "<section class='grid'>",
        _panel(
            "Latency per request",
            "last attempt, log scale; dashed lines mark p50 / p90 / p99",
            latency_chart(rep.latency),
        ),
        _panel(
            "Answers per minute",
            "rows finished over the run; errors stacked in red",
            throughput_chart(rep),
        ),
        _panel("Tokens by model", "input, cache write, cache read and output", tokens_chart(rep)),
        _panel("Cost by model", "USD from each row's own usage", cost_chart(rep)),
        _panel(
            "Retries and 429s over time",
            "attempts past the first (any cause) and rows that ended on a 429, per minute",
            retries_chart(rep),
        ),
        "</section>",
        "<section class='grid'>",
        _panel("Rows", "by status and stop reason", _status_table(rep)),
        _panel("Errors", "by type, with an example message", _errors_table(rep)),
        "</section>",
        _panel("Models", "", _models_table(rep), wide=True),
        f"<footer>batchrun {escape(__version__)} · made {made}</footer>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


_CSS = f"""
*{{box-sizing:border-box}}
body{{margin:0;background:#f5f7fa;color:{INK};
 font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}}
main{{max-width:1160px;margin:0 auto;padding:28px 24px 40px}}
h1{{font-size:24px;margin:0 0 6px}}
h2{{font-size:15px;margin:0}}
.sub{{color:{MUTED};font-size:12px;margin:2px 0 10px}}
ul.src{{margin:0 0 18px;padding:0;list-style:none;color:{MUTED};font-size:13px}}
code{{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}}
.cards{{display:grid;grid-template-columns:repeat(6,1fr);gap:12px;margin-bottom:16px}}
.card{{background:#fff;border-radius:10px;padding:12px 14px;box-shadow:0 1px 2px #0000000f}}
.card .k{{color:{MUTED};font-size:12px;text-transform:uppercase;letter-spacing:.04em}}
.card .v{{font-size:22px;font-weight:600;margin-top:2px;white-space:nowrap}}
.card .d{{color:{MUTED};font-size:12px}}
.grid{{display:grid;grid-template-columns:1fr 1fr;gap:16px;margin-bottom:16px}}
.panel{{background:#fff;border-radius:10px;padding:14px 16px;box-shadow:0 1px 2px #0000000f;
 min-width:0}}
.wide{{margin-bottom:16px}}
svg{{display:block;width:100%;height:auto}}
svg text{{font:11px -apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:{MUTED}}}
svg text.v{{fill:{INK}}}
table{{border-collapse:collapse;width:100%;font-size:13px}}
th,td{{text-align:left;padding:5px 8px;border-bottom:1px solid {GRID};vertical-align:top}}
th{{color:{MUTED};font-weight:500;font-size:12px}}
td.n,th.n{{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}}
td.msg{{color:{MUTED};font-size:12px;word-break:break-word}}
.legend{{display:flex;gap:14px;flex-wrap:wrap;font-size:12px;color:{MUTED};margin-top:6px}}
.legend i{{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;
 vertical-align:-1px}}
.empty{{color:{MUTED};padding:30px 0;text-align:center}}
.warn{{background:#fff4e0;border-left:4px solid {OUTPUT};border-radius:6px;padding:10px 14px;
 margin-bottom:14px}}
.spelt{{display:block;color:{MUTED};font-size:11px}}
footer{{color:{MUTED};font-size:12px;text-align:center;margin-top:8px}}
"""


# --- cards and tables --------------------------------------------------------------------


def _sources(rep: Report) -> str:
    """The outputs read: one line each, with its rows, outcome, cost and state."""
    if len(rep.per_source) != len(rep.sources):  # a Report not made by ``report``
        items = [
            f"<li><code>{escape(str(s.path))}</code> — {s.rows:,} rows"
            f" ({escape(source_state(s))})</li>"
            for s in rep.sources
        ]
    else:
        items = [
            f"<li><code>{escape(str(t.source.path))}</code> — {t.source.rows:,} rows: "
            f"ok {t.ok:,}, error {t.error:,}, {escape(money(t.cost_usd))}"
            f"{f' + {t.unpriced:,} unpriced' if t.unpriced else ''}"
            f" ({escape(source_state(t.source))})</li>"
            for t in rep.per_source
        ]
    return f"<ul class='src'>{''.join(items)}</ul>"


def _cards(rep: Report) -> str:
    ok_share = f"{rep.ok / rep.rows:.1%} ok" if rep.rows else "no rows"
    rate = rep.rows_per_minute
    attempts = sum(rep.attempts.values())
    mean_attempts = sum(k * v for k, v in rep.attempts.items()) / attempts if attempts else 0
    cards = [
        ("Rows", f"{rep.rows:,}", f"{ok_share} · {rep.error:,} error"),
        ("Cost", money(rep.cost_usd), _cost_detail(rep)),
        (
            "Input tokens",
            _short(rep.input_tokens),
            f"cache read {_short(rep.cache_read_input_tokens)}",
        ),
        ("Output tokens", _short(rep.output_tokens), f"{_per_row(rep)} per answer"),
        *(
            [("Saved", money(rep.cache_saved_usd + rep.dedup_saved_usd), saved_detail(rep))]
            if rep.cache_saved_usd or rep.duplicates
            else []
        ),
        (
            "Latency p50",
            duration_ms(rep.latency.quantile(0.5)),
            f"p99 {duration_ms(rep.latency.quantile(0.99))}",
        ),
        (
            "Throughput",
            _rate(rate),
            f"{duration_s(rep.span_s)} · {mean_attempts:.2f} attempts/row",
        ),
    ]
    html = "".join(
        f"<div class='card'><div class='k'>{escape(k)}</div><div class='v'>{escape(v)}</div>"
        f"<div class='d'>{escape(d)}</div></div>"
        for k, v, d in cards
    )
    return f"<section class='cards'>{html}</section>"


def _rate(per_minute: float | None) -> str:
    """Always per minute, the unit of the text report and of the throughput chart."""
    return "–" if per_minute is None else f"{per_minute:,.1f}/min"


def _cost_detail(rep: Report) -> str:
    if rep.unpriced:
        return f"{rep.unpriced:,} rows unpriced"
    return f"{money(rep.cost_usd / rep.ok)} per answer" if rep.ok else "nothing answered"


def _per_row(rep: Report) -> str:
    return f"{rep.output_tokens / rep.ok:,.0f}" if rep.ok else "–"


def _short(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:,.1f}{unit}"
    return f"{n:,}"


def _panel(title: str, sub: str, content: str, *, wide: bool = False) -> str:
    sub_html = f"<div class='sub'>{escape(sub)}</div>" if sub else "<div class='sub'></div>"
    cls = "panel wide" if wide else "panel"
    return f"<div class='{cls}'><h2>{escape(title)}</h2>{sub_html}{content}</div>"


def _status_table(rep: Report) -> str:
    rows = [("status", k, v) for k, v in rep.statuses.most_common()]
    rows += [("stop reason", k, v) for k, v in rep.stop_reasons.most_common()]
    if not rows:
        return "<div class='empty'>no rows</div>"
    body = "".join(
        f"<tr><td>{escape(kind)}</td><td>{escape(str(name))}</td>"
        f"<td class='n'>{count:,}</td><td class='n'>{count / max(rep.rows, 1):.1%}</td></tr>"
        for kind, name, count in rows
    )
    return (
        "<table><tr><th></th><th>value</th><th class='n'>rows</th><th class='n'>share</th></tr>"
        f"{body}</table>"
    )


def _errors_table(rep: Report) -> str:
    if not rep.errors:
        return "<div class='empty'>no errors</div>"
    body = "".join(
        f"<tr><td>{escape(name)}</td><td class='n'>{err.count:,}</td>"
        f"<td class='msg'>{escape(err.example)}</td></tr>"
        for name, err in sorted(rep.errors.items(), key=lambda kv: -kv[1].count)
    )
    return f"<table><tr><th>type</th><th class='n'>rows</th><th>example</th></tr>{body}</table>"


def _models_table(rep: Report) -> str:
    if not rep.models:
        return "<div class='empty'>no rows</div>"
    body = "".join(
        f"<tr><td><code>{escape(name)}</code>{_spelt(name, m)}</td><td class='n'>{m.rows:,}</td>"
        f"<td class='n'>{m.ok:,}</td><td class='n'>{m.input_tokens:,}</td>"
        f"<td class='n'>{m.cache_creation_input_tokens:,}</td>"
        f"<td class='n'>{m.cache_read_input_tokens:,}</td><td class='n'>{m.output_tokens:,}</td>"
        f"<td class='n'>{escape(money(m.cost_usd))}"
        f"{f' + {m.unpriced:,} unpriced' if m.unpriced else ''}</td></tr>"
        for name, m in sorted(rep.models.items(), key=lambda kv: (-kv[1].cost_usd, kv[0]))
    )
    return (
        "<table><tr><th>model</th><th class='n'>rows</th><th class='n'>ok</th>"
        "<th class='n'>input</th><th class='n'>cache write</th><th class='n'>cache read</th>"
        f"<th class='n'>output</th><th class='n'>cost</th></tr>{body}</table>"
    )


def _spelt(name: str, m: ModelTotals) -> str:
    note = spellings_note(name, m)
    return f"<span class='spelt'>{escape(note)}</span>" if note else ""


# --- charts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """A plot area inside an SVG of ``WIDTH`` × ``height``."""

    height: int
    left: int = 56
    right: int = 16
    top: int = 14
    bottom: int = 30

    @property
    def w(self) -> int:
        return WIDTH - self.left - self.right

    @property
    def h(self) -> int:
        return self.height - self.top - self.bottom

    def svg(self, inner: str, label: str) -> str:
        return (
            f"<svg viewBox='0 0 {WIDTH} {self.height}' role='img' aria-label='{escape(label)}' "
            f"xmlns='http://www.w3.org/2000/svg'>{inner}</svg>"
        )


def latency_chart(hist: LogHistogram) -> str:
    """A histogram of request latency on a log axis, with percentile markers."""
    bins = hist.bins(36)
    if not bins:
        return "<div class='empty'>no latencies recorded</div>"
    f = _Frame(240)
    lo, hi = math.log(bins[0][0]), math.log(bins[-1][1])
    span = max(hi - lo, 1e-9)
    peak = max(count for _, _, count in bins)
    y_ticks = nice_ticks(peak)
    top = y_ticks[-1]

    def x(value: float) -> float:
        return f.left + (math.log(value) - lo) / span * f.w

    def y(count: float) -> float:
        return f.top + f.h - count / top * f.h

    parts = _y_grid(f, y_ticks, y, _int_label)
    for low, high, count in bins:
        if count:
            x0, x1 = x(low), x(high)
            parts.append(
                _rect(x0 + 0.5, y(count), max(x1 - x0 - 1, 1), f.top + f.h - y(count), INPUT)
            )
    for value in _log_ticks(bins[0][0], bins[-1][1]):
        parts.append(_tick_label(x(value), f.height - 10, duration_ms(value)))
    marks: list[tuple[float, str]] = []
    for q in (0.5, 0.9, 0.99):
        v = hist.quantile(q)
        if v is None:
            continue
        xv = min(max(x(v), f.left), f.left + f.w)
        parts.append(
            f"<line x1='{xv:.1f}' x2='{xv:.1f}' y1='{f.top}' y2='{f.top + f.h}' "
            f"stroke='{OUTPUT}' stroke-width='1.5' stroke-dasharray='4 3'/>"
        )
        marks.append((xv, f"p{round(q * 100)} {duration_ms(v)}"))
    parts.extend(_percentile_labels(marks, f))
    parts.append(_axis(f))
    return f.svg("".join(parts), "latency histogram")


def _percentile_labels(marks: Sequence[tuple[float, str]], f: _Frame) -> list[str]:
    """The labels of the percentile lines: each just right of its line where there is room,
    moved apart where lines are close, so no two overlap and none leaves the SVG. On a
    white ground, so the bars and dashes behind do not blur them."""
    labels = [label for _, label in marks]
    widths = [text_width(label) for label in labels]
    lefts = place_labels([xv + 4 for xv, _ in marks], widths, 2.0, WIDTH - 2.0)
    rows: list[float] = [f.top + 10] * len(marks)
    if lefts is None:  # too many to fit side by side: one row each
        lefts = [
            min(max(xv + 4, 2.0), WIDTH - 2.0 - w) for (xv, _), w in zip(marks, widths, strict=True)
        ]
        rows = [f.top + 10 + 14 * k for k in range(len(marks))]
    out = []
    for left, width, baseline, label in zip(lefts, widths, rows, labels, strict=True):
        out.append(
            f"<rect x='{left - 2:.1f}' y='{baseline - 10:.1f}' width='{width + 4:.1f}' "
            "height='13' fill='#fff' fill-opacity='0.85'/>"
        )
        out.append(_text(left, baseline, label, "start", cls="v"))
    return out


def place_labels(
    wanted: Sequence[float], widths: Sequence[float], low: float, high: float
) -> list[float] | None:
    """Left edges for labels that want to start at ``wanted``, as near to it as they can be
    while ``LABEL_GAP`` apart, in order, and inside ``low``..``high``; None when they cannot
    all fit on one line. ``wanted`` must be in increasing order."""
    n = len(wanted)
    if sum(widths) + LABEL_GAP * max(n - 1, 0) > high - low:
        return None
    lefts = list(wanted)
    for i in range(n):  # left to right: push each label clear of the one before
        floor = low if i == 0 else lefts[i - 1] + widths[i - 1] + LABEL_GAP
        lefts[i] = max(lefts[i], floor)
    for i in reversed(range(n)):  # right to left: pull back inside the right edge
        ceiling = high - widths[i] if i == n - 1 else lefts[i + 1] - LABEL_GAP - widths[i]
        lefts[i] = min(lefts[i], ceiling)
    return lefts


def text_width(text: str) -> float:
    """An upper bound on the width of chart text (see ``CHAR_WIDTH``)."""
    return len(text) * CHAR_WIDTH


def throughput_chart(rep: Report) -> str:
    """Answers per minute over the run: ok and error columns, stacked."""
    timeline = _timeline(rep)
    if timeline is None:
        return "<div class='empty'>no finish times recorded</div>"
    ok_counts, error_counts = _finished_series(rep)
    ok_rates, error_rates = timeline.rates([ok_counts, error_counts])
    bars = list(zip(ok_rates, error_rates, strict=True))
    f = _Frame(240)
    y_ticks = nice_ticks(max(ok + err for ok, err in bars))
    top = y_ticks[-1]

    def y(count: float) -> float:
        return f.top + f.h - count / top * f.h

    parts = _y_grid(f, y_ticks, y, _int_label)
    for k, (ok, err) in enumerate(bars):
        x0, width = timeline.slot(f, k)
        if ok:
            parts.append(_rect(x0, y(ok), width, f.top + f.h - y(ok), OK))
        if err:
            parts.append(_rect(x0, y(ok + err), width, y(ok) - y(ok + err), ERROR))
    parts.extend(timeline.labels(f))
    parts.append(_axis(f))
    legend = _legend([(OK, "ok"), (ERROR, "error")], timeline.note())
    return f.svg("".join(parts), "answers per minute") + legend


def retries_chart(rep: Report) -> str:
    """Retries and rows that ended on a 429, per minute, on the throughput chart's time axis.

    Rows record how many attempts they took, not when each retry happened, so a row's retries
    are counted when it finished; a 429 that a retry got past shows only as a retry.
    """
    timeline = _timeline(rep)
    if timeline is None:
        return "<div class='empty'>no finish times recorded</div>"
    retries, limited = _retry_series(rep)
    if not any(retries.values()) and not any(limited.values()):
        return "<div class='empty'>no retries and no 429s</div>"
    retry_rates, limited_rates = timeline.rates([retries, limited])
    f = _Frame(240)
    y_ticks = nice_ticks(max(max(retry_rates), max(limited_rates)))
    top = y_ticks[-1]

    def y(count: float) -> float:
        return f.top + f.h - count / top * f.h

    parts = _y_grid(f, y_ticks, y, _int_label)
    for k, (tries, ended) in enumerate(zip(retry_rates, limited_rates, strict=True)):
        x0, width = timeline.slot(f, k)
        if tries:
            parts.append(_rect(x0, y(tries), width, f.top + f.h - y(tries), RETRY))
        if ended:  # a narrower bar in front, so both stay visible where they meet
            inset = width / 4
            parts.append(_rect(x0 + inset, y(ended), width / 2, f.top + f.h - y(ended), ERROR))
    parts.extend(timeline.labels(f))
    parts.append(_axis(f))
    legend = _legend(
        [(RETRY, f"retries ({rep.retries:,})"), (ERROR, f"ended on a 429 ({rep.rate_limited:,})")],
        f"counted when the row finished · {timeline.note()}",
    )
    return f.svg("".join(parts), "retries and 429s over time") + legend


@dataclass(frozen=True)
class _Timeline:
    """The bars of a chart over the run's time: ``bars`` windows of ``per_bar`` keys of
    ``unit`` seconds, from key ``first``. Shared by the charts over time, so they line up."""

    first: int
    last: int
    unit: int
    per_bar: int

    @property
    def starts(self) -> range:
        return range(self.first, self.last + 1, self.per_bar)

    @property
    def span_s(self) -> int:
        return (self.last - self.first + 1) * self.unit

    def rates(self, series: Sequence[Mapping[int, int]]) -> list[list[float]]:
        """Each series summed per bar and scaled to a count per minute."""
        out: list[list[float]] = [[] for _ in series]
        for start in self.starts:
            window = range(start, min(start + self.per_bar, self.last + 1))
            per_minute = 60 / (len(window) * self.unit)
            for values, counts in zip(out, series, strict=True):
                values.append(sum(counts.get(k, 0) for k in window) * per_minute)
        return out

    def slot(self, f: _Frame, k: int) -> tuple[float, float]:
        """Left edge and width of bar ``k``."""
        step = f.w / len(self.starts)
        x0 = f.left + k * step + (0.5 if step > 3 else 0)
        return x0, max(step - (1 if step > 3 else 0), 0.6)

    def labels(self, f: _Frame) -> list[str]:
        span = self.span_s
        clock = "%H:%M:%S" if span < 3600 else "%H:%M" if span < 86_400 else "%d %b %H:%M"
        starts = self.starts
        step = f.w / len(starts)
        out = []
        for k in _spread(len(starts), 5):
            moment = datetime.fromtimestamp(starts[k] * self.unit, timezone.utc)
            out.append(
                _tick_label(f.left + (k + 0.5) * step, f.height - 10, moment.strftime(clock))
            )
        return out

    def note(self) -> str:
        return (
            f"each bar is {duration_s(self.per_bar * self.unit)}, shown per minute · times in UTC"
        )


def _timeline(rep: Report) -> _Timeline | None:
    """The time axis of the rows that finished, or None when none has a finish time."""
    ok_counts, error_counts = _finished_series(rep)
    keys = sorted(set(ok_counts) | set(error_counts))
    if not keys:
        return None
    unit = _unit(rep)
    first, last = keys[0], keys[-1]
    span = (last - first + 1) * unit
    bar_s = next((b for b in _BAR_SECONDS if span / b <= MAX_BARS), math.ceil(span / MAX_BARS))
    return _Timeline(first, last, unit, max(1, bar_s // unit))


# Bar widths in seconds: the first that keeps the bars at most MAX_BARS.
_BAR_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21_600, 86_400)


def _unit(rep: Report) -> int:
    """Seconds per key of the series: 1 for a short run kept per second, else 60."""
    per_second = rep.ok_per_second is not None and rep.error_per_second is not None
    return 1 if per_second and rep.span_s < 7200 else 60


def _finished_series(rep: Report) -> tuple[Mapping[int, int], Mapping[int, int]]:
    """Rows finished ok and in error, by second or minute (``_unit``)."""
    if _unit(rep) == 1 and rep.ok_per_second is not None and rep.error_per_second is not None:
        return rep.ok_per_second, rep.error_per_second
    return rep.ok_per_minute, rep.error_per_minute


def _retry_series(rep: Report) -> tuple[Mapping[int, int], Mapping[int, int]]:
    """Retries and rows ended on a 429, in the same keys as ``_finished_series``."""
    seconds = (rep.retries_per_second, rep.rate_limited_per_second)
    if _unit(rep) == 1 and seconds[0] is not None and seconds[1] is not None:
        return seconds[0], seconds[1]
    return rep.retries_per_minute, rep.rate_limited_per_minute


def tokens_chart(rep: Report) -> str:
    """Stacked horizontal bars per model: input, cache write, cache read, output."""
    kinds = [
        (INPUT, "input", "input_tokens"),
        (CACHE_WRITE, "cache write", "cache_creation_input_tokens"),
        (CACHE_READ, "cache read", "cache_read_input_tokens"),
        (OUTPUT, "output", "output_tokens"),
    ]
    rows = [
        (name, [(float(getattr(m, attr)), colour) for colour, _, attr in kinds])
        for name, m in sorted(rep.models.items(), key=lambda kv: -kv[1].input_tokens)
    ]
    rows = [r for r in rows if sum(v for v, _ in r[1]) > 0]
    if not rows:
        return "<div class='empty'>no tokens recorded</div>"
    svg = _hbars(rows, lambda v: _short(int(v)), "tokens by model")
    return svg + _legend([(c, label) for c, label, _ in kinds], "")


def cost_chart(rep: Report) -> str:
    """Horizontal bars of cost per model."""
    rows = [
        (name, [(m.cost_usd, OUTPUT)])
        for name, m in sorted(rep.models.items(), key=lambda kv: -kv[1].cost_usd)
        if m.cost_usd > 0
    ]
    if not rows:
        return "<div class='empty'>no priced rows</div>"
    note = f"{rep.unpriced:,} answered rows have no price" if rep.unpriced else ""
    return _hbars(rows, money, "cost by model", _money_tick) + (_legend([], note) if note else "")


def _hbars(
    rows: Sequence[tuple[str, Sequence[tuple[float, str]]]],
    label: Callable[[float], str],
    title: str,
    tick_label: Callable[[float], str] | None = None,
) -> str:
    band = 34
    f = _Frame(24 + band * len(rows) + 26, left=200, right=70, top=10, bottom=26)
    peak = max(sum(v for v, _ in parts) for _, parts in rows)
    ticks = nice_ticks(peak)
    top = ticks[-1]

    def x(value: float) -> float:
        return f.left + value / top * f.w

    out = []
    for t in ticks:
        out.append(
            f"<line x1='{x(t):.1f}' x2='{x(t):.1f}' y1='{f.top}' y2='{f.top + f.h}' "
            f"stroke='{GRID}'/>"
        )
        out.append(_tick_label(x(t), f.height - 8, (tick_label or label)(t)))
    for k, (name, parts) in enumerate(rows):
        y0 = f.top + k * band + 7
        start = 0.0
        for value, colour in parts:
            if value > 0:
                out.append(
                    _rect(x(start), y0, max(x(start + value) - x(start), 0.8), band - 14, colour)
                )
            start += value
        out.append(_text(f.left - 8, y0 + (band - 14) / 2 + 4, _clip(name, 30), "end", cls="v"))
        shown = label(start)
        left = min(x(start) + 6, WIDTH - 2 - text_width(shown))
        out.append(_text(left, y0 + (band - 14) / 2 + 4, shown, "start", cls="v"))
    return f.svg("".join(out), title)


# --- drawing helpers ---------------------------------------------------------------------


def nice_ticks(peak: float, count: int = 4) -> list[float]:
    """Round axis ticks from 0 to at least ``peak``: steps of 1, 2, 2.5 or 5 × 10^k."""
    if peak <= 0:
        return [0.0, 1.0]
    raw = peak / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    n = math.ceil(peak / step - 1e-9)
    return [step * i for i in range(n + 1)]


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks between ``low`` and ``high``, at most about seven."""
    ticks = []
    k = math.floor(math.log10(max(low, 1e-6)))
    while 10**k <= high * 1.0001:
        for m in (1, 2, 5):
            v = m * 10**k
            if low <= v <= high:
                ticks.append(float(v))
        k += 1
    while len(ticks) > 7:
        ticks = ticks[::2]
    if len(ticks) < 3:  # a narrow range: its ends and geometric middle
        ticks = [low * 1.05, math.sqrt(low * high), high / 1.05]
    return ticks


def _y_grid(
    f: _Frame, ticks: list[float], y: Callable[[float], float], label: Callable[[float], str]
) -> list[str]:
    out = []
    for t in ticks:
        out.append(
            f"<line x1='{f.left}' x2='{f.left + f.w}' y1='{y(t):.1f}' y2='{y(t):.1f}' "
            f"stroke='{GRID}'/>"
        )
        out.append(_text(f.left - 6, y(t) + 4, label(t), "end"))
    return out


def _axis(f: _Frame) -> str:
    return (
        f"<line x1='{f.left}' x2='{f.left + f.w}' y1='{f.top + f.h}' y2='{f.top + f.h}' "
        f"stroke='{MUTED}'/>"
    )


def _rect(x: float, y: float, w: float, h: float, fill: str) -> str:
    return (
        f"<rect x='{x:.1f}' y='{y:.1f}' width='{w:.1f}' height='{max(h, 0):.1f}' "
        f"rx='1.5' fill='{fill}'/>"
    )


def _text(x: float, y: float, text: str, anchor: str, *, cls: str = "") -> str:
    klass = f" class='{cls}'" if cls else ""
    return f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}'{klass}>{escape(text)}</text>"


def _tick_label(x: float, y: float, text: str) -> str:
    """Text centred on ``x`` where it fits, moved in so it stays whole inside the SVG."""
    half = text_width(text) / 2
    centre = min(max(x, half + 1), WIDTH - half - 1)
    return _text(centre, y, text, "middle")


def _legend(items: list[tuple[str, str]], note: str) -> str:
    keys = "".join(f"<span><i style='background:{c}'></i>{escape(t)}</span>" for c, t in items)
    tail = f"<span>{escape(note)}</span>" if note else ""
    return f"<div class='legend'>{keys}{tail}</div>"


def _spread(n: int, count: int) -> list[int]:
    """About ``count`` evenly spread indexes of ``n`` bars, first and last included."""
    if n <= count:
        return list(range(n))
    return sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})


def _int_label(v: float) -> str:
    return _short(int(v)) if v >= 10_000 else f"{v:,.0f}" if v == int(v) else f"{v:,.1f}"


def _money_tick(v: float) -> str:
    return "$0" if v == 0 else f"${v:,.6g}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
