"""How each figure of an estimate was made and how far to trust it (``Estimate.notes``)."""

from __future__ import annotations

from batchrun.config.load import RunConfig
from batchrun.core.wording import option
from batchrun.cost.models import THINKING_TOKENS_ASSUMED, thinking_room_warning, tokenizer_factor
from batchrun.engine.outcome import VIA_BATCHES
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
            f"against Claude's tokenizer; {option('exact', True)} counts it with the API"
        )
        scaled = _scaled_models(est, config)
        if scaled:
            notes.append(
                "input: "
                + ", ".join(f"{name} ×{factor:g}" for name, factor in scaled)
                + ": the newer tokenizer (Claude 4.7 on) counts about 30% more tokens for the "
                "same text, so the local estimate is scaled by the model table's factor"
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
                f"not be a random sample of the job; {option('pilot', 'N')} draws one"
            )
        if proj.pooled_models:
            notes.append(
                "no answers yet for "
                + ", ".join(sorted(proj.pooled_models))
                + ": their output length is taken from the other models' answers"
            )
    elif est.pending:
        notes.append(
            "output: unknown before any row is answered, so cost is shown from input alone "
            f"to the max_tokens ceiling; {option('pilot', 'N')} measures it"
        )
    thinking = sorted(name for name, m in est.models.items() if m.pending_thinking)
    if thinking:
        verb = "thinks" if len(thinking) == 1 else "think"
        notes.append(
            f"thinking: {', '.join(thinking)} {verb} before answering, and thinking is paid as "
            "output: batchrun assumes "
            + ", ".join(f"{t:,} tokens at {e}" for e, t in THINKING_TOKENS_ASSUMED.items())
            + " per answer (at most max_tokens; its assumption, not the API's), counted in the "
            f"low end; {option('pilot', 'N')} measures it"
        )
    room = thinking_room_warning(config.defaults, config.cost.prices)
    if room is not None:
        notes.append(room.removeprefix("batchrun: "))
    notes.extend(_cache_notes(est, config))
    if est.unknown_models:
        notes.append(
            "no price for "
            + ", ".join(est.unknown_models)
            + ": their cost is unknown and left out of the totals (add them with "
            + f"{option('prices', 'FILE')})"
        )
    notes.append(
        f"batch: Message Batches bill every token at {float(est.batch_factor):.0%} of the "
        "standard price; rows already answered count at what they cost"
    )
    if config.cost.prices.sources:
        notes.append("prices: " + ", ".join(config.cost.prices.sources))
    return notes


def _cache_notes(est: Estimate, config: RunConfig) -> list[str]:
    """How the cache writes, reads and duplicates were counted."""
    notes = []
    samples = config.engine.samples
    if samples > 1:
        notes.append(
            f"samples: {option('samples', samples)} asks each row {samples} times, each request "
            f"paid: the {est.pending:,} to send are requests ({est.pending // samples:,} rows "
            f"× {samples}), and {option('max_cost')} reserves for each"
        )
    if est.duplicates:
        notes.append(
            f"duplicates: {est.duplicates:,} rows to send repeat an earlier row's request "
            "exactly (or one answered in the output): the run sends it once and fills them "
            f"from its answer for $0 ({option('dedup', False)} sends them all)"
        )
    if est.answer_cached:
        notes.append(
            f"answer cache: {est.answer_cached:,} rows to send were answered by an earlier job "
            f"({option('answer_cache', 'DIR')}): the run fills them from those answers for $0"
        )
    groups = sum(m.cache_groups for m in est.models.values())
    if groups:
        measured = (
            "its size as the pilot's usage billed it"
            if est.pilot is not None
            else "its size counted via the rows' count_tokens ratio"
            if est.exact
            else "its size estimated locally, as batchrun estimates it to place the breakpoint"
        )
        notes.append(
            f"caching: {groups:,} shared prefix group(s); the run sends each group's first "
            "request alone, which writes the prefix (5 m entry 1.25x, 1 h entry 2x the input "
            f"price), and the rest read it (0.1x); {measured}. The 'without caching' figures "
            f"price every input token plainly ({option('cache', 'off')})"
        )
        if est.pilot is not None:
            notes.append(
                "caching: the pilot paid its groups' first writes; the rest of the run is "
                "counted with one more write per group (the entry may have expired by then) "
                "and reads for the rest"
            )
        if config.via == VIA_BATCHES:
            notes.append(
                "caching via batches: the run primes each group it sends more than once (its "
                "first row alone in a batch of its own, ended before the batches that read it; "
                f"their marks at the 1 h ttl unless {option('cache_ttl')} is set), and Message "
                "Batches honour cache breakpoints best-effort, so the cached batch figure is "
                "the best case"
            )
    elif config.defaults.cache is not None and est.pending:
        notes.append(
            "caching: no shared prefix reaches the model's minimum cacheable length, so no "
            "breakpoint is placed and every input token is priced plainly"
        )
    elif est.pending:
        notes.append(
            f"caching: not placed by batchrun ({option('cache', 'off')} or 'system'): input "
            f"priced at the plain rate; the writes and reads of {option('cache', 'system')}'s "
            "or a row's own marks are not modelled"
        )
    return notes


def _scaled_models(est: Estimate, config: RunConfig) -> list[tuple[str, float]]:
    """The estimate's models whose tokenizer factor is not 1, with it, by name."""
    factors = ((name, tokenizer_factor(name, config.cost.prices)) for name in sorted(est.models))
    return [(name, factor) for name, factor in factors if factor != 1.0]
