"""The answer cache (issue 28) shared by processes at once: writers racing for the same entries
while a reader reads them never show it half an entry, and runs as real processes (shards of
work, Ray workers alike) fill one cache together that a later job then reads whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from support import job_config, prompts, start_run, write_jsonl

from batchrun import run
from batchrun.simulator import SimulatorThread

WRITER = r"""
import sys
from batchrun.remote.answer_cache import AnswerCache, Entry
cache, who = AnswerCache(sys.argv[1]), sys.argv[2]
for round in range(30):
    for i in range(20):
        text = who * (2000 + 500 * i)  # big enough that a torn write would show
        cache.put(Entry(f"{i:064x}", "simulator", {"status": "ok", "text": text}, who, "t"))
"""

READER = r"""
import sys
from batchrun.remote.answer_cache import AnswerCache
cache, seen, whole = AnswerCache(sys.argv[1]), 0, 0
for round in range(300):
    for i in range(20):
        entry = cache.get("simulator", f"{i:064x}")
        if entry is None:
            continue
        seen += 1
        text = entry.answer["text"]
        assert len(text) == 2000 + 500 * i and set(text) == {entry.paid_by}, (i, len(text))
        whole += 1
print(seen, whole)
"""


def test_writers_racing_for_the_same_entries_never_show_a_reader_half_of_one(
    tmp_path: Path,
) -> None:
    cache = str(tmp_path / "answers")
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, cache, who]) for who in ("a", "b", "c")
    ]
    reader = subprocess.run(
        [sys.executable, "-c", READER, cache], capture_output=True, text=True, timeout=300
    )
    for writer in writers:
        assert writer.wait(timeout=300) == 0
    assert reader.returncode == 0, reader.stderr
    seen, whole = map(int, reader.stdout.split())
    assert seen == whole and seen > 0
    files = [p for p in (tmp_path / "answers").rglob("*") if p.is_file()]
    assert len(files) == 20 and all(p.suffix == ".json" for p in files)  # no temporary left


def test_runs_in_several_processes_fill_one_cache_that_a_later_job_reads(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    url = sim.base_url
    cache = str(tmp_path / "answers")
    rows = prompts(120)
    parts = [write_jsonl(tmp_path / f"in{i}.jsonl", rows[i::3]) for i in range(3)]
    procs = [
        start_run(part, tmp_path / f"out{i}.parquet", url, "--answer-cache", cache)
        for i, part in enumerate(parts)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    whole = write_jsonl(tmp_path / "all.jsonl", rows)
    sim.stats.reset()
    summary = run(
        job_config(whole, tmp_path / "all.parquet", url, max_tokens=20, answer_cache=cache)
    )
    assert summary.exit_code == 0 and summary.answer_cache_hits == 120
    assert sim.stats.requests == 0
    paid = {}
    for i in range(3):
        paid.update({r["id"]: r for r in pq.read_table(tmp_path / f"out{i}.parquet").to_pylist()})
    for row in pq.read_table(tmp_path / "all.parquet").to_pylist():
        payer = tmp_path / f"out{int(row['id'][1:]) % 3}.parquet"
        assert row["cached_from"] == f"{payer}#{row['id']}"
        assert row["text"] == paid[row["id"]]["text"] and row["cost_usd"] == 0.0
