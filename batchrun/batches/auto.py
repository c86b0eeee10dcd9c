"""``--via auto --deadline D``: the rows through Message Batches while the deadline allows,
online when it does not; each row answered once, paid once.

    summary = run(load_config(Path("jobs/estimate_costs.toml"), {"via": "auto", "deadline": "6h"}))

A duration counts from this run's start; a deadline already past is refused before anything
is sent. Under one claim on the output (no other run comes in between), in order:

1. pilot: unless an earlier run recorded the online pace (``OUTPUT.batch-times.json``), the
   first few rows (up to ``PILOT_ROWS``, at most the concurrency) are sent online, all at
   once: their time is the online lane's pace for the plan (``batches.deadline``).
2. plan: when the history says a batch cannot end before the deadline, or the rows would
   need all the time online, every row goes online from the start, and the summary says why.
3. batch lane (``batches.run`` with a ``DeadlineWatch``): rows are submitted and collected as
   ``--via batches`` does, until the fallback moment (deadline - online time of the rows
   still waiting - cancel allowance - margin). Then no more batches are created, and every
   running batch is cancelled; the lane waits for them to end and collects what they
   answered (those rows are paid: they are never sent again).
4. online lane (``batches.run.finish_online``): every row not answered — never submitted,
   cancelled, expired, and errored in a batch — is sent online, under the usual rate limits
   and dedup. Errored batch rows are sent again as ``--retry-errors`` would, so the error
   rows earlier runs of the output left are sent again too (a row the API refuses is not
   billed; one that failed on the way may be answered now).

**A cancel that has not ended when the online lane must start: we wait.** The API lets the
requests in progress finish while a batch is ``canceling`` (docs/api-facts.md §8.3), and a
row's answer may come from the batch up to its end; sending such rows online before the batch
ends could pay for them twice. So the batch lane waits for every cancelled batch to end, says
so at once when that makes it late ("... waiting for them, although the deadline may be
missed ..."), and the summary tells the deadline as missed, with the number of such batches.
A missed deadline is visible and costs time; a double payment is silent and costs money.

**Budget:** ``--max-cost`` holds for both lanes. A created batch is paid for every row it
answers and cannot be stopped as rows are answered, so the batch lane submits rows only while
the worst cases of all it submitted, at the batch price, fit what the budget leaves the job
(``batches.deadline.BatchReserve``, the online budget's worst case: ``cost.budget``); the
rest, like every row the online lane sends, is admitted by the online budget as usual,
against what the job has really spent by then (the batches' real cost is far below their
reserved worst case). When the budget stops the online lane the run exits 4, as online.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime

from batchrun.batches.deadline import (
    DEFAULT_REQUEST_S,
    BatchHistory,
    DeadlinePlan,
    DeadlineWatch,
    Pace,
    history_path,
    span,
)
from batchrun.batches.run import finish_online, run_batches_holding
from batchrun.config.load import RunConfig
from batchrun.config.settings import DEFAULT_CONCURRENCY
from batchrun.core.deadline import deadline_moment
from batchrun.core.errors import ConfigError
from batchrun.core.timestamps import utc_now
from batchrun.core.wording import option
from batchrun.live.frames import Snapshot
from batchrun.live.progress import Status
from batchrun.rows.reader import check_input_file
from batchrun.runs.claim import Claim, check_credentials, claim_output
from batchrun.runs.online import run_holding
from batchrun.runs.plan import input_rows
from batchrun.runs.preflight import check_every_row_can_be_built
from batchrun.runs.runtime import DEFAULT, ProgressView, Runtime
from batchrun.runs.summary import Deadline, Lane, RunSummary
from batchrun.store.batch_journal import running_batches
from batchrun.store.columns import INVALID_REQUEST
from batchrun.store.row_state import LAPSED_REASONS

PILOT_ROWS = 16  # rows sent online first to measure the online pace, when none is recorded


def check_auto(config: RunConfig) -> None:
    """What ``--via auto`` cannot do, refused before anything is sent (ConfigError)."""
    if config.shard is not None:
        raise ConfigError(
            f"{option('via', 'auto')} plans the whole job against its deadline: not with "
            f"{option('shard')}"
        )
    if config.engine.samples > 1:
        raise ConfigError(
            f"{option('samples', config.engine.samples)} gathers a row's samples online: "
            f"leave out {option('via', 'auto')}"
        )


def deadline_of(config: RunConfig, start: datetime) -> datetime:
    """The run's deadline as a moment (a duration counts from ``start``); ConfigError when it
    is missing or already past."""
    text = config.batches.deadline
    if text is None:
        raise ConfigError(f"{option('via', 'auto')} needs {option('deadline', 'D')}")
    try:
        moment = deadline_moment(text, start)
    except ValueError as exc:
        raise ConfigError(f"{option('deadline', 'D')}: {exc}") from None
    if moment <= start:
        raise ConfigError(
            f"{option('deadline', text)} is already past ({moment.isoformat()}): give a later "
            "time, or a duration from now (90s, 45m, 6h)"
        )
    return moment


async def run_auto_async(config: RunConfig, runtime: Runtime = DEFAULT) -> RunSummary:
    """Run the job to its end by its deadline, batches first; see the module docstring."""
    start = utc_now()
    deadline = deadline_of(config, start)
    check_auto(config)
    check_credentials(config.client, runtime.transport)
    check_input_file(config.input.path)
    check_every_row_can_be_built(_batch_lane(config))
    with claim_output(config, None) as claim:
        return await _run_claimed(config, claim, runtime, start, deadline)


def _batch_lane(config: RunConfig) -> RunConfig:
    """The job as ``--via batches`` runs it, leaving lapsed rows to the online lane."""
    batches = replace(config.batches, resubmit_expired=False, finish_online=False)
    return replace(config, via="batches", batches=batches)


def _kept(config: RunConfig) -> RunConfig:
    """The job for a lane after the first: the output the first one began is kept."""
    return replace(config, resume=replace(config.resume, overwrite=False))


class _Board:
    """What the live display adds for ``--via auto``: the time to the deadline, the lane at
    work, and what the lanes before it did."""

    def __init__(self, deadline: datetime) -> None:
        self.deadline = deadline
        self.lane = "online (pilot)"
        self.before: list[str] = []

    def lane_done(self, name: str, lane: Lane) -> None:
        self.before.append(f"{name} {lane.rows:,} rows ${lane.cost_usd:,.4f}")

    def runtime(self, runtime: Runtime) -> Runtime:
        """``runtime`` whose every display shows the deadline and the lanes."""

        def show(total: int | None, status: Status, quiet: bool) -> ProgressView:
            def with_deadline() -> Snapshot | str:
                snapshot = status()
                if isinstance(snapshot, str):
                    return snapshot
                note = f"via auto: {self.lane} lane" + (
                    f"; before it {', '.join(self.before)}" if self.before else ""
                )
                return replace(
                    snapshot,
                    deadline_left_s=(self.deadline - utc_now()).total_seconds(),
                    note=note if snapshot.note is None else f"{snapshot.note}; {note}",
                )

            return runtime.progress(total, with_deadline, quiet=quiet)

        return replace(runtime, show_progress=show)


async def _run_claimed(
    config: RunConfig, claim: Claim, runtime: Runtime, start: datetime, deadline: datetime
) -> RunSummary:
    board = _Board(deadline)
    runtime = board.runtime(runtime)
    history_file = history_path(config.output.path)
    history = BatchHistory.load(history_file)
    lane_config = config
    running = running_batches(config.output.path)  # an earlier run's: collected first
    pilot: RunSummary | None = None
    if history.request_s is None and not running:
        pilot = await _pilot(config, claim, runtime, history)
        board.lane_done("online pilot", Lane(pilot.finished, pilot.cost_usd))
        lane_config = _kept(config)
    request_s = history.request_s if history.request_s is not None else DEFAULT_REQUEST_S
    pace = Pace(request_s, _concurrency(config), _rpm(config))
    plan = DeadlinePlan.make(start, deadline, pace, history)
    rows = max((input_rows(config.input.path, parse=True, shape=config.input.shape) or 0), 0)
    rows = max(rows - (pilot.finished if pilot is not None else 0), 0)
    why_online = plan.why_online(utc_now(), rows)
    watch: DeadlineWatch | None = None
    if pilot is not None and pilot.interrupted is not None:
        lanes = _Lanes(pilot, Lane(), Lane(pilot.finished, pilot.cost_usd))
        pilot = None  # stopped before the plan: a re-run goes on
    elif why_online is None or running:
        watch = DeadlineWatch(plan, history, rows=rows)
        lanes = await _through_batches(lane_config, claim, runtime, watch, board)
    else:
        board.lane = "online"
        alone = await run_holding(replace(lane_config, via="online"), claim, runtime)
        lanes = _Lanes(alone, Lane(), Lane(alone.finished, alone.cost_usd), alone.elapsed_s)
    if lanes.online.rows >= _concurrency(config) and lanes.online_s > 0:
        # The pace the online lane kept, for the next plan (rate limits and retries in it).
        history.request_s = lanes.online_s * _concurrency(config) / lanes.online.rows
    summary = lanes.summary
    online = lanes.online
    if pilot is not None:
        _add_pilot(summary, pilot)
        online = Lane(online.rows + pilot.finished, online.cost_usd + pilot.cost_usd)
    history.save(history_file)
    summary.via = "auto"
    summary.deadline = Deadline(
        at=deadline,
        lanes={"batches": lanes.batches, "online": online},
        left_s=(deadline - utc_now()).total_seconds(),
        plan=_plan_text(why_online, watch),
        late_cancels=watch.late_cancels if watch is not None else 0,
    )
    return summary


@dataclass(frozen=True)
class _Lanes:
    """What the lanes after the pilot did: the job's summary so far, each lane's share, and
    the seconds the online lane took (its pace, for the next plan)."""

    summary: RunSummary
    batches: Lane
    online: Lane
    online_s: float = 0.0


async def _pilot(
    config: RunConfig, claim: Claim, runtime: Runtime, history: BatchHistory
) -> RunSummary:
    """The first rows online, all at once: the slowest of them is about one request's time,
    which the history keeps as the online pace."""
    rows = min(PILOT_ROWS, _concurrency(config))
    pilot = await run_holding(replace(config, via="online"), claim, runtime, only=range(rows))
    if pilot.finished:
        history.request_s = pilot.elapsed_s * min(rows, pilot.finished) / pilot.finished
    return pilot


async def _through_batches(
    config: RunConfig, claim: Claim, runtime: Runtime, watch: DeadlineWatch, board: _Board
) -> _Lanes:
    """The batch lane under ``watch``, then online what it left (unless it was stopped)."""
    board.lane = "batches"
    summary = await run_batches_holding(_batch_lane(config), claim, runtime, watch=watch)
    batch_cost = summary.cost_usd
    retry = _errored_in_batches(summary)
    redone = {*LAPSED_REASONS, *(summary.error_types if retry else ())}
    batch_rows = summary.finished - sum(summary.error_types.get(k, 0) for k in redone)
    batches = Lane(batch_rows, batch_cost)
    board.lane_done("batches", batches)
    if summary.interrupted is not None:
        return _Lanes(summary, batches, Lane())  # a re-run collects, then goes online
    board.lane = "online"
    started = time.perf_counter()
    summary = await finish_online(
        _kept(_batch_lane(config)), summary, claim, runtime, retry_errors=retry
    )
    online = Lane(summary.finished - batch_rows, summary.cost_usd - batch_cost)
    return _Lanes(summary, batches, online, time.perf_counter() - started)


def _add_pilot(summary: RunSummary, pilot: RunSummary) -> None:
    """The pilot's counts into the job's summary; the later lanes' state (limits,
    concurrency) stays, and the pilot's spend is this run's, not the job's before it."""
    limits, chosen = summary.rate_limits, summary.concurrency_chosen
    summary.add(pilot)
    summary.rate_limits = limits or summary.rate_limits
    summary.concurrency_chosen = chosen if chosen is not None else summary.concurrency_chosen
    summary.skipped = max(summary.skipped - pilot.finished, 0)
    summary.job_cost_before = pilot.job_cost_before


