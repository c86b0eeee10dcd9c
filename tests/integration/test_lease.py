"""The lease of a remote output (``remote.lease``) on a real S3 server (moto on 127.0.0.1):
one run at a time across machines, a lost machine's lease taken over once it has expired,
the lease gone after a run, whether it ended or stopped.

The conditional writes under it (``Storage.create_only``, ``replace_if``, ``delete_if``)
are checked on S3 and on local files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import job_config, prompts, wait_until, write_jsonl

from batchrun import run
from batchrun.config.load import RunConfig
from batchrun.remote.errors import StorageError
from batchrun.remote.lease import Lease, LeaseHeldError, LeaseRecord, lease_url
from batchrun.remote.objects import NO_SUCH_BUCKET, Storage
from batchrun.simulator import SimulatorThread


class Clock:
    """Epoch seconds that move only when told."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def lease(storage: Storage, out: str, clock: Clock, name: str, **kw: Any) -> Lease:
    return Lease(storage, out, run_id=f"run-{name}", clock=clock, host=name, pid=100, **kw)


def held_record(storage: Storage, out: str) -> LeaseRecord | None:
    found = storage.read_versioned(lease_url(out))
    return LeaseRecord.from_bytes(found.data) if found is not None else None


# -- conditional writes --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["s3", "local"])
def test_conditional_writes_take_effect_only_while_their_condition_holds(
    storage: Storage, bucket: str, tmp_path: Path, where: str
) -> None:
    url = f"s3://{bucket}/x/lease.json" if where == "s3" else str(tmp_path / "x" / "lease.json")
    assert storage.conditions_atomic(url)
    assert storage.read_versioned(url) is None
    first = storage.create_only(url, b"one")
    assert first is not None
    assert storage.create_only(url, b"two") is None  # there already: untouched
    assert storage.read_versioned(url) == (b"one", first)
    second = storage.replace_if(url, b"three", first)
    assert second is not None and second != first
    assert storage.replace_if(url, b"four", first) is None  # a stale version: untouched
    assert storage.delete_if(url, first) is False
    assert storage.read_bytes(url) == b"three"
    assert storage.delete_if(url, second) is True
    assert not storage.exists(url)
    assert storage.replace_if(url, b"five", second) is None  # gone: not recreated
    assert not storage.exists(url)


def test_a_conditional_write_to_a_missing_bucket_names_it(storage: Storage) -> None:
    with pytest.raises(StorageError, match=NO_SUCH_BUCKET) as caught:
        storage.create_only("s3://no-such-bucket-lease/out.parquet.batchrun/lease.json", b"x")
    assert "s3://no-such-bucket-lease/out.parquet.batchrun/lease.json" in str(caught.value)


# -- the lease -----------------------------------------------------------------------------


def test_a_second_run_is_refused_at_once_naming_the_holder(storage: Storage, bucket: str) -> None:
    out = f"s3://{bucket}/out/labels.parquet"
    clock = Clock()
    first = lease(storage, out, clock, "machine-a")
    first.acquire()
    written = held_record(storage, out)
    assert written is not None and written.host == "machine-a" and written.run_id == "run-machine-a"
    clock.now += 200  # within the 300 s of the lease
    with pytest.raises(LeaseHeldError) as refused:
        lease(storage, out, clock, "machine-b").acquire()
    message = str(refused.value)
    assert "machine-a" in message and "run-machine-a" in message and out in message
    assert held_record(storage, out) == written  # the holder's lease is untouched
    first.release()
    assert not storage.exists(lease_url(out))


def test_renewing_moves_the_expiry_on_and_keeps_others_out(storage: Storage, bucket: str) -> None:
    out = f"s3://{bucket}/out/renewed.parquet"
    clock = Clock()
    holder = lease(storage, out, clock, "machine-a")
    holder.acquire()
    for _ in range(5):  # 5 x 200 s: far past the first expiry, renewed all along
        clock.now += 200
        assert holder.renew()
    record = held_record(storage, out)
    assert record is not None and not record.expired(clock.now)
    assert record.started != record.renewed
    with pytest.raises(LeaseHeldError):
        lease(storage, out, clock, "machine-b").acquire()
    holder.release()


