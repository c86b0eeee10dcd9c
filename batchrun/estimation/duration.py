"""How long sending the pending rows would take, and what sets the pace."""

from __future__ import annotations

from collections.abc import Mapping

from batchrun.core.humanize import duration_s
from batchrun.core.wording import option
from batchrun.estimation.figures import Duration, Estimate
from batchrun.limits.values import Limits, LimitsConfig

# --- duration ----------------------------------------------------------------------------


def estimate_duration(
    est: Estimate,
    limits: LimitsConfig | None,
    concurrency: int,
    learned: Mapping[str, Limits] | None = None,
) -> Duration:
    """The time to send the pending rows: the slowest of each model's rate limits (configured,
    or ``learned`` by a pilot from the API's headers) and of concurrency × latency (when a
    latency was measured)."""
    if est.pending == 0:
        return Duration(0.0, "nothing to send")
    candidates: list[tuple[float, str]] = []
    detail: list[str] = []
    for name, line in sorted(est.models.items()):
        if not line.pending:
            continue
        mine = limits.for_model(name) if limits is not None else Limits()
        heard = (learned or {}).get(name)
        if heard is not None:
            mine = heard.over(mine)
        expected = line.output_range[1] if line.output_range else None
        output = expected if expected is not None else float(line.pending_ceiling)
        pending_input = line.input_mid if line.input_mid is not None else line.pending_input
        # Cache reads do not count against the input-token limit (docs/api-facts.md §7.1: most
        # current models; older ones count them, so this may run short for those).
        pending_input = max(0.0, pending_input - line.prefix_read_tokens)
        for limit, amount, what in (
            (mine.rpm, float(line.pending), "requests (RPM)"),
            (mine.itpm, float(pending_input), "input tokens (ITPM)"),
            (mine.otpm, output, "output tokens (OTPM)"),
        ):
            if limit:
                seconds = amount / limit * 60
                seen = " (as the pilot saw it)" if heard is not None else ""
                candidates.append((seconds, f"{name}: {what} limit {limit:,}/min{seen}"))
                detail.append(f"{name}: {amount:,.0f} {what.split(' (')[0]} at {limit:,}/min")
    if est.latency_s is not None:
        seconds = est.pending * est.latency_s / concurrency
        candidates.append((seconds, f"concurrency {concurrency} × {est.latency_s:.2f} s latency"))
        detail.append(
            f"{est.pending:,} requests, {concurrency} at a time, {est.latency_s:.2f} s each "
            f"(measured on {est.projection_source or 'answered rows'})"
        )
    if not candidates:
        return Duration(None, "unknown: no rate limits configured and no latency measured", [])
    seconds, bound = max(candidates)
    return Duration(seconds, bound, detail)


def batch_duration(online: Duration, pending: int) -> Duration:
    """The wait of a ``--via batches`` run: the API's, not this machine's (docs/api-facts.md §8.3).

    Message Batches are processed when the API has room, so concurrency and rate limits do not
    set the pace; the online figure stays as a detail, for comparison.
    """
    if pending == 0:
        return online
    detail = [
        "a request not done 24 h after its batch was created expires "
        f"({option('resubmit_expired', True)} or {option('finish_online', True)} sends it "
        "again)"
    ]
    if online.seconds is not None:
        detail.append(f"online: about {duration_s(online.seconds)}, set by {online.bound}")
    return Duration(
        None, "up to 24 h, set by the Message Batches API (most end within 1 h)", detail
    )
