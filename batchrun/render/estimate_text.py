"""The estimate as text: per model, the total, the time, and how each figure was made."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from batchrun.core.humanize import duration_s, money
from batchrun.core.wording import option
from batchrun.cost.prices import suggestion
from batchrun.estimation.figures import Duration, Estimate, ModelLine


def format_estimate(est: Estimate) -> str:
    """The estimate a person reads."""
    lines = [f"batchrun estimate: {est.input} ({_level_text(est)})"]
    lines.append(
        f"  rows        {est.rows:,}: {est.rows - est.invalid:,} valid"
        + (f", {est.invalid:,} invalid (never sent, $0)" if est.invalid else "")
    )
    lines.append(
        f"  output      {est.output}: {est.answered:,} answered already ({money(est.paid_usd)}),"
        f" {est.pending:,} to send"
        + (
            f", {est.duplicates:,} duplicates filled from an identical request ($0)"
            if est.duplicates
            else ""
        )
    )
    lines.extend(_source_lines(est))
    if est.pilot is not None:
        p = est.pilot
        lines.append(
            f"  pilot       {p.size:,} random rows (seed {p.seed}): {p.sent:,} sent now "
            f"for {money(p.spent_usd)} in {p.elapsed_s:.1f} s, {p.ok:,} answered ok; kept in "
            "the output, never paid again"
        )
    spent = _spent_line(est)
    if spent:
        lines.append(spent)
    for name, line in est.models.items():
        lines.extend(_model_lines(name, line, est.batch_factor))
    if len(est.models) > 1 or est.unknown_models:
        lines.extend(_total_lines(est))
    lines.extend(_auto_lines(est))
    lines.append(f"  time        {_duration_text(est.duration)}")
    for d in est.duration.detail:
        lines.append(f"                {d}")
    lines.append("  how")
    lines.extend(f"    - {note}" for note in est.notes)
    return "\n".join(lines)


def _source_lines(est: Estimate) -> list[str]:
    """Rows of other sources the output holds: counted as to send, as the run would."""
    from batchrun.store.provenance import describe

    asks = describe(est.source) if est.source is not None else "this run's source"
    return [
        f"  sources     {rows:,} rows answered by {describe(source)} are counted as to send: "
        f"the run asks {asks} ({option('reask_other_source', True)} sends them again; "
        "without it the run refuses)"
        for source, rows in est.other_sources.items()
    ]


def _spent_line(est: Estimate) -> str:
    """What the job spent so far (its runs and pilots) and what its --max-cost leaves."""
    if not est.job_spent_usd and est.max_cost is None:
        return ""
    spent = money(est.job_spent_usd) if est.job_spent_usd is not None else "unknown"
    line = f"  spent       {spent} by the job so far (its runs and pilots)"
    left = est.budget_left
    if est.max_cost is not None:
        line += f", of its ${est.max_cost:g} budget ({option('max_cost')})"
        if left is not None:
            line += f": {money(left)} left"
    return line


def _level_text(est: Estimate) -> str:
    if est.level == "pilot":
        return "pilot sample" + (", exact input counts" if est.exact else "")
    return "exact input counts" if est.exact else "offline estimate"


def _model_lines(name: str, m: ModelLine, factor: Decimal) -> list[str]:
    if m.price is not None:
        r = m.price.rates
        head = f"  {name}  ({m.price.name}: ${r.input}/M in, ${r.output}/M out)"
    else:
        # The packaged table's models: a name the user's --prices file adds is priced anyway.
        hint = suggestion(name)
        head = f"  {name}  (no price{f'; {hint}' if hint else ''})"
    out = [head]
    out.append(
        f"    rows        {m.rows:,}"
        + (f": {m.answered:,} answered, {m.pending:,} to send" if m.answered else "")
        + (f", {m.failed:,} in error not re-sent" if m.failed else "")
    )
    out.append(f"    input       {m.input_tokens:,} tokens")
    if m.duplicates:
        out.append(f"    duplicates  {m.duplicates:,} rows, not sent ($0)")
    if m.cache_groups:
        write = "2x" if m.cache_ttl == "1h" else "1.25x"
        out.append(
            f"    cache       {m.cache_groups:,} prefix group(s), "
            f"{round(m.prefix_write_tokens / m.cache_writes):,} tokens each: "
            f"{m.cache_writes:,} write(s) ({m.cache_ttl}, {write}), {m.cache_reads:,} reads "
            f"({_read_factor(m)}); saves {money(-m.cache_delta())} online"
        )
    expected = m.output_expected()
    out.append(
        f"    output      {_tokens_range(expected)} expected; ceiling {m.output_ceiling:,} "
        "(all of max_tokens)"
    )
    if m.pending_thinking:
        out.append(
            f"    thinking    {m.pending_thinking:,} tokens assumed for the rows to send "
            f"(effort {m.thinking_effort}; paid as output, in the low end below)"
        )

    def costs(batch: bool, cached: bool) -> str:
        f = factor if batch else Decimal(1)
        return _cost_text(
            m.cost_expected(f, cached),
            m.cost_floor(f, cached),
            m.cost_ceiling(f, cached),
            thinking=bool(m.pending_thinking),
        )

    out.extend(_cost_lines(costs, uncached_too=bool(m.cache_delta())))
    return out


def _read_factor(m: ModelLine) -> str:
    """A cache read's price as a multiple of the input price: the model's own (0.1x for most,
    0.05x or 0.025x for some newer models), not a rule of thumb."""
    if m.price is None or not m.price.rates.input:
        return "price unknown"
    return f"{m.price.rates.cache_read / m.price.rates.input:g}x"


def _cost_lines(costs: Callable[[bool, bool], str], *, uncached_too: bool) -> list[str]:
    """The online and batches costs (``costs(batch, cached)``), then the same without caching
    (``--cache off``) where caching changes them."""
    lines = [f"    online      {costs(False, True)}", f"    batches     {costs(True, True)}"]
    if uncached_too:
        lines += [
            f"    without caching ({option('cache', 'off')})",
            f"    online      {costs(False, False)}",
            f"    batches     {costs(True, False)}",
        ]
    return lines


def _auto_lines(est: Estimate) -> list[str]:
    """--via auto --deadline: the cost range as the rows would be split between the lanes."""
    auto = est.auto
    if auto is None:
        return []
    if auto.cost_low is None or auto.cost_high is None:
        cost = "unknown (no price)"
    elif round(auto.cost_low, 4) == round(auto.cost_high, 4):
        cost = money(auto.cost_low)
    else:
        cost = f"{money(auto.cost_low)} to {money(auto.cost_high)}"

    def share(value: float) -> str:
        return f"{value * 100:.0f}%"

    online = (
        share(auto.online_share_low)
        if auto.online_share_low == auto.online_share_high
        else f"{share(auto.online_share_low)} to {share(auto.online_share_high)}"
    )
    return [
        f"  via auto    {cost} with {option('deadline', auto.deadline)}: {online} of the rows "
        "online at the full price, the rest at the batch price",
        f"                {auto.why}",
    ]


def _total_lines(est: Estimate) -> list[str]:
    out = [
        "  total"
        + (
            f"  (priced models only; unknown: {', '.join(est.unknown_models)})"
            if est.unknown_models
            else ""
        )
    ]
    out.append(f"    input       {sum(m.input_tokens for m in est.models.values()):,} tokens")
    out.append(
        f"    output      {_tokens_range(est.total_output())} expected; ceiling "
        f"{sum(m.output_ceiling for m in est.models.values()):,}"
    )

    def costs(batch: bool, cached: bool) -> str:
        return _cost_text(
            est.total_cost(batch, cached),
            est.total_floor(batch, cached),
            est.total_ceiling(batch, cached),
            thinking=any(m.pending_thinking for m in est.models.values()),
        )

    out.extend(_cost_lines(costs, uncached_too=bool(est.caches)))
    return out


def _tokens_range(values: tuple[int, int, int] | None) -> str:
    if values is None:
        return "unknown"
    low, mid, high = values
    if low == high:
        return f"{mid:,}"
    return f"{mid:,} (10-90%: {low:,}-{high:,})"


def _cost_text(
    expected: tuple[float, ...] | None,
    floor: float | None,
    ceiling: float | None,
    *,
    thinking: bool = False,
) -> str:
    if ceiling is None:
        return "unknown (no price)"
    if expected is not None:
        low, mid, high = expected
        spread = "" if low == high else f" (10-90%: {money(low)}-{money(high)})"
        return f"{money(mid)}{spread}; ceiling {money(ceiling)}"
    lowest = "input and assumed thinking" if thinking else "input only"
    return f"between {money(floor)} ({lowest}) and {money(ceiling)} (ceiling)"


def _duration_text(d: Duration) -> str:
    if d.seconds is None:
        return d.bound
    return f"about {duration_s(d.seconds)}, set by {d.bound}"
