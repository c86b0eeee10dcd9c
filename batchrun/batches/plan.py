"""Rows -> Message Batches: custom ids, splitting by count and size, and create bodies.

A batch holds at most 100,000 requests and 256 MB (docs/api-facts.md §8.2), and each request's
``custom_id`` must match ``^[a-zA-Z0-9_-]{1,64}$``. Row ids that already do are used as they
are, so results read in the Console still name the user's rows; any other id is mapped to
``h-`` and a hash of it. The mapping travels in the batch journal's intent record, which is
what joins results back to rows.

    >>> custom_id_for("review-17")
    'review-17'
    >>> custom_id_for("doc 17.txt")
    'h-0e3e31141835deb0f79d71d491404d53d5c7a750891084db76f5f12c'
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from batchrun.batches.sent import SentRows
from batchrun.core.errors import OutputError
from batchrun.core.frozen import frozen
from batchrun.core.jsoncodec import compact

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_HASHED_PREFIX = "h-"
_HASH_CHARS = 56  # sha256 hex cut so that prefix + hash stays within the 64-character limit
_HEAD = b'{"requests":['
_TAIL = b"]}"
REQUEST_HASH_CHARS = 16  # of each row's request hash kept in the intent: enough to spot a change
# A round's rows go out in batches of a 1/SPLIT_INTO share of them, none smaller than
# SPLIT_FLOOR rows but the last (``batch_size``): the first batches end, and are collected,
# while the later ones are still built, uploaded and processed, instead of every row waiting
# on one batch.
SPLIT_INTO = 4
SPLIT_FLOOR = 10_000


def custom_id_for(row_id: str, salt: str = "") -> str:
    """``row_id`` if the API accepts it as a custom_id, else a stable hash of it."""
    if not salt and CUSTOM_ID.fullmatch(row_id):
        return row_id
    digest = hashlib.sha256(f"{salt}{row_id}".encode()).hexdigest()
    return _HASHED_PREFIX + digest[:_HASH_CHARS]


def batch_size(rows: int | None, max_requests: int) -> int:
    """Requests per batch for a round of ``rows`` rows (None: not known): a ``SPLIT_INTO``th
    of them, but at least ``SPLIT_FLOOR`` and at most ``max_requests``
    (``--batch-max-requests``, at most the API's 100,000). A round of 100,000 rows goes out
    in four batches, one of 30,000 in three of the floor, and one of the floor or fewer in
    one batch.

    One batch of every row would leave the client idle while the API works and then give it
    every result at once; smaller batches let it collect the first answers while the later
    batches run. The floor keeps a small job in one batch, and a large one's batches few
    (each poll asks after every running batch).

        >>> batch_size(100_000, 100_000), batch_size(30_000, 100_000), batch_size(8_000, 100_000)
        (25000, 10000, 10000)
        >>> batch_size(10_000_000, 100_000), batch_size(100_000, 5_000), batch_size(None, 100_000)
        (100000, 5000, 100000)
    """
    if rows is None:
        return max_requests
    return min(max_requests, max(SPLIT_FLOOR, -(-rows // SPLIT_INTO)))


@frozen  # made for every row: frozen to the type checker, quick to make
class BatchItem:
    """One row as a batch request: where it came from, its request (``content``: the body
    already encoded, ``engine.outcome.Work.content``, when there is one), and the texts of its
    kept columns (``engine.outcome.kept_texts``) for its output row."""

    index: int
    row_id: str
    request_hash: str
    body: dict[str, Any]
    kept: list[str | None] = field(default_factory=list)
    content: bytes | None = None
    dropped: tuple[str, ...] = ()  # settings left out for its model (--drop-unsupported)
    warms: str | None = None  # the prefix group whose cache it warms, alone first (priming)


UPLOAD_SLICE = 1024 * 1024  # bytes read from a body's file at a time while it uploads


class BatchBody:
    """A create body as it is built: in memory, or written to ``path`` as each request is
    added, so that memory holds none of it (a batch may be 256 MB); read back in slices while
    it uploads (``slices``)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._parts: list[bytes] = []
        self._file: BinaryIO | None = None
        self.size = len(_HEAD) + len(_TAIL)
        self.count = 0
        if path is not None:
            try:
                self._file = path.open("wb")
                self._file.write(_HEAD)
            except OSError as exc:
                raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def cost(self, part: bytes) -> int:
        """How many bytes adding ``part`` adds."""
        return len(part) + (1 if self.count else 0)

    def add(self, part: bytes) -> None:
        self.size += self.cost(part)
        if self._file is None:
            self._parts.append(part)
        else:
            try:
                if self.count:
                    self._file.write(b",")
                self._file.write(part)
            except OSError as exc:
                raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.count += 1

    def finish(self) -> None:
        """Close the body: no more requests."""
        if self._file is not None and not self._file.closed:
            try:
                self._file.write(_TAIL)
                self._file.close()
            except OSError as exc:
                raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def content(self) -> bytes:
        """The whole body, in memory."""
        self.finish()
        if self.path is None:
            return _HEAD + b",".join(self._parts) + _TAIL
        return self.path.read_bytes()

    async def slices(self) -> AsyncIterator[bytes]:
        """The body, a slice at a time: what an upload reads."""
        self.finish()
        if self.path is None:
            yield self.content()
            return
        with self.path.open("rb") as f:
            while data := f.read(UPLOAD_SLICE):
                yield data

    def remove(self) -> None:
        if self._file is not None:
            self._file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass
class Chunk:
    """The rows of one batch to be: their custom ids, its create body, and what its output
    rows need of its rows."""

    body: BatchBody = field(default_factory=BatchBody)
    indexes: list[int] = field(default_factory=list)
    custom_ids: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)  # request-hash prefixes, in row order
    sent: SentRows = field(default_factory=SentRows)
    warms: list[str] = field(default_factory=list)  # a warming batch's groups (priming)

    def __len__(self) -> int:
        return len(self.indexes)

    @property
    def size(self) -> int:
        return self.body.size

    def forget_rows(self) -> None:
        """Keep only the body: its rows are journaled and spilled (``SentRows.save``)."""
        self.indexes, self.custom_ids, self.hashes = [], [], []
        self.sent = SentRows(self.sent.keep_columns)

    def content(self) -> bytes:
        """The ``POST /v1/messages/batches`` body."""
        return self.body.content()

    def content_hash(self) -> str:
        """Identifies exactly which requests this batch makes, for the write-ahead journal."""
        digest = hashlib.sha256()
        for cid, request_hash in zip(self.custom_ids, self.hashes, strict=True):
            digest.update(f"{cid}:{request_hash}\n".encode())
        return digest.hexdigest()


