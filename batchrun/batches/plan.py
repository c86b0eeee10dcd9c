"""Rows -> Message Batches: custom ids and splitting by count and size; pure.

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from batchrun.batches.sent import SentRows
from batchrun.core.jsoncodec import compact

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_HASHED_PREFIX = "h-"
_HASH_CHARS = 56  # sha256 hex cut so that prefix + hash stays within the 64-character limit
_HEAD = b'{"requests":['
_TAIL = b"]}"
REQUEST_HASH_CHARS = 16  # of each row's request hash kept in the intent: enough to spot a change


def custom_id_for(row_id: str, salt: str = "") -> str:
    """``row_id`` if the API accepts it as a custom_id, else a stable hash of it."""
    if not salt and CUSTOM_ID.fullmatch(row_id):
        return row_id
    digest = hashlib.sha256(f"{salt}{row_id}".encode()).hexdigest()
    return _HASHED_PREFIX + digest[:_HASH_CHARS]


@dataclass(frozen=True)
class BatchItem:
    """One row as a batch request: where it came from, its request, and the texts of its
    kept columns (``engine.outcome.kept_texts``) for its output row."""

    index: int
    row_id: str
    request_hash: str
    body: dict[str, Any]
    kept: list[str | None] = field(default_factory=list)


@dataclass
class Chunk:
    """The rows of one batch to be: their custom ids and the encoded create body's parts."""

    indexes: list[int] = field(default_factory=list)
    custom_ids: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)  # request-hash prefixes, in row order
    parts: list[bytes] = field(default_factory=list)
    size: int = len(_HEAD) + len(_TAIL)
    sent: SentRows = field(default_factory=SentRows)  # what its output rows need of its rows

    def __len__(self) -> int:
        return len(self.indexes)

    def content(self) -> bytes:
        """The ``POST /v1/messages/batches`` body."""
        return _HEAD + b",".join(self.parts) + _TAIL

    def content_hash(self) -> str:
        """Identifies exactly which requests this batch makes, for the write-ahead journal."""
        digest = hashlib.sha256()
        for cid, request_hash in zip(self.custom_ids, self.hashes, strict=True):
            digest.update(f"{cid}:{request_hash}\n".encode())
        return digest.hexdigest()


def chunks(
    items: Iterable[BatchItem],
    max_requests: int,
    max_bytes: int,
    keep_columns: tuple[str, ...] = (),
) -> Iterator[Chunk]:
    """Group items, in order, into chunks within both limits.

    A request larger than ``max_bytes`` on its own gets a batch of its own (the API's limits
    cannot meet that case: rows over its 32 MB request limit were refused before).
    """
    chunk = Chunk(sent=SentRows(keep_columns))
    used: set[str] = set()
    for item in items:
        cid = custom_id_for(item.row_id)
        if cid in used:  # a literal id that looks like another row's hashed one
            cid = custom_id_for(item.row_id, salt=str(item.index))
        part = compact({"custom_id": cid, "params": item.body}).encode()
        added = len(part) + (1 if chunk.parts else 0)
        if chunk.parts and (len(chunk) >= max_requests or chunk.size + added > max_bytes):
            yield chunk
            chunk, used = Chunk(sent=SentRows(keep_columns)), set()
            added = len(part)
        chunk.indexes.append(item.index)
        chunk.custom_ids.append(cid)
        chunk.hashes.append(item.request_hash[:REQUEST_HASH_CHARS])
        chunk.parts.append(part)
        chunk.sent.add(item.row_id, item.request_hash, item.body.get("model"), item.kept)
        chunk.size += added
        used.add(cid)
    if chunk.parts:
        yield chunk
