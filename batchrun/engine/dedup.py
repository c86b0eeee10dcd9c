"""In-run dedup: rows whose request is byte-for-byte the same are sent once.

Identity is the row's ``request_hash`` (the SHA-256 of its canonical request JSON, taken before
automatic cache marks), so two rows are twins exactly when the API would receive the same
request. Sampling settings do not change that: identical requests at ``temperature > 0`` are
deduplicated too unless ``--no-dedup``.

The first row of a group is sent; a twin that arrives while it is in flight stands aside
(``Pool.stand_aside``) and waits for it. A twin of an answered row gets a copy of that answer
(``twin_row``): ``duplicate_of`` names the row that was sent, and its cost and token counts
are 0, since the answer was paid for once, on the row that was sent. A twin of a row that
failed is sent itself (the failure may have been passing), and becomes the one the later
twins wait for.

With a plan (``follow``: the online run finds its twins before sending, ``engine.twin_plan``),
only rows that have a twin take part, and an answer is kept exactly while a twin of it is still
to come: in memory up to ``KEPT_BYTES``, then in a spill file of the run's scratch folder
(``store.scratch``), read back when a twin needs it. No twin is sent again because its answer
was forgotten, and memory stays the same whatever the job's size. Earlier runs' answers that
the plan's groups hold are loaded before sending (``remember``), so a twin of a row answered
before is filled without sending.

A Message Batches run follows a plan too (``runs.twins.BatchTwins``): it places each row
itself (filled, submitted, or held for its twin's batch) and keeps the answers twins wait for
by group, as here.

Without a plan (a Ray block, a notebook's engine), every answered row is kept
in a table bounded in bytes (least recently used first out): a twin whose original was pushed
out is sent again, and counted (``resent``).
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from batchrun.core.errors import OutputError
from batchrun.engine.pool import StandAside, Stopped
from batchrun.engine.twin_plan import TwinPlan
from batchrun.store.columns import STATUS_OK, USAGE_COLUMNS
from batchrun.store.scratch import Scratch

# Without a plan: answers kept for twins, a few hundred thousand typical labels or short
# summaries.
DEFAULT_TABLE_BYTES = 128 * 1024 * 1024
# With a plan: answers held in memory for twins still to come; the rest wait on disk.
KEPT_BYTES = 16 * 1024 * 1024
# What holding an answer costs beyond its bytes (the dict's slot, the bytes object).
_ENTRY_BYTES = 120

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
# What is kept of an answered row: its answer, whose it is, what it cost, and the request it
# answers (a twin copies only an answer to its own request).
KEPT_FOR_TWINS = (*ANSWER_COLUMNS, "id", "cost_usd", "request_hash")

Key = int | str  # a plan's group (slot), or without a plan the request hash
UNKNOWN = -1  # ``Member.after`` without a plan: twins may come at any time


class Member(NamedTuple):
    """A row that has (or may have) twins: its group, and how many of the group's rows to
    send come after it (``UNKNOWN`` without a plan)."""

    key: Key
    after: int


def filled_row(own: Mapping[str, Any], answer: Mapping[str, Any], **marks: Any) -> dict[str, Any]:
    """``own`` (a row's base row: its id, kept columns, finished_at) with ``answer``'s answer,
    nothing paid, and ``marks`` (who did pay: ``duplicate_of``, ``cached_from``)."""
    row = dict(own)
    for name in ANSWER_COLUMNS:
        row[name] = answer.get(name)
    for name in ZERO_COLUMNS:
        row[name] = 0.0 if name == "cost_usd" else 0
    row.update(latency_ms=None, elapsed_ms=0.0, **marks)
    return row


def twin_row(own: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    """``own`` with ``answer``'s answer, ``duplicate_of`` the id of the row that was sent."""
    return filled_row(own, answer, duplicate_of=answer["id"])


class Answers:
    """Answers kept for twins, by key, as JSON: in memory up to ``memory_bytes`` (the least
    recently used leave first). With a ``scratch`` folder, what leaves memory is written to a
    spill file there, and read back by its group's slot (an int key); without, it is lost
    (``pushed_out``, and ``lost`` tells which)."""

    # A slot's entry in the slots file: where its answer starts (+1, so 0 is none), its size.
    _SLOT = struct.Struct("<qq")

    def __init__(self, memory_bytes: int, scratch: Scratch | None = None) -> None:
        self._limit = memory_bytes
        self._size = 0
        self._memory: OrderedDict[Key, bytes] = OrderedDict()
        self._scratch = scratch
        self._data: int | None = None  # the spill file's descriptor
        self._slots: int | None = None  # the slots file's: an entry at slot * 16
        self._end = 0  # the spill file's size
        self.spilled = 0  # answers written to the spill file
        self.pushed_out = 0  # answers lost (no scratch folder)
        self._lost: set[Key] = set()  # which (the count of re-sends stays right below 1M)

    def __len__(self) -> int:
        return len(self._memory)

    def __contains__(self, key: Key) -> bool:
        """Whether ``key``'s answer is held in memory."""
        return key in self._memory

    def put(self, key: Key, encoded: bytes) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._size -= len(old) + _ENTRY_BYTES
        self._memory[key] = encoded
        self._size += len(encoded) + _ENTRY_BYTES
        while self._size > self._limit and len(self._memory) > 1:
            out_key, out = self._memory.popitem(last=False)
            self._size -= len(out) + _ENTRY_BYTES
            if self._scratch is not None and isinstance(out_key, int):
                self._spill(out_key, out)
            else:
                self.pushed_out += 1
                if len(self._lost) < 1_000_000:
                    self._lost.add(out_key)

    def get(self, key: Key) -> bytes | None:
        encoded = self._memory.get(key)
        if encoded is not None:
            self._memory.move_to_end(key)
            return encoded
        if self._slots is None or not isinstance(key, int):
            return None
        where, size = self._SLOT.unpack(
            os.pread(self._slots, self._SLOT.size, key * self._SLOT.size).ljust(
                self._SLOT.size, b"\0"
            )
        )
        if where == 0:
            return None
        assert self._data is not None
        return os.pread(self._data, size, where - 1)

    def drop(self, key: Key) -> None:
        """Forget ``key``'s answer: no twin of it is still to come."""
        encoded = self._memory.pop(key, None)
        if encoded is not None:
            self._size -= len(encoded) + _ENTRY_BYTES
        elif self._slots is not None and isinstance(key, int):
            os.pwrite(self._slots, bytes(self._SLOT.size), key * self._SLOT.size)

    def lost(self, key: Key) -> bool:
        """Whether ``key``'s answer was pushed out of memory and lost."""
        return key in self._lost

    def _spill(self, slot: int, encoded: bytes) -> None:
        try:
            if self._data is None:
                assert self._scratch is not None
                folder = self._scratch.path
                flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
                self._data = os.open(folder / "answers.bin", flags, 0o600)
                self._slots = os.open(folder / "slots.bin", flags, 0o600)
            assert self._slots is not None
            view, at = memoryview(encoded), self._end
            while view:
                written = os.pwrite(self._data, view, at)
                view, at = view[written:], at + written
            entry = self._SLOT.pack(self._end + 1, len(encoded))
            os.pwrite(self._slots, entry, slot * self._SLOT.size)
        except OSError as exc:
            raise OutputError(
                "cannot keep answers for their twins in the run's scratch folder: "
                f"{exc.strerror or exc}; a re-run resumes, sending nothing twice"
            ) from exc
        self._end += len(encoded)
        self.spilled += 1

    def close(self) -> None:
        for fd in (self._data, self._slots):
            if fd is not None:
                os.close(fd)
        self._data = self._slots = None


class Dedup:
    """Which requests are answered or in flight, and the answers their twins copy."""

    def __init__(self, table_bytes: int = DEFAULT_TABLE_BYTES) -> None:
        self._plan: TwinPlan | None = None
        self._answers = Answers(table_bytes)
        self._in_flight: dict[Key, list[asyncio.Future[dict[str, Any] | None]]] = {}
        self.filled = 0  # twins given a copy of an answer
        self.saved_usd = 0.0  # what the copied answers cost the rows that were sent
        self.resent = 0  # twins sent again: their original's answer had left the table

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def full(self) -> bool:
        """The table reached its bound: remembering more pushes older answers out."""
        return self._answers.pushed_out > 0

    def follow(self, plan: TwinPlan, scratch: Scratch, kept_bytes: int | None = None) -> None:
        """Dedup by ``plan`` from now on: only its rows take part, keyed by their group, and
        what does not fit in ``kept_bytes`` of memory (``KEPT_BYTES``) is spilled to
        ``scratch``."""
        self._answers.close()
        self._plan = plan
        self._answers = Answers(KEPT_BYTES if kept_bytes is None else kept_bytes, scratch)

    def close(self) -> None:
        """Close the spill files (the scratch folder's owner removes them)."""
        self._answers.close()

    def member(self, index: int, request_hash: str) -> Member | None:
        """The row at ``index``'s part in dedup (with ``--samples``, the request there:
        ``engine.samples.plan_index``): None when it has no twin (it is sent, and nothing of
        it kept). Without a plan every row may have one."""
        if self._plan is None:
            return Member(request_hash, UNKNOWN)
        role = self._plan.role(index)
        return None if role is None else Member(role[0], role[1])

    def remember(self, key: Key, row: Mapping[str, Any]) -> None:
        """Keep an answered row's answer for the twins of ``key`` (an ok row only): its
        request hash, or with a plan its group. The first answer kept stays: twins name the
        row that was sent, not another twin."""
        if row.get("status") == STATUS_OK and key not in self._answers:
            self._answers.put(key, _encode(_kept(row)))

    def answer(self, request_hash: str) -> dict[str, Any] | None:
        """The answer kept for ``request_hash`` (without a plan), counted as filled; None if
        there is none."""
        return self._copy(Member(request_hash, UNKNOWN), request_hash)

    def copy(self, member: Member, request_hash: str) -> dict[str, Any] | None:
        """The answer kept for ``member``'s group now, counted as filled (and dropped after
        the group's last twin); None if there is none, or it answers another request. For a
        caller that places twins itself (a Message Batches run, ``runs.twins``)."""
        return self._copy(member, request_hash)

    async def claim(
        self,
        member: Member,
        request_hash: str,
        stand_aside: StandAside,
        stopping: Callable[[], bool],
    ) -> dict[str, Any] | None:
        """An answer to copy for ``member``, or None: then the caller sends the row and must
        call ``settle`` with its outcome, whatever happens (waiting twins depend on it).
        Raises ``Stopped`` when admission stopped while the row waited for its twin."""
        while True:
            answer = self._copy(member, request_hash)
            if answer is not None:
                return answer
            if stopping():
                raise Stopped
            waiters = self._in_flight.get(member.key)
            if waiters is None:
                self._in_flight[member.key] = []
                if self._answers.lost(member.key):
                    self.resent += 1
                return None
            waiter: asyncio.Future[dict[str, Any] | None]
            waiter = asyncio.get_running_loop().create_future()
            waiters.append(waiter)
            async with stand_aside():
                answer = await waiter
            if answer is not None and _answers(answer, request_hash):
                return self._filled(member, answer)

    def settle(self, member: Member, row: Mapping[str, Any] | None) -> None:
        """The outcome of the row sent for ``member`` (None: it was not sent). Its answer is
        handed to the twins waiting, and kept if more are to come."""
        answer = _kept(row) if row is not None and row.get("status") == STATUS_OK else None
        if answer is not None and member.after != 0:
            self._answers.put(member.key, _encode(answer))
        for waiter in self._in_flight.pop(member.key, []):
            if not waiter.done():
                waiter.set_result(answer)

    def release(self) -> None:
        """Wake every twin waiting (admission stopped); they raise ``Stopped``."""
        for waiters in self._in_flight.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            waiters.clear()

    def _copy(self, member: Member, request_hash: str) -> dict[str, Any] | None:
        encoded = self._answers.get(member.key)
        if encoded is None:
            return None
        answer: dict[str, Any] = json.loads(encoded)
        if not _answers(answer, request_hash):
            return None  # another request's (the input changed under the run): sent
        return self._filled(member, answer)

    def _filled(self, member: Member, answer: dict[str, Any]) -> dict[str, Any]:
        if member.after == 0:
            self._answers.drop(member.key)  # the group's last twin
        self.filled += 1
        self.saved_usd += float(answer.get("cost_usd") or 0.0)
        return answer


def _answers(answer: Mapping[str, Any], request_hash: str) -> bool:
    """Whether ``answer`` answers ``request_hash`` (an answer kept by an older caller may not
    say)."""
    kept = answer.get("request_hash")
    return kept is None or kept == request_hash


def _kept(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: plain_value(row.get(name)) for name in KEPT_FOR_TWINS}


def _encode(kept: Mapping[str, Any]) -> bytes:
    return json.dumps(kept, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    )


def plain_value(value: Any) -> Any:
    """A value as JSON keeps it: a timestamp as its ISO text."""
    return value.isoformat() if isinstance(value, datetime) else value
