"""``batchrun estimate``: a job's tokens, cost and duration before it is paid for.

Three levels, each more exact and more expensive than the last:

offline (default)
    every request is built as ``run`` would build it and its input tokens are estimated
    locally (``batchrun.tokens``: UTF-8 length / 5.05, calibrated on the sample jobs; median
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
from their own usage, whatever the level.

    est = estimate(load_config(Path("jobs/estimate_costs.toml"), {"simulate": True}), pilot="10")
    print(format_estimate(est))   # batchrun.estimate_text
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from array import array
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Literal

import httpx

from batchrun.config.load import RunConfig
from batchrun.core.errors import ConfigError, InvalidRowError, OutputError
from batchrun.cost.prices import PER_MILLION, ModelPrice, PriceTable
from batchrun.cost.projection import (
    HIGH_Q,
    LOW_Q,
    MAX_SAMPLE,
    MID_Q,
    Observed,
    Pending,
    Projection,
    percentile,
    project,
)
from batchrun.drivers.progress import Progress
from batchrun.engine.outcome import VIA_BATCHES
from batchrun.engine.pool import Pool
from batchrun.estimation.counter import COUNT_RPM, TokenCounter
from batchrun.limits.ratelimit import Limits, LimitsConfig
from batchrun.reporting.report import duration_s, latest_batches
from batchrun.rows.reader import InputRow, read_rows
from batchrun.rows.request import PreparedRequest, prepare_request
from batchrun.rows.tokens import estimate_input_tokens
from batchrun.store.columns import INVALID_REQUEST, STATUS_OK
from batchrun.store.sink import journal_path

Level = Literal["offline", "exact", "pilot"]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


# --- results -------------------------------------------------------------------------------


@dataclass
class ModelLine:
    """One model's part of the job. Ranges are (10th percentile, median, 90th percentile)."""

    model: str
    price: ModelPrice | None
    rows: int = 0  # valid input rows for this model
    answered: int = 0  # answered (ok) in the output already
    failed: int = 0  # in error in the output and not re-sent (no --retry-errors)
    pending: int = 0  # to send
    answered_input: int = 0
    answered_output: int = 0
    paid_usd: float = 0.0  # what the answered rows cost
    unpriced_answers: int = 0
    pending_input: int = 0  # estimated or counted input of the pending rows
    pending_ceiling: int = 0  # sum of their max_tokens
    input_mid: float | None = None  # pending input after calibration (pilot)
    output_range: tuple[float, float, float] | None = None  # pending rows' output
    cost_range: tuple[float, float, float] | None = None  # pending rows, online

    @property
    def input_tokens(self) -> int:
        pending = self.input_mid if self.input_mid is not None else self.pending_input
        return self.answered_input + round(pending)

    @property
    def output_ceiling(self) -> int:
        return self.answered_output + self.pending_ceiling

    def output_expected(self) -> tuple[int, int, int] | None:
        if self.pending and self.output_range is None:
            return None
        low, mid, high = self.output_range or (0.0, 0.0, 0.0)
        base = self.answered_output
        return base + round(low), base + round(mid), base + round(high)

    def cost_floor(self, batch_factor: Decimal = Decimal(1)) -> float | None:
        """Answered rows plus the pending rows' input alone: no answer can cost less."""
        pending = self._pending_cost(output=0)
        return None if pending is None else self.paid_usd + pending * float(batch_factor)

    def cost_ceiling(self, batch_factor: Decimal = Decimal(1)) -> float | None:
        """Every pending answer using all of max_tokens."""
        pending = self._pending_cost(output=self.pending_ceiling)
        return None if pending is None else self.paid_usd + pending * float(batch_factor)

    def cost_expected(self, batch_factor: Decimal = Decimal(1)) -> tuple[float, ...] | None:
        if self.price is None or (self.pending and self.cost_range is None):
            return None
        f = float(batch_factor)
        return tuple(self.paid_usd + c * f for c in self.cost_range or (0.0, 0.0, 0.0))

    def _pending_cost(self, output: int) -> float | None:
        if self.price is None:
            return None
        tokens = self.input_mid if self.input_mid is not None else self.pending_input
        per_row = int(tokens / self.pending) if self.pending else 0
        rates = self.price.rates_for(per_row)
        return float((rates.input * round(tokens) + rates.output * output) / PER_MILLION)


