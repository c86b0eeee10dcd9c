"""The text a person reads after ``run`` and ``validate``: the run summary and the list of
invalid rows."""

from __future__ import annotations

from collections import Counter
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrun.core.humanize import money
from batchrun.core.wording import option, said
from batchrun.cost.prices import cache_saving
from batchrun.live.frames import clock_text
from batchrun.store.row_state import LAPSED_REASONS

if TYPE_CHECKING:
    from batchrun.config.load import RunConfig
    from batchrun.runs.summary import RunSummary, Trial
    from batchrun.runs.validate import ValidationReport


def format_summary(summary: RunSummary, config: RunConfig) -> str:
    """The end-of-run summary a person reads."""
    final = summary.final
    lines = [f"batchrun: {config.input.shown} -> {_shown_output(summary.output, config)}"]
    if final is not None:
        lines.append(f"  output      {final.rows:,} rows: {final.ok:,} ok, {final.error:,} error")
    elif summary.partial is not None and summary.partial.partial is not None:
        p = summary.partial
        why = (
            "stopped at the budget: see below"
            if _budget_stopped(summary)
            else "a trial: see below"
            if summary.trial is not None and summary.interrupted is None
            else "the run stopped; a re-run sends the rest"
        )
        lines.append(f"  output      {p.partial}: {p.ok:,} ok, {p.error:,} error ({why})")
    lines.append(
        f"  this run    {summary.finished:,} rows: {summary.ok:,} ok, {summary.error:,} error"
        + (f" ({summary.invalid:,} invalid, not sent)" if summary.invalid else "")
        + (f"; {summary.skipped:,} already done" if summary.skipped else "")
    )
    if summary.dropped:
        lines.append(_dropped_line(summary))
    if summary.stop_reasons:
        lines.append("  stop        " + _counts(summary.stop_reasons))
    lines.extend(f"  warning     {text}" for text in summary_warnings(summary))
    if summary.error_types:
        lines.append("  errors      " + _counts(summary.error_types))
        lines.extend(_resend_hints(summary, config))
    lines.append(
        f"  tokens      in {summary.input_tokens:,}  out {summary.output_tokens:,}"
        + (
            f"  cache write {summary.cache_creation_input_tokens:,}"
            f"  cache read {summary.cache_read_input_tokens:,}"
            if summary.cache_creation_input_tokens or summary.cache_read_input_tokens
            else ""
        )
    )
    lines.append(_cost_line(summary))
    if summary.sample_requests:
        lines.append(_samples_line(summary, config))
    lines.extend(_trial_lines(summary))
    advice = budget_advice(summary)
    if advice is not None:
        lines.append(f"  budget      stopped with {summary.rows_left:,} rows left: {advice}")
    sources = _sources_line(summary)
    if sources:
        lines.append(sources)
    saved = _saved_line(summary, config)
    if saved:
        lines.append(saved)
    lines.extend(_deadline_lines(summary))
    if summary.via in ("batches", "auto"):
        lines.append(
            f"  batches     {summary.batches_created:,} created, "
            f"{summary.batches_collected:,} collected"
            + (f", {len(summary.batches_running):,} running" if summary.batches_running else "")
            + " (Message Batches: billed at the batch price)"
        )
    lines.append(f"  retries     {summary.retries:,}")
    lines.extend(_rate_limit_lines(summary))
    lines.append(f"  elapsed     {summary.elapsed_s:.1f} s ({summary.rows_per_second:,.1f} rows/s)")
    return "\n".join(lines)


