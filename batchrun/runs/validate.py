"""``batchrun validate``: read every row, build every request, send nothing, report problems."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from batchrun.config.load import RunConfig
from batchrun.core.errors import InputError
from batchrun.engine.outcome import RowSettings, prepare
from batchrun.formats.inputs import read_rows
from batchrun.runs.preflight import check_every_row_can_be_built

# Past this many, listing more problems helps nobody; the count still covers them all.
MAX_LISTED = 1000
# Rows listed for each distinct problem (a job with no model makes every row say so).
MAX_PER_PROBLEM = 5


@dataclass
class ValidationReport:
    """Every problem found, each naming file, row and field; counts over the whole input."""

    source: Path
    rows: int = 0
    invalid: int = 0
    problems: list[InputError] = field(default_factory=list)  # the rows listed
    # Rows per listed problem, those past MAX_PER_PROBLEM included.
    counts: Counter[str] = field(default_factory=Counter)

    def unlisted(self) -> list[tuple[str, int]]:
        """Each problem found on more rows than were listed, and how many more."""
        listed = Counter(p.what for p in self.problems)
        return [(what, n - listed[what]) for what, n in self.counts.items() if n > listed[what]]


def validate(config: RunConfig) -> ValidationReport:
    """Check each row of ``config.input.path`` the way ``run`` would, in one pass.

    Rows go through the run's own ``prepare``, so a row is reported here exactly when a run
    would record it as ``invalid_request``, and no row can make this raise: only a file
    that cannot be read at all does (``InputError``), or a mistake that would fail every row
    alike, which ``run`` refuses before sending (``UnbuildableJobError``, said once).

    report = validate(load_config(Path("sample_data/reviews.jsonl")))
    assert report.invalid == 0
    """
    check_every_row_can_be_built(config)
    report = ValidationReport(source=config.input.path)
    settings = RowSettings.of(config)
    for row in read_rows(config.input.path, shape=config.input.shape):
        report.rows += 1
        problem = prepare(row, settings).problem
        if problem is not None:
            report.invalid += 1
            listing = len(report.problems) < MAX_LISTED
            what = problem.what
            # Counted only while rows are still listed, or when already listed: texts that
            # differ on every row (a duplicate id names it) must not grow with the file.
            if listing or what in report.counts:
                report.counts[what] += 1
                if listing and report.counts[what] <= MAX_PER_PROBLEM:
                    report.problems.append(problem)
    return report