def test_an_expired_lease_is_taken_over_and_its_old_holder_finds_out(
    storage: Storage, bucket: str
) -> None:
    out = f"s3://{bucket}/out/lost.parquet"
    clock = Clock()
    lost_messages: list[str] = []
    lost = lease(storage, out, clock, "machine-a", on_lost=lost_messages.append)
    lost.acquire()
    clock.now += 301  # machine-a fell silent for longer than the lease
    new = lease(storage, out, clock, "machine-b")
    new.acquire()
    assert new.taken_over is not None and new.taken_over.host == "machine-a"
    record = held_record(storage, out)
    assert record is not None and record.host == "machine-b"
    # machine-a comes back: its renewal fails, it is told, and it never deletes b's lease.
    assert lost.renew() is False
    assert lost.lost_to is not None and lost.lost_to.host == "machine-b"
    assert lost_messages and "machine-b" in lost_messages[0]
    lost.release()
    assert held_record(storage, out) == record
    new.release()
    assert not storage.exists(lease_url(out))


def test_a_lease_is_fresh_only_while_it_is_surely_this_runs(storage: Storage, bucket: str) -> None:
    """Fresh until ttl less a margin after the start of the last renewal, on a clock that runs
    through a pause (``ticks``); then ``confirm`` renews it, or names the run that took it."""
    out = f"s3://{bucket}/out/fresh.parquet"
    clock, ticks = Clock(), Clock(1000.0)
    holder = lease(storage, out, clock, "machine-a", ticks=ticks)
    assert not holder.fresh()  # not taken yet
    holder.acquire()
    assert holder.fresh() and 0 < holder.margin_s < holder.ttl_s - holder.renew_s + 1e-9
    ticks.now += holder.ttl_s - holder.margin_s  # the margin is never used up
    assert not holder.fresh()
    assert holder.confirm() is None and holder.fresh()  # renewed at once
    assert holder.renewals == 1
    # Paused past the lease (wall clock and boot clock both move on); another run takes it.
    clock.now += 301
    ticks.now += 301
    other = lease(storage, out, clock, "machine-b")
    other.acquire()
    assert not holder.fresh()
    reason = holder.confirm()
    assert reason is not None and "taken over by run run-machine-b on machine-b" in reason
    assert not holder.fresh() and holder.confirm() == reason  # for good
    holder.release()
    assert held_record(storage, out) is not None  # b's, untouched
    other.release()