def _deadline_lines(summary: RunSummary) -> list[str]:
    """--via auto: whether the deadline was met, each lane's rows and cost, and the plan."""
    deadline = summary.deadline
    if deadline is None:
        return []
    at = deadline.at.strftime("%Y-%m-%d %H:%M:%S UTC")
    left = deadline.left_s
    if left is None:
        met = f"{at}"
    elif left >= 0:
        met = f"met, {clock_text(left)} to spare ({at})"
    else:
        met = f"missed by {clock_text(-left)} ({at})"
        if deadline.late_cancels:
            met += (
                f": waited for {deadline.late_cancels:,} cancelled batch(es) to end rather "
                "than pay twice for the rows they might still answer"
            )
    lines = [f"  deadline    {met}"]
    lanes = deadline.lanes
    parts = [
        f"{name} {lane.rows:,} rows ${lane.cost_usd:,.4f}"
        + (" (batch price)" if name == "batches" else "")
        for name, lane in lanes.items()
    ]
    if parts:
        lines.append("  lanes       " + "; ".join(parts))
    if deadline.plan:
        lines.append(f"  plan        {deadline.plan}")
    return lines


def summary_warnings(summary: RunSummary) -> list[str]:
    """What a person should act on after the run, one sentence each: answers mostly cut at
    max_tokens (as ``report`` warns), and rows that got a copy of another row's answer where
    each would have been a sample of its own."""
    from batchrun.reporting.totals import cut_off_warning

    warnings = []
    cut = cut_off_warning(summary.stop_reasons)
    if cut is not None:
        warnings.append(cut)
    if summary.dedup_sampled:
        warnings.append(
            f"{summary.dedup_sampled:,} row(s) got a copy of another row's answer to the same "
            "request at a temperature above 0 (the API's default is 1), not a sample of their "
            f"own: {option('dedup', False)} asks each row"
            + ("" if summary.sample_requests else f", {option('samples', 'K')} each row K times")
        )
    return warnings


def _dropped_line(summary: RunSummary) -> str:
    """What ``--drop-unsupported`` left out of the requests this run sent."""
    parts = ", ".join(f"{name} from {rows:,} rows" for name, rows in summary.dropped.items())
    return (
        f"  dropped     {parts}: sent without it, as their model does not take it "
        f"({option('drop_unsupported', True)})"
    )


def _cost_line(summary: RunSummary) -> str:
    """This run's cost; the job's so far when earlier runs spent too; the budget."""
    line = f"  cost        ${summary.cost_usd:,.4f}"
    if summary.unpriced:
        line += f" ({summary.unpriced:,} answers unpriced)"
    job = summary.job_cost_usd
    if summary.job_cost_before and job is not None:
        line += f" this run; ${job:,.4f} for the job so far"
        if summary.max_cost is not None:
            line += ","
    if summary.max_cost is not None:
        line += f" of a ${summary.max_cost:g} budget"
        if summary.job_cost_before:
            line += f" ({option('max_cost')}: the job's, across its runs)"
    return line


def _samples_line(summary: RunSummary, config: RunConfig) -> str:
    """--samples K: the requests it took, and how far each row's samples agreed."""
    line = f"  samples     {config.engine.samples:,} a row: {summary.sample_requests:,} answers"
    if summary.agreement_rows:
        mean = summary.agreement_total / summary.agreement_rows
        line += f"; agreement {mean:.2f} on average (1.00: every sample the same answer)"
    return line


def _trial_how(trial: Trial) -> str:
    """The trial's flags, as the caller gives them (``--sample 10 --seed 3``)."""
    if trial.limit is not None:
        return option("limit", trial.limit)
    return f"{option('sample', trial.sample)} {option('seed', trial.seed)}"


def _trial_lines(summary: RunSummary) -> list[str]:
    """What a trial was, and what the whole job would cost from its answers."""
    trial = summary.trial
    if trial is None:
        return []
    how = _trial_how(trial)
    if summary.interrupted is not None:
        return [f"  trial       {how}: stopped before its end; the same command goes on"]
    without = f"the same command without {option('limit') if trial.limit else option('sample')}"
    pending = trial.pending
    rest = (
        f"{without} sends the rest"
        if pending is None
        else f"{without} sends the other {pending:,}"
        if pending
        else "every row of the job is answered"
    )
    lines = [f"  trial       {trial.rows:,} of {trial.job_rows:,} rows ({how}); {rest}"]
    cost = trial.job_cost_usd
    if cost is not None and pending:
        low, mid, high = cost
        lines.append(
            f"  whole job   about {money(mid)} ({money(low)} to {money(high)}, 10th to 90th "
            f"percentile), projected from {trial.projected_from:,} answer(s)"
        )
    elif pending != 0:
        lines.append(
            "  whole job   not projected: no answer with a price to project from "
            f"({said('`batchrun estimate`', '`batchrun.estimate(config)`')} says why)"
        )
    return lines


