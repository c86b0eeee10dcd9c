"""A run from Python gives back the signal handlers it found (the crash and interrupt tests,
with real processes: tests/system/test_crash_resume.py)."""

from __future__ import annotations

import signal
from pathlib import Path

from support import (
    TEST_KEY,
    prompts,
    write_jsonl,
)

from batchrun.simulator import SimulatorThread


def test_a_library_run_gives_back_the_callers_signal_handlers(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    from batchrun import load_config, run

    def mine(signum: int, frame: object) -> None:
        raise AssertionError("not called")

    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    config = load_config(
        inp,
        {
            "output": str(tmp_path / "o.parquet"),
            "model": "claude-haiku-4-5",
            "max_tokens": 5,
            "base_url": sim.base_url,
            "quiet": True,
        },
        environ={"ANTHROPIC_API_KEY": TEST_KEY},
    )
    old = signal.signal(signal.SIGTERM, mine)
    sigint_before = signal.getsignal(signal.SIGINT)  # SIG_IGN under a background shell job
    try:
        run(config)
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) == sigint_before
    finally:
        signal.signal(signal.SIGTERM, old)