def test_confirm_waits_out_a_short_store_outage_then_gives_up(
    storage: Storage, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = f"s3://{bucket}/out/outage.parquet"
    clock, ticks = Clock(), Clock(1000.0)
    holder = lease(storage, out, clock, "machine-a", ticks=ticks)
    holder.acquire()
    failures = []

    def unreachable(*args: Any) -> str | None:
        failures.append(ticks.now)
        ticks.now += 100  # each try takes a while
        if len(failures) == 2:  # the second try: the store answers again
            monkeypatch.undo()
            return real(*args)
        raise StorageError(lease_url(out), "write", "endpoint unreachable")

    real = storage.replace_if
    ticks.now += holder.ttl_s
    monkeypatch.setattr(storage, "replace_if", unreachable)
    monkeypatch.setattr(holder._stop, "wait", lambda seconds: False)
    assert holder.confirm() is None and len(failures) == 2  # a short outage: a pause
    ticks.now += holder.ttl_s
    monkeypatch.setattr(storage, "replace_if", unreachable)
    monkeypatch.setattr(holder._stop, "wait", lambda seconds: False)
    failures[:] = [0.0, 0.0]  # from now on it never answers
    reason = holder.confirm()
    assert reason is not None and "could not renew the lease" in reason
    assert holder.lost_to is None and holder.last_error is not None
    monkeypatch.undo()
    holder.release()


def test_of_two_runs_taking_over_one_dead_lease_only_one_wins(
    storage: Storage, bucket: str
) -> None:
    out = f"s3://{bucket}/out/race.parquet"
    clock = Clock()
    lease(storage, out, clock, "machine-a").acquire()
    clock.now += 400
    dead = storage.read_versioned(lease_url(out))
    assert dead is not None
    b, c = lease(storage, out, clock, "machine-b"), lease(storage, out, clock, "machine-c")
    # Both read the dead lease; b writes first, so c's write over that version fails.
    assert storage.replace_if(lease_url(out), b.record().to_bytes(), dead.version) is not None
    assert storage.replace_if(lease_url(out), c.record().to_bytes(), dead.version) is None
    with pytest.raises(LeaseHeldError, match="machine-b"):
        c.acquire()


def test_a_lease_of_a_dead_process_of_this_host_is_taken_over_at_once(
    storage: Storage, bucket: str
) -> None:
    out = f"s3://{bucket}/out/killed.parquet"
    clock = Clock()
    lease(storage, out, clock, "this-host").acquire()  # then kill -9: never released
    running = {100}

    def alive(pid: int) -> bool:
        return pid in running

    again = Lease(storage, out, run_id="run-2", clock=clock, host="this-host", pid=200, alive=alive)
    with pytest.raises(LeaseHeldError):  # pid 100 still runs: a live run here
        again.acquire()
    running.clear()
    again.acquire()  # pid 100 is gone: no need to wait for the expiry
    assert again.taken_over is not None and again.taken_over.pid == 100
    # On another host the same pid says nothing: there it waits for the expiry.
    with pytest.raises(LeaseHeldError):
        Lease(storage, out, run_id="run-3", clock=clock, host="elsewhere", alive=alive).acquire()
    again.release()


def test_a_damaged_lease_object_is_taken_over(storage: Storage, bucket: str) -> None:
    out = f"s3://{bucket}/out/damaged.parquet"
    storage.write_bytes(lease_url(out), b"{not json")
    taker = lease(storage, out, Clock(), "machine-b")
    taker.acquire()
    assert taker.held and taker.taken_over is None
    taker.release()


def test_the_heartbeat_renews_in_the_background_until_release(
    storage: Storage, bucket: str
) -> None:
    out = f"s3://{bucket}/out/beat.parquet"

    class Ticking(Clock):
        def __call__(self) -> float:
            self.now += 1
            return self.now

    clock = Ticking()
    with lease(storage, out, clock, "machine-a", ttl_s=60, renew_s=0.01) as holder:
        wait_until(lambda: holder.renewals >= 3, 30, "three renewals of the lease")
        assert held_record(storage, out) is not None
    assert not storage.exists(lease_url(out))
    assert holder.last_error is None


# -- whole runs (the lease taken by claim_output, see drivers/output.py) --------------------


def run_config(inp: Path, out: str, url: str, env: dict[str, str], **flags: Any) -> RunConfig:
    return job_config(
        str(inp), out, url, environ=env, **{"max_tokens": 20, "concurrency": 4, **flags}
    )


def test_a_run_is_refused_while_another_machine_holds_the_lease(
    tmp_path: Path, env: dict[str, str], bucket: str, storage: Storage, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(5))
    out = f"s3://{bucket}/out/held.parquet"
    other = Lease(storage, out, run_id="run-elsewhere", host="machine-elsewhere", pid=7)
    other.acquire()
    with pytest.raises(LeaseHeldError, match="machine-elsewhere"):
        run(run_config(inp, out, sim.base_url, env))
    assert sim.stats.snapshot().requests == 0  # refused before anything was sent
    other.release()
    assert run(run_config(inp, out, sim.base_url, env)).exit_code == 0


def test_the_lease_is_gone_after_a_run_and_after_a_stop(
    tmp_path: Path, env: dict[str, str], bucket: str, storage: Storage, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    out = f"s3://{bucket}/out/ends.parquet"
    flags = {"model": "claude-sonnet-4-6", "max_tokens": 400}
    stopped = run(run_config(inp, out, sim.base_url, env, max_cost=0.03, **flags))
    assert stopped.exit_code == 4 and stopped.partial is not None  # a budget stop
    assert not storage.exists(lease_url(out))
    done = run(run_config(inp, out, sim.base_url, env, **flags))
    assert done.exit_code == 0 and done.final is not None
    assert not storage.exists(lease_url(out))