def _budget_stopped(summary: RunSummary) -> bool:
    """Stopped by --max-cost with rows left (not for a model without a price)."""
    from batchrun.cost.budget import is_price_stop

    return (
        summary.budget_stop is not None
        and summary.final is None
        and not is_price_stop(summary.budget_stop)
    )


def raised_cap(summary: RunSummary) -> tuple[Decimal, Decimal | None]:
    """The ``--max-cost`` that would let a budget-stopped job go on, and what the rows left
    would cost at the job's average so far (None when nothing was paid yet to tell).

    The rows left at the average cost per row so far, plus a fifth for rows that cost more
    and the worst case the budget reserves for a request (what the one it refused could have
    cost: the last request needs that much room), rounded up to two figures; at least twice
    the cap when nothing tells what a row costs."""
    cap = Decimal(repr(summary.max_cost or 0.0))
    spent = Decimal(repr(summary.job_cost_usd or summary.cost_usd))
    paid_rows = summary.ok if summary.cost_usd else summary.skipped + summary.ok
    paid = Decimal(repr(summary.cost_usd)) if summary.cost_usd else spent
    if paid_rows and paid > 0:
        rest = paid / paid_rows * summary.rows_left
        room = Decimal(repr(summary.budget_refused_usd or 0.0))
        need = spent + rest * Decimal("1.2") + room
    else:
        rest = None
        need = max(cap * 2, spent * 2, Decimal("1"))
    return _two_figures_up(max(need, cap + Decimal("0.01"))), rest


def _two_figures_up(amount: Decimal) -> Decimal:
    """``amount`` rounded up to two significant figures (0.0847 -> 0.085; 2.43 -> 2.5)."""
    step = Decimal(1).scaleb(amount.adjusted() - 1)
    return ((amount / step).to_integral_value(rounding=ROUND_CEILING) * step).normalize()


def budget_advice(summary: RunSummary, *, details: bool = True) -> str | None:
    """After a budget stop with rows left: the exact way on, a larger --max-cost (a re-run
    with the same cap spends at most what is left of it); ``details``: what the rows left
    would cost and what the same cap leaves. None otherwise."""
    if not _budget_stopped(summary) or summary.max_cost is None:
        return None
    cap, rest = raised_cap(summary)
    spent = Decimal(repr(summary.job_cost_usd or summary.cost_usd))
    text = f"re-run with {option('max_cost', float(cap))} to spend up to ${cap - spent:,.4f} more"
    if not details:
        return text
    if rest is not None:
        text += f" (the rows left would cost about ${rest:,.4f} at the average so far)"
    left = max(Decimal(repr(summary.max_cost)) - spent, Decimal(0))
    same = option("max_cost", summary.max_cost)
    return text + f"; the same {same} leaves ${left:,.4f} to spend"


def _sources_line(summary: RunSummary) -> str:
    """Rows of other sources this run kept or asked again; an output that mixes sources."""
    from batchrun.store.provenance import describe

    parts = [
        f"{rows:,} row(s) of {describe(source)} asked again ({option('reask_other_source', True)})"
        for source, rows in summary.sources_reasked.items()
    ]
    parts += [
        f"{rows:,} row(s) of {describe(source)} kept ({option('keep_other_source', True)})"
        for source, rows in summary.sources_kept.items()
    ]
    if len(summary.mixed_sources) > 1:
        parts.append(
            "the output mixes answers of "
            + ", ".join(summary.mixed_sources)
            + " (its source column tells them apart)"
        )
    return "  sources     " + "; ".join(parts) if parts else ""


