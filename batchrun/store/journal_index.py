"""A small binary index beside the journal, so that a resume reads the journal's tail only.

The journal (``store.journal``: JSON lines) stays the source of truth. As a run journals its
rows, it notes for each line the facts a resume needs, and appends them to
``<journal>.idx`` once the journal is fsynced (``JournalIndexWriter``): the line's byte
offset, length and CRC-32, its input row, status, request hash (32 bytes), id (inline when
it is short), cost, and the error type, source (as a resume sees it:
``provenance.effective_sources``) and run as small codes into a table of strings kept in
the same file. A resume then takes those facts as columns (``read_index``) instead of
parsing a million JSON lines, and parses only the journal's bytes no record covers (the
``gaps``: a crash's last lines, lines an older batchrun wrote, lines written by other means).

Layout: a 128-byte header (magic, version, record size, the journal's device and inode),
then 128-byte records: a row (``_ROW``) or a string's code (``_STRING``, before the first
row that uses it). Nothing is trusted blindly (``read_index`` returns None, and the journal
is parsed as before, when any check fails):

- the header names this version and record size, and the journal's device and inode;
- a torn last record (a crash mid-write) is left out, and cut by the next writer;
- the records' lines lie in journal order, within the journal's length (a journal cut
  short or replaced since fails this), each code names a string the file defined;
- the CRC-32 of the first, the last and up to ``_SAMPLES`` lines in between, read back
  from the journal, match: a stale index (its journal removed, another in its place, even
  at the same inode) or a foreign one fails this (each line names its run, which differs).

A crash between a journal write and the index write only leaves a longer gap to parse. The
index is written after each fsync of the journal, never ahead of it: what it covers is on
disk.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from batchrun.store.arrow_values import strings as _strings
from batchrun.store.columns import INVALID_REQUEST, STATUS_ERROR, STATUS_OK
from batchrun.store.provenance import legacy_source

INDEX_SUFFIX = ".idx"
VERSION = 1
RECORD_BYTES = 128
_MAGIC = b"BRJIDX\r\n"  # \r\n: a copy that turned line ends into \n no longer reads as one
_HEADER = struct.Struct("<8sHHIQQ")  # magic, version, record size, 0, device, inode
ID_BYTES = 56  # ids up to this many bytes of UTF-8 are kept inline; longer: read from the line
STRING_BYTES = 120
# kind, status, flags, id length, row, offset, length, crc, error, source, run, 0, cost,
# request hash, id
_ROW = struct.Struct(f"<BBBBIQIIHHHHd32s{ID_BYTES}s")
_STRING = struct.Struct(f"<BBHH{STRING_BYTES}s")  # kind, 0, code, length, text
assert _ROW.size == RECORD_BYTES and _STRING.size <= RECORD_BYTES

ROW, STRING = 1, 2
_NONE, _OK, _ERROR = 0, 1, 2
_HAS_HASH, _HAS_ID, _NO_HASH = 1, 2, 4  # _NO_HASH: the record's request hash is null
_SAMPLES = 14  # lines checked between the first and the last

# The row record's fields for NumPy, as ``_ROW`` packs them: (name, type, offset).
_FIELDS = [
    ("kind", "u1", 0),
    ("status", "u1", 1),
    ("flags", "u1", 2),
    ("id_len", "u1", 3),
    ("row", "<u4", 4),
    ("offset", "<u8", 8),
    ("length", "<u4", 16),
    ("crc", "<u4", 20),
    ("error", "<u2", 24),
    ("source", "<u2", 26),
    ("run", "<u2", 28),
    ("cost", "<f8", 32),
    ("hash", "S32", 40),
    ("id", f"V{ID_BYTES}", 72),
]
_DTYPE = np.dtype(
    {
        "names": [name for name, _, _ in _FIELDS],
        "formats": [kind for _, kind, _ in _FIELDS],
        "offsets": [at for _, _, at in _FIELDS],
        "itemsize": RECORD_BYTES,
    }
)


def index_path(journal: Path) -> Path:
    """Where the index of ``journal`` lives: beside it, ``<journal>.idx``."""
    return journal.with_name(journal.name + INDEX_SUFFIX)


def effective_source(row: Mapping[str, Any]) -> str | None:
    """A row's source as a resume sees it (``provenance.effective_sources``, for one row)."""
    if row.get("error_type") == INVALID_REQUEST and row.get("http_status") is None:
        return None  # never sent
    source = row.get("source")
    if source is not None:
        return str(source)
    return legacy_source(row.get("message_id"), row.get("request_id"))


