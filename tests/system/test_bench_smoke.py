"""Smoke test of the throughput benchmark: ``bench/throughput.py --quick`` runs end to end.

It checks only that the benchmark runs (simulator subprocess up and down, every contender
answering every row, the table printed), never timings or ratios: those depend on the machine.
Run alone with ``pytest tests/system/test_bench_smoke.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "throughput.py"


def test_throughput_quick_runs_and_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    # --quick judges no targets, so a non-zero exit means the benchmark itself broke.
    assert done.returncode == 0, report
    assert "BENCHMARK BROKEN" not in done.stderr, report
    out = done.stdout
    assert "cores" in out and "anthropic" in out, report  # the environment banner
    assert out.count("rows/s (median)") == 2, report  # one table per scenario
    for contender in ("bare", "batchrun", "sdk"):
        assert f"\n{contender} " in out, report
    assert out.count("200/200") == 6, report  # three contenders x two scenarios, all rows ok
    assert "batchrun / bare" in out and "batchrun / sdk" in out, report
    assert "quick run: targets not judged" in out, report


def test_scale_quick_runs_every_contender_and_prints_the_ratios() -> None:
    # bench/scale.py (issue 26): batchrun online and via batches, a kill at 90 % and a resume,
    # and the bare aiohttp contenders, at two small sizes.
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert "BENCHMARK BROKEN" not in done.stderr, report
    out = done.stdout
    for mode in ("online", "batches"):
        for contender in ("batchrun", "bare"):
            for rows in ("300", "1,200"):
                assert f"  {mode}, {contender}, {rows} rows ... " in out, report
        assert f"  {mode}:\n    300 rows, batchrun / bare: rows/s " in out, report
        assert "1,200 / 300 rows: rows/s " in out, report
    assert out.count("peak RSS 1,200 / 300 rows: ") == 2, report
    assert ", resume " in out, report  # a run killed at 90 % and resumed
    assert "quick run: targets not judged" in out, report