def caching_saved_usd(summary: RunSummary, config: RunConfig) -> float | None:
    """What this run's cache writes and reads saved against sending those tokens as plain
    input, at the job's model's prices (writes at the ttl the API reported them with, else
    the one batchrun marks with; the batch price via Message Batches); None when the model
    has no price or nothing was cached."""
    written = summary.cache_creation_input_tokens
    read = summary.cache_read_input_tokens
    price = config.cost.prices.lookup(config.defaults.model)
    if price is None or not (written or read):
        return None
    # Writes the API split by ttl are priced as split; the rest at the ttl batchrun marks with.
    split_5m, split_1h = (
        summary.cache_creation_5m_input_tokens,
        summary.cache_creation_1h_input_tokens,
    )
    unsplit = max(written - split_5m - split_1h, 0)
    cache = config.defaults.cache
    one_hour = cache is not None and cache.control.get("ttl") == "1h"
    factor = config.cost.prices.batch_price_factor if summary.via == "batches" else Decimal(1)
    written_5m = split_5m + (0 if one_hour else unsplit)
    written_1h = split_1h + (unsplit if one_hour else 0)
    saving = cache_saving(price.rates, written_5m, written_1h, read, factor)
    return float(saving)


def _saved_line(summary: RunSummary, config: RunConfig) -> str:
    """What caching and dedup saved, in tokens and dollars ("" when neither did anything)."""
    parts = []
    cached = caching_saved_usd(summary, config)
    if cached is not None:
        parts.append(
            f"caching {money(cached)} ({summary.cache_read_input_tokens:,} tokens read at "
            f"0.1x, {summary.cache_creation_input_tokens:,} written)"
        )
    duplicates = summary.deduplicated
    if duplicates:
        saved = summary.dedup_saved_usd
        parts.append(f"dedup {money(saved)} ({duplicates:,} rows filled from an identical request)")
    if summary.answer_cache_hits:
        parts.append(
            f"answer cache {money(summary.answer_cache_saved_usd)} "
            f"({summary.answer_cache_hits:,} rows answered by an earlier job, not sent)"
        )
    if summary.answer_cache_failures:
        parts.append(
            f"{summary.answer_cache_failures:,} answer-cache read(s) or write(s) failed (those "
            "rows were sent, or their answers not kept)"
        )
    if summary.dedup_resent:
        parts.append(
            f"{summary.dedup_resent:,} duplicate(s) sent again (their original's answer had "
            "left the dedup table)"
        )
    if summary.cache_rewarmed:
        parts.append(
            f"a prompt-cache entry was evicted early and written again {summary.cache_rewarmed:,} "
            "time(s)"
        )
    return "  saved       " + "; ".join(parts) if parts else ""


SUMMARY_SCHEMA = 1  # bumped when a key of ``summary_dict`` changes meaning or goes away