# -- writing ----------------------------------------------------------------------------------


class JournalIndexWriter:
    """Notes each journal line the run writes (``add``) and appends the notes to the index
    when the journal is on disk (``flush``, called after each fsync of the journal).

    ``start`` continues a valid index (``read_index``'s, with its strings) or begins a new
    one. A writer that cannot write (a full disk, a string too long for a record) stops
    quietly: the journal is the source of truth, the rest is a gap the next resume parses.
    """

    def __init__(self, path: Path, fd: int, codes: dict[str, int]) -> None:
        self.path = path
        self._fd: int | None = fd
        self._codes = codes
        self._pending = bytearray()

    @classmethod
    def start(cls, journal: Path, found: Indexed | None) -> JournalIndexWriter | None:
        """A writer for ``journal``'s index: appending to ``found`` (the index a resume read
        and checked), or a new one in place of whatever was there. None when it cannot."""
        path = index_path(journal)
        try:
            if found is not None:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, found.size)  # a torn last record: cut
                    os.lseek(fd, 0, os.SEEK_END)
                except OSError:
                    os.close(fd)
                    raise
                return cls(path, fd, dict(found.codes))
            st = journal.stat()
            header = _HEADER.pack(_MAGIC, VERSION, RECORD_BYTES, 0, st.st_dev, st.st_ino)
            # In place (a torn header reads as no index): no temporary file to leave behind.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
            try:
                os.write(fd, header.ljust(RECORD_BYTES, b"\0"))
            except OSError:
                os.close(fd)
                raise
            return cls(path, fd, {})
        except OSError:
            return None

    def add(self, offset: int, line: bytes, index: int, row: Mapping[str, Any], run: str) -> None:
        """Note that the journal's line at ``offset`` (``line``, its bytes) records input row
        ``index`` as ``row``, written by ``run``."""
        if self._fd is None:
            return
        status = row.get("status")
        flags = 0
        digest = b""
        request_hash = row.get("request_hash")
        if request_hash is None:
            flags |= _NO_HASH
        elif isinstance(request_hash, str) and len(request_hash) == 64:
            try:
                digest = bytes.fromhex(request_hash)
            except ValueError:
                digest = b""
            if digest and digest.hex() == request_hash:
                flags |= _HAS_HASH
        row_id = row.get("id")
        raw_id = row_id.encode("utf-8", "surrogatepass") if isinstance(row_id, str) else b""
        if raw_id and len(raw_id) <= ID_BYTES and not raw_id.endswith(b"\0"):
            flags |= _HAS_ID
        else:
            raw_id = b""
        try:
            error = self._code(row.get("error_type"))
            source = self._code(effective_source(row))
            run_code = self._code(run)
        except ValueError:
            self.stop()
            return
        cost = row.get("cost_usd")
        self._pending += _ROW.pack(
            ROW,
            _OK if status == STATUS_OK else _ERROR if status == STATUS_ERROR else _NONE,
            flags,
            len(raw_id),
            index,
            offset,
            len(line),
            zlib.crc32(line),
            error,
            source,
            run_code,
            0,
            math.nan if cost is None else float(cost),
            digest,
            raw_id,
        )

    def _code(self, text: str | None) -> int:
        """The code of ``text`` (0: none), defined in the file before its first use."""
        if text is None:
            return 0
        code = self._codes.get(text)
        if code is None:
            data = text.encode("utf-8", "surrogatepass")
            code = len(self._codes) + 1
            if len(data) > STRING_BYTES or code > 0xFFFF:
                raise ValueError(text)
            self._codes[text] = code
            self._pending += _STRING.pack(STRING, 0, code, len(data), data).ljust(
                RECORD_BYTES, b"\0"
            )
        return code

    def flush(self) -> None:
        """Append the notes taken since the last flush: call once the journal is fsynced."""
        if self._fd is None or not self._pending:
            return
        data = memoryview(self._pending)
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:
            self.stop()
        self._pending = bytearray()

    def stop(self) -> None:
        """Write no more (what is written stays valid: the rest is a gap to parse)."""
        self._pending = bytearray()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Flush (the journal must be fsynced already) and close."""
        self.flush()
        self.stop()


def remove_index(journal: Path) -> None:
    """Remove ``journal``'s index (with the journal: a later one must not find it)."""
    with contextlib.suppress(OSError):
        index_path(journal).unlink()