@dataclass
class PilotInfo:
    """What the pilot sample did."""

    requested: str
    size: int  # rows in the sample
    sent: int  # sent by this pilot (the rest were answered before)
    ok: int  # sample rows answered ok (used for the projection)
    spent_usd: float  # what this pilot's requests cost
    elapsed_s: float
    seed: int
    # Limits in force per model at the pilot's end: configured, or learned from the
    # anthropic-ratelimit-* response headers.
    limits: dict[str, Limits] = field(default_factory=dict)


@dataclass
class Duration:
    """How long sending the pending rows would take, and what sets the pace."""

    seconds: float | None
    bound: str
    detail: list[str] = field(default_factory=list)


@dataclass
class Estimate:
    """Everything ``batchrun estimate`` reports; ``to_dict`` for ``--json``."""

    level: Level
    exact: bool
    input: Path
    output: Path
    rows: int = 0
    invalid: int = 0
    models: dict[str, ModelLine] = field(default_factory=dict)
    batch_factor: Decimal = Decimal("0.5")
    pilot: PilotInfo | None = None
    projection: Projection | None = None
    projection_source: str = ""  # "pilot" | "answered rows" | ""
    counted: int = 0  # count_tokens calls made (--exact)
    count_failures: int = 0
    count_error: str = ""
    latency_s: float | None = None  # mean time per answered request (elapsed)
    duration: Duration = field(default_factory=lambda: Duration(None, "unknown"))
    notes: list[str] = field(default_factory=list)
    pending_groups: list[Pending] = field(default_factory=list, repr=False)

    @property
    def answered(self) -> int:
        return sum(m.answered for m in self.models.values())

    @property
    def pending(self) -> int:
        return sum(m.pending for m in self.models.values())

    @property
    def paid_usd(self) -> float:
        return sum(m.paid_usd for m in self.models.values())

    @property
    def unknown_models(self) -> list[str]:
        return sorted(name for name, m in self.models.items() if m.price is None)

    def total_cost(self, batch: bool = False) -> tuple[float, float, float] | None:
        """The job's cost range over priced models (replicates summed, not percentiles)."""
        factor = float(self.batch_factor) if batch else 1.0
        if self.pending == 0:
            return (self.paid_usd,) * 3
        if self.projection is None:
            return None
        totals = [self.paid_usd + c * factor for c in self.projection.total_cost]
        return _range(totals)

    def total_output(self) -> tuple[int, int, int] | None:
        answered = sum(m.answered_output for m in self.models.values())
        if self.pending == 0:
            return (answered,) * 3
        if self.projection is None:
            return None
        low, mid, high = _range(self.projection.total_output)
        return answered + round(low), answered + round(mid), answered + round(high)

    def total_floor(self, batch: bool = False) -> float:
        factor = self.batch_factor if batch else Decimal(1)
        return sum(m.cost_floor(factor) or 0.0 for m in self.models.values())

    def total_ceiling(self, batch: bool = False) -> float:
        factor = self.batch_factor if batch else Decimal(1)
        return sum(m.cost_ceiling(factor) or 0.0 for m in self.models.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data for scripts."""

        def rng(values: tuple[float, ...] | None, digits: int = 6) -> Any:
            if values is None:
                return None
            low, mid, high = values
            return {
                "p10": round(low, digits),
                "p50": round(mid, digits),
                "p90": round(high, digits),
            }

        models = {}
        for name, m in self.models.items():
            models[name] = {
                "name": m.price.name if m.price else None,
                "priced": m.price is not None,
                "rows": m.rows,
                "answered": m.answered,
                "failed_not_resent": m.failed,
                "pending": m.pending,
                "input_tokens": m.input_tokens,
                "output_tokens_expected": rng(_floats(m.output_expected()), 0),
                "output_tokens_ceiling": m.output_ceiling,
                "paid_usd": round(m.paid_usd, 6),
                "cost_usd_online": rng(m.cost_expected()),
                "cost_usd_batch": rng(m.cost_expected(self.batch_factor)),
                "cost_usd_floor_online": _round(m.cost_floor()),
                "cost_usd_floor_batch": _round(m.cost_floor(self.batch_factor)),
                "cost_usd_ceiling_online": _round(m.cost_ceiling()),
                "cost_usd_ceiling_batch": _round(m.cost_ceiling(self.batch_factor)),
            }
        return {
            "level": self.level,
            "exact_input": self.exact,
            "input": str(self.input),
            "output": str(self.output),
            "rows": self.rows,
            "invalid_rows": self.invalid,
            "answered_rows": self.answered,
            "pending_rows": self.pending,
            "models": models,
            "total": {
                "input_tokens": sum(m.input_tokens for m in self.models.values()),
                "output_tokens_expected": rng(_floats(self.total_output()), 0),
                "output_tokens_ceiling": sum(m.output_ceiling for m in self.models.values()),
                "paid_usd": round(self.paid_usd, 6),
                "cost_usd_online": rng(self.total_cost()),
                "cost_usd_batch": rng(self.total_cost(batch=True)),
                "cost_usd_floor_online": round(self.total_floor(), 6),
                "cost_usd_floor_batch": round(self.total_floor(batch=True), 6),
                "cost_usd_ceiling_online": round(self.total_ceiling(), 6),
                "cost_usd_ceiling_batch": round(self.total_ceiling(batch=True), 6),
                "unpriced_models": self.unknown_models,
            },
            "pilot": None if self.pilot is None else vars(self.pilot),
            "projection": None
            if self.projection is None
            else {
                "source": self.projection_source,
                "sample_rows": self.projection.sample,
                "replicates": self.projection.replicates,
                "models_without_own_answers": sorted(self.projection.pooled_models),
            },
            "count_tokens": {
                "calls": self.counted,
                "failures": self.count_failures,
                "first_error": self.count_error or None,
            },
            "duration": {
                "seconds": _round(self.duration.seconds, 1),
                "bound": self.duration.bound,
                "detail": self.duration.detail,
            },
            "mean_latency_s": _round(self.latency_s, 3),
            "notes": self.notes,
        }


def _range(values: list[float]) -> tuple[float, float, float]:
    return percentile(values, LOW_Q), percentile(values, MID_Q), percentile(values, HIGH_Q)


def _floats(values: tuple[int, int, int] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


# --- entry points ----------------------------------------------------------------------------


def estimate(
    config: RunConfig,
    *,
    exact: bool = False,
    pilot: str | None = None,
    seed: int = 0,
    count_rpm: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    progress_stream: IO[str] | None = None,
) -> Estimate:
    """Estimate the job ``config`` describes. See ``estimate_async``."""
    return asyncio.run(
        estimate_async(
            config,
            exact=exact,
            pilot=pilot,
            seed=seed,
            count_rpm=count_rpm,
            transport=transport,
            progress_stream=progress_stream,
        )
    )


async def estimate_async(
    config: RunConfig,
    *,
    exact: bool = False,
    pilot: str | None = None,
    seed: int = 0,
    count_rpm: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    progress_stream: IO[str] | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> Estimate:
    """Tokens, cost (online and via Message Batches) and duration of a job, per model.

    ``exact`` counts input tokens with count_tokens (``count_rpm`` a minute; default
    ``COUNT_RPM``, unpaced against ``--simulate``). ``pilot`` ("25" or "5%") runs that many
    random rows (``seed``) for real into the job's output first and projects from them.
    ``transport``, ``clock`` and ``sleep`` are seams for tests.
    """
    level: Level = "pilot" if pilot else "exact" if exact else "offline"
    est = Estimate(level=level, exact=exact, input=config.input, output=config.output)
    est.batch_factor = config.prices.batch_price_factor
    sample: set[int] | None = None
    if pilot:
        size_spec = pilot
        valid = _valid_rows(config)
        sample = choose_sample(valid, parse_pilot(size_spec, len(valid)), seed)
        est.pilot = await _run_pilot(config, sample, size_spec, seed, transport, progress_stream)
    scan = _OutputScan(config, sample, seed)
    scan.read()
    counter: TokenCounter | None = None
    async with contextlib.AsyncExitStack() as stack:
        if exact:
            from batchrun.drivers.online import (
                open_client,
            )  # the runner imports much; only --exact needs it

            client = await stack.enter_async_context(open_client(config, transport))
            rpm = count_rpm if count_rpm is not None else (None if config.simulate else COUNT_RPM)
            counter = TokenCounter(client, rpm, config.max_retries, clock, sleep)
        await _input_pass(config, est, scan, counter, progress_stream)
    if counter is not None:
        est.counted = counter.calls
        est.count_failures = counter.failures
        est.count_error = counter.first_error
    _project(config, est, scan, calibrate=not exact, seed=seed)
    learned = est.pilot.limits if est.pilot is not None else {}
    est.duration = estimate_duration(est, config.limits, config.concurrency, learned)
    if config.via == VIA_BATCHES:
        est.duration = batch_duration(est.duration, est.pending)
    from batchrun.render.estimate import method_notes  # the text module imports this one

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
            f"--pilot {spec!r}: give a number of rows (25) or a percentage (5%)"
        ) from None
    return min(count, valid_rows)


def choose_sample(valid: Sequence[int], size: int, seed: int) -> set[int]:
    """``size`` of the ``valid`` row indexes, chosen at random with ``seed``."""
    return set(random.Random(seed).sample(valid, min(size, len(valid))))


def _valid_rows(config: RunConfig) -> Sequence[int]:
    """Indexes of the rows a run would send (8 bytes each: inputs can have millions)."""
    valid = array("q", (r.index for r in read_rows(config.input) if _prepared(r, config)))
    if not valid:
        raise ConfigError(f"{config.input}: no valid rows to run a pilot on")
    return valid


async def _run_pilot(
    config: RunConfig,
    sample: set[int],
    requested: str,
    seed: int,
    transport: httpx.AsyncBaseTransport | None,
    progress_stream: IO[str] | None,
) -> PilotInfo:
    from batchrun.drivers.online import run_async  # the runner imports much; only a pilot needs it

    summary = await run_async(
        config, transport=transport, progress_stream=progress_stream, only=sample
    )
    limits = {
        model_key(config.prices, model): limits
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
    estimated_input: int | None = None


class _OutputScan:
    """What the job's output holds: a flag per row, totals per model, the projection sample.

    Without a pilot the sample is a seeded reservoir of the answered rows (not a random
    sample of the job, which the notes say).
    """

    OK, ERROR = 1, 2
    COLUMNS = (
        "status",
        "error_type",
        "model",
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cost_usd",
        "elapsed_ms",
    )

    def __init__(self, config: RunConfig, pilot: set[int] | None, seed: int) -> None:
        self.config = config
        self.pilot = pilot
        self.flags = bytearray()
        self.lines: dict[str, ModelLine] = {}
        self.sample: dict[int, _Answer] = {}
        self._rng = random.Random(seed)
        self._seen_ok = 0

    def read(self) -> None:
        """One streamed pass over the output (final file and journal)."""
        try:
            for batch in latest_batches(self.config.output, self.COLUMNS):
                for record in batch.to_pylist():
                    self._add(record)
        except OutputError:
            if self.config.output.exists() or journal_path(self.config.output).exists():
                raise  # there is an output, and it cannot be read
            # otherwise nothing is answered yet

    def _add(self, r: Mapping[str, Any]) -> None:
        index = r["_index"]
        if index >= len(self.flags):
            self.flags.extend(bytes(index + 1 - len(self.flags)))
        ok = r["status"] == STATUS_OK
        if not ok:
            # A row never sent (invalid then) is checked, and sent if valid, by every run.
            self.flags[index] = 0 if r["error_type"] == INVALID_REQUEST else self.ERROR
            return
        self.flags[index] = self.OK
        key = model_key(self.config.prices, r["model"])
        line = self.lines.setdefault(key, ModelLine(key, self.config.prices.lookup(key)))
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
        answer = _Answer(key, total_input, r["output_tokens"] or 0, r["elapsed_ms"])
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
    """The name a model is reported under: its price-table key, else its id without a date."""
    price = prices.lookup(model)
    if price is not None:
        return price.model
    text = model or "(none)"
    head, _, tail = text.rpartition("-")
    return head if head and len(tail) == 8 and tail.isdigit() else text


# --- the pass over the input -----------------------------------------------------------------


def _prepared(row: InputRow, config: RunConfig) -> PreparedRequest | None:
    if row.problem is not None:
        return None
    try:
        return prepare_request(row.fields, config.defaults, base_dir=config.input.parent)
    except InvalidRowError:
        return None


async def _input_pass(
    config: RunConfig,
    est: Estimate,
    scan: _OutputScan,
    counter: TokenCounter | None,
    progress_stream: IO[str] | None,
) -> None:
    """Build every request, estimate (or count) its input, and sort rows into the lines."""
    est.models = scan.lines
    groups: dict[tuple[str, int], Pending] = {}
    prices = config.prices
    progress: Progress | None = None

    async def visit(row: InputRow) -> None:
        est.rows += 1
        prepared = _prepared(row, config)
        if prepared is None:
            est.invalid += 1
            return
        body = prepared.body
        key = model_key(prices, body.get("model"))
        line = est.models.setdefault(key, ModelLine(key, prices.lookup(key)))
        line.rows += 1
        flag = scan.flag(row.index)
        local = estimate_input_tokens(body)
        if flag == _OutputScan.OK:
            answer = scan.sample.get(row.index)
            if answer is not None:
                answer.estimated_input = local
            return
        if flag == _OutputScan.ERROR and not config.retry_errors:
            line.failed += 1
            return
        tokens = local
        if counter is not None:
            counted = await counter.count(body)
            tokens = local if counted is None else counted
        line.pending += 1
        max_tokens = int(body.get("max_tokens") or 0)
        line.pending_input += tokens
        line.pending_ceiling += max_tokens
        old = groups.get((key, max_tokens))
        groups[(key, max_tokens)] = Pending(
            key,
            max_tokens,
            (old.rows if old else 0) + 1,
            (old.estimated_input if old else 0) + tokens,
        )
        if progress is not None:
            progress.advance()

    rows = read_rows(config.input)
    if counter is None:
        for row in rows:
            await visit(row)
    else:
        progress = Progress(
            None,
            lambda: f"count_tokens calls={counter.calls} failed={counter.failures}",
            quiet=config.quiet,
            stream=progress_stream,
        )
        try:
            await Pool[InputRow](config.concurrency).run(iter(rows), visit)
        finally:
            progress.close()
    est.pending_groups = list(groups.values())


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
        observed, est.pending_groups, config.prices, calibrate=calibrate, seed=seed
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
    """The wait of a ``--via batches`` run: the API's, not this machine's (API-FACTS §7).

    Message Batches are processed when the API has room, so concurrency and rate limits do not
    set the pace; the online figure stays as a detail, for comparison.
    """
    if pending == 0:
        return online
    detail = [
        "a request not done 24 h after its batch was created expires "
        "(--resubmit-expired or --finish-online sends it again)"
    ]
    if online.seconds is not None:
        detail.append(f"online: about {duration_s(online.seconds)}, set by {online.bound}")
    return Duration(
        None, "up to 24 h, set by the Message Batches API (most end within 1 h)", detail
    )
