"""A Ray driver: ROWS rows through batchrun.ray.answer, against the simulator at BASE_URL.

Run by tests/system/test_ray_stage_on_ray.py (in a network namespace: support/ray_netns.py), as a
process the test may kill. Writes a JSON report of the output to REPORT when it finishes.

    python stage_driver.py BASE_URL PARTS_DIR REPORT ROWS [BLOCK_ROWS] [SETTINGS_JSON]
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter

import pyarrow as pa
import ray

import batchrun.ray


def main() -> None:
    base_url, parts_dir, report, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    block_rows = int(sys.argv[5]) if len(sys.argv) > 5 else 100
    extra = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    ids = [f"q{i:05d}" for i in range(rows)]
    prompts = [f"Question number {i}: what is {i} + {i}?" for i in range(rows)]
    blocks = [
        pa.table({"id": ids[i : i + block_rows], "prompt": prompts[i : i + block_rows]})
        for i in range(0, rows, block_rows)
    ]
    settings = {
        "model": "claude-haiku-4-5",
        "max_tokens": 20,
        "base_url": base_url,
        "concurrency": 8,
        "quiet": True,
        **extra,
    }
    # A temp dir of our own, short (Ray's socket paths must fit in 107 bytes).
    with tempfile.TemporaryDirectory(prefix="r", dir="/tmp") as temp:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp)
        try:
            ds = ray.data.from_arrow(blocks)
            answered = batchrun.ray.answer(ds, parts_dir=parts_dir, settings=settings)
            out = pa.concat_tables(answered.iter_batches(batch_format="pyarrow", batch_size=None))
        finally:
            ray.shutdown()
    statuses = Counter(out.column("status").to_pylist())
    errors = Counter(out.column("error_type").to_pylist())
    seen = Counter(out.column("id").to_pylist())
    with open(report, "w", encoding="utf-8") as fh:
        json.dump(
            {
                "rows": out.num_rows,
                "distinct_ids": len(seen),
                "every_id_once": set(seen) == set(ids) and max(seen.values()) == 1,
                "statuses": dict(statuses),
                "error_types": {str(k): v for k, v in errors.items()},
                "with_hash": sum(1 for h in out.column("request_hash").to_pylist() if h),
                "columns": out.column_names,
            },
            fh,
        )


if __name__ == "__main__":
    main()
