"""How each figure of an estimate was made and how far to trust it (``Estimate.notes``)."""

from __future__ import annotations

from batchrun.config.load import RunConfig
from batchrun.estimation.figures import Estimate


def method_notes(est: Estimate, config: RunConfig) -> list[str]:
    """How each figure was made and how far to trust it, one line each."""
    notes = []
    if est.exact:
        notes.append(
            "input: counted by POST /v1/messages/count_tokens for each distinct request "
            f"({est.counted:,} calls); the API says billed usage may differ slightly, and it "
            "ignores caching"
        )
        if est.count_failures:
            notes.append(
                f"count_tokens refused {est.count_failures:,} request(s); those use the local "
                f"estimate (first error: {est.count_error})"
            )
    else:
        notes.append(
            "input: local estimate (UTF-8 length / 5.05 per token, calibrated on the sample "
            "jobs): typically within 2-6% of the simulator's count, and about a quarter low "
            "against Claude's tokenizer; --exact counts it with the API"
        )
    if est.projection is not None:
        proj = est.projection
        if est.projection_source == "pilot":
            assert est.pilot is not None
            notes.append(
                f"output: measured on the pilot's {proj.sample:,} answered rows (random, seed "
                f"{est.pilot.seed}); range = 10th-90th percentile of {proj.replicates:,} "
                "bootstrap projections; its error shrinks like 1/sqrt(pilot size)"
            )
            if not est.exact:
                notes.append(
                    "input of the rows to send: local estimate × the pilot's billed/estimated ratio"
                )
        else:
            notes.append(
                f"output: from {proj.sample:,} rows already answered in the output, which may "
                "not be a random sample of the job; --pilot N draws one"
            )
        if proj.pooled_models:
            notes.append(
                "no answers yet for "
                + ", ".join(sorted(proj.pooled_models))
                + ": their output length is taken from the other models' answers"
            )
        notes.append("caching of the rows to send is not modelled: input at the uncached rate")
    elif est.pending:
        notes.append(
            "output: unknown before any row is answered, so cost is shown from input alone "
            "to the max_tokens ceiling; --pilot N measures it"
        )
    if est.unknown_models:
        notes.append(
            "no price for "
            + ", ".join(est.unknown_models)
            + ": their cost is unknown and left out of the totals (add them with --prices FILE)"
        )
    notes.append(
        f"batch: Message Batches bill every token at {float(est.batch_factor):.0%} of the "
        "standard price; rows already answered count at what they cost"
    )
    if config.prices.sources:
        notes.append("prices: " + ", ".join(config.prices.sources))
    return notes
