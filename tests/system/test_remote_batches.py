"""Message Batches runs with the output on S3 (a real moto server on 127.0.0.1): the batch
journal is on the store before every create, so a run on a new machine (its work folder
gone) polls the batches created earlier instead of creating them again; the simulator's
count of creates proves it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from support import prompts, reply_tag, wait_until, write_jsonl

from batchrun import load_config, run
from batchrun.config.load import RunConfig
from batchrun.remote.batch_mirror import BatchJournalMirror, remote_batch_journal_url
from batchrun.remote.errors import StorageError
from batchrun.remote.mirror import work_folder
from batchrun.remote.objects import Storage
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.batch_journal import BatchJournal, batch_journal_path


def batch_config(inp: str, out: str, url: str, env: dict[str, str], **flags: Any) -> RunConfig:
    settings = {
        "output": out,
        "model": "claude-haiku-4-5",
        "max_tokens": 20,
        "base_url": url,
        "quiet": True,
        "via": "batches",
        "poll_interval": 0.05,
        **flags,
    }
    return load_config(inp, settings, environ=env)


def remote_events(storage: Storage, out: str, event: str) -> int:
    url = remote_batch_journal_url(out)
    if not storage.exists(url):
        return 0
    return storage.read_bytes(url).count(f'"event":"{event}"'.encode())


def check_final(storage: Storage, out: str, n: int, tmp_path: Path) -> None:
    local = tmp_path / f"final-{uuid.uuid4().hex[:6]}.parquet"
    storage.download(out, local)
    rows = pq.read_table(local).to_pylist()
    assert [r["id"] for r in rows] == [p["id"] for p in prompts(n)]
    for src, row in zip(prompts(n), rows, strict=True):
        assert row["status"] == "ok" and row["text"].startswith(reply_tag(src["prompt"]))
        assert row["via"] == "batches"


def test_every_intent_is_on_the_store_before_its_batch_is_created(
    tmp_path: Path, env: dict[str, str], bucket: str, storage: Storage
) -> None:
    n = 50
    inp = f"s3://{bucket}/in/rows.jsonl"
    storage.upload(write_jsonl(tmp_path / "rows.jsonl", prompts(n)), inp)
    out = f"s3://{bucket}/out/batched.parquet"
    seen: list[tuple[int, int]] = []  # (batches created so far, intents on the store then)
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.2)) as sim:

        def created(batch: dict[str, Any]) -> None:
            seen.append(
                (sim.stats.snapshot().batches_created, remote_events(storage, out, "intent"))
            )

        sim.simulator.on_batch_created = created
        summary = run(batch_config(inp, out, sim.base_url, env, batch_max_requests=20))
        assert summary.exit_code == 0 and summary.batches_created == 3  # 20 + 20 + 10
        assert sim.stats.snapshot().batches_created == 3
    assert [count for count, _ in seen] == [1, 2, 3]
    assert all(intents >= count for count, intents in seen)
    assert remote_events(storage, out, "collected") == 3
    check_final(storage, out, n, tmp_path)


def test_a_new_machine_polls_the_batches_created_earlier_instead_of_creating_them_again(
    tmp_path: Path, env: dict[str, str], bucket: str, storage: Storage
) -> None:
    n = 40
    inp = f"s3://{bucket}/in/rows.jsonl"
    storage.upload(write_jsonl(tmp_path / "rows.jsonl", prompts(n)), inp)
    out = f"s3://{bucket}/out/moved.parquet"
    cmd = [sys.executable, "-m", "batchrun", "run", inp, "-o", out, "--model", "claude-haiku-4-5"]
    cmd += ["--max-tokens", "20", "-q", "--via", "batches", "--poll-interval", "0.05"]
    cmd += ["--batch-max-requests", "20"]
    with SimulatorThread(SimulatorConfig(batch_processing_s=3.0)) as sim:
        proc = subprocess.Popen(
            [*cmd, "--base-url", sim.base_url],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(
            lambda: remote_events(storage, out, "created") >= 2,
            60,
            "two batches created",
            alive=[proc],
            every=0.02,
        )
        proc.send_signal(signal.SIGINT)  # stop while the batches run: they keep running
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert sim.stats.snapshot().batches_created == 2
        assert not storage.exists(out)

        # The new machine: no work folder at all.
        shutil.rmtree(work_folder(out, None, tmp_path / "cache"))
        summary = run(batch_config(inp, out, sim.base_url, env, batch_max_requests=20))
        stats = sim.stats.snapshot()
    print(
        f"new machine: {stats.batches_created} batches created in all, "
        f"{summary.batches_collected} collected by the second run"
    )
    assert summary.exit_code == 0, summary
    assert stats.batches_created == 2  # none created twice
    assert stats.batch_requests_submitted == n and set(stats.batch_custom_ids.values()) == {1}
    assert summary.batches_created == 0 and summary.batches_collected == 2
    check_final(storage, out, n, tmp_path)


# -- the mirror's pull, case by case -------------------------------------------------------


def write_lines(path: Path, *lines: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


A = '{"event":"abandoned","key":"b1"}'
B = '{"event":"abandoned","key":"b2"}'
C = '{"event":"abandoned","key":"b3"}'


@pytest.mark.parametrize(
    ("local", "remote", "after_local", "after_remote", "set_aside"),
    [
        ((), (A, B), (A, B), (A, B), False),  # a new machine: the store's copy
        ((A,), (A, B), (A, B), (A, B), False),  # behind: the store's copy
        ((A, B), (A,), (A, B), (A, B), False),  # ahead (an upload failed): pushed now
        ((A, C), (A, B), (A, B), (A, B), True),  # disagrees: set aside for the store's
        ((A,), None, (A,), (A,), False),  # never uploaded: pushed now
    ],
)
def test_pulling_the_batch_journal_keeps_the_newest_copy(
    tmp_path: Path,
    bucket: str,
    storage: Storage,
    local: tuple[str, ...],
    remote: tuple[str, ...] | None,
    after_local: tuple[str, ...],
    after_remote: tuple[str, ...],
    set_aside: bool,
) -> None:
    out = f"s3://{bucket}/out/pulled.parquet"
    path = batch_journal_path(tmp_path / "work" / "pulled.parquet")
    if local:
        write_lines(path, *local)
    if remote is not None:
        storage.write_bytes(
            remote_batch_journal_url(out), "".join(f"{r}\n" for r in remote).encode()
        )
    mirror = BatchJournalMirror(storage, out)
    mirror.pull(path)
    expected = "".join(f"{line}\n" for line in after_local)
    assert path.read_text(encoding="utf-8") == expected
    assert storage.read_bytes(remote_batch_journal_url(out)).decode() == "".join(
        f"{line}\n" for line in after_remote
    )
    assert (mirror.set_aside is not None) == set_aside
    if mirror.set_aside is not None:
        assert mirror.set_aside.read_text(encoding="utf-8") == "".join(f"{x}\n" for x in local)


def test_an_intent_that_cannot_reach_the_store_stops_before_the_create(
    tmp_path: Path, storage: Storage
) -> None:
    """The intent is journaled locally, but its upload fails: ``intend`` raises, so the
    caller never sends the create (the next run abandons the intent when it finds no
    batch)."""
    from array import array
    from datetime import datetime, timezone

    from batchrun.store.batch_journal import IntentRows

    mirror = BatchJournalMirror(storage, "s3://no-such-bucket-batches/out.parquet")
    journal = BatchJournal(batch_journal_path(tmp_path / "out.parquet"), mirror.push)
    rows = IntentRows(array("q", [0, 1]), ["r0", "r1"], ["h0", "h1"])
    with pytest.raises(StorageError, match="no batch was created") as caught:
        journal.intend(datetime.now(timezone.utc), 10, "h", rows)
    assert "s3://no-such-bucket-batches/out.parquet.batchrun/batches.jsonl" in str(caught.value)
    assert [e.batch_id for e in BatchJournal.load(journal.path).entries.values()] == [None]
    # A step after the create (its batch exists) is not stopped by the store: kept for later.
    entry = next(iter(journal.entries.values()))
    journal.created(entry, "msgbatch_1")
    assert mirror.last_error is not None and entry.batch_id == "msgbatch_1"