def summary_dict(summary: RunSummary, config: RunConfig | None = None) -> dict[str, Any]:
    """The run's summary for scripts (``run --json``): what ``format_summary`` says, as JSON
    values. ``outcome`` is ``complete`` (the final dataset is written), ``partial`` (a
    stopped run wrote the rows it finished), or ``incomplete`` (nothing written yet).
    ``config`` prices what caching saved (``saved.caching_usd``; null without it)."""
    cached = caching_saved_usd(summary, config) if config is not None else None
    final, partial = summary.final, summary.partial
    written = final if final is not None else partial
    outcome = (
        "complete" if final is not None else "partial" if partial is not None else "incomplete"
    )
    return {
        "schema": SUMMARY_SCHEMA,
        "input": config.input.shown if config is not None else str(summary.input),
        "output": _shown_output(summary.output, config),
        "via": summary.via,
        "outcome": outcome,
        "exit_code": summary.exit_code,
        "output_rows": None
        if written is None
        else {"rows": written.rows, "ok": written.ok, "error": written.error, "of": written.of},
        "rows": {
            "input": summary.total_rows,
            "todo": summary.todo,
            "finished": summary.finished,
            "ok": summary.ok,
            "error": summary.error,
            "invalid": summary.invalid,
            "skipped": summary.skipped,
        },
        "dropped": dict(summary.dropped.most_common()),  # --drop-unsupported: rows per setting
        "stop_reasons": dict(summary.stop_reasons.most_common()),
        "error_types": dict(summary.error_types.most_common()),
        "tokens": {
            "input": summary.input_tokens,
            "output": summary.output_tokens,
            "cache_creation_input": summary.cache_creation_input_tokens,
            "cache_read_input": summary.cache_read_input_tokens,
        },
        "cost_usd": round(summary.cost_usd, 10),  # a sum of floats: no 0.0160439999999
        "saved": {
            "caching_usd": None if cached is None else round(cached, 10),
            "cache_read_tokens": summary.cache_read_input_tokens,
            "cache_write_tokens": summary.cache_creation_input_tokens,
            "dedup_rows": summary.deduplicated,
            "dedup_sampled_rows": summary.dedup_sampled,
            "dedup_usd": round(summary.dedup_saved_usd, 10),
            "dedup_resent": summary.dedup_resent,
            "cache_groups_warmed": summary.cache_groups_warmed,
            "cache_rewarmed": summary.cache_rewarmed,
            "answer_cache_rows": summary.answer_cache_hits,
            "answer_cache_usd": round(summary.answer_cache_saved_usd, 10),
            "answer_cache_stored": summary.answer_cache_stored,
            "answer_cache_failures": summary.answer_cache_failures,
        },
        "unpriced": summary.unpriced,
        "max_cost": summary.max_cost,
        "budget_stop": summary.budget_stop,
        "job": _job_dict(summary),
        "source": summary.source,
        "sources": {
            "reasked": dict(summary.sources_reasked),
            "kept": dict(summary.sources_kept),
            "mixed": list(summary.mixed_sources),
        },
        "interrupted": summary.interrupted,
        "warnings": summary_warnings(summary),
        "samples": None
        if not summary.sample_requests
        else {
            "answers": summary.sample_requests,
            "agreement_mean": None
            if not summary.agreement_rows
            else round(summary.agreement_total / summary.agreement_rows, 6),
        },
        "trial": _trial_dict(summary.trial),
        "retries": summary.retries,
        "rate_limit": {
            "answered_429": summary.rate_limited_429s,
            "pauses": summary.rate_pauses,  # paused: the bucket was empty
            "retried_alone": summary.rate_429s_retried,
            "slowdowns": summary.rate_slowdowns,
            "wait_s": round(summary.rate_wait_s, 3),
            "limits": {
                model: {"rpm": limits.rpm, "itpm": limits.itpm, "otpm": limits.otpm}
                for model, limits in summary.rate_limits.items()
                if limits.any
            },
        },
        "concurrency_chosen": summary.concurrency_chosen,
        "deadline": None
        if summary.deadline is None
        else {
            "at": summary.deadline.at.isoformat(),
            "met": summary.deadline.met,
            "left_s": None
            if summary.deadline.left_s is None
            else round(summary.deadline.left_s, 3),
            "lanes": {
                name: {"rows": lane.rows, "cost_usd": round(lane.cost_usd, 6)}
                for name, lane in summary.deadline.lanes.items()
            },
            "plan": summary.deadline.plan,
            "late_cancels": summary.deadline.late_cancels,
        },
        "batches": None
        if summary.via not in ("batches", "auto")
        else {
            "created": summary.batches_created,
            "collected": summary.batches_collected,
            "running": list(summary.batches_running),
        },
        "elapsed_s": round(summary.elapsed_s, 3),
        "rows_per_second": round(summary.rows_per_second, 3),
    }


def _trial_dict(trial: Trial | None) -> dict[str, Any] | None:
    """A trial's rows and the whole job's projected cost, for scripts."""
    if trial is None:
        return None
    cost = trial.job_cost_usd
    return {
        "limit": trial.limit,
        "sample": trial.sample,
        "seed": trial.seed if trial.sample is not None else None,
        "rows": trial.rows,
        "job_rows": trial.job_rows,
        "pending": trial.pending,
        "job_cost_usd": None
        if cost is None
        else {"p10": round(cost[0], 10), "p50": round(cost[1], 10), "p90": round(cost[2], 10)},
        "projected_from": trial.projected_from,
    }


