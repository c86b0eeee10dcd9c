"""The write-ahead journal of a job's Message Batches: ``OUTPUT.batches`` beside the output.

A batch costs money the moment it is created, and the API gives no way to tag it. So every
step is written down, and flushed to disk, *before* the step that depends on it:

    intent     which rows (indexes, custom ids, request-hash prefixes) a batch will carry,
               written before ``create``
    created    the batch id the API returned (or found by reconciling, see batch_run)
    abandoned  an intent that never became a batch: its rows may be submitted again
    collected  every result of the batch is in the output journal
    warmed     the batch warms the prompt cache of these prefix groups (``batches.priming``)

A crash between ``create`` and ``created`` leaves an intent without an id. The next run
looks for that batch among the API's batches before it submits anything, so rows are never
sent twice and a running batch is never forgotten.

For a remote output (``s3://``, ``gs://``) the journal is mirrored to
``OUTPUT.batchrun/batches.jsonl`` (``BatchJournalMirror``): after every append the whole file
is uploaded (it is small: a few lines per batch). The upload of an intent must succeed before
the caller goes on to ``create``, so the store knows of every batch that may exist, and a run
on a new machine, its work folder empty, polls the batches created earlier instead of
creating them again. Uploads of the other steps are retried with the next append when they
fail: the batch exists by then, and the local journal has its id.

Intent records carry a whole batch's row list (up to 100,000 rows), so only their small
fields are kept in memory; the lists are read back from disk when a batch is collected.
"""

from __future__ import annotations

import contextlib
import json
import os
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from batchrun.core.errors import OutputError
from batchrun.core.jsoncodec import compact
from batchrun.core.timestamps import parse_rfc3339

SUFFIX = ".batches"
REMOTE_OBJECT = ".batchrun/batches.jsonl"  # after the output's URL
STALE_SUFFIX = ".stale"

Mirror = Callable[[Path, bool], None]
"""Called after every append with the journal's path and whether the upload must succeed
before the caller's next step (an intent, before its create)."""


def batch_journal_path(output: Path) -> Path:
    return output.with_name(output.name + SUFFIX)


@dataclass(frozen=True)
class IntentRows:
    """An intent's rows, in input order: index, custom id and request-hash prefix of each."""

    indexes: array[int]
    custom_ids: list[str]
    hashes: list[str]

    def positions(self) -> dict[str, int]:
        """custom_id -> position in this list."""
        return {cid: k for k, cid in enumerate(self.custom_ids)}


@dataclass
class BatchEntry:
    """One intent and what became of it."""

    key: str
    at: datetime  # local UTC clock just before create: reconciling looks from here on
    count: int
    size: int  # bytes of the create body
    content_hash: str
    first: int  # lowest and highest input index among its rows
    last: int
    offset: int  # where the intent line starts in the journal file
    batch_id: str | None = None
    reconciled: bool = False  # the id was found by listing batches after a crash
    abandoned: bool = False
    collected: bool = False
    warms: tuple[str, ...] = ()  # the prefix groups it warms (``batches.priming``)

    @property
    def open(self) -> bool:
        """Submitted (or maybe submitted) and its results not yet in the output."""
        return not (self.abandoned or self.collected)