# -- reading ----------------------------------------------------------------------------------


class Indexed:
    """A checked index (``read_index``): its row records in journal order (``field``), the
    byte ranges of the journal no record covers (``gaps``, to parse), the strings by code,
    and the index file's size in whole records (``size``: where the next writer appends)."""

    def __init__(
        self,
        body: np.ndarray,
        runs: list[tuple[int, int]],
        strings: list[str | None],
        size: int,
        journal_size: int,
    ) -> None:
        self._body = body  # every record, strings' too
        self._runs = runs  # the row records: these stretches of ``body``
        self._starts = np.cumsum([0] + [b - a for a, b in runs])  # position of each run
        self.strings = strings
        self.codes = {text: code for code, text in enumerate(strings) if text is not None}
        self.size = size
        self._len = int(self._starts[-1])
        self._fields: dict[str, np.ndarray] = {}  # each field of every row record, once
        self.gaps = _gaps(self, journal_size) if self._len else _whole(journal_size)

    def __len__(self) -> int:
        return self._len

    def field(self, name: str, k0: int = 0, k1: int | None = None) -> np.ndarray:
        """Field ``name`` of row records k0..k1 (all by default), as a contiguous array."""
        k1 = self._len if k1 is None else k1
        whole = self._fields.get(name)
        if whole is None:
            whole = self._fields[name] = self._gather(name)
        return whole[k0:k1]

    def _gather(self, name: str) -> np.ndarray:
        """Field ``name`` of every row record (one strided pass over the records)."""
        k0, k1 = 0, self._len
        parts = []
        for (a, _), s0, s1 in zip(self._runs, self._starts[:-1], self._starts[1:], strict=True):
            lo, hi = max(k0, int(s0)), min(k1, int(s1))
            if lo < hi:
                parts.append(self._body[name][a + lo - int(s0) : a + hi - int(s0)])
        if not parts:
            return np.empty(0, dtype=self._body.dtype[name])
        return np.ascontiguousarray(parts[0]) if len(parts) == 1 else np.concatenate(parts)

    def pieces(self) -> Iterator[tuple[int, int, int, int]]:
        """The journal in order, as (start, stop, k0, k1): the bytes [start, stop) are a gap
        to parse when k0 == k1, else records k0..k1 cover them."""
        offsets = self.field("offset")
        k = 0
        for start, stop in self.gaps:
            k1 = int(np.searchsorted(offsets, start, side="left"))
            if k1 > k:
                yield int(offsets[k]), start, k, k1
            yield start, stop, k1, k1
            k = k1
        if k < self._len:
            yield int(offsets[k]), -1, k, self._len


