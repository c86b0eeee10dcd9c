"""A remote output (``s3://`` or ``gs://``) mirrored in a local work folder, with a journal
that survives the loss of the machine.

The sink works on local files only: the final file and its journal live in a work folder
(``work_folder``), where the journal is appended and fsynced as usual. This module keeps the
folder and the object store in step::

    s3://b/out/labels.parquet                                   the final file, one upload
    s3://b/out/labels.parquet.batchrun/journal/000001-<run>.jsonl   sealed journal segments
    s3://b/out/labels.parquet.batchrun/journal/000002-<run>.jsonl   ... in journal order

    <work>/labels.parquet               the local final file (a copy of the remote one)
    <work>/labels.parquet.journal       the sink's journal (``sink.journal_path``)
    <work>/labels.parquet.remote.json   which segments the journal's first bytes are

Segments are numbered across runs: a run numbers its segments on from the highest number it
found, so sorting by number is journal order whatever the machines' clocks say; the run id
in the name keeps two runs' objects apart. A segment is never modified once written.

The invariant: the local journal's first ``sealed_bytes`` bytes are the listed segments,
concatenated in order; the bytes after them are not sealed yet. ``RemoteOutput.pull``
restores it before a run:

- An empty work folder (a new machine): the journal is rebuilt from the segments.
- A work folder whose journal is there (this machine ran before): it is kept, and the
  segments other machines sealed since (numbers it has not seen) are put after its sealed
  part and before its unsealed tail. The tail (rows this machine finished but never
  uploaded) is then sealed by the next run, so that every machine ends up with the same
  journal. A row that both the tail and another machine's segment hold is thus answered by
  the tail's record (the newest record in journal order wins): two real answers to the
  same request, either is right.
- A work folder that lists segments the store no longer has (another machine published the
  output, or someone cleared the segments): its journal is stale; it is set aside (renamed,
  not deleted) and the journal rebuilt from what the store has.
- The local final file is made a copy of the remote one: downloaded when the remote one
  changed, removed when there is none (a stopped run's partial file is local only).

``Segmenter`` seals segments while the run goes; ``RemoteOutput.publish`` uploads the final
file and only then deletes the segments.

Nothing is uploaded without the output's lease (``remote.lease``): before each segment and the
final file, a lease that is not surely fresh is renewed, and one another run took over stops
the upload (``LeaseLostError``), so a run that was paused past its lease never writes over
the run that took the output over. A final file whose upload failed is remembered in the
state (``unpublished``): the next pull keeps it, while the store still has the final file it
had then, and the next publish uploads it instead of paying for its rows again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchrun.core.scrub import url_without_secrets
from batchrun.core.wording import option
from batchrun.remote.errors import LeaseLostError, StorageError
from batchrun.remote.lease import Lease
from batchrun.remote.objects import ObjectInfo, Storage, parse_location
from batchrun.store.commit import Committed
from batchrun.store.sink import journal_path

JOURNAL_FOLDER = ".batchrun/journal"  # after the output's URL
STATE_SUFFIX = ".remote.json"
STALE_SUFFIX = ".stale"
ROWS_PER_SEGMENT = 10_000
SECONDS_PER_SEGMENT = 60.0
_SEGMENT = re.compile(r"(?P<seq>[0-9]{6,})-(?P<run>[\w.-]+)\.jsonl")
_TAIL_PROBE = 64 << 10  # bytes read back at a time to find a segment's last line end


def journal_prefix(url: str) -> str:
    """The folder of ``url``'s sealed journal segments."""
    return f"{url}{JOURNAL_FOLDER}"


def segment_name(seq: int, run_id: str) -> str:
    return f"{seq:06d}-{run_id}.jsonl"


def segment_seq(name: str) -> int | None:
    """The number of a segment's object name, or None for a name that is no segment."""
    found = _SEGMENT.fullmatch(name)
    return int(found.group("seq")) if found else None