def _job_dict(summary: RunSummary) -> dict[str, Any]:
    """What the job spent, before this run and in all, and the way on after a budget stop."""
    job = summary.job_cost_usd
    raise_to = None
    if budget_advice(summary) is not None:
        raise_to = float(raised_cap(summary)[0])
    return {
        "cost_usd_before": None
        if summary.job_cost_before is None
        else round(summary.job_cost_before, 10),
        "cost_usd": None if job is None else round(job, 10),
        "rows_left": summary.rows_left if summary.final is None else 0,
        "raise_max_cost_to": raise_to,
    }


def failure_dict(config: RunConfig, error: str, exit_code: int) -> dict[str, Any]:
    """``run --json`` when the run ended without a summary (an error, Ctrl-C): what went
    wrong, so a script reading stdout always gets one JSON object."""
    return {
        "schema": SUMMARY_SCHEMA,
        "input": config.input.shown,
        "output": _shown_output(config.output.path, config),
        "via": config.via,
        "outcome": "failed" if exit_code == 1 else "interrupted",
        "exit_code": exit_code,
        "error": error,
    }


def _resend_hints(summary: RunSummary, config: RunConfig) -> list[str]:
    """How to send the rows in error again: a plain re-run leaves them as they are."""
    resendable = summary.error - summary.invalid
    if not resendable or config.resume.retry_errors:
        return []
    hints = [f"{option('retry_errors', True)} sends the {resendable:,} that were sent again"]
    lapsed = sum(summary.error_types.get(kind, 0) for kind in LAPSED_REASONS)
    if lapsed and not (config.batches.resubmit_expired or config.batches.finish_online):
        hints.append(
            f"{option('resubmit_expired', True)} only the {lapsed:,} a batch expired or "
            f"cancelled ({option('finish_online', True)}: online)"
        )
    return ["              a re-run leaves these as they are; " + "; ".join(hints)]


def _rate_limit_lines(summary: RunSummary) -> list[str]:
    """Limits in force, 429s and admission waits; auto concurrency. Nothing if none applied."""
    lines = []
    for model, limits in summary.rate_limits.items():
        if limits.any:
            shown = [
                f"{value:,} {unit}"
                for value, unit in zip(limits.values(), ("rpm", "itpm", "otpm"), strict=True)
                if value is not None
            ]
            lines.append(f"  limits      {model}: {', '.join(shown)}")
    if lines or summary.rate_limited_429s or summary.rate_wait_s >= 0.05:
        parts = [f"{summary.rate_limited_429s:,} answered 429"]
        if summary.rate_pauses:
            parts.append(f"paused: bucket empty {summary.rate_pauses:,} time(s)")
        if summary.rate_429s_retried:
            parts.append(f"{summary.rate_429s_retried:,} retried alone")
        if summary.rate_slowdowns:
            parts.append(f"slowed down {summary.rate_slowdowns:,} time(s)")
        lines.append(
            f"  rate limit  {', '.join(parts)}; admission held back {summary.rate_wait_s:.1f} s"
        )
    if summary.concurrency_chosen is not None:
        lines.append(f"  concurrency auto: {summary.concurrency_chosen:,} in flight")
    return lines


def format_validation(report: ValidationReport) -> str:
    """Each invalid row with its file, line and field; then the counts."""
    lines = [str(problem) for problem in report.problems]
    lines += [
        f"{report.source}: {more:,} more row(s) with the same problem: {what}"
        for what, more in report.unlisted()
    ]
    lines.append(
        f"{report.source}: {report.rows:,} rows, {report.rows - report.invalid:,} valid, "
        f"{report.invalid:,} invalid"
    )
    return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counter.most_common())


def _shown_output(output: Path, config: RunConfig | None) -> str:
    """The output's name for a person: an object-store output's URL, not the work folder's
    copy (a shard's own output, which is local, by its path)."""
    if config is not None and output == config.output.path:
        return config.output.shown
    return str(output)
