"""The prompt-caching cost benchmark (bench/) runs quick as a real process (where ``--cache
auto`` puts its breakpoints: tests/integration/test_prefix_cache.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_cost_benchmark_runs_quick() -> None:
    """``bench/cost.py --quick`` runs end to end; its figures are not judged here."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(root / "bench" / "cost.py"), "--quick"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=170,
    )
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert done.stdout.count("200/200") == 4, report  # two modes x two scenarios, all rows ok
    assert "no breakpoint placed below the 4,096 minimum" in done.stdout, report
