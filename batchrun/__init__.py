"""batchrun: run bulk prompts through the Claude Messages API.

from pathlib import Path
import batchrun

config = batchrun.load_config(Path("jobs/label_sentiment.toml"), {"simulate": True})
summary = batchrun.run(config)
print(summary.final)   # FinalCounts(rows=200, ok=200, error=0)
"""

from __future__ import annotations

__version__ = "0.1.0"

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
from batchrun.drivers.job import run
from batchrun.drivers.online import run_async
from batchrun.drivers.summary import RunSummary
from batchrun.drivers.validate import ValidationReport, validate
from batchrun.estimation.estimate import estimate
from batchrun.estimation.figures import Estimate
from batchrun.reporting.report import Report, report
from batchrun.rows.request import RequestDefaults
from batchrun.store.sink import FinalCounts

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
    "RunSummary",
    "ValidationReport",
    "__version__",
    "estimate",
    "load_config",
    "load_prices",
    "report",
    "run",
    "run_async",
    "validate",
]