def request_part(custom_id: str, item: BatchItem) -> bytes:
    """One request of a create body: ``{"custom_id": ..., "params": ...}``; the body's own
    encoding reused when the item has one (a custom id needs no escaping: ``CUSTOM_ID``)."""
    if item.content is None:
        return compact({"custom_id": custom_id, "params": item.body}).encode()
    return b'{"custom_id":"' + custom_id.encode() + b'","params":' + item.content + b"}"


def chunks(
    items: Iterable[BatchItem],
    max_requests: int,
    max_bytes: int,
    keep_columns: tuple[str, ...] = (),
    body_path: Callable[[], Path] | None = None,
) -> Generator[Chunk, None, None]:
    """Group items, in order, into chunks within both limits; each chunk's body is written
    to a file of ``body_path()`` as it grows when given, else kept in memory.

    A request larger than ``max_bytes`` on its own gets a batch of its own (the API's limits
    cannot meet that case: rows over its 32 MB request limit were refused before). An item
    that warms a prefix group (``BatchItem.warms``, ``batches.priming``) gets a batch of its
    own too, yielded before the chunk under way, which goes on after it.
    """

    def fresh() -> Chunk:
        path = body_path() if body_path is not None else None
        return Chunk(BatchBody(path), sent=SentRows(keep_columns))

    chunk: Chunk | None = None
    used: set[str] = set()
    for item in items:
        if item.warms is not None:  # alone, before the batch it would have joined
            if chunk is not None and len(chunk) >= max_requests:  # full: it goes first
                chunk.body.finish()
                yield chunk
                chunk, used = None, set()
            alone = fresh()
            _add(alone, custom_id_for(item.row_id), item)
            alone.warms.append(item.warms)
            alone.body.finish()
            yield alone
            continue
        cid = custom_id_for(item.row_id)
        if cid in used:  # a literal id that looks like another row's hashed one
            cid = custom_id_for(item.row_id, salt=str(item.index))
        part = request_part(cid, item)
        if chunk is None:
            chunk = fresh()
        elif len(chunk) >= max_requests or chunk.size + chunk.body.cost(part) > max_bytes:
            chunk.body.finish()
            yield chunk
            chunk, used = fresh(), set()
        _add(chunk, cid, item, part)
        used.add(cid)
    if chunk is not None:
        chunk.body.finish()
        yield chunk


def _add(chunk: Chunk, cid: str, item: BatchItem, part: bytes | None = None) -> None:
    """``item`` as the chunk's next request, under ``cid``."""
    chunk.indexes.append(item.index)
    chunk.custom_ids.append(cid)
    chunk.hashes.append(item.request_hash[:REQUEST_HASH_CHARS])
    chunk.body.add(request_part(cid, item) if part is None else part)
    chunk.sent.add(item.row_id, item.request_hash, item.body.get("model"), item.kept, item.dropped)
