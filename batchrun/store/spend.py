"""What a job has spent, kept with its output across runs, so that ``--max-cost`` caps the job.

The ledger lives in the run state (``store.resume``) beside the output, in two parts:

* ``runs``: what each run whose records are still in the journal spent, by source. The
  journal is the truth for these: every record carries its run (``journal.RUN``) and cost,
  and is on disk before the next request goes (``Sink.submit``), so a ``kill -9`` loses no
  spend already paid for but the requests in flight. Each run writes its own total when it
  ends (``with_run``), before the final step can remove the journal.
* ``base``: what runs whose records have left the journal spent (a finished run removes
  it), by source.

A resume folds the journal into the ledger before anything is sent (``at_start``): a run in
the journal counts what its records cost (a run killed before it could write its total is
counted so too); a run the ledger names that the journal no longer holds moves into
``base``. Records with no run are copies of rows already counted (a stopped run's copy of
the old final file, a shard's file taken back into its journal) and add nothing.

An output from before the ledger (a state without one, or none) is counted from what it
holds: its final file, each row's newest record of the journal's records with no run, and
every record that has a run. Answers an earlier run paid for and a later one replaced are
then missing: the count is what is known, a lower bound.

Amounts are by source because the simulator's are not money: a run against the API counts
what the API sources cost, a ``--simulate`` run what the simulator's did (``spent_for``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchrun.store.provenance import is_simulator

if TYPE_CHECKING:
    from batchrun.store.sink import PriorState

Costs = Mapping[str, float]


def add(*parts: Costs) -> dict[str, float]:
    """The sum of amounts by source."""
    total: dict[str, float] = {}
    for part in parts:
        for source, amount in part.items():
            total[source] = total.get(source, 0.0) + amount
    return total


@dataclass(frozen=True)
class Ledger:
    """A job's spending by source: ``base`` (runs gone from the journal) and ``runs``."""

    base: Mapping[str, float] = field(default_factory=dict)
    runs: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def total(self) -> dict[str, float]:
        return add(self.base, *self.runs.values())

    def spent_for(self, source: str) -> float:
        """What the job spent on the same kind of source as ``source``: money for the API,
        the simulator's pretend prices for the simulator."""
        simulated = is_simulator(source)
        return sum(v for s, v in self.total().items() if is_simulator(s) == simulated)

    def with_run(self, run: str, costs: Costs) -> Ledger:
        """The ledger once ``run`` (whose records are in the journal) has spent ``costs``."""
        return Ledger(self.base, {**self.runs, run: dict(costs)})

    def as_json(self) -> dict[str, Any]:
        return {
            "base": _rounded(self.base),
            "runs": {run: _rounded(costs) for run, costs in self.runs.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> Ledger:
        base = {str(k): float(v) for k, v in dict(data["base"]).items()}
        runs = {
            str(run): {str(k): float(v) for k, v in dict(costs).items()}
            for run, costs in dict(data["runs"]).items()
        }
        return cls(base, runs)


def _rounded(costs: Costs) -> dict[str, float]:
    return {source: round(amount, 10) for source, amount in sorted(costs.items())}


def at_start(ledger: Ledger | None, prior: PriorState) -> Ledger:
    """The job's ledger before this run sends anything: ``ledger`` (the state's; None when
    there is none) with the journal's runs folded in (see the module's docstring)."""
    in_journal = prior.spend.by_run
    if ledger is None:
        base = add(prior.final_spend(), prior.spend.unattributed)
        return Ledger(base, {run: dict(costs) for run, costs in in_journal.items()})
    return folded(ledger, in_journal)


def folded(ledger: Ledger, in_journal: Mapping[str, Costs]) -> Ledger:
    """``ledger`` with the runs the journal holds counted from it, and the runs it no
    longer holds moved into ``base``."""
    gone = [costs for run, costs in ledger.runs.items() if run not in in_journal]
    return Ledger(add(ledger.base, *gone), {run: dict(c) for run, c in in_journal.items()})
