"""A resume that takes the journal's index (``store.journal_index``) gives exactly the output
a resume that parses the whole journal gives, on the simulator over loopback."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from support import job_config, prompts, write_jsonl

from batchrun import run
from batchrun.simulator import SimulatorThread
from batchrun.store.journal_index import index_path, read_index
from batchrun.store.resume import state_path
from batchrun.store.sink import journal_path

# What differs from one sending of the same request to the next; every other column must be
# the same, whichever way the resume read the journal.
_TIMING = ("latency_ms", "elapsed_ms", "finished_at", "request_id", "message_id")


class Snapshot:
    """An output's files as a stopped run left them, put back as they were before each
    resume: the journal under its name, the same file (its inode: the state vouches for it),
    its bytes as they were."""

    def __init__(self, out: Path, into: Path) -> None:
        self.out = out
        self.into = into
        self.journal = journal_path(out)
        self.files = [out, state_path(out), index_path(self.journal)]
        into.mkdir()
        for path in [self.journal, *self.files]:
            if path.exists():
                shutil.copy2(path, into / path.name)
        os.link(self.journal, into / "same-journal")

    def restore(self, *, index: bool) -> None:
        if not self.journal.exists():
            os.link(self.into / "same-journal", self.journal)
        with (self.into / self.journal.name).open("rb") as src, self.journal.open("r+b") as dst:
            shutil.copyfileobj(src, dst)
            dst.truncate()
        for path in self.files:
            saved = self.into / path.name
            path.unlink(missing_ok=True)
            if saved.exists() and (index or path != index_path(self.journal)):
                shutil.copy2(saved, path)


def _rows(out: Path) -> list[dict[str, Any]]:
    table = pq.read_table(out)
    return table.drop_columns([c for c in _TIMING if c in table.column_names]).to_pylist()


def test_a_resume_from_the_index_writes_what_a_resume_from_the_journal_writes(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = prompts(60)
    rows += [{"id": f"twin{i}", "prompt": rows[i]["prompt"]} for i in range(0, 60, 6)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    flags = {"model": "claude-sonnet-4-6", "max_tokens": 400, "concurrency": 4}
    stopped = run(job_config(inp, out, sim.base_url, max_cost=0.03, **flags))
    assert stopped.exit_code == 4 and stopped.partial is not None
    finished = stopped.partial.rows
    found = read_index(journal_path(out))
    assert found is not None and len(found) == finished and found.gaps == []
    snapshot = Snapshot(out, tmp_path / "stopped")

    outputs = {}
    for index in (True, False, True):
        snapshot.restore(index=index)
        assert (read_index(journal_path(out)) is not None) is index
        before = sim.stats.snapshot().answered_ok
        done = run(job_config(inp, out, sim.base_url, **flags))
        assert done.exit_code == 0 and done.skipped == finished
        sent = sim.stats.snapshot().answered_ok - before
        assert not journal_path(out).exists() and not index_path(journal_path(out)).exists()
        outputs.setdefault(index, []).append((sent, _rows(out)))
    (sent, with_index), (_, again) = outputs[True]
    [(sent_without, without_index)] = outputs[False]
    assert sent == sent_without < len(rows) - finished  # twins filled, none sent twice
    assert with_index == without_index == again
    assert [r["id"] for r in with_index] == [r["id"] for r in rows]
    assert all(r["status"] == "ok" for r in with_index)


def test_a_resume_after_a_crash_between_the_journal_and_its_index(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    """The index lost its last records (a crash before they were written): those lines are
    parsed, and the output is the same."""
    rows = prompts(40)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    flags = {"model": "claude-sonnet-4-6", "max_tokens": 400, "concurrency": 4}
    stopped = run(job_config(inp, out, sim.base_url, max_cost=0.03, **flags))
    assert stopped.exit_code == 4 and stopped.partial is not None
    index = index_path(journal_path(out))
    found = read_index(journal_path(out))
    assert found is not None and len(found) > 4
    with index.open("r+b") as fh:  # the last records, and half of one more, lost
        fh.truncate(index.stat().st_size - 128 * 3 - 64)
    found = read_index(journal_path(out))
    assert found is not None and len(found.gaps) == 1
    before = sim.stats.snapshot().answered_ok
    done = run(job_config(inp, out, sim.base_url, **flags))
    assert done.exit_code == 0 and done.skipped == stopped.partial.rows
    assert sim.stats.snapshot().answered_ok - before == len(rows) - stopped.partial.rows
    assert [r["id"] for r in _rows(out)] == [r["id"] for r in rows]