def _errored_in_batches(summary: RunSummary) -> bool:
    """Whether the batch lane left rows errored (not invalid, not lapsed): they go online."""
    return any(
        kind not in LAPSED_REASONS and kind != INVALID_REQUEST and n > 0
        for kind, n in summary.error_types.items()
    )


def _concurrency(config: RunConfig) -> int:
    """The requests the online lane keeps in flight, for the plan: with ``--concurrency
    auto`` the default, as the tuner starts there and may not climb."""
    return DEFAULT_CONCURRENCY if config.engine.concurrency_auto else config.engine.concurrency


def _rpm(config: RunConfig) -> int | None:
    """The requests-per-minute limit the job was given for its model, if any."""
    return config.engine.limits.for_model(config.defaults.model or "").rpm


def _plan_text(why_online: str | None, watch: DeadlineWatch | None) -> str | None:
    """What the summary says of the plan: why every row went online, or when the rows left
    the batches."""
    if why_online is not None and (watch is None or watch.fell_back_at is None):
        return f"every row went online from the start: {why_online}"
    if watch is not None and watch.fell_back_at is not None:
        left = (watch.plan.deadline - watch.fell_back_at).total_seconds()
        return (
            f"the rows left the batches {span(max(left, 0))} before the deadline: running "
            "batches were cancelled, what they answered kept, the rest sent online"
        )
    return None
