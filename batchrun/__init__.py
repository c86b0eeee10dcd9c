"""batchrun: run bulk prompts through the Claude Messages API.

from pathlib import Path
import batchrun

config = batchrun.load_config(Path("jobs/label_sentiment.toml"), {"simulate": True})
summary = batchrun.run(config)
print(summary.final)   # FinalCounts(rows=200, ok=200, error=0)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import RunConfig, load_config
from .errors import (
    ApiError,
    BatchrunError,
    ConfigError,
    FatalRunError,
    InputError,
    InvalidRowError,
    OutputError,
)
from .request import RequestDefaults
from .runner import RunSummary, run, run_async
from .sink import FinalCounts
from .validate import ValidationReport, validate

__all__ = [
    "ApiError",
    "BatchrunError",
    "ConfigError",
    "FatalRunError",
    "FinalCounts",
    "InputError",
    "InvalidRowError",
    "OutputError",
    "RequestDefaults",
    "RunConfig",
    "RunSummary",
    "ValidationReport",
    "__version__",
    "load_config",
    "run",
    "run_async",
    "validate",
]