def read_index(journal: Path, journal_size: int | None = None) -> Indexed | None:
    """The index of ``journal``, checked against it (see the module's docstring); None when
    there is none or it cannot be trusted (then the journal is parsed whole, as before)."""
    path = index_path(journal)
    try:
        st = journal.stat()
        with path.open("rb") as fh:
            data = fh.read()
    except OSError:
        return None
    size = st.st_size if journal_size is None else journal_size
    if len(data) < RECORD_BYTES:
        return None
    magic, version, record_bytes, _, device, inode = _HEADER.unpack_from(data)
    if (magic, version, record_bytes) != (_MAGIC, VERSION, RECORD_BYTES):
        return None
    if (device, inode) != (st.st_dev, st.st_ino):
        return None
    whole = (len(data) // RECORD_BYTES) * RECORD_BYTES  # a torn last record is left out
    body = np.frombuffer(data, dtype=_DTYPE, offset=RECORD_BYTES, count=whole // RECORD_BYTES - 1)
    kinds = body["kind"]
    string_at = np.flatnonzero(kinds != ROW)
    strings: list[str | None] = [None]
    for k in string_at:
        kind, _, code, length, text = _STRING.unpack_from(data, RECORD_BYTES * (int(k) + 1))
        if kind != STRING or code != len(strings) or length > STRING_BYTES:
            return None
        try:
            strings.append(text[:length].decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            return None
    runs: list[tuple[int, int]] = []
    previous = 0
    for k in [*string_at.tolist(), len(body)]:
        if k > previous:
            runs.append((previous, k))
        previous = k + 1
    indexed = Indexed(body, runs, strings, whole, size)
    if len(indexed) and not (_consistent(indexed, size) and _lines_match(journal, indexed)):
        return None
    return indexed


def _consistent(indexed: Indexed, size: int) -> bool:
    """The records' lines lie in order within ``size`` bytes; each code names a string."""
    offsets = indexed.field("offset").astype(np.int64)
    lengths = indexed.field("length").astype(np.int64)
    ends = offsets + lengths
    if int(ends[-1]) > size or not bool(np.all(lengths > 0)):
        return False
    if bool(np.any(offsets[1:] < ends[:-1])):
        return False
    for name in ("error", "source", "run"):
        if int(indexed.field(name).max()) >= len(indexed.strings):
            return False
    return bool(np.all(indexed.field("status") <= _ERROR))


def _lines_match(journal: Path, indexed: Indexed) -> bool:
    """The CRC-32 of a sample of lines (the first, the last, some between) match the
    journal's bytes: the index is this journal's, as it is now."""
    n = len(indexed)
    picks = sorted({0, n - 1, *(int(k) for k in np.linspace(0, n - 1, _SAMPLES + 2)[1:-1])})
    try:
        fd = os.open(journal, os.O_RDONLY)
    except OSError:
        return False
    try:
        for k in picks:
            offset = int(indexed.field("offset", k, k + 1)[0])
            length = int(indexed.field("length", k, k + 1)[0])
            line = os.pread(fd, length, offset)
            if len(line) != length or not line.endswith(b"\n"):
                return False
            if zlib.crc32(line) != int(indexed.field("crc", k, k + 1)[0]):
                return False
            if offset and os.pread(fd, 1, offset - 1) != b"\n":
                return False
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _whole(size: int) -> list[tuple[int, int]]:
    return [(0, size)] if size else []


def _gaps(indexed: Indexed, size: int) -> list[tuple[int, int]]:
    """The byte ranges of the journal (``size`` bytes) no record covers, in order."""
    offsets = indexed.field("offset").astype(np.int64)
    ends = offsets + indexed.field("length").astype(np.int64)
    gaps = []
    if offsets[0] > 0:
        gaps.append((0, int(offsets[0])))
    for k in np.flatnonzero(offsets[1:] > ends[:-1]):
        gaps.append((int(ends[k]), int(offsets[k + 1])))
    if int(ends[-1]) < size:
        gaps.append((int(ends[-1]), size))
    return gaps


# -- the facts as columns ---------------------------------------------------------------------


def _arrow(values: np.ndarray, kind: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    """A NumPy array of fixed-width values as an Arrow array of ``kind``, null where not
    ``valid``, from its buffers (``pa.array`` of a NumPy array would import pandas)."""
    values = np.ascontiguousarray(values)
    bitmap = None
    if valid is not None and not bool(valid.all()):
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(kind, len(values), [bitmap, pa.py_buffer(values)])


def _coded(codes: np.ndarray, strings: Sequence[str | None]) -> pa.DictionaryArray:
    """Codes into ``strings`` (0: null) as a dictionary array."""
    dictionary = _strings([text or "" for text in strings[1:]])
    indices = _arrow(codes.astype(np.int32) - 1, pa.int32(), codes != 0)
    return pa.DictionaryArray.from_arrays(indices, dictionary)


def _texts(fields: np.ndarray, lengths: np.ndarray, width: int) -> pa.Array:
    """The first ``lengths`` bytes of each ``width``-byte field, as binary values."""
    n = len(lengths)
    raw = np.frombuffer(np.ascontiguousarray(fields).tobytes(), dtype=np.uint8).reshape(n, width)
    longest = int(lengths.max()) if n else 0
    if n and int(lengths.min()) == longest:  # ids of one length (the common case): a slice
        data = np.ascontiguousarray(raw[:, :longest])
    else:
        data = raw[np.arange(width) < lengths[:, None].astype(np.int64)]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def indexed_columns(indexed: Indexed, k0: int, k1: int, journal: Path) -> dict[str, pa.Array]:
    """Records ``k0..k1`` of ``indexed`` as ``_prior_records`` columns: ``_index``, ``id``,
    ``status``, ``request_hash`` (null: see ``_hash``), ``error_type``, ``cost_usd``, ``_run``
    and ``_source`` (dictionary-encoded), and ``_hash`` (the request hash's 32 bytes). An id
    too long to be kept inline, or a request hash not kept as bytes, is read from its line."""
    flags = indexed.field("flags", k0, k1)
    status = indexed.field("status", k0, k1)
    has_hash = (flags & _HAS_HASH) != 0
    has_id = (flags & _HAS_ID) != 0
    known_hash = has_hash | ((flags & _NO_HASH) != 0)
    ids = _texts(indexed.field("id", k0, k1), indexed.field("id_len", k0, k1), ID_BYTES)
    hashes = pa.nulls(k1 - k0, pa.string())
    if not bool(np.all(has_id)) or not bool(np.all(known_hash)):
        offsets = indexed.field("offset", k0, k1)
        lengths = indexed.field("length", k0, k1)
        ids, hashes = _from_lines(journal, offsets, lengths, ids, has_id, known_hash)
    cost = indexed.field("cost", k0, k1)
    return {
        "_index": _arrow(indexed.field("row", k0, k1).astype(np.int64), pa.int64()),
        "id": ids.cast(pa.string()),
        "status": pa.DictionaryArray.from_arrays(
            _arrow(status.astype(np.int32) - 1, pa.int32(), status != _NONE),
            _strings([STATUS_OK, STATUS_ERROR]),
        ),
        "request_hash": hashes,
        "error_type": _coded(indexed.field("error", k0, k1), indexed.strings),
        "cost_usd": _arrow(cost, pa.float64(), ~np.isnan(cost)),
        "_run": _coded(indexed.field("run", k0, k1), indexed.strings),
        "_source": _coded(indexed.field("source", k0, k1), indexed.strings),
        "_hash": _arrow(indexed.field("hash", k0, k1), pa.binary(32), has_hash),
    }


def _from_lines(
    journal: Path,
    offsets: np.ndarray,
    lengths: np.ndarray,
    ids: pa.Array,
    has_id: np.ndarray,
    known_hash: np.ndarray,
) -> tuple[pa.Array, pa.Array]:
    """The ids and request hashes the index does not hold, read from their lines."""
    id_list: list[Any] = ids.to_pylist()
    hash_list: list[Any] = [None] * len(id_list)
    with journal.open("rb") as fh:
        for k in np.flatnonzero(~has_id | ~known_hash):
            fh.seek(int(offsets[k]))
            record = json.loads(fh.read(int(lengths[k])))
            if not has_id[k]:
                id_list[k] = str(record.get("id")).encode("utf-8", "surrogatepass")
            if not known_hash[k]:
                value = record.get("request_hash")
                hash_list[k] = value if isinstance(value, str) else None
    return pa.array(id_list, type=pa.large_binary()), pa.array(hash_list, type=pa.string())
