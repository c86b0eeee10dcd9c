"""batchrun on Ray Data (the optional extra ``batchrun[ray]``): a stage for ``map_batches``
(``BatchrunStage``), ``answer`` to apply it, and ``run_on_ray`` behind ``run --engine ray``.

Importing this package does not load ray: only ``answer`` and ``run_on_ray`` do, when called;
without it they stop at once with one line naming ``pip install 'batchrun[ray]'``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchrun.core.extras import require_extra
from batchrun.ray.job import run_on_ray
from batchrun.ray.stage import BatchrunStage, absolute_settings

__all__ = ["BatchrunStage", "answer", "run_on_ray"]

# The stage's share of a CPU: an actor pool asking for whole CPUs, as many as the cluster
# has, leaves none for the tasks that read the blocks it waits for, and Ray Data stalls.
STAGE_CPUS = 0.5


def answer(
    ds: Any,
    *,
    parts_dir: str | os.PathLike[str],
    job: str | os.PathLike[str] | None = None,
    settings: Mapping[str, Any] | None = None,
    concurrency: int = 2,
    num_cpus: float = STAGE_CPUS,
    batch_size: int | None = None,
) -> Any:
    """``ds.map_batches(BatchrunStage, ...)``: a Dataset of the output schema's columns, one
    row per input row. ``concurrency`` actors each run one engine per block (each with the
    job's ``concurrency`` requests in flight); ``batch_size`` rows per block (None: Ray's
    blocks). Paths in ``settings`` and ``job`` are made absolute here, for the workers."""
    # The optional extra, loaded only here: missing, one line naming the pip install.
    ray_data = require_extra("ray.data", "ray", "batchrun.ray.answer")
    kwargs: dict[str, Any] = {
        "parts_dir": str(Path(parts_dir).resolve()),
        "job": None if job is None else str(Path(job).resolve()),
        "settings": absolute_settings(settings or {}),
    }
    return ds.map_batches(
        BatchrunStage,
        fn_constructor_kwargs=kwargs,
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=ray_data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
    )
