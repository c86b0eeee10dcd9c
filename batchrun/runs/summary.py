"""``RunSummary``: what one run did, returned by ``batchrun.run`` and printed by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from batchrun.cost.budget import projected_total
from batchrun.engine.tally import RowTally
from batchrun.live.frames import Snapshot
from batchrun.store.provenance import SourceRule
from batchrun.store.sink import FinalCounts


@dataclass(kw_only=True)
class Trial:
    """A run of a few rows into the job's own output (``--limit N`` or ``--sample N``), and
    what it says of the whole job (``public.trial``)."""

    limit: int | None = None  # the first N rows, or
    sample: int | None = None  # N rows drawn at random with ``seed``
    seed: int = 0
    rows: int = 0  # rows in the trial (fewer than asked when the job has fewer)
    job_rows: int = 0  # the job's input rows
    pending: int | None = None  # rows the run without it would still do (sent, or filled)
    # What the whole job would cost (10th, 50th, 90th percentile): what is paid, plus the
    # rows to send projected from the answers so far (``estimation``); None: nothing to
    # project from (no answer yet, or no price for the model).
    job_cost_usd: tuple[float, float, float] | None = None
    projected_from: int = 0  # answers the projection drew on


@dataclass
class Lane:
    """What one lane of ``--via auto`` did: rows answered or failed there, and their cost."""

    rows: int = 0
    cost_usd: float = 0.0


@dataclass(kw_only=True)
class Deadline:
    """``--via auto --deadline``: the moment, each lane's share, and how it went."""

    at: datetime
    lanes: dict[str, Lane] = field(default_factory=dict)  # "batches", "online"
    left_s: float | None = None  # at the end: seconds to spare (negative: missed by that)
    plan: str | None = None  # why rows went online: all from the start, or at the fallback
    late_cancels: int = 0  # cancelled batches that ended after the online lane had to start

    @property
    def met(self) -> bool | None:
        return None if self.left_s is None else self.left_s >= 0


@dataclass(kw_only=True)
class RunSummary(RowTally):
    """What a run did: this run's rows and tokens (``RowTally``), and the state of the output."""

    input: Path
    output: Path
    total_rows: int = 0
    skipped: int = 0  # done by an earlier run (ok, or error without --retry-errors)
    final: FinalCounts | None = None  # set when the final dataset was written
    partial: FinalCounts | None = None  # set when a stopped run wrote the rows it finished
    interrupted: str | None = None  # the signal that stopped the run early
    todo: int | None = None  # rows this run set out to process, when known
    max_cost: float | None = None  # --max-cost
    budget_stop: str | None = None  # why the budget stopped admitting rows
    budget_refused_usd: float | None = None  # the worst case of the request that did not fit
    via: str = "online"  # or "batches" (batches.run), "auto" (batches.auto)
    batches_created: int = 0  # Message Batches this run created
    batches_collected: int = 0  # ... and whose results it wrote
    batches_running: list[str] = field(default_factory=list)  # left running when it stopped
    # Where this run's answers come from, and the rows of other sources it kept or asked
    # again (``store.provenance``); the sources the output mixes (kept deliberately).
    source: str | None = None
    sources_kept: dict[str, int] = field(default_factory=dict)
    sources_reasked: dict[str, int] = field(default_factory=dict)
    mixed_sources: list[str] = field(default_factory=list)
    # What the job spent before this run and in all (``store.spend``), on the same kind of
    # source (money, or the simulator's pretend prices); None: not known (no output kept).
    job_cost_before: float | None = None
    job_cost_usd: float | None = None
    trial: Trial | None = None  # --limit / --sample: a trial of a few rows
    deadline: Deadline | None = None  # --via auto --deadline (``batches.auto``)

    def took_over(self, sources: SourceRule, spent: float) -> None:
        """Note what the run takes over from earlier ones (``runs.resume.load_prior``): which
        sources' answers count, and what the job spent before."""
        self.source = sources.current
        self.sources_kept = sources.kept
        self.sources_reasked = sources.reasked
        self.mixed_sources = sources.mixed_after()
        self.job_cost_before = spent
        self.job_cost_usd = spent

    @property
    def run_budget(self) -> float | None:
        """What ``--max-cost`` leaves for this run: the cap less what the job spent before."""
        if self.max_cost is None:
            return None
        return max(self.max_cost - (self.job_cost_before or 0.0), 0.0)

    @property
    def rows_left(self) -> int:
        """Input rows with no record yet (a re-run sends them)."""
        return max(self.total_rows - self.skipped - self.finished, 0)

    @property
    def exit_code(self) -> int:
        """docs/design.md §3.6: 0 every row ok, 3 finished with some rows in error, 1 not finished,
        4 stopped by --max-cost, 130 interrupted by a signal (the shell's convention)."""
        if self.interrupted is not None:
            return 130
        if self.budget_stop is not None and self.final is None:
            return 4  # stopped by --max-cost; re-running resumes
        counts = self.final
        if counts is None and self.trial is not None:
            counts = self.partial  # a trial ends with its rows written, the rest to do
        if counts is None:
            return 1
        return 0 if counts.error == 0 else 3

    def snapshot(self, *, reported: int = 0, **more: Any) -> Snapshot:
        """The counts every driver's display shows, plus its own (``more``: in flight and
        rate limits online, the running batches for Message Batches). ``reported``: rows a
        running batch says are finished that are not recorded yet."""
        return Snapshot(
            done=self.finished + reported,
            total=self.todo,
            ok=self.ok,
            error=self.error,
            retries=self.retries,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
            projected_cost=projected_total(self.cost_usd, self.ok, self.todo),
            **more,
        )