class BatchJournal:
    """Append-only, fsync'ed JSON lines; ``load`` rebuilds the entries from them.

    ``mirror`` (a remote output's ``BatchJournalMirror.push``) is called after each append.
    """

    def __init__(self, path: Path, mirror: Mirror | None = None) -> None:
        self.path = path
        self.entries: dict[str, BatchEntry] = {}
        self.mirror = mirror

    @classmethod
    def load(cls, path: Path, mirror: Mirror | None = None) -> BatchJournal:
        """The journal at ``path`` (empty when missing). A torn last line is cut off."""
        journal = cls(path, mirror)
        try:
            with path.open("rb") as fh:
                offset = 0
                for raw in fh:
                    if not raw.endswith(b"\n"):
                        break  # a crash mid-append: that step never happened
                    journal._replay(json.loads(raw), offset)
                    offset += len(raw)
        except FileNotFoundError:
            return journal
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OutputError(f"cannot read batch journal {path}: {exc}") from exc
        if offset != path.stat().st_size:
            with path.open("r+b") as fh:
                fh.truncate(offset)
        return journal

    def _replay(self, record: dict[str, Any], offset: int) -> None:
        event, key = record["event"], record["key"]
        if event == "intent":
            self.entries[key] = BatchEntry(
                key=key,
                at=parse_rfc3339(record["at"]),
                count=int(record["count"]),
                size=int(record["size"]),
                content_hash=str(record["content_hash"]),
                first=int(record["first"]),
                last=int(record["last"]),
                offset=offset,
            )
            return
        entry = self.entries[key]
        if event == "created":
            entry.batch_id = str(record["batch_id"])
            entry.reconciled = bool(record.get("reconciled", False))
        elif event == "abandoned":
            entry.abandoned = True
        elif event == "collected":
            entry.collected = True
        elif event == "warmed":
            entry.warms = tuple(str(group) for group in record["groups"])

    # -- reading --------------------------------------------------------------------------

    def open_entries(self) -> list[BatchEntry]:
        return [e for e in self.entries.values() if e.open]

    def known_ids(self) -> set[str]:
        return {e.batch_id for e in self.entries.values() if e.batch_id}

    def rows(self, entry: BatchEntry) -> IntentRows:
        """Read an intent's row lists back from its line."""
        with self.path.open("rb") as fh:
            fh.seek(entry.offset)
            record = json.loads(fh.readline())
        return IntentRows(array("q", record["rows"]), record["custom_ids"], record["hashes"])

    def pending_flags(self, size: int) -> bytearray:
        """One flag per input index: 1 where the row is in an open batch."""
        flags = bytearray(size)
        for entry in self.open_entries():
            if entry.last >= len(flags):
                flags.extend(bytes(entry.last + 1 - len(flags)))
            for index in self.rows(entry).indexes:
                flags[index] = 1
        return flags

    def next_key(self) -> str:
        return f"b{len(self.entries) + 1}"

    # -- writing --------------------------------------------------------------------------

    def intend(
        self,
        at: datetime,
        size: int,
        content_hash: str,
        rows: IntentRows,
    ) -> BatchEntry:
        """Record, durably, that a batch of ``rows`` is about to be created."""
        key = self.next_key()
        offset = self._size()
        self._write_line(
            {
                "event": "intent",
                "key": key,
                "at": at.isoformat(),
                "count": len(rows.indexes),
                "size": size,
                "content_hash": content_hash,
                "first": rows.indexes[0],
                "last": rows.indexes[-1],
                "rows": rows.indexes.tolist(),
                "custom_ids": rows.custom_ids,
                "hashes": rows.hashes,
            }
        )
        entry = BatchEntry(
            key,
            at,
            len(rows.indexes),
            size,
            content_hash,
            rows.indexes[0],
            rows.indexes[-1],
            offset,
        )
        self.entries[key] = entry  # on disk now, whether or not the store takes it
        self._push(required=True)  # the caller creates the batch only if this succeeds
        return entry

    def created(self, entry: BatchEntry, batch_id: str, *, reconciled: bool = False) -> None:
        self._append(
            {"event": "created", "key": entry.key, "batch_id": batch_id, "reconciled": reconciled}
        )
        entry.batch_id, entry.reconciled = batch_id, reconciled

    def abandoned(self, entry: BatchEntry) -> None:
        self._append({"event": "abandoned", "key": entry.key})
        entry.abandoned = True

    def warmed(self, entry: BatchEntry, groups: list[str]) -> None:
        """The batch of ``entry`` warms these prefix groups' cache (``batches.priming``)."""
        self._append({"event": "warmed", "key": entry.key, "groups": groups})
        entry.warms = tuple(groups)

    def collected(self, entry: BatchEntry) -> None:
        self._append({"event": "collected", "key": entry.key, "batch_id": entry.batch_id})
        entry.collected = True

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _append(self, record: dict[str, Any]) -> None:
        """One whole line, written and fsync'ed, then mirrored, before the caller takes its
        next step."""
        self._write_line(record)
        self._push(required=False)

    def _push(self, *, required: bool) -> None:
        """Mirror the journal (``required``: the upload must succeed, or this raises)."""
        if self.mirror is not None:
            self.mirror(self.path, required)

    def _write_line(self, record: dict[str, Any]) -> None:
        data = (compact(record) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise OutputError(
                f"cannot append to batch journal {self.path}: {exc.strerror or exc}"
            ) from exc

    def remove(self) -> None:
        """Drop the journal once every batch is collected and the final output is written."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def running_batches(output: Path) -> list[str]:
    """Ids (or intent keys) of the batches of ``output`` whose results are not yet in it."""
    path = batch_journal_path(output)
    if not path.exists():
        return []
    return [e.batch_id or e.key for e in BatchJournal.load(path).open_entries()]
