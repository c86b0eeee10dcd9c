"""One run per output: an OS lock on a file beside it, ``.<name>.lock``.

Two runs writing the same output would each pay for every row the other had not journaled
yet, then collide in the final step. So every driver that writes an output takes this lock
before it reads or sends anything, and holds it to the end, the final dataset included::

    with OutputLock(Path("out/labels.parquet")):
        ...  # the only run writing out/labels.parquet

A second run is refused at once (``OutputError``), told who holds the lock: the holder
writes its pid, host and start time into the lock file. The lock itself is ``flock`` on that
file, which the kernel releases when the holder's process ends, however it ends (``kill -9``
too): a lock file left behind by a dead run blocks nothing, its content is only information.
A run that ends removes its lock file. Locks are per open file, so a second run in the same
process is refused too.

So a lock file found in place when the lock is taken was left by a run that was killed
(``after_kill``), and only such a run can have left temporary files beside the output: a run
looks for them (listing the output's folder, which may hold anything) only then.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from batchrun.core.errors import OutputError
from batchrun.core.timestamps import format_rfc3339

# How long a refused run waits for the holder to write who it is (it does so right after
# taking the lock; this only covers the instant in between).
_HOLDER_WAIT_S = 0.5
_ATTEMPTS = 20  # a holder removing its lock file as we open it: try the new file


def lock_path(output: Path) -> Path:
    """The lock file of ``output``: hidden, beside it."""
    return output.with_name(f".{output.name}.lock")


class OutputLockedError(OutputError):
    """Another run holds the output: nothing of this run was read, sent or written."""


class OutputLock:
    """The exclusive right to write one output; see the module doc."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = lock_path(output)
        self._fd: int | None = None
        # The lock file was there when this run took the lock: the run that wrote it ended
        # without removing it (killed), and may have left temporary files beside the output.
        self.after_kill = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise OutputError naming the run that holds it."""
        if self._fd is not None:
            return
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(_ATTEMPTS):
                opened = _open(self.path)
                if opened is None:
                    continue  # removed as it was opened: open anew
                fd, found = opened
                try:
                    if self._lock(fd):
                        self._fd = fd
                        self.after_kill = found
                        self._write_holder(fd)
                        return
                except BaseException:
                    self._fd = None
                    os.close(fd)
                    raise
                os.close(fd)  # the holder removed this file as it released it: open anew
        except OSError as exc:
            raise OutputError(
                f"cannot lock output {self.output} ({self.path}): {exc.strerror or exc}"
            ) from exc
        raise OutputError(f"cannot lock output {self.output}: {self.path} keeps changing")

    def _lock(self, fd: int) -> bool:
        """Lock ``fd``; False when it is no longer the file at ``self.path``."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputLockedError(self._refusal(fd)) from None
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def _write_holder(self, fd: int) -> None:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": format_rfc3339(datetime.now(timezone.utc)),
        }
        data = (json.dumps(holder) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def _refusal(self, fd: int) -> str:
        deadline = time.monotonic() + _HOLDER_WAIT_S
        holder = _read_holder(fd)
        while not holder and time.monotonic() < deadline:
            time.sleep(0.02)
            holder = _read_holder(fd)
        who = (
            f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"started {holder.get('started', '?')}"
            if holder
            else "it has not said who it is yet"
        )
        return (
            f"output {self.output} is being written by another batchrun run ({who}; lock "
            f"file {self.path}). Two runs of one output would pay for its rows twice: wait "
            "for that run to end, or stop it, then run this command again (it resumes)"
        )

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and give the lock up."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    self.path.unlink()
        finally:
            os.close(fd)


def _open(path: Path) -> tuple[int, bool] | None:
    """The lock file, made when there is none; and whether it was there already. None when
    it went away between the two tries (its holder released it)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), False
    except FileExistsError:
        pass
    try:
        return os.open(path, os.O_RDWR), True
    except FileNotFoundError:
        return None


def _read_holder(fd: int) -> dict[str, object]:
    """What the holder wrote into the lock file; empty when nothing (readable) is there."""
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data)
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}
