"""A run of an s3:// output that is paused past its lease (``SIGSTOP``: a laptop lid, a long
GC) while a run on another machine takes the output over: once it goes on (``SIGCONT``) it
sends nothing more, uploads and publishes nothing, says so, and exits non-zero; the rows it
answered stay in its journal, and a later run of the same command on its machine uses them.

Real processes against a real S3 server (moto), each with a simulator of its own so that
the requests of each are counted apart. The lease lives 3 s here (``BATCHRUN_LEASE_TTL``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from support import prompts, wait_until, write_jsonl

from batchrun.remote.lease import LeaseRecord, lease_url
from batchrun.remote.mirror import journal_prefix, segment_seq
from batchrun.remote.objects import Storage, StorageSettings
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.journal import INDEX

N = 400
CONCURRENCY = 4


# Waits here are long: a lease lapses only after its time to live, on a machine kept busy.
WAIT_S = 90


def start(
    inp: Path, out: str, sim: SimulatorThread, work: Path, env: dict[str, str], *extra: str
) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "batchrun", "run", str(inp), "-o", out, "--work-dir", str(work)]
    cmd += ["--model", "claude-haiku-4-5", "--max-tokens", "20", "-c", str(CONCURRENCY), "-q"]
    # Each run asks a simulator of its own (at its own port), where machines would share the
    # API's URL: that they are other sources of one API is said (where answers came from).
    cmd += ["--base-url", sim.base_url, "--keep-other-source", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def indexes(data: bytes) -> set[int]:
    return {int(json.loads(line)[INDEX]) for line in data.splitlines() if line.strip()}


def test_a_run_paused_past_its_lease_sends_nothing_more_and_publishes_nothing(
    tmp_path: Path, env: dict[str, str], bucket: str
) -> None:
    storage = Storage(StorageSettings.from_environ(env))
    full_env = {**os.environ, **env, "BATCHRUN_LEASE_TTL": "3"}
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(N))
    out = f"s3://{bucket}/out/labels.parquet"

    def lease() -> LeaseRecord | None:
        found = storage.read_versioned(lease_url(out))
        return LeaseRecord.from_bytes(found.data) if found is not None else None

    def segments() -> dict[str, bytes]:
        return {i.name: storage.read_bytes(i.url) for i in storage.list(journal_prefix(out))}

    def sealed_rows() -> int:
        return sum(data.count(b"\n") for data in segments().values())

    # A answers 100 rows, then its next requests hang (answered after 8 s): it is paused
    # with those in flight and nothing between its admission check and a send.
    sim_a = SimulatorThread(SimulatorConfig(hang_seconds=8.0))
    sim_b = SimulatorThread(SimulatorConfig(hang_seconds=3600.0))
    with sim_a, sim_b:
        sim_a.script([None] * 100 + ["hang"] * CONCURRENCY)
        a = start(inp, out, sim_a, tmp_path / "a", full_env, "--segment-rows", "25")
        wait_until(
            lambda: sim_a.stats.snapshot().in_flight == CONCURRENCY and sealed_rows() == 100,
            WAIT_S,
            "A to answer 100 rows, seal them and wait on the next",
            alive=[a],
            every=0.05,
        )
        sent_by_a = sim_a.stats.snapshot().requests
        assert sent_by_a == 100 + CONCURRENCY
        a_lease = lease()
        assert a_lease is not None
        os.kill(a.pid, signal.SIGSTOP)
        try:
            wait_until(
                lambda: lease() is None or lease().expired(time.time()),
                WAIT_S,
                "A's lease to lapse",
                every=0.05,
            )
            # B, another machine (a work folder of its own), takes the output over; it
            # answers 20 rows, then hangs, holding the lease.
            sim_b.script([None] * 20 + ["hang"] * CONCURRENCY)
            b = start(inp, out, sim_b, tmp_path / "b", full_env, "--segment-rows", "5")
            wait_until(
                lambda: sim_b.stats.snapshot().in_flight == CONCURRENCY and sealed_rows() == 120,
                WAIT_S,
                "B to take over, answer 20 rows and seal them",
                alive=[b],
                every=0.05,
            )
            b_lease = lease()
            assert b_lease is not None and b_lease.run_id != a_lease.run_id
            before = segments()
        finally:
            os.kill(a.pid, signal.SIGCONT)
        _, a_err = a.communicate(timeout=120)
        print(a_err)
        # A went on: the requests it had in flight were answered and journaled, and it sent
        # nothing more, wrote no segment and published nothing; B still holds the output.
        assert a.returncode == 1
        assert sim_a.stats.snapshot().requests == sent_by_a
        a_journal = (tmp_path / "a" / "labels.parquet.journal").read_bytes()
        assert len(indexes(a_journal)) == 100 + CONCURRENCY
        assert {n: d for n, d in segments().items() if a_lease.run_id in n} == {
            n: d for n, d in before.items() if a_lease.run_id in n
        }
        assert not storage.exists(out)
        assert lease() == b_lease or lease().run_id == b_lease.run_id
        assert f"was taken over by run {b_lease.run_id}" in a_err
        assert "sent no request after it found out, and uploaded and published nothing" in a_err
        assert f"It answered {CONCURRENCY:,} row(s) that the store does not have" in a_err
        # B's machine is lost (its lease is of a dead process of this host: taken at once).
        b.kill()
        b.communicate(timeout=30)

    # A's command again, on A's machine: it uses the rows A answered after the takeover,
    # with what B sealed, and sends only the rest.
    on_store = set().union(*(indexes(d) for d in segments().values()))
    answered = on_store | indexes(a_journal)
    assert {segment_seq(n) for n in segments()} >= {1, 2, 3, 4}
    with SimulatorThread(SimulatorConfig()) as sim_c:
        again = start(inp, out, sim_c, tmp_path / "a", full_env)
        _, c_err = again.communicate(timeout=120)
        assert again.returncode == 0, c_err
        assert sim_c.stats.snapshot().requests == N - len(answered)
    local = tmp_path / "final.parquet"
    storage.download(out, local)
    assert [r["id"] for r in pq.read_table(local).to_pylist()] == [p["id"] for p in prompts(N)]
