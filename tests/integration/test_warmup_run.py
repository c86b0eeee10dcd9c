"""Warm before the herd (issue 17, item 2) in a whole run against the simulator: each prefix is
written once at high concurrency (the pool, the warmup and the engine:
tests/unit/test_warmup.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support import job_config, write_jsonl

from batchrun import run


def test_a_whole_run_writes_the_prefix_once_at_high_concurrency(tmp_path: Path, sim: Any) -> None:
    instruction = "Label the sentiment of the review. " + "Be precise and careful. " * 1200
    rows = [{"id": f"r{i}", "text": f"Review {i}: the soup was fine."} for i in range(200)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    flags = {"template": instruction + "{text}", "concurrency": 64}
    summary = run(job_config(inp, out, sim.base_url, **flags))
    assert summary.exit_code == 0 and summary.cache_groups_warmed == 1
    table = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    writes = [r for r in table if r["cache_creation_input_tokens"]]
    assert len(writes) == 1
    assert all(r["cache_read_input_tokens"] > 4096 for r in table if r not in writes)
