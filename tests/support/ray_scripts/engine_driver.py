"""``run_on_ray`` (what ``batchrun run --engine ray`` runs) over ROWS rows against BASE_URL,
watching the driver: after each block it receives, the size of its spool on disk and the rows
in it. Writes a JSON report to REPORT.

Run by tests/system/test_ray_stage_on_ray.py, through with_simulator.py, in a network
namespace of its own (support/ray_netns.py).

    python engine_driver.py BASE_URL WORK REPORT ROWS BLOCK_ROWS
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import ray

from batchrun.ray import run_on_ray


def main() -> None:
    base_url, work, report = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    rows, block_rows = int(sys.argv[4]), int(sys.argv[5])
    inp, out = work / "in.jsonl", work / "out.parquet"
    ids = [f"q{i:05d}" for i in range(rows)]
    with inp.open("w", encoding="utf-8") as fh:
        for i, row_id in enumerate(ids):
            fh.write(json.dumps({"id": row_id, "prompt": f"Question {i}"}) + "\n")
    seen: list[tuple[int, int]] = []  # (spool bytes on disk, rows in it), after each block

    def observe(spool: Path, spooled: int) -> None:
        seen.append((os.stat(spool).st_size, spooled))

    flags = {"output": str(out), "base_url": base_url, "model": "claude-haiku-4-5"}
    flags.update({"max_tokens": 20, "concurrency": 8, "quiet": True})
    # A temp dir of our own, short (Ray's socket paths must fit in 107 bytes).
    with tempfile.TemporaryDirectory(prefix="r", dir="/tmp") as temp:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp)
        try:
            told: list[str] = []
            summary = run_on_ray(
                inp, flags, block_rows=block_rows, observe=observe, notify=told.append
            )
        finally:
            ray.shutdown()
    table = pq.read_table(out)
    report.write_text(
        json.dumps(
            {
                "exit": summary.exit_code,
                "in_order": table.column("id").to_pylist() == ids,
                "statuses": sorted(set(table.column("status").to_pylist())),
                "seen": seen,
                "told": told,
                "spool_left": any(p.name.endswith(".ray.tmp") for p in work.iterdir()),
                "staged_left": [
                    p.name
                    for p in (work / "out.parquet.parts").iterdir()
                    if p.name.startswith(".input-")
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