def new_run_id(now: Callable[[], float] = time.time) -> str:
    """A run's id for segment names: its start (UTC) and a random part, ``20261202T031500Z-
    a1b2c3``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now()))
    return f"{stamp}-{secrets.token_hex(3)}"


def work_folder(url: str, work_dir: Path | None = None, cache_home: Path | None = None) -> Path:
    """The local folder mirroring the remote output ``url``: ``work_dir`` when given, else
    ``<cache_home>/batchrun/<name>-<hash of the URL>`` (``RunConfig.cache_home``, from
    ``$XDG_CACHE_HOME``; ``~/.cache`` when None)."""
    if work_dir is not None:
        return work_dir
    shown = url_without_secrets(url)
    digest = hashlib.sha256(shown.encode()).hexdigest()[:16]
    home = cache_home if cache_home is not None else Path.home() / ".cache"
    return home / "batchrun" / f"{parse_location(url).name}-{digest}"


@dataclass
class _State:
    """What the work folder knows of the store (``<output>.remote.json``)."""

    url: str
    sealed_bytes: int = 0
    segments: list[str] = field(default_factory=list)
    final_stamp: str | None = None  # the remote final's stamp when last copied
    local_stamp: str | None = None  # the local copy's size and mtime then
    # The local final file (its size and mtime) being uploaded, until the upload is done: a
    # complete output of this machine's that the store does not have yet.
    unpublished: str | None = None

    @classmethod
    def read(cls, path: Path) -> _State | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            state = cls(
                str(data["url"]),
                int(data["sealed_bytes"]),
                [str(name) for name in data["segments"]],
                data.get("final_stamp"),
                data.get("local_stamp"),
                data.get("unpublished"),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # damaged: treated like a folder that never knew the store
        return state

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1), encoding="utf-8")
        os.replace(tmp, path)


@dataclass(frozen=True)
class PullReport:
    """What ``pull`` found: whether a final file exists, how many segments (and bytes)
    were put into the journal, how many of its bytes are not sealed yet, and where a
    stale journal was set aside (None if none was)."""

    final: bool
    segments_pulled: int
    bytes_pulled: int
    unsealed_bytes: int
    set_aside: Path | None = None


class RemoteOutput:
    """One remote output and its work folder. For a run::

        remote = RemoteOutput("s3://b/out/labels.parquet", storage)
        remote.pull()                            # before Sink(remote.local_output).open()
        segmenter = remote.segmenter()
        ... sink.submit(...); segmenter.noticed() ...
        await sink.close(); segmenter.close()    # seal the rest before the final step
        sink.finalize(total_rows)
        remote.publish()                         # the final file, then segments deleted

    ``rows_per_segment`` and ``seconds_per_segment`` bound the work a lost machine can
    lose: 10,000 rows or a minute by default. ``clock`` is a seam for tests.
    """

    def __init__(
        self,
        url: str,
        storage: Storage,
        *,
        work_dir: Path | None = None,
        cache_home: Path | None = None,
        run_id: str | None = None,
        keep_journal: bool = False,
        rows_per_segment: int = ROWS_PER_SEGMENT,
        seconds_per_segment: float = SECONDS_PER_SEGMENT,
        clock: Callable[[], float] = time.monotonic,
        lease: Lease | None = None,
    ) -> None:
        self.url = url
        self.shown = url_without_secrets(url)
        self.storage = storage
        self.folder = work_folder(url, work_dir, cache_home)
        self.local_output = self.local_output_of(url, work_dir, cache_home)
        self.local_journal = journal_path(self.local_output)
        self.state_path = self.local_output.with_name(self.local_output.name + STATE_SUFFIX)
        self.prefix = journal_prefix(url)
        self.run_id = run_id or new_run_id()
        self.keep_journal = keep_journal
        self._rows = rows_per_segment
        self._seconds = seconds_per_segment
        self._clock = clock
        self._state = _State(self.shown)
        self._next_seq = 1
        self._lock = threading.Lock()  # the state, shared with the segmenter's thread
        self._pulled = False
        self.lease = lease  # asked before every upload; None: no lease (tests, tools)

    @property
    def sealed_bytes(self) -> int:
        """How many of the local journal's first bytes are in segments on the store."""
        with self._lock:
            return self._state.sealed_bytes

    # -- before the run ---------------------------------------------------------------------

    @staticmethod
    def local_output_of(url: str, work_dir: Path | None, cache_home: Path | None) -> Path:
        """Where the local copy of the output ``url`` lives (and its journal beside it)."""
        return work_folder(url, work_dir, cache_home) / parse_location(url).name

    def pull(self, *, overwrite: bool = False) -> PullReport:
        """Bring the work folder in step with the store (see the module's docstring).

        With ``overwrite``, start afresh: the segments of earlier runs are deleted and the
        local journal and final file removed (the remote final file stays until
        ``publish`` replaces it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        state = _State.read(self.state_path)
        if state is not None and state.url != self.shown:
            raise StorageError(
                str(self.folder),
                "use",
                f"this work folder belongs to another output ({state.url})",
                f"give another {option('work_dir')}",
            )
        self._remove_unfinished_uploads()
        segments = self._segments()
        if overwrite:
            for info in segments:
                self.storage.delete(info.url)
            for path in (self.local_journal, self.local_output, self.state_path):
                path.unlink(missing_ok=True)
            self._state = _State(self.shown)
            self._next_seq = 1
            self._save()
            self._pulled = True
            return PullReport(False, 0, 0, 0)
        state = state or _State(self.shown)
        final = self._pull_final(state)
        names = [info.name for info in segments]
        size = _size(self.local_journal)
        set_aside = None
        fresh = size == 0
        if not fresh and (
            names[: len(state.segments)] != state.segments or state.sealed_bytes > size
        ):
            set_aside = self.local_journal.with_name(
                f"{self.local_journal.name}{STALE_SUFFIX}-{self.run_id}"
            )
            os.replace(self.local_journal, set_aside)
            fresh = True
        if fresh:
            state.sealed_bytes, state.segments, size = 0, [], 0
        new = segments[len(state.segments) :]
        pulled = self._splice(new, state.sealed_bytes, size) if new else 0
        state.sealed_bytes += pulled
        state.segments = names
        self._state = state
        self._next_seq = max((segment_seq(n) or 0 for n in names), default=0) + 1
        self._save()
        self._pulled = True
        unsealed = _size(self.local_journal) - state.sealed_bytes
        return PullReport(final, len(new), pulled, unsealed, set_aside)

    def _remove_unfinished_uploads(self) -> None:
        """Delete the temporary objects of segment uploads a run left when it was cut off
        mid-upload: only the run holding the output's lease writes segments, and this one
        does now, so every such object there is abandoned."""
        for info in self.storage.list(self.prefix, unfinished_uploads=True):
            self.storage.delete(info.url)

    def _segments(self) -> list[ObjectInfo]:
        found = [info for info in self.storage.list(self.prefix) if segment_seq(info.name)]
        return sorted(found, key=lambda info: (segment_seq(info.name), info.name))

    def _pull_final(self, state: _State) -> bool:
        remote = self.storage.stat_or_none(self.url)
        if self._keeps_unpublished(state, remote, _stamp(self.local_output)):
            return True
        if remote is None:
            self.local_output.unlink(missing_ok=True)
            state.final_stamp = state.local_stamp = None
            return False
        if remote.stamp != state.final_stamp or _stamp(self.local_output) != state.local_stamp:
            self.storage.download(self.url, self.local_output)
            state.final_stamp, state.local_stamp = remote.stamp, _stamp(self.local_output)
        return True

    @staticmethod
    def _keeps_unpublished(state: _State, remote: ObjectInfo | None, local: str | None) -> bool:
        """Whether the local final file is this machine's complete output whose upload
        failed (it is as it was then), and the store still has what it had then: kept, for
        this run's publish to upload (the rows are read from it, not paid for again)."""
        if state.unpublished is None or local != state.unpublished:
            state.unpublished = None
            return False
        return (remote.stamp if remote is not None else None) == state.final_stamp

    def _splice(self, new: list[ObjectInfo], sealed: int, size: int) -> int:
        """Write the journal anew: its sealed part, the ``new`` segments, its unsealed tail;
        return the bytes the segments added. Built under a temporary name and renamed, so a
        crash leaves the old journal."""
        tmp = self.local_journal.with_name(f".{self.local_journal.name}.{self.run_id}.pull")
        added = 0
        try:
            with tmp.open("wb") as out:
                if size:
                    with self.local_journal.open("rb") as old:
                        _copy(old, out, sealed)
                for info in new:
                    with self.storage.open_input(info.url) as segment:
                        added += _copy(segment, out, None)
                if size > sealed:
                    with self.local_journal.open("rb") as old:
                        old.seek(sealed)
                        _copy(old, out, None)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.local_journal)
        finally:
            tmp.unlink(missing_ok=True)
        return added

    # -- during the run ---------------------------------------------------------------------

    def segmenter(self) -> Segmenter:
        """A started Segmenter for the local journal, sealing from where ``pull`` left."""
        if not self._pulled:
            raise RuntimeError("RemoteOutput.segmenter() before pull(): segments would clash")
        return Segmenter(
            self.local_journal,
            self._seal,
            sealed_bytes=self._state.sealed_bytes,
            rows_per_segment=self._rows,
            seconds_per_segment=self._seconds,
            clock=self._clock,
        )

    def _seal(self, source: Any, end: int) -> None:
        """Upload ``source`` (the journal's bytes up to offset ``end``) as the next segment."""
        with self._lock:
            seq = self._next_seq
        name = segment_name(seq, self.run_id)
        url = f"{self.prefix}/{name}"
        try:
            self.check_lease()
        except LeaseLostError as exc:  # the segmenter keeps the error and tries no further
            raise StorageError(url_without_secrets(url), "write", str(exc)) from exc
        self.storage.upload_from(source, url)
        with self._lock:
            self._next_seq = seq + 1
            self._state.segments.append(name)
            self._state.sealed_bytes = end
            self._save()

    # -- after the run ----------------------------------------------------------------------

    def check_lease(self) -> None:
        """Raise LeaseLostError unless this run surely holds the output's lease (renewed now
        when it is not fresh), or the StorageError of a store that did not answer for as
        long as the lease lasts: asked before every upload."""
        lease = self.lease
        if lease is not None and not lease.fresh():
            reason = lease.confirm()
            if reason is not None and lease.lost_to is None and lease.last_error is not None:
                raise lease.last_error  # the store does not answer: no upload can be made
            if reason is not None:
                raise LeaseLostError(reason)

    def publish(self, committed: Committed | None = None) -> None:
        """Upload the final file as one upload: ``committed``'s, as the sink's final step put
        it in place (``store.commit``; the work folder's when None); then delete the segments
        (unless ``keep_journal``). Call after the segmenter is closed and the sink has
        finalized."""
        final = committed.path if committed is not None else self.local_output
        self._publishing(_stamp(final) if final == self.local_output else None)
        self.storage.upload(final, self.url)
        local_stamp = _stamp(final) if final == self.local_output else None
        self._published(self.storage.stat(self.url).stamp, local_stamp)

    def _publishing(self, local_stamp: str | None) -> None:
        """Before the final upload: the lease checked, and the local final file (``local_stamp``,
        when it is the work folder's) remembered, so that a failed upload does not cost its
        rows: the next pull keeps the file and the next publish uploads it."""
        self.check_lease()
        with self._lock:
            self._state.unpublished = local_stamp
            self._save()

    def _published(self, final_stamp: str, local_stamp: str | None) -> None:
        """The final output is in place on the store: remember its stamps (and the local
        copy's, when it is the work folder's), and drop the segments unless they are kept."""
        with self._lock:
            self._state.final_stamp = final_stamp
            self._state.local_stamp = local_stamp
            self._state.unpublished = None
            if not self.keep_journal:
                for info in self._segments():
                    self.storage.delete(info.url)
                self._state.segments = []
                self._state.sealed_bytes = 0
            self._save()

    def _save(self) -> None:
        try:
            self._state.write(self.state_path)
        except OSError as exc:
            raise StorageError(str(self.state_path), "write", exc.strerror or str(exc)) from exc


