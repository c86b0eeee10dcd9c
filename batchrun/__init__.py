"""batchrun: run bulk prompts through the Claude Messages API.

import batchrun

result = batchrun.run(batchrun.load_config("jobs/label_sentiment.toml", {"simulate": True}))
print(result.final, result.exit_code)   # FinalCounts(rows=200, ok=200, error=0) 0

rows = [{"prompt": "Say hi"}, {"prompt": "Say bye"}]   # or a DataFrame, a pyarrow Table ...
result = batchrun.run(rows, model="claude-haiku-4-5", max_tokens=20, simulate=True)
print(result.table["text"], result.to_dict()["cost_usd"])

for row in batchrun.iter_answers(rows, model="claude-haiku-4-5", max_tokens=20, simulate=True):
    print(row["id"], row["text"])      # each output row as it finishes

``run``, ``estimate`` and the batch commands have async twins (``run_async``,
``estimate_async``, ...); the sync ones work inside a running event loop too (a notebook).
The names below load on first use (PEP 562), so ``import batchrun`` and ``batchrun --version``
load no HTTP, Arrow or report code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from batchrun.core.version import VERSION as __version__

# name -> the module that defines it
_HOMES = {
    "ApiError": "batchrun.core.errors",
    "BatchrunError": "batchrun.core.errors",
    "ConfigError": "batchrun.core.errors",
    "FatalRunError": "batchrun.core.errors",
    "InputError": "batchrun.core.errors",
    "InvalidRowError": "batchrun.core.errors",
    "OutputError": "batchrun.core.errors",
    "Estimate": "batchrun.estimation.figures",
    "estimate": "batchrun.estimation.passes",
    "estimate_async": "batchrun.estimation.passes",
    "FinalCounts": "batchrun.store.sink",
    "PriceTable": "batchrun.cost.prices",
    "load_prices": "batchrun.cost.prices",
    "Report": "batchrun.reporting.totals",
    "report": "batchrun.reporting.totals",
    "RequestDefaults": "batchrun.rows.request",
    "RunConfig": "batchrun.config.load",
    "load_config": "batchrun.config.load",
    "RunSummary": "batchrun.runs.summary",
    "RunResult": "batchrun.public.result",
    "Runtime": "batchrun.runs.runtime",
    "run": "batchrun.public.run",
    "iter_answers": "batchrun.public.answers",
    "run_async": "batchrun.public.run",
    "run_shard": "batchrun.public.run",
    "merge_shards": "batchrun.shards.run",
    "summary_of": "batchrun.public.frames",
    "ValidationReport": "batchrun.runs.validate",
    "validate": "batchrun.runs.validate",
    "list_batches": "batchrun.batches.admin",
    "list_batches_async": "batchrun.batches.admin",
    "cancel_batches": "batchrun.batches.admin",
    "cancel_batches_async": "batchrun.batches.admin",
}

__all__ = [
    "ApiError",
    "BatchrunError",
    "ConfigError",
    "Estimate",
    "FatalRunError",
    "FinalCounts",
    "InputError",
    "InvalidRowError",
    "OutputError",
    "PriceTable",
    "Report",
    "RequestDefaults",
    "RunConfig",
    "RunResult",
    "RunSummary",
    "Runtime",
    "ValidationReport",
    "__version__",
    "cancel_batches",
    "cancel_batches_async",
    "estimate",
    "estimate_async",
    "iter_answers",
    "list_batches",
    "list_batches_async",
    "load_config",
    "load_prices",
    "merge_shards",
    "report",
    "run",
    "run_async",
    "run_shard",
    "summary_of",
    "validate",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'batchrun' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


if TYPE_CHECKING:  # what type checkers and editors see; nothing of it runs
    from batchrun.batches.admin import (
        cancel_batches,
        cancel_batches_async,
        list_batches,
        list_batches_async,
    )
    from batchrun.config.load import RunConfig, load_config
    from batchrun.core.errors import (
        ApiError,
        BatchrunError,
        ConfigError,
        FatalRunError,
        InputError,
        InvalidRowError,
        OutputError,
    )
    from batchrun.cost.prices import PriceTable, load_prices
    from batchrun.estimation.figures import Estimate
    from batchrun.estimation.passes import estimate, estimate_async
    from batchrun.public.answers import iter_answers
    from batchrun.public.frames import summary_of
    from batchrun.public.result import RunResult
    from batchrun.public.run import run, run_async, run_shard
    from batchrun.reporting.totals import Report, report
    from batchrun.rows.request import RequestDefaults
    from batchrun.runs.runtime import Runtime
    from batchrun.runs.summary import RunSummary
    from batchrun.runs.validate import ValidationReport, validate
    from batchrun.shards.run import merge_shards
    from batchrun.store.sink import FinalCounts
