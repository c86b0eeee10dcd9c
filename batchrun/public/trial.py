"""A trial: a few rows of a job sent into the job's own output (``--limit N``, the first N
rows; ``--sample N --seed S``, N rows drawn at random), then what the whole job would cost,
projected from the answers so far.

The trial's answers are journaled and written as a partial output like any stopped run's, so
the same command without ``--limit`` / ``--sample`` sends only the rest: no row is paid
twice. ``--sample`` draws from the rows a run would send, as ``estimate --pilot`` does, with
the same seed giving the same rows (``estimation.passes.choose_sample``).

    result = batchrun.run(load_config("jobs/label_sentiment.toml", {"limit": 10}))
    result.summary.trial.job_cost_usd   # (10th, 50th, 90th percentile) of the whole job
"""

from __future__ import annotations

from collections.abc import Container

from batchrun.config.load import RunConfig
from batchrun.core.errors import BatchrunError, ConfigError
from batchrun.core.wording import option
from batchrun.estimation.figures import Estimate
from batchrun.estimation.passes import choose_sample, estimate_async, valid_rows
from batchrun.runs.online import run_async as run_online
from batchrun.runs.runtime import Runtime
from batchrun.runs.summary import RunSummary, Trial


def is_trial(config: RunConfig) -> bool:
    """Whether the job asks for a trial (``--limit`` or ``--sample``)."""
    return config.run.limit is not None or config.run.sample is not None


async def run_trial(config: RunConfig, runtime: Runtime) -> RunSummary:
    """The trial ``config`` asks for, online, into the job's output; the summary's ``trial``
    says what it was and what the whole job would cost."""
    _check(config)
    settings = config.run
    trial = Trial(limit=settings.limit, sample=settings.sample, seed=settings.seed)
    only: Container[int]
    if settings.limit is not None:
        only = range(settings.limit)
        trial.rows = settings.limit
    else:
        assert settings.sample is not None
        valid = valid_rows(config)
        only = choose_sample(valid, settings.sample, settings.seed)
        trial.rows = len(only)
    summary = await run_online(config, runtime, only=only, trial=True)
    summary.trial = trial
    trial.rows = min(trial.rows, summary.total_rows)  # a job of fewer rows than the limit
    trial.job_rows = summary.total_rows
    if summary.interrupted is None:
        try:
            est = await estimate_async(config, runtime=runtime)
        except BatchrunError:
            return summary  # nothing to project from (no row can be sent): the summary says so
        _project(config, trial, est)
    return summary


def _project(config: RunConfig, trial: Trial, est: Estimate) -> None:
    """The whole job's cost from the estimate's projection over the answers so far."""
    trial.pending = (
        est.pending + est.duplicates
    )  # a duplicate is filled, not sent: a row all the same
    trial.job_cost_usd = est.total_cost(batch=config.via == "batches")
    trial.projected_from = est.projection.sample if est.projection is not None else 0


def _check(config: RunConfig) -> None:
    """A trial is one online run into the job's own output: refused, before anything is
    sent, with what it cannot go with."""
    run = config.run
    if run.limit is not None and run.sample is not None:
        raise ConfigError(
            f"give {option('limit', 'N')} (the first rows) or {option('sample', 'N')} (rows "
            "at random), not both"
        )
    what = option("limit") if run.limit is not None else option("sample")
    if config.shard is not None:
        raise ConfigError(f"{what} is a trial of the whole job: not with {option('shard')}")
    if config.via == "batches":
        raise ConfigError(
            f"{what} runs its few rows online: leave out {option('via', 'batches')} for the "
            "trial, and give it to the run that sends the rest"
        )
