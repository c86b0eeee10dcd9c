"""The answer cache across jobs (``--answer-cache``): answers bought once, kept by request.

A folder, or an ``s3://`` / ``gs://`` prefix, of small JSON objects, one per answered
request. An entry's name is the SHA-256 of the answer's source and the request hash
(``rows.request.prepare_request``: the model, every request field, attached files as sent),
so an entry is found only by a run asking the same request of the same source: a simulator's
placeholder is never an API run's answer, nor one gateway's another's (docs/design.md §6.13).
Entries live two levels deep (``ab/abcdef....json``) so no folder grows past a few thousand
names in a cache of millions.

Writes go through ``Storage.write_bytes``: a temporary file synced and renamed into place, or
a temporary object moved onto its name, so a reader sees a whole entry or none, whatever
number of processes write at once (two writers of one entry write the same answer; the last
rename wins). A reader checks what it read (its format, hash and source) and takes anything
else for a miss. Entries hold the answer and where it came from, nothing of the request and no
credential: the engine stores only answered rows, whose texts were scrubbed of the run's
credentials already, and scrubs the entry once more (``engine.answer_cache``).

``info`` and ``prune`` are ``batchrun cache info|prune``: they list the entries' sizes and
times (a listing, no entry read) and delete by age, or the oldest first down to a size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchrun.core.locations import StorageSettings
from batchrun.remote.errors import StorageError
from batchrun.remote.objects import ObjectInfo, Storage, parse_location

FORMAT = 1  # the entries' format: an entry of another format is a miss
SUFFIX = ".json"


def entry_name(source: str, request_hash: str) -> str:
    """The entry of ``request_hash`` answered by ``source``: its path under the cache."""
    digest = hashlib.sha256(f"{source}\n{request_hash}".encode()).hexdigest()
    return f"{digest[:2]}/{digest}{SUFFIX}"


@dataclass(frozen=True)
class Entry:
    """One answer: the output row's answer columns as the run that paid recorded them, who
    paid (``paid_by``: the output and the row id) and when it was stored."""

    request_hash: str
    source: str
    answer: Mapping[str, Any]
    paid_by: str
    stored_at: str

    def encode(self) -> bytes:
        data = {
            "format": FORMAT,
            "request_hash": self.request_hash,
            "source": self.source,
            "paid_by": self.paid_by,
            "stored_at": self.stored_at,
            "answer": dict(self.answer),
        }
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode(
            "utf-8", "surrogatepass"
        )

    @classmethod
    def decode(cls, data: bytes, source: str, request_hash: str) -> Entry | None:
        """The entry ``data`` holds if it is whole and is the answer asked for; else None."""
        try:
            raw = json.loads(data.decode("utf-8", "surrogatepass"))
        except (ValueError, UnicodeDecodeError):
            return None
        if (
            not isinstance(raw, dict)
            or raw.get("format") != FORMAT
            or raw.get("source") != source
            or raw.get("request_hash") != request_hash
            or not isinstance(raw.get("answer"), dict)
            or not isinstance(raw.get("paid_by"), str)
        ):
            return None
        return cls(request_hash, source, raw["answer"], raw["paid_by"], str(raw.get("stored_at")))


@dataclass(frozen=True)
class CacheInfo:
    """What ``batchrun cache info`` shows: entries, their bytes, the oldest and newest."""

    location: str
    entries: int
    bytes: int
    oldest: datetime | None
    newest: datetime | None


class AnswerCache:
    """The entries under ``location`` (a folder or an ``s3://`` / ``gs://`` prefix).

    Reads and writes block (``Storage`` is synchronous): the engine calls them from a worker
    thread. ``storage`` is a seam for tests; by default one is made from ``settings``.
    """

    def __init__(
        self,
        location: str | Path,
        settings: StorageSettings | None = None,
        *,
        storage: Storage | None = None,
    ) -> None:
        loc = parse_location(location, folder=True)
        self.remote = loc.remote
        self.root = str(location).rstrip("/") if loc.remote else loc.path
        self.shown = loc.shown
        self._storage = storage or Storage(settings)

    def _url(self, name: str) -> str:
        return f"{self.root}/{name}"

    def get(self, source: str, request_hash: str) -> Entry | None:
        """The entry of ``request_hash`` from ``source``; None when there is none (or what is
        there is not a whole entry of that request). Other storage failures raise."""
        url = self._url(entry_name(source, request_hash))
        if self._storage.stat_or_none(url) is None:  # a miss costs one request, not a failure
            return None
        return Entry.decode(self._storage.read_bytes(url), source, request_hash)

    def put(self, entry: Entry) -> None:
        """Store ``entry``, whole or not at all (a temporary file or object moved into place)."""
        url = self._url(entry_name(entry.source, entry.request_hash))
        self._storage.write_bytes(url, entry.encode())

    def entries(self) -> Iterator[tuple[ObjectInfo, datetime]]:
        """Every entry's listing and when it was last written (UTC), in no set order. A
        local folder that is not there is an error (a mistyped name must not read as empty)."""
        if not self.remote and not Path(self.root).is_dir():
            raise StorageError(self.shown, "list", "no such folder")
        for info in self._storage.list(self.root):
            if not info.name.endswith(SUFFIX):
                continue
            yield info, _written(info)

    def info(self) -> CacheInfo:
        count = size = 0
        oldest: datetime | None = None
        newest: datetime | None = None
        for info, written in self.entries():
            count += 1
            size += info.size
            oldest = written if oldest is None or written < oldest else oldest
            newest = written if newest is None or written > newest else newest
        return CacheInfo(self.shown, count, size, oldest, newest)

    def prune(
        self,
        *,
        older_than: float | None = None,
        max_bytes: int | None = None,
        now: datetime | None = None,
    ) -> tuple[int, int]:
        """Delete the entries written more than ``older_than`` seconds ago, then the oldest
        until the rest hold at most ``max_bytes``. Returns (entries deleted, bytes freed)."""
        now = now or datetime.now(timezone.utc)
        listed = sorted(self.entries(), key=lambda pair: pair[1])
        total = sum(info.size for info, _ in listed)
        deleted = freed = 0
        for info, written in listed:
            too_old = older_than is not None and (now - written).total_seconds() > older_than
            too_big = max_bytes is not None and total - freed > max_bytes
            if not (too_old or too_big):
                break  # oldest first: no later entry is older, and the rest fit already
            self._storage.delete(info.url)
            deleted += 1
            freed += info.size
        return deleted, freed


def _written(info: ObjectInfo) -> datetime:
    """When a listed entry was last written: its modification time (``ObjectInfo.stamp``)."""
    mtime_ns = int(info.stamp.rsplit(":", 1)[1])
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc)
