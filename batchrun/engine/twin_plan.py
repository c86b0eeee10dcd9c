"""Which rows of a run share a request, found before anything is sent (``TwinFinder``), and
what the run then needs to know row by row (``TwinPlan``).

A pass over the rows a run will send (and the answers earlier runs of the output recorded)
gives each request's digest, the first 16 bytes of its ``request_hash``, with its row. Rows
are grouped by digest. A group of one is nobody's twin, and costs the run nothing more. Each
larger group that has a row to send gets a number (its ``slot``, from 0), and each of its
rows to send a ``role``: the slot, and how many of the group's rows to send come after it
(``after``). So the engine keeps an answer exactly while a twin of it is still to come, and
drops it with the last one (``engine.dedup``). A group holding an earlier run's answer names
it (``TwinPlan.answered``): the run loads that answer before sending, and sends none of the
group's rows.

Memory: 21 bytes an entry (digest, kind, row) while the pass goes, up to ``chunk`` entries;
past that, each chunk is sorted and spilled to the run's scratch folder (``store.scratch``),
split by the digest's first byte, so that each part can be grouped alone. The roles come out
in digest order and are read back in input order, one bucket of at most ``chunk`` rows to
send at a time (12 bytes a row). Nothing is kept per row that has no twin.

    finder = TwinFinder(scratch)
    finder.answered(3, "ab12...", in_final=False)  # an earlier run's answer, row 3
    finder.to_send(7, "ab12...")                    # rows to send, in input order
    plan = finder.finish()
    plan.role(7)                                    # (slot, after) or None
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from batchrun.core.errors import OutputError
from batchrun.core.wording import option
from batchrun.store.arrow_values import bools, int64_array, int64_scalar, whole
from batchrun.store.scratch import Scratch

DIGEST_BYTES = 16  # of the request hash: two different requests never share 128 bits
HASH_CHARS = 64  # a request hash: SHA-256, in hex (rows.request)
# Entries held before a chunk is spilled (21 bytes each: about 2.6 MiB), and rows to send
# whose roles are read back at once.
CHUNK_ENTRIES = 1 << 17
PARTS = 256  # spilled entries are split by their digest's first byte

# What an entry stands for; a group sorts its earlier answers first.
IN_JOURNAL = 0  # an answer an earlier run recorded in the journal, by its input row
IN_FINAL = 1  # ... or in the final file, by its position there
TO_SEND = 2  # a row this run sends

_ENTRY = pa.schema(
    [("digest", pa.binary(DIGEST_BYTES)), ("kind", pa.uint8()), ("index", pa.uint32())]
)
_ROLE = pa.schema([("index", pa.uint32()), ("slot", pa.uint32()), ("after", pa.uint32())])
ANSWERED = pa.schema([("kind", pa.uint8()), ("index", pa.uint32()), ("slot", pa.uint32())])
_ORDER = [("digest", "ascending"), ("kind", "ascending"), ("index", "ascending")]


def digest_of(request_hash: str) -> bytes | None:
    """The digest entries are grouped by; None for a hash that is not hex (an old record's).
    A key longer than a request hash (a row's sample: the hash, then the sample's number,
    ``engine.samples``) is digested whole, so each of a row's samples is a request of its
    own."""
    if len(request_hash) > HASH_CHARS:
        return hashlib.blake2b(request_hash.encode("utf-8"), digest_size=DIGEST_BYTES).digest()
    try:
        digest = bytes.fromhex(request_hash[: 2 * DIGEST_BYTES])
    except ValueError:
        return None
    return digest if len(digest) == DIGEST_BYTES else None


class TwinFinder:
    """Collects (digest, kind, row) entries, spilling past ``chunk`` of them; ``finish`` groups
    them into a ``TwinPlan``."""

    def __init__(self, scratch: Scratch, chunk: int | None = None) -> None:
        assert array("I").itemsize == 4
        self._scratch = scratch
        self._chunk = CHUNK_ENTRIES if chunk is None else chunk
        self._digests = bytearray()
        self._kinds = bytearray()
        self._indexes = array("I")
        self._spill: ipc.RecordBatchFileWriter | None = None
        self._spill_file: pa.NativeFile | None = None
        self._runs = 0  # chunks spilled, each as PARTS batches
        self._part_sizes = [0] * PARTS  # entries spilled of each part, over every chunk
        self._to_send = 0
        self._last_sent = -1
        # The first row to send of each bucket of ``chunk`` rows to send: roles are read
        # back a bucket at a time.
        self._buckets = array("I")

    def answered(self, index: int, request_hash: str, *, in_final: bool) -> None:
        """An earlier run's answer for ``request_hash``: input row ``index`` of the journal,
        or row ``index`` of the final file."""
        digest = digest_of(request_hash)
        if digest is not None:
            self._add(digest, IN_FINAL if in_final else IN_JOURNAL, index)

    def answered_digests(self, indexes: array[int], digests: bytes, *, in_final: bool) -> None:
        """Earlier runs' answers at once: input rows ``indexes`` and their ``digest_of``s,
        ``DIGEST_BYTES`` each (``store.sink.JournalRecords.answered_digests``)."""
        kind = IN_FINAL if in_final else IN_JOURNAL
        start = 0
        while start < len(indexes):
            stop = min(len(indexes), start + self._chunk - len(self._indexes))
            self._digests += digests[start * DIGEST_BYTES : stop * DIGEST_BYTES]
            self._kinds += bytes([kind]) * (stop - start)
            self._indexes.extend(indexes[start:stop])
            start = stop
            if len(self._indexes) >= self._chunk:
                try:
                    self._spill_chunk()
                except OSError as exc:
                    raise self._failed(exc) from exc

    def to_send(self, index: int, request_hash: str) -> None:
        """Row ``index`` will be sent with ``request_hash``; rows come in input order."""
        if index <= self._last_sent:
            raise ValueError(f"rows to send come in input order: {index} after {self._last_sent}")
        digest = digest_of(request_hash)
        if digest is None:  # every request hash a run makes is hex: never here
            raise ValueError(f"not a request hash: {request_hash!r}")
        if self._to_send % self._chunk == 0:
            self._buckets.append(index)
        self._to_send += 1
        self._last_sent = index
        self._add(digest, TO_SEND, index)

    def _add(self, digest: bytes, kind: int, index: int) -> None:
        self._digests += digest
        self._kinds.append(kind)
        self._indexes.append(index)
        if len(self._indexes) >= self._chunk:
            try:
                self._spill_chunk()
            except OSError as exc:
                raise self._failed(exc) from exc

    def _take_chunk(self) -> pa.RecordBatch:
        """The entries held, sorted; the holders start afresh (the batch owns their bytes)."""
        n = len(self._indexes)
        batch = pa.record_batch(
            [
                pa.Array.from_buffers(
                    pa.binary(DIGEST_BYTES), n, [None, pa.py_buffer(self._digests)]
                ),
                pa.Array.from_buffers(pa.uint8(), n, [None, pa.py_buffer(self._kinds)]),
                pa.Array.from_buffers(pa.uint32(), n, [None, pa.py_buffer(self._indexes)]),
            ],
            schema=_ENTRY,
        )
        self._digests, self._kinds, self._indexes = bytearray(), bytearray(), array("I")
        return batch.take(pc.sort_indices(batch, sort_keys=_ORDER))

    def _spill_chunk(self) -> None:
        first_bytes = bytes(memoryview(self._digests)[::DIGEST_BYTES])
        chunk = self._take_chunk()
        if self._spill is None:
            self._spill_file = pa.OSFile(str(self._scratch.path / "entries.arrow"), "wb")
            self._spill = ipc.new_file(self._spill_file, _ENTRY)
        start = 0
        for part in range(PARTS):  # sorted by digest, so each part is one stretch
            count = first_bytes.count(part.to_bytes(1, "big"))
            self._spill.write_batch(chunk.slice(start, count))
            self._part_sizes[part] += count
            start += count
        self._runs += 1

    def finish(self) -> TwinPlan:
        """Group the entries: the rows to send that have a twin, and the answers to load."""
        try:
            return self._finish()
        except OSError as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: OSError) -> OutputError:
        """The scratch folder's disk is full, or went away: said before anything is sent."""
        return OutputError(
            f"cannot find identical requests before sending: {exc.strerror or exc} (in "
            f"{self._scratch.path.parent}); nothing was sent. Free some space and run again, "
            f"or {option('dedup', False)} sends every row"
        )

    def _finish(self) -> TwinPlan:
        roles = _Roles(self._scratch, self._buckets, spilled=self._to_send > self._chunk)
        answered = _Answered(self._scratch, self._chunk)
        slots = 0
        for part in self._parts():
            role_batch, answered_batch, groups = _groups(part, slots)
            slots += groups
            roles.add(role_batch)
            answered.add(answered_batch)
        return TwinPlan(roles.done(), answered.done(), slots, self._chunk)

    def _parts(self) -> Iterator[pa.RecordBatch]:
        """The entries, sorted, in parts that each hold their groups whole: spilled parts
        are read back a few at a time, up to about ``chunk`` entries."""
        if self._spill is None:
            yield self._take_chunk()
            return
        if len(self._indexes):
            self._spill_chunk()
        assert self._spill_file is not None
        self._spill.close()
        self._spill_file.close()
        path = self._scratch.path / "entries.arrow"
        with pa.OSFile(str(path), "rb") as source:
            reader = ipc.open_file(source)
            for first, stop in _stretches(self._part_sizes, self._chunk):
                batches = [
                    reader.get_batch(run * PARTS + part)
                    for part in range(first, stop)
                    for run in range(self._runs)
                ]
                table = pa.Table.from_batches(batches, schema=_ENTRY).combine_chunks()
                ordered = table.take(pc.sort_indices(table, sort_keys=_ORDER))
                yield ordered.to_batches()[0] if ordered.num_rows else _empty(_ENTRY)
        path.unlink()


def _stretches(sizes: list[int], most: int) -> Iterator[tuple[int, int]]:
    """Runs [first, stop) of consecutive parts holding about ``most`` entries at most (a
    larger part alone)."""
    first, held = 0, 0
    for part, size in enumerate(sizes):
        if held and held + size > most:
            yield first, part
            first, held = part, 0
        held += size
    yield first, len(sizes)


def _groups(
    entries: pa.RecordBatch | pa.Table, first_slot: int
) -> tuple[pa.RecordBatch, pa.RecordBatch, int]:
    """The roles of ``entries``' rows to send that have a twin, the earlier answers their
    groups hold, and how many groups have rows to send (numbered from ``first_slot``).
    ``entries`` is sorted by digest, kind, row."""
    n = entries.num_rows
    if n < 2:
        return _empty(_ROLE), _empty(ANSWERED), 0
    digest = whole(entries.column(0))
    kind = whole(entries.column(1))
    index = whole(entries.column(2))
    int64 = pa.int64()
    starts = pa.concat_arrays(
        [bools([True]), pc.not_equal(digest.slice(0, n - 1), digest.slice(1))]
    )
    start_at = pc.indices_nonzero(starts).cast(int64)
    end_at = pa.concat_arrays([start_at.slice(1), int64_array([n])])
    one, to_send = int64_scalar(1), int64_scalar(TO_SEND)
    # A group matters when it has two entries or more, the last a row to send (earlier
    # answers sort first): two rows to send, or one and an earlier answer.
    matters = pc.and_(
        pc.greater_equal(pc.subtract(end_at, start_at), int64_scalar(2)),
        pc.equal(kind.take(pc.subtract(end_at, one)), to_send),
    )
    groups = pc.sum(matters.cast(int64)).as_py() or 0
    if groups == 0:
        return _empty(_ROLE), _empty(ANSWERED), 0
    slot = pc.add(pc.cumulative_sum(matters.cast(int64)), int64_scalar(first_slot - 1))
    group_of = pc.subtract(pc.cumulative_sum(starts.cast(int64)), one)
    position = int64_array(array("q", range(n)))
    after = pc.subtract(pc.subtract(end_at.take(group_of), one), position)
    keep = pc.and_(matters.take(group_of), pc.equal(kind, to_send))
    roles = pa.record_batch(
        [
            index.filter(keep),
            slot.take(group_of).filter(keep).cast(pa.uint32()),
            after.filter(keep).cast(pa.uint32()),
        ],
        schema=_ROLE,
    )
    first_kind = kind.take(start_at)
    answered_first = pc.and_(matters, pc.not_equal(first_kind, to_send))
    answered = pa.record_batch(
        [
            first_kind.filter(answered_first),
            index.take(start_at).filter(answered_first),
            slot.filter(answered_first).cast(pa.uint32()),
        ],
        schema=ANSWERED,
    )
    return roles, answered, groups


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.record_batch([pa.nulls(0, field.type) for field in schema], schema=schema)


def _uint32s(values: pa.Array | pa.ChunkedArray) -> array[int]:
    """Integers as a compact ``array('I')``, read in slices (no full-length Python list)."""
    packed = array("I")
    for start in range(0, len(values), 65_536):
        packed.extend(values.slice(start, 65_536).to_pylist())
    return packed


class _Roles:
    """The roles, gathered part by part and read back in input order: in memory when the
    rows to send fit in one bucket, else spilled, each part's split by bucket."""

    def __init__(self, scratch: Scratch, buckets: array[int], *, spilled: bool) -> None:
        self._scratch = scratch
        self._buckets = buckets
        self._held: list[pa.RecordBatch] = []
        self._writer: ipc.RecordBatchFileWriter | None = None
        self._file: pa.NativeFile | None = None
        self._parts = 0
        self._rows = 0
        if spilled:
            self._file = pa.OSFile(str(scratch.path / "roles.arrow"), "wb")
            self._writer = ipc.new_file(self._file, _ROLE)

    def add(self, roles: pa.RecordBatch) -> None:
        self._rows += roles.num_rows
        if self._writer is None:
            if roles.num_rows:
                self._held.append(roles)
            return
        ordered = roles.take(pc.sort_indices(roles, sort_keys=[("index", "ascending")]))
        index = ordered.column(0)
        start = 0
        for bucket in range(len(self._buckets)):
            if bucket + 1 < len(self._buckets):
                below = pc.less(index, int64_scalar(self._buckets[bucket + 1]))
                stop = pc.sum(below.cast(pa.int64())).as_py() or 0
            else:
                stop = ordered.num_rows
            self._writer.write_batch(ordered.slice(start, stop - start))
            start = stop
        self._parts += 1

    def done(self) -> RoleReader:
        if self._writer is None:
            table = pa.Table.from_batches(self._held, schema=_ROLE)
            return RoleReader([table], None, self._rows)
        assert self._file is not None
        self._writer.close()
        self._file.close()
        spilled = (self._scratch.path / "roles.arrow", len(self._buckets), self._parts)
        return RoleReader([], spilled, self._rows)


class RoleReader:
    """Roles in input order, one bucket at a time (``role``: indexes asked in input order)."""

    def __init__(
        self, held: list[pa.Table], spilled: tuple[Path, int, int] | None, rows: int
    ) -> None:
        self._pending = held  # the one bucket of a plan held in memory
        self._spilled = spilled  # (file, buckets, parts) of a spilled one
        self._next_bucket = 0
        self._index = array("I")
        self._slot = array("I")
        self._after = array("I")
        self._at = 0
        self.rows = rows

    def role(self, index: int) -> tuple[int, int] | None:
        """(slot, after) of row ``index``, or None when it has no twin."""
        while True:
            rows, at = self._index, self._at
            end = len(rows)
            if at < end and rows[at] < index:
                at = bisect.bisect_left(rows, index, at)
                self._at = at
            if at < end:
                if rows[at] == index:
                    return self._slot[at], self._after[at]
                return None
            if not self._load_next():
                return None

    def _load_next(self) -> bool:
        try:
            table = self._next_table()
        except OSError as exc:
            where = self._spilled[0].parent if self._spilled else "memory"
            raise OutputError(
                "cannot read back which rows have an identical request: "
                f"{exc.strerror or exc} (in {where}); a re-run resumes, sending nothing twice"
            ) from exc
        if table is None:
            self._index, self._slot, self._after = array("I"), array("I"), array("I")
            return False
        ordered = table.take(pc.sort_indices(table, sort_keys=[("index", "ascending")]))
        self._index = _uint32s(ordered.column(0))
        self._slot = _uint32s(ordered.column(1))
        self._after = _uint32s(ordered.column(2))
        self._at = 0
        return True

    def _next_table(self) -> pa.Table | None:
        if self._spilled is None:
            return self._pending.pop() if self._pending else None
        path, buckets, parts = self._spilled
        if self._next_bucket >= buckets:
            return None
        bucket = self._next_bucket
        self._next_bucket += 1
        with pa.OSFile(str(path), "rb") as source:
            reader = ipc.open_file(source)
            batches = [reader.get_batch(part * buckets + bucket) for part in range(parts)]
        return pa.Table.from_batches(batches, schema=_ROLE)


class _Answered:
    """The earlier answers to load: held until ``chunk`` of them, then spilled."""

    def __init__(self, scratch: Scratch, chunk: int) -> None:
        self._scratch = scratch
        self._chunk = chunk
        self._held: list[pa.RecordBatch] = []
        self._count = 0
        self._writer: ipc.RecordBatchFileWriter | None = None
        self._file: pa.NativeFile | None = None

    def add(self, answered: pa.RecordBatch) -> None:
        if not answered.num_rows:
            return
        self._held.append(answered)
        self._count += answered.num_rows
        if self._count >= self._chunk:
            if self._writer is None:
                self._file = pa.OSFile(str(self._scratch.path / "answered.arrow"), "wb")
                self._writer = ipc.new_file(self._file, ANSWERED)
            for batch in self._held:
                self._writer.write_batch(batch)
            self._held, self._count = [], 0

    def done(self) -> tuple[list[pa.RecordBatch], Path | None]:
        if self._writer is None:
            return self._held, None
        assert self._file is not None
        for batch in self._held:
            self._writer.write_batch(batch)
        self._writer.close()
        self._file.close()
        return [], self._scratch.path / "answered.arrow"


class TwinPlan:
    """The run's rows that have a twin: ``role`` of each (asked in input order), the earlier
    answers to load first (``answered``), ``groups`` (slots 0..groups-1), ``rows``."""

    def __init__(
        self,
        roles: RoleReader,
        answered: tuple[list[pa.RecordBatch], Path | None],
        groups: int,
        chunk: int = CHUNK_ENTRIES,
    ) -> None:
        self._roles = roles
        self._answered = answered
        self._chunk = chunk
        self.groups = groups
        self.rows = roles.rows  # rows to send that have a twin (or an earlier answer)

    def role(self, index: int) -> tuple[int, int] | None:
        """(slot, after) of the row at ``index``: its group, and how many rows to send of
        the group come after it; None for a row with no twin. Asked in input order."""
        return self._roles.role(index)

    def answered(self) -> Iterator[pa.Table]:
        """The earlier answers the groups hold (columns ``ANSWERED``: kind, row, slot; one a
        group), in tables of at most about ``chunk`` rows."""
        held, path = self._answered
        if path is None:
            if held:
                yield pa.Table.from_batches(held, schema=ANSWERED)
            return
        with pa.OSFile(str(path), "rb") as source:
            reader = ipc.open_file(source)
            gathered: list[pa.RecordBatch] = []
            count = 0
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                gathered.append(batch)
                count += batch.num_rows
                if count >= self._chunk:
                    yield pa.Table.from_batches(gathered, schema=ANSWERED)
                    gathered, count = [], 0
            if gathered:
                yield pa.Table.from_batches(gathered, schema=ANSWERED)
