"""In-run dedup: rows whose request is byte-for-byte the same are sent once.

Identity is the row's ``request_hash`` (the SHA-256 of its canonical request JSON, taken before
automatic cache marks), so two rows are twins exactly when the API would receive the same
request. Sampling settings do not change that: identical requests at ``temperature > 0`` are
deduplicated too unless ``--no-dedup``.

The first row of a hash is sent; a twin that arrives while it is in flight stands aside
(``Pool.stand_aside``) and waits for it. A twin of an answered row gets a copy of that answer
(``twin_row``): ``duplicate_of`` names the row that was sent, and its cost and token counts
are 0, since the answer was paid for once, on the row that was sent. A twin of a row that
failed is sent itself (the failure may have been passing), and becomes the one the later
twins wait for.

Answers are kept to be copied in a table bounded in bytes (least recently used first out):
a twin whose original was pushed out is sent again, and counted (``resent``). A resumed run
fills the table with the answers earlier runs recorded (``remember``), so a twin of a row
answered before is filled without sending.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from batchrun.engine.pool import StandAside, Stopped
from batchrun.store.columns import STATUS_OK, USAGE_COLUMNS

# Answers kept for twins: a few hundred thousand typical labels or short summaries.
DEFAULT_TABLE_BYTES = 128 * 1024 * 1024

# The columns a twin copies from the row that was sent: the answer and where it came from.
# Everything else is the twin's own (id, kept columns, when it finished) or zero (what it
# cost: nothing, and the tokens it used: none).
ANSWER_COLUMNS = (
    "status",
    "model",
    "stop_reason",
    "stop_sequence",
    "text",
    "content_json",
    "thinking",
    "redacted_thinking_blocks",
    "tool_calls_json",
    "structured_json",
    "request_id",
    "message_id",
    "http_status",
    "error_type",
    "error_message",
    "via",
    "batch_id",
    "source",
)
ZERO_COLUMNS = (*USAGE_COLUMNS, "attempts")
# What the table keeps of an answered row: its answer, whose it is, and what it cost.
KEPT_FOR_TWINS = (*ANSWER_COLUMNS, "id", "cost_usd")


def twin_row(own: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    """``own`` (the twin's base row: its id, kept columns, finished_at) with ``answer``'s
    answer, ``duplicate_of`` set to the id of the row that was sent and nothing paid."""
    row = dict(own)
    for name in ANSWER_COLUMNS:
        row[name] = answer.get(name)
    for name in ZERO_COLUMNS:
        row[name] = 0.0 if name == "cost_usd" else 0
    row.update(latency_ms=None, elapsed_ms=0.0, duplicate_of=answer["id"])
    return row


class Dedup:
    """Which request hashes are answered or in flight, and the answers to copy."""

    def __init__(self, table_bytes: int = DEFAULT_TABLE_BYTES) -> None:
        self._limit = table_bytes
        self._size = 0
        self._answers: OrderedDict[str, bytes] = OrderedDict()  # hash -> answer, as JSON
        self._in_flight: dict[str, list[asyncio.Future[None]]] = {}
        self._evicted: set[str] = set()  # hashes pushed out of the table (only counted)
        self.filled = 0  # twins given a copy of an answer
        self.saved_usd = 0.0  # what the copied answers cost the rows that were sent
        self.resent = 0  # twins sent again: their original's answer had left the table
        self.pushed_out = 0  # answers dropped to keep the table in its bound

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def full(self) -> bool:
        """The table reached its bound: remembering more pushes older answers out."""
        return self.pushed_out > 0

    def remember(self, request_hash: str, row: Mapping[str, Any]) -> None:
        """Keep an answered row's answer for its twins (an ok row only)."""
        if row.get("status") != STATUS_OK or request_hash in self._answers:
            return
        kept = {name: _plain(row.get(name)) for name in KEPT_FOR_TWINS}
        encoded = json.dumps(kept, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
        self._answers[request_hash] = encoded
        self._size += len(encoded)
        while self._size > self._limit and self._answers:
            old_hash, old = self._answers.popitem(last=False)
            self._size -= len(old)
            self.pushed_out += 1
            if len(self._evicted) < 1_000_000:  # the count of re-sends stays right below that
                self._evicted.add(old_hash)

    def answer(self, request_hash: str) -> dict[str, Any] | None:
        """The answer kept for ``request_hash``, counted as filled; None if there is none."""
        encoded = self._answers.get(request_hash)
        if encoded is None:
            return None
        self._answers.move_to_end(request_hash)
        answer: dict[str, Any] = json.loads(encoded)
        self.filled += 1
        self.saved_usd += float(answer.get("cost_usd") or 0.0)
        return answer

    async def claim(
        self, request_hash: str, stand_aside: StandAside, stopping: Callable[[], bool]
    ) -> dict[str, Any] | None:
        """An answer to copy for ``request_hash``, or None: then the caller sends the row and
        must call ``settle`` with its outcome, whatever happens (waiting twins depend on it).
        Raises ``Stopped`` when admission stopped while the row waited for its twin."""
        while True:
            answer = self.answer(request_hash)
            if answer is not None:
                return answer
            if stopping():
                raise Stopped
            waiters = self._in_flight.get(request_hash)
            if waiters is None:
                self._in_flight[request_hash] = []
                if request_hash in self._evicted:
                    self.resent += 1
                return None
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiters.append(waiter)
            async with stand_aside():
                await waiter

    def settle(self, request_hash: str, row: Mapping[str, Any] | None) -> None:
        """The outcome of the row sent for ``request_hash`` (None: it was not sent)."""
        if row is not None:
            self.remember(request_hash, row)
        for waiter in self._in_flight.pop(request_hash, []):
            if not waiter.done():
                waiter.set_result(None)

    def release(self) -> None:
        """Wake every twin waiting (admission stopped); they raise ``Stopped``."""
        for waiters in self._in_flight.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            waiters.clear()


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
