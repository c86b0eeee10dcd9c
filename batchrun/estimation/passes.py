"""``batchrun estimate``: a job's tokens, cost and duration before it is paid for.

Three levels, each more exact and more expensive than the last:

offline (default)
    every request is built as ``run`` would build it and its input tokens are estimated
    locally (``batchrun.rows.tokens``: UTF-8 length / 5.05, calibrated on the sample jobs; median
    error 2-3%, 90th percentile 6% against the simulator's counter, and about a quarter low
    against Claude's own tokenizer, which packs English tighter). Output length is not known
    before any answer exists, so cost is a range from input alone to every answer using all
    of ``max_tokens``.
``--exact``
    input tokens of every distinct request from ``POST /v1/messages/count_tokens`` (free,
    its own rate limit: ``count_rpm`` requests a minute, spaced evenly). The API says the
    count may differ slightly from billed usage and ignores caching.
``--pilot N`` / ``--pilot 5%``
    N rows drawn at random (seeded) are run for real, into the job's own output, so the full
    run later skips them and nothing is paid twice. Their usage calibrates the input estimate
    and gives the distribution of answer lengths; ``batchrun.projection`` turns that into a
    10th-90th percentile range for the whole job (bootstrap). Its typical error shrinks like
    1/sqrt(N): a few dozen rows usually land the total within ±10-20%.

Rows already answered in the output (by a pilot or an earlier run) count at what they cost,
from their own usage, whatever the level. At every level the rows to send are counted as the
run would send them (``caching``): a row whose request repeats an earlier one is filled from
its answer for $0, and each prefix group pays one cache write and reads for the rest; the
cost is shown with that and without caching.

    est = estimate(load_config(Path("jobs/estimate_costs.toml"), {"simulate": True}), pilot="10")
    print(format_estimate(est))   # batchrun.render.estimate_text
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from array import array
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batchrun.batches.priming import PRIME_TTL
from batchrun.config.load import RunConfig
from batchrun.core.errors import ConfigError, InputError, InvalidRowError, OutputError
from batchrun.core.sync import run_sync
from batchrun.core.wording import option, said
from batchrun.cost.models import (
    assumed_thinking_tokens,
    local_input_tokens,
    model_rules,
    thinking_effort,
)
from batchrun.cost.prices import PriceTable
from batchrun.cost.projection import (
    MAX_SAMPLE,
    MID_Q,
    Observed,
    Pending,
    percentile,
    project,
)
from batchrun.engine.outcome import VIA_BATCHES, RowSettings, prepare
from batchrun.engine.pool import Pool
from batchrun.estimation.caching import CachePlan, Duplicates
from batchrun.estimation.counter import COUNT_RPM, TokenCounter
from batchrun.estimation.duration import batch_duration, estimate_duration
from batchrun.estimation.figures import Estimate, Level, ModelLine, PilotInfo, _range
from batchrun.estimation.notes import method_notes
from batchrun.formats.inputs import InputRow, read_rows
from batchrun.runs.compose import answer_lane, job_client
from batchrun.runs.fetch import fetched
from batchrun.runs.online import run_async
from batchrun.runs.plan import redo_lapsed
from batchrun.runs.preflight import check_every_row_can_be_built
from batchrun.runs.runtime import DEFAULT, ProgressView, Runtime
from batchrun.store.columns import STATUS_OK
from batchrun.store.journal import INDEX
from batchrun.store.latest import latest_batches
from batchrun.store.provenance import (
    SOURCE_COLUMNS,
    SourceRule,
    answer_source,
    effective_sources,
)
from batchrun.store.resume import job_ledger, read_state
from batchrun.store.row_state import RowState, state_of, to_send
from batchrun.store.sink import journal_path

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


# --- entry points ----------------------------------------------------------------------------


def estimate(
    config: RunConfig,
    *,
    exact: bool = False,
    pilot: str | None = None,
    seed: int = 0,
    count_rpm: int | None = None,
    runtime: Runtime | None = None,
) -> Estimate:
    """Estimate the job ``config`` describes, from sync code (a notebook's cell included:
    ``core.sync``). See ``estimate_async``."""
    return run_sync(
        estimate_async(
            config, exact=exact, pilot=pilot, seed=seed, count_rpm=count_rpm, runtime=runtime
        )
    )


async def estimate_async(
    config: RunConfig,
    *,
    exact: bool = False,
    pilot: str | None = None,
    seed: int = 0,
    count_rpm: int | None = None,
    runtime: Runtime | None = None,
    clock: Clock = time.monotonic,
) -> Estimate:
    """Tokens, cost (online and via Message Batches) and duration of a job, per model.

    ``exact`` counts input tokens with count_tokens (``count_rpm`` a minute; default
    ``COUNT_RPM``, unpaced against ``--simulate``). ``pilot`` ("25" or "5%") runs that many
    random rows (``seed``) for real into the job's output first and projects from them.
    ``runtime`` carries the seams (``runs.runtime``); ``clock`` paces count_tokens (tests).
    """
    runtime = runtime or DEFAULT
    config = fetched(config)  # a remote input and price file, brought here first
    check_every_row_can_be_built(config)  # before any pilot row is sent or count is asked
    level: Level = "pilot" if pilot else "exact" if exact else "offline"
    est = Estimate(level=level, exact=exact, input=config.input.path, output=config.output.path)
    est.batch_factor = config.cost.prices.batch_price_factor
    sample: set[int] | None = None
    if pilot:
        size_spec = pilot
        valid = valid_rows(config)
        sample = choose_sample(valid, parse_pilot(size_spec, len(valid)), seed)
        est.pilot = await _run_pilot(config, sample, size_spec, seed, runtime)
    scan = _OutputScan(config, sample, seed)
    scan.read()
    est.other_sources = scan.sources.other
    est.source = scan.sources.current
    est.max_cost = config.cost.max_cost
    ledger = job_ledger(config.output.path)
    est.job_spent_usd = ledger.spent_for(scan.sources.current) if ledger is not None else None
    counter: TokenCounter | None = None
    async with contextlib.AsyncExitStack() as stack:
        if exact:
            client = await stack.enter_async_context(job_client(config, runtime))
            rpm = (
                count_rpm
                if count_rpm is not None
                else (None if config.client.simulate else COUNT_RPM)
            )
            counter = TokenCounter(client, rpm, config.engine.max_retries, clock, runtime.sleep)
        plan = CachePlan(config.cost.prices)
        first_problem = await _input_pass(config, est, scan, counter, plan, runtime)
    if est.rows and est.invalid == est.rows:
        raise NoValidRowsError(config, est.rows, first_problem)
    if counter is not None:
        est.counted = counter.calls
        est.count_failures = counter.failures
        est.count_error = counter.first_error
    _settle_cache(config, est, scan, plan, calibrate=not exact)
    _project(config, est, scan, calibrate=not exact, seed=seed)
    learned = est.pilot.limits if est.pilot is not None else {}
    est.duration = estimate_duration(est, config.engine.limits, config.engine.concurrency, learned)
    if config.via == VIA_BATCHES:
        est.duration = batch_duration(est.duration, est.pending)
    if config.via == "auto":  # --deadline: the range between all batches and all online
        from batchrun.estimation.deadline import auto_cost

        est.auto = auto_cost(config, est)
    est.notes = method_notes(est, config)
    return est


# --- the pilot -------------------------------------------------------------------------------


def parse_pilot(spec: str, valid_rows: int) -> int:
    """Rows in the pilot: ``"25"`` is 25 rows, ``"5%"`` 5% of the valid rows (at least 1)."""
    text = spec.strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 < share <= 100:
                raise ValueError
            return min(valid_rows, max(1, math.ceil(valid_rows * share / 100)))
        count = int(text)
        if count < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"{option('pilot', spec)}: give a number of rows (25) or a percentage (5%)"
        ) from None
    return min(count, valid_rows)


def choose_sample(valid: Sequence[int], size: int, seed: int) -> set[int]:
    """``size`` of the ``valid`` row indexes, chosen at random with ``seed``."""
    return set(random.Random(seed).sample(valid, min(size, len(valid))))


def valid_rows(config: RunConfig) -> Sequence[int]:
    """Indexes of the rows a run would send (8 bytes each: inputs can have millions); a
    pilot and ``run --sample`` draw from them (``public.trial``)."""
    valid = array("q")
    rows = 0
    first_problem: InvalidRowError | None = None
    settings = RowSettings.of(config)
    for row in read_rows(config.input.path, shape=config.input.shape):
        rows += 1
        problem = prepare(row, settings).problem
        if problem is None:
            valid.append(row.index)
        elif first_problem is None:
            first_problem = problem
    if not valid:
        raise NoValidRowsError(config, rows, first_problem, "to run a pilot on")
    return valid


class NoValidRowsError(InputError):
    """No row of the input can be sent: there is nothing to estimate (exit 1)."""

    def __init__(
        self,
        config: RunConfig,
        rows: int,
        first: InvalidRowError | None,
        purpose: str = "to estimate",
    ) -> None:
        how_many = "its one row" if rows == 1 else f"any of its {rows:,} rows"
        label = "Why" if rows == 1 else "The first"
        why = f". {label}: {first}" if first is not None else ""
        super().__init__(
            f"no row of {config.input.shown} can be sent (checked {how_many}), so there "
            f"is nothing {purpose}{why}. "
            f"{said('`batchrun validate`', '`batchrun.validate(config)`')} lists every row's "
            "problems"
        )


async def _run_pilot(
    config: RunConfig,
    sample: set[int],
    requested: str,
    seed: int,
    runtime: Runtime,
) -> PilotInfo:
    # The pilot measures what rows cost: an answer cache would show it $0 rows, so it goes
    # without one (the rest of the job still uses it, and the input pass counts those rows).
    engine = dataclasses.replace(config.engine, answer_cache=None)
    summary = await run_async(dataclasses.replace(config, engine=engine), runtime, only=sample)
    limits = {
        model_key(config.cost.prices, model): limits
        for model, limits in summary.rate_limits.items()
        if limits.any
    }
    return PilotInfo(
        requested=requested,
        size=len(sample),
        sent=summary.finished,
        ok=0,  # set from the output, which also holds rows answered before
        spent_usd=summary.cost_usd,
        elapsed_s=summary.elapsed_s,
        seed=seed,
        limits=limits,
    )


# --- reading what the output already holds ---------------------------------------------------


@dataclass
class _Answer:
    model: str
    input_tokens: int
    output_tokens: int
    elapsed_ms: float | None
    cached_tokens: int = 0  # cache writes + reads: the prefix it shared, when it had one
    estimated_input: int | None = None


class _OutputScan:
    """What the job's output holds: a flag per row, totals per model, the projection sample.

    Without a pilot the sample is a seeded reservoir of the answered rows (not a random
    sample of the job, which the notes say).
    """

    COLUMNS = tuple(
        dict.fromkeys(
            (
                "status",
                "error_type",
                "model",
                "input_tokens",
                "output_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
                "cost_usd",
                "elapsed_ms",
                "request_hash",
                "duplicate_of",
                *SOURCE_COLUMNS,
            )
        )
    )

    def __init__(self, config: RunConfig, pilot: set[int] | None, seed: int) -> None:
        self.config = config
        self.pilot = pilot
        # Rows answered by another source than the one the run asks count as done only as
        # a run would count them (``store.provenance``): else they are to send.
        state = read_state(config.output.path)
        self.sources = SourceRule(
            answer_source(config.client.simulate, config.client.base_url),
            state.mixed_sources if state is not None else (),
            reask=config.resume.reask_other_source,
            keep=config.resume.keep_other_source,
        )
        self.flags = bytearray()
        self.lines: dict[str, ModelLine] = {}
        self.sample: dict[int, _Answer] = {}
        self._rng = random.Random(seed)
        self._seen_ok = 0
        self.duplicates = Duplicates()  # the answered rows' requests: a duplicate is free

    def read(self) -> None:
        """One streamed pass over the output (final file and journal)."""
        try:
            for batch in latest_batches(self.config.output.path, self.COLUMNS):
                sources = effective_sources(batch).to_pylist()
                for record, source in zip(batch.to_pylist(), sources, strict=True):
                    if self.sources.done(source):
                        self._add(record)
        except OutputError:
            if self.config.output.path.exists() or journal_path(self.config.output.path).exists():
                raise  # there is an output, and it cannot be read
            # otherwise nothing is answered yet

    def _add(self, r: Mapping[str, Any]) -> None:
        index = r[INDEX]
        if index >= len(self.flags):
            self.flags.extend(bytes(index + 1 - len(self.flags)))
        self.flags[index] = state_of(r["status"], r["error_type"])
        if r["status"] != STATUS_OK:
            return
        self.duplicates.answered(r["request_hash"])
        key = model_key(self.config.cost.prices, r["model"])
        line = self.lines.setdefault(key, ModelLine(key, self.config.cost.prices.lookup(key)))
        total_input = sum(
            r[c] or 0
            for c in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        line.answered += 1
        line.answered_input += total_input
        line.answered_output += r["output_tokens"] or 0
        if r["cost_usd"] is None:
            line.unpriced_answers += 1
        else:
            line.paid_usd += r["cost_usd"]
        if r["duplicate_of"] is not None:
            return  # filled from another row's answer: its zero tokens say nothing of answers
        cached = (r["cache_creation_input_tokens"] or 0) + (r["cache_read_input_tokens"] or 0)
        answer = _Answer(key, total_input, r["output_tokens"] or 0, r["elapsed_ms"], cached)
        self._sample(index, answer)

    def _sample(self, index: int, answer: _Answer) -> None:
        if self.pilot is not None:
            if index in self.pilot:
                self.sample[index] = answer
            return
        self._seen_ok += 1
        if len(self.sample) < MAX_SAMPLE:
            self.sample[index] = answer
            return
        slot = self._rng.randrange(self._seen_ok)
        if slot < MAX_SAMPLE:
            victim = next(iter(self.sample))
            del self.sample[victim]
            self.sample[index] = answer

    def flag(self, index: int) -> int:
        return self.flags[index] if index < len(self.flags) else 0


def model_key(prices: PriceTable, model: str | None) -> str:
    """The name a model is reported under (``PriceTable.resolve``)."""
    return prices.resolve(model) if model else "(none)"


# --- the pass over the input -----------------------------------------------------------------


async def _input_pass(
    config: RunConfig,
    est: Estimate,
    scan: _OutputScan,
    counter: TokenCounter | None,
    plan: CachePlan,
    runtime: Runtime,
) -> InvalidRowError | None:
    """Build every request, estimate (or count) its input, and sort rows into the lines;
    put the requests with a cache breakpoint into ``plan``'s prefix groups, and count the
    duplicates the run would not send.

    Returns the problem of the first invalid row (in input order), if any.
    """
    est.models = scan.lines
    groups: dict[tuple[str, int], Pending] = {}
    prices = config.cost.prices
    progress: ProgressView | None = None
    settings = RowSettings.of(config)
    lapsed_sent = redo_lapsed(config)  # the run sends expired batch rows again
    samples = config.engine.samples
    first_problem: tuple[int, InvalidRowError] | None = None
    answers = answer_lane(config, settings)

    async def visit(row: InputRow) -> None:
        nonlocal first_problem
        est.rows += 1
        work = prepare(row, settings)  # the run's own: what it would send, or why not
        body = work.body
        if body is None:
            est.invalid += 1
            if work.problem is not None and (first_problem is None or row.index < first_problem[0]):
                first_problem = (row.index, work.problem)
            return
        key = model_key(prices, body.get("model"))
        line = est.models.setdefault(key, ModelLine(key, prices.lookup(key)))
        line.rows += 1
        flag = scan.flag(row.index)
        local = local_input_tokens(body, prices)
        if flag == RowState.OK:
            answer = scan.sample.get(row.index)
            if answer is not None:
                answer.estimated_input = local
                if work.prefix_key is not None:
                    plan.answered(work.prefix_key, key, body, answer.cached_tokens)
            return
        if not to_send(flag, retry_errors=config.resume.retry_errors, redo_lapsed=lapsed_sent):
            line.failed += 1
            return
        if config.engine.dedup and scan.duplicates.is_duplicate(work.request_hash):
            line.duplicates += 1  # filled from the identical request's answer, for $0
            return
        if answers is not None and await answers.has(work):
            line.answer_cached += 1  # an earlier job's answer (--answer-cache), for $0
            return
        tokens = local
        counted = None
        if counter is not None:
            counted = await counter.count(body)
            tokens = local if counted is None else counted
        # --samples K: K requests of the row, each paid (engine.samples).
        for _ in range(samples):
            if work.prefix_key is not None:
                plan.pending(work.prefix_key, key, body, local, counted)
        line.pending += samples
        max_tokens = int(body.get("max_tokens") or 0)
        line.pending_input += tokens * samples
        line.pending_ceiling += max_tokens * samples
        rules = model_rules(body.get("model"), prices)
        line.pending_thinking += assumed_thinking_tokens(body, rules) * samples
        line.thinking_effort = thinking_effort(body, rules) or line.thinking_effort
        old = groups.get((key, max_tokens))
        groups[(key, max_tokens)] = Pending(
            key,
            max_tokens,
            (old.rows if old else 0) + samples,
            (old.estimated_input if old else 0) + tokens * samples,
        )
        if progress is not None:
            progress.advance()

    rows = read_rows(config.input.path, shape=config.input.shape)
    if counter is None:
        for row in rows:
            await visit(row)
    else:
        progress = runtime.progress(
            None,
            lambda: f"count_tokens calls={counter.calls} failed={counter.failures}",
            quiet=config.run.quiet,
        )
        try:
            await Pool[InputRow](config.engine.concurrency).run(iter(rows), visit)
        finally:
            progress.close()
    est.pending_groups = list(groups.values())
    return None if first_problem is None else first_problem[1]


def _settle_cache(
    config: RunConfig, est: Estimate, scan: _OutputScan, plan: CachePlan, *, calibrate: bool
) -> None:
    """The prefix groups' cache writes and reads into the model lines. A group no answered
    row measured has its local prefix estimate scaled, without --exact, by its model's
    billed/estimated input on the answered rows (what the projection scales input by)."""
    billed: dict[str, list[int]] = {}
    for a in scan.sample.values():
        if a.estimated_input is not None:
            pair = billed.setdefault(a.model, [0, 0])
            pair[0] += a.input_tokens
            pair[1] += a.estimated_input
    ratios = {
        model: (total / estimated if calibrate and estimated > 0 else 1.0)
        for model, (total, estimated) in billed.items()
    }
    cache = config.defaults.cache
    ttl = str(cache.control.get("ttl") or "5m") if cache is not None else "5m"
    # A Message Batches run primes its shared prefixes at the 1-hour ttl unless the job set
    # one (``batches.priming``).
    primed = None
    if config.via == VIA_BATCHES and cache is not None and "ttl" not in cache.control:
        primed = PRIME_TTL
    plan.settle(est.models, ratios, ttl, primed)


def _project(
    config: RunConfig, est: Estimate, scan: _OutputScan, *, calibrate: bool, seed: int
) -> None:
    observed = [
        Observed(a.model, a.estimated_input, a.input_tokens, a.output_tokens)
        for a in scan.sample.values()
        if a.estimated_input is not None
    ]
    latencies = [a.elapsed_ms for a in scan.sample.values() if a.elapsed_ms is not None]
    est.latency_s = sum(latencies) / len(latencies) / 1000 if latencies else None
    if est.pilot is not None:
        est.pilot.ok = len(observed)
    est.projection = project(
        observed, est.pending_groups, config.cost.prices, calibrate=calibrate, seed=seed
    )
    if est.projection is None:
        return
    est.projection_source = "pilot" if est.pilot is not None else "answered rows"
    proj = est.projection
    for name, line in est.models.items():
        if name not in proj.output_tokens:
            continue
        line.input_mid = percentile(proj.input_tokens[name], MID_Q)
        line.output_range = _range(proj.output_tokens[name])
        if name in proj.cost:
            line.cost_range = _range(proj.cost[name])