class Segmenter:
    """Seals the journal's new lines into segments, off the caller's thread.

    The sink calls ``noticed(journal_size)`` after each row it appends (cheap: a count and
    a clock reading); every ``rows_per_segment`` rows or ``seconds_per_segment`` seconds the
    bytes since the last seal, up to the last whole line, go to ``seal(source, end)`` on a
    background thread, one at a time, in order. A failed seal (the store unreachable) is
    kept in ``last_error`` and tried again, with more lines, at the next one: the run goes
    on, its rows safe in the local journal. ``close()`` seals the rest and waits; it raises
    the StorageError if that last seal fails.
    """

    def __init__(
        self,
        journal: Path,
        seal: Callable[[Any, int], None],
        *,
        sealed_bytes: int = 0,
        rows_per_segment: int = ROWS_PER_SEGMENT,
        seconds_per_segment: float = SECONDS_PER_SEGMENT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._journal = journal
        self._seal = seal
        self._sealed = sealed_bytes
        self._rows_per = rows_per_segment
        self._seconds = seconds_per_segment
        self._clock = clock
        self._rows = 0
        self._since = clock()
        self._wanted = sealed_bytes  # seal up to here (-1: up to the file's current end)
        self._asked = 0  # seals asked for so far: one asked during a seal is not lost
        self._closing = False
        self._cond = threading.Condition()
        self.sealed_segments = 0
        self.failures = 0
        self.last_error: StorageError | None = None
        self._thread = threading.Thread(target=self._work, name="batchrun-segmenter", daemon=True)
        self._thread.start()

    @property
    def sealed_bytes(self) -> int:
        return self._sealed

    def noticed(self, journal_size: int | None = None) -> None:
        """One more row is in the journal, which is now ``journal_size`` bytes (None: the
        file's size when the seal happens). The count is not locked: the worker only ever
        resets it, and a row miscounted then moves a seal by one row."""
        self._rows += 1
        if self._rows < self._rows_per and self._clock() - self._since < self._seconds:
            return
        self._rows = 0
        self._since = self._clock()
        with self._cond:
            self._wanted = -1 if journal_size is None else max(self._wanted, journal_size)
            self._asked += 1
            self._cond.notify()

    def wait(self) -> None:
        """Block until the seals asked for so far are done (or have failed)."""
        with self._cond:
            while self._thread.is_alive() and (self._wanted == -1 or self._wanted > self._sealed):
                self._cond.wait(timeout=1.0)

    def close(self) -> None:
        """Seal every whole line left and wait for the uploads; raise if the last failed."""
        with self._cond:
            self._closing = True
            self._wanted = -1
            self._cond.notify()
        self._thread.join()
        if self.last_error is not None:
            raise self.last_error

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closing and self._wanted != -1 and self._wanted <= self._sealed:
                    # Woken by rows, or by time: rows that came, then silence, are still
                    # sealed within about a period.
                    if not self._cond.wait(timeout=self._seconds) and self._rows:
                        self._rows = 0
                        self._since = self._clock()
                        self._wanted = -1
                wanted, closing, asked = self._wanted, self._closing, self._asked
            self._seal_up_to(wanted)
            if closing:
                return
            with self._cond:
                if self._asked == asked:  # no newer request came: wait for the next one
                    self._wanted = self._sealed
                self._cond.notify_all()

    def _seal_up_to(self, wanted: int) -> None:
        try:
            with self._journal.open("rb") as journal:
                end = os.fstat(journal.fileno()).st_size if wanted == -1 else wanted
                end = _last_line_end(journal, self._sealed, end)
                if end <= self._sealed:
                    self.last_error = None
                    return
                journal.seek(self._sealed)
                self._seal(_Region(journal, end - self._sealed), end)
        except FileNotFoundError:
            return  # no journal yet: nothing to seal
        except StorageError as exc:
            self.failures += 1
            self.last_error = exc
            return
        except OSError as exc:
            self.failures += 1
            self.last_error = StorageError(str(self._journal), "read", exc.strerror or str(exc))
            return
        self._sealed = end
        self.sealed_segments += 1
        self.last_error = None


class _Region:
    """Reads the next ``length`` bytes of an open file, then nothing."""

    def __init__(self, file: Any, length: int) -> None:
        self._file = file
        self._left = length

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data: bytes = self._file.read(size) if size else b""
        self._left -= len(data)
        return data


def _last_line_end(journal: Any, start: int, end: int) -> int:
    """The offset just after the last newline in [start, end), or ``start`` if none."""
    position = end
    while position > start:
        probe = max(start, position - _TAIL_PROBE)
        journal.seek(probe)
        chunk: bytes = journal.read(position - probe)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return probe + newline + 1
        position = probe
    return start


def _copy(source: Any, out: Any, limit: int | None) -> int:
    copied = 0
    while limit is None or copied < limit:
        want = 8 << 20 if limit is None else min(8 << 20, limit - copied)
        chunk = source.read(want)
        if not chunk:
            break
        out.write(chunk)
        copied += len(chunk)
    return copied


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _stamp(path: Path) -> str | None:
    with contextlib.suppress(FileNotFoundError):
        info = path.stat()
        return f"{info.st_size}:{info.st_mtime_ns}"
    return None
