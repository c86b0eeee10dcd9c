"""One machine at a time on a remote output: a lease object beside it.

``store.lock`` is a file lock: it keeps two runs of one machine apart, but two machines each
have their own work folder and lock. A remote output (``s3://b/out/labels.parquet``) is
claimed with ``s3://b/out/labels.parquet.batchrun/lease.json``::

    {"run_id": "20261202T031500Z-a1b2c3", "host": "node-7", "pid": 4242,
     "started": "2026-12-02T03:15:00Z", "renewed": "2026-12-02T03:16:00Z",
     "expires": "2026-12-02T03:21:00Z"}

- Taking it: a create-only write (``Storage.create_only``: S3's ``If-None-Match: *``). When
  one is there and not expired, the run is refused at once, naming the holder. When it has
  expired (its machine was lost: no heartbeat for ``ttl_s``), or was taken by a process of
  this host that is no longer running (killed: a re-run here need not wait for the expiry),
  it is taken over with a write
  conditional on the version read, so that of two machines taking over the same dead lease
  only one wins.
- Holding it: a heartbeat thread moves ``expires`` on every ``renew_s`` seconds (60 s; the
  lease lives 5 minutes), again conditional on the version this run last wrote. A renewal
  that finds another holder (this machine was silent for longer than the lease: suspended,
  cut off) marks the lease ``lost`` and calls ``on_lost``; one the store cannot take is
  retried at the next beat.
- Using it: before each request, each segment and the final upload the run asks ``fresh``
  (cheap): whether the lease is surely still its own, that is, less than ``ttl_s`` minus a
  margin has passed since the start of the last renewal that succeeded. Time is measured on
  a clock that keeps running while the process is stopped (``SIGSTOP``) or the machine
  suspended (``CLOCK_BOOTTIME``; the wall clock where there is none), never on the monotonic
  clock, which stands still during a suspend: a laptop that wakes after its lease lapsed
  must not take it for fresh. When it is not fresh, ``confirm`` renews it at once (blocking:
  call it off the event loop) and says whether the run may go on.
- Giving it back: deleted at the end of the run (normal end, stop or error), conditional on
  its version: never another holder's lease.

Expiry is judged on the clock of the machine that reads it: machines are assumed to agree
within a small part of the lease's life (NTP keeps them within a second).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from types import TracebackType

from batchrun.core.errors import OutputError
from batchrun.core.extras import install_hint
from batchrun.core.scrub import url_without_secrets
from batchrun.remote.errors import StorageError
from batchrun.remote.objects import Storage

LEASE_OBJECT = ".batchrun/lease.json"  # after the output's URL
TTL_S = 300.0
RENEW_S = 60.0
_TAKEOVER_TRIES = 3
# The lease's stamps are whole seconds, cut down: another machine may see it expire up to a
# second before ``renewed + ttl``; and machines' clocks differ a little (NTP: well under 1 s).
_STAMP_SLACK_S = 1.0
_CONFIRM_RETRY_S = 2.0  # between renewals the store did not answer, while admission waits


def _boot_clock() -> float:
    """Seconds on a clock that runs through SIGSTOP and system suspend (Linux's
    CLOCK_BOOTTIME); the wall clock elsewhere."""
    return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.time()


_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def lease_url(output_url: str) -> str:
    return f"{output_url}{LEASE_OBJECT}"


@dataclass(frozen=True)
class LeaseRecord:
    """What a lease object holds; times are RFC 3339, UTC."""

    run_id: str
    host: str
    pid: int
    started: str
    renewed: str
    expires: str

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord | None:
        """The record, or None for bytes that are no lease (damaged, or not batchrun's)."""
        try:
            raw = json.loads(data)
            record = cls(
                str(raw["run_id"]),
                str(raw["host"]),
                int(raw["pid"]),
                str(raw["started"]),
                str(raw["renewed"]),
                str(raw["expires"]),
            )
            _epoch(record.expires)
        except (ValueError, KeyError, TypeError):
            return None
        return record

    def expired(self, now: float) -> bool:
        return _epoch(self.expires) <= now

    def holder(self) -> str:
        return (
            f"run {self.run_id} on {self.host} (pid {self.pid}), started {self.started}, "
            f"last heard of {self.renewed}"
        )


class LeaseHeldError(OutputError):
    """Another run holds a live lease on the output."""

    def __init__(self, shown_url: str, record: LeaseRecord) -> None:
        self.record = record
        super().__init__(
            f"{shown_url} is being written by {record.holder()}; its lease runs until "
            f"{record.expires}. Wait for that run to end; if its machine is gone, the lease "
            "lapses by itself then and a new run takes over"
        )


class Lease:
    """The lease of one remote output, for one run; a context manager::

        with Lease(storage, "s3://b/out/labels.parquet", run_id=run_id) as lease:
            ...   # the run: renewed in the background, removed on leaving
            if not lease.fresh() and lease.confirm() is not None:
                ...   # lost: send nothing more, upload nothing

    ``clock`` (epoch seconds, for the stamps), ``ticks`` (elapsed seconds, for freshness),
    ``host`` and ``pid`` are seams for tests; ``on_lost`` is told, once, when another run
    has taken the lease over from this one; ``warn`` (stderr by default) that the lease is
    not atomic on S3 because boto3 is missing.
    """

    def __init__(
        self,
        storage: Storage,
        output_url: str,
        *,
        run_id: str,
        ttl_s: float = TTL_S,
        renew_s: float = RENEW_S,
        clock: Callable[[], float] = time.time,
        host: str | None = None,
        pid: int | None = None,
        on_lost: Callable[[str], None] | None = None,
        alive: Callable[[int], bool] | None = None,
        ticks: Callable[[], float] = _boot_clock,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        if renew_s >= ttl_s:
            raise ValueError("a lease must be renewed more often than it expires")
        self.storage = storage
        self.url = lease_url(output_url)
        self.shown = url_without_secrets(output_url)
        self.run_id = run_id
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self._clock = clock
        self._ticks = ticks
        # Surely this run's until then (on ``ticks``): the start of the last renewal that
        # succeeded, plus the lease's life, less what the other machine may see earlier.
        self.margin_s = min(ttl_s / 4 + _STAMP_SLACK_S, ttl_s - renew_s)
        self._surely_until = float("-inf")
        self._host = host if host is not None else socket.gethostname()
        self._pid = pid if pid is not None else os.getpid()
        self._on_lost = on_lost
        self._alive = alive or _process_alive
        self._warn = warn or _warn_on_stderr
        self._started = ""
        self._version: str | None = None
        self._lock = threading.Lock()  # the version, shared with the heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.taken_over: LeaseRecord | None = None  # the expired lease this run replaced
        self.lost_to: LeaseRecord | None = None
        self.renewals = 0
        self.last_error: StorageError | None = None

    @property
    def held(self) -> bool:
        return self._version is not None and self.lost_to is None

    def record(self) -> LeaseRecord:
        now = self._clock()
        return LeaseRecord(
            self.run_id,
            self._host,
            self._pid,
            self._started or _stamp(now),
            _stamp(now),
            _stamp(now + self.ttl_s),
        )

    # -- taking, renewing, giving back -----------------------------------------------------

    def acquire(self) -> None:
        """Take the lease, or raise LeaseHeldError naming the run that holds it."""
        if self.url.startswith("s3://") and not self.storage.conditions_atomic(self.url):
            # The lease still works, but two machines starting at the same moment could both
            # take it: say so, with the fix (S3's conditional writes need boto3).
            self._warn(
                f"batchrun: warning: boto3 is not installed, so the lease of {self.shown} is "
                "taken by check-then-write: two machines starting this output at the same "
                f"moment could both run it; {install_hint('s3')} makes it atomic"
            )
        self._started = _stamp(self._clock())
        for _ in range(_TAKEOVER_TRIES):
            asked = self._ticks()
            version = self.storage.create_only(self.url, self.record().to_bytes())
            if version is not None:
                self._version = version
                self._held_from(asked)
                return
            current = self.storage.read_versioned(self.url)
            if current is None:
                continue  # given back in between: try creating again
            found = LeaseRecord.from_bytes(current.data)
            if found is not None and not self._dead(found):
                raise LeaseHeldError(self.shown, found)
            asked = self._ticks()
            version = self.storage.replace_if(self.url, self.record().to_bytes(), current.version)
            if version is not None:
                self._version = version
                self._held_from(asked)
                self.taken_over = found
                return
            # Another run took the dead lease over first: look again at what it wrote.
        raise OutputError(f"cannot take the lease of {self.shown}: it keeps changing hands")

    def _dead(self, found: LeaseRecord) -> bool:
        """Whether the lease's run has certainly gone: expired, or of this host and its
        process no longer running."""
        if found.expired(self._clock()):
            return True
        return found.host == self._host and found.pid != self._pid and not self._alive(found.pid)

    def renew(self) -> bool:
        """Move the expiry on; False when the lease was lost to another run (``lost_to``)."""
        with self._lock:
            if self._version is None or self.lost_to is not None:
                return False
            asked = self._ticks()
            version = self.storage.replace_if(self.url, self.record().to_bytes(), self._version)
            if version is not None:
                self._version = version
                self._held_from(asked)
                self.renewals += 1
                return True
            current = self.storage.read_versioned(self.url)
            found = LeaseRecord.from_bytes(current.data) if current is not None else None
            self.lost_to = found or LeaseRecord("?", "?", 0, "?", "?", "?")
        if self._on_lost is not None:
            self._on_lost(self.lost_message())
        return False

    def _held_from(self, asked: float) -> None:
        """A write of the lease that started at ``asked`` (on ``ticks``) succeeded."""
        self._surely_until = asked + self.ttl_s - self.margin_s

    def fresh(self) -> bool:
        """Whether the lease is surely still this run's now: cheap, asked before each request."""
        return (
            self.lost_to is None
            and self._version is not None
            and (self._ticks() < self._surely_until)
        )

    def confirm(self) -> str | None:
        """Make sure the lease is this run's, renewing it now when it is not surely fresh;
        None when it is, else why the run must stop. Blocks (call it off the event loop):
        while the store does not answer it tries again, until the lease has lapsed for
        another ``ttl_s`` with no answer, so that a short outage only pauses the run."""
        give_up = self._ticks() + self.ttl_s
        while not self.fresh():
            if self.lost_to is not None or self._version is None:
                return self.lost_message()
            try:
                if self.renew():
                    self.last_error = None
                    return None
            except StorageError as exc:
                self.last_error = exc
                if self._ticks() >= max(give_up, self._surely_until + self.margin_s + self.ttl_s):
                    return (
                        f"batchrun could not renew the lease of {self.shown} for "
                        f"{self.ttl_s:g} s ({exc}): another machine may have taken the output "
                        "over"
                    )
                self._stop.wait(_CONFIRM_RETRY_S)
        return None

    def lost_message(self) -> str:
        """Who took the lease over, in words."""
        found = self.lost_to
        if found is None:
            return f"this run does not hold the lease of {self.shown}"
        if found.run_id == "?":
            return (
                f"the lease of {self.shown} was taken from this run while it was silent, "
                "and has since been given back (the run that took it over has ended)"
            )
        return f"the lease of {self.shown} was taken over by {found.holder()}"

    def release(self) -> None:
        """Stop renewing and delete the lease, if it is still this run's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            version, self._version = self._version, None
        if version is not None and self.lost_to is None:
            self.storage.delete_if(self.url, version)

    def start_renewing(self) -> None:
        """Renew every ``renew_s`` seconds on a daemon thread until ``release``."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="batchrun-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                if not self.renew():
                    return
                self.last_error = None
            except StorageError as exc:  # the store is out of reach: try at the next beat
                self.last_error = exc

    def __enter__(self) -> Lease:
        self.acquire()
        self.start_renewing()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _warn_on_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return True  # cannot tell: take it for alive
    return True


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
