"""A job's client and engine, each built from its own settings (``config.layers``): the one
place where a driver's whole job is taken apart for the layers below."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal

from batchrun.client.messages import MessagesClient
from batchrun.config.load import RunConfig
from batchrun.engine.admission import SendCheck
from batchrun.engine.answer_cache import AnswerLane
from batchrun.engine.connect import open_client
from batchrun.engine.engine import BudgetScope, Engine
from batchrun.engine.outcome import RowSettings
from batchrun.engine.tally import RowTally
from batchrun.runs.runtime import Runtime


def job_client(config: RunConfig, runtime: Runtime) -> AbstractAsyncContextManager[MessagesClient]:
    """The job's one client (``engine.connect``), through the runtime's transport."""
    return open_client(
        config.client,
        connections=config.engine.concurrency,
        prices=config.cost.prices,
        transport=runtime.transport,
    )


def _ignore(message: str) -> None:
    return None


def job_engine(
    config: RunConfig,
    client: MessagesClient,
    tally: RowTally,
    runtime: Runtime,
    *,
    notify: Callable[[str], None] = _ignore,
    send_check: SendCheck | None = None,
    spent_before: Decimal | None = None,
) -> Engine:
    """The job's engine. ``spent_before``: what earlier runs of the job spent, for a driver
    that owns the job's output and its ledger (``store.spend``): ``--max-cost`` caps the job,
    so this run may spend what is left. None (a Ray block, a notebook's engine): no output
    of its own, the job's spending unattributed."""
    rows = RowSettings.of(config)
    output = None
    if spent_before is not None:
        output = config.output.url or str(config.output.path)
    scope = BudgetScope.of(
        config.defaults, rows.source, output, spent_before, reset=config.resume.overwrite
    )
    return Engine(
        config.engine,
        config.cost,
        rows,
        client,
        tally,
        api_url=config.client.base_url,
        budget_scope=scope,
        sleep=runtime.sleep,
        notify=notify,
        send_check=send_check,
        answers=answer_lane(config, rows, notify),
    )


def answer_lane(
    config: RunConfig, rows: RowSettings, notify: Callable[[str], None] = _ignore
) -> AnswerLane | None:
    """The job's ``--answer-cache`` (``engine.answer_cache``), or None without one."""
    location = config.engine.answer_cache
    if location is None:
        return None
    from batchrun.remote.answer_cache import AnswerCache  # the storage layer, when asked for

    return AnswerLane(
        AnswerCache(location, config.storage),
        rows.source,
        config.output.shown,
        dedup=config.engine.dedup,
        samples=config.engine.answer_cache_samples,
        notify=notify,
    )
