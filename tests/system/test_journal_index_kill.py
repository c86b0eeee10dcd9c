"""Kill -9 while the journal's index is being written, twice, with real processes: each
resume takes the index where it can and parses the rest; every row is in the output once,
and nothing completed is paid for twice."""

from __future__ import annotations

from pathlib import Path

from support import check_output, journal_lines, prompts, start_run, wait_for_journal, write_jsonl

from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.journal_index import index_path, read_index
from batchrun.store.sink import journal_path

CONCURRENCY = 16


def test_kill_9_twice_then_resume_gives_every_row_once(tmp_path: Path) -> None:
    n = 600
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    journal = journal_path(out)
    with SimulatorThread(SimulatorConfig(latency_mean=0.03, latency_jitter=0.02)) as sim:
        for at in (150, 350):
            proc = start_run(inp, out, sim.base_url)
            wait_for_journal(out, proc, at)
            proc.kill()
            proc.communicate(timeout=30)
            assert not out.exists()
            found = read_index(journal)
            # The index covers lines of the journal (those synced); the rest is parsed.
            assert found is not None and 0 < len(found) <= journal_lines(out)
            gaps = sum(stop - start for start, stop in found.gaps)
            assert gaps < journal.stat().st_size
        journaled = journal_lines(out)
        resumed = start_run(inp, out, sim.base_url)
        _, err = resumed.communicate(timeout=180)
        assert resumed.returncode == 0, err
        answered = sim.stats.answered_ok
    check_output(out, n)
    assert not journal.exists() and not index_path(journal).exists()
    # Only requests in flight at each kill can have been answered and not journaled.
    assert n <= answered <= n + 2 * CONCURRENCY
    assert f"{journaled:,} already done" in err
