"""An input's text: the encoding it is in, and its content as UTF-8, read in lines of bounded
size.

Every reader of text (JSON lines, a JSON array, CSV) reads UTF-8, whatever the file holds:

* a byte-order mark says the encoding (UTF-8, UTF-16 or UTF-32, either byte order) and is
  dropped. It wins over ``--encoding``: a file that says what it is cannot be meant otherwise;
* else ``--encoding`` (``InputShape.encoding``: ``latin-1``, ``cp1252``, ``utf-16-le``, ...);
* else the file is taken to be UTF-8, and :func:`check_text` looks at its first MiB: a start
  that is not UTF-8, or holds NUL bytes as UTF-16 without a mark does, is refused once, before
  anything is sent, naming the line and the byte and the flag to pass. A bad line further on
  stays that row's problem, as anywhere in a file read with ``--encoding utf-8``.

Another encoding than UTF-8 is recoded as it is read (:func:`open_utf8`), so the readers split
lines on ``\\n`` bytes and measure rows in the bytes a request would carry, whatever the file's
encoding. A byte the encoding cannot decode is carried through as a mark no UTF-8 decoder
accepts (U+DC00 plus the byte, written with ``surrogatepass``): its row fails as "not valid
... text", as a bad byte of a UTF-8 file does.

No line longer than a request can be is ever held whole (:func:`bounded_lines`): ``cap``
bytes of it at most, then it is skipped in pieces and reported by its size
(:class:`LongLine`). ``MAX_ROW_BYTES``, the cap, is the Messages API's request size limit: no
longer row could be sent.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from batchrun.core.errors import InputError
from batchrun.core.wording import option
from batchrun.rows.compressed import open_bytes
from batchrun.rows.request import MAX_REQUEST_BYTES
from batchrun.rows.shape import Compression, InputKind

MAX_ROW_BYTES = MAX_REQUEST_BYTES
SNIFF_BYTES = 1 << 20  # how much of an input assumed to be UTF-8 is checked to be
_PIECE = 1 << 20  # bytes read at a time while skipping a long line, and recoded at a time
_NEWLINE = ord("\n")

# Byte-order marks and the codec that reads (and drops) each. UTF-32-LE's starts with
# UTF-16-LE's, so it is looked for first.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
BOM_BYTES = 4
_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf-16": "UTF-16", "utf-32": "UTF-32"}

_MARK = "batchrun.mark-undecodable"


def _mark(exc: UnicodeError) -> tuple[str, int]:
    """The error handler of recoding: each undecodable byte becomes U+DC00 + the byte."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return "".join(chr(0xDC00 + byte) for byte in bad), exc.end


codecs.register_error(_MARK, _mark)


class UndecodableInputError(InputError):
    """The input is not text in the encoding it is read with, from its start: every row would
    fail alike, so it is refused before anything is sent (exit 2, a usage error)."""

    exit_code = 2


def bom_encoding(head: bytes) -> str | None:
    """The codec a file starting with ``head`` says it is in by its byte-order mark, or None."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec
    return None


def encoding_name(codec: str) -> str:
    """How messages name an encoding: ``UTF-16`` for a mark's ``utf-16``, else as given."""
    return _NAMES.get(codec.lower(), codec)


def is_utf8(codec: str) -> bool:
    """Whether ``codec`` is UTF-8 (read as it is, without recoding)."""
    return codecs.lookup(codec).name in ("utf-8", "utf-8-sig")


def input_encoding(
    path: Path, compression: Compression | None, given: str | None
) -> tuple[str, bool]:
    """The codec ``path`` is read with and whether it was told (a mark or ``given``) rather
    than assumed (UTF-8). A file that cannot be read, or is no regular file (a pipe, whose
    first bytes looking would take from the reader), has no mark."""
    head = b""
    if path.is_file():
        try:
            with open_bytes(path, compression) as stream:
                head = stream.read(BOM_BYTES)
        except (OSError, InputError):
            pass  # the reader says what is wrong with it
    bom = bom_encoding(head)
    if bom is not None:
        return bom, True
    if given is not None:
        return _unmarked(given), True
    return "utf-8", False


def _unmarked(codec: str) -> str:
    """The codec that reads text in ``codec`` without a byte-order mark. Python's incremental
    UTF-16 and UTF-32 decoders want one, to tell the byte order; without it: little-endian,
    as Windows writes them and Python's ``bytes.decode`` assumes."""
    return {"utf-16": "utf-16-le", "utf-32": "utf-32-le"}.get(codecs.lookup(codec).name, codec)


def decoded_head(head: bytes, given: str | None = None) -> str:
    """The text of a file's first bytes (cut anywhere), for telling its format: decoded as
    its mark says, else as ``given``, else as UTF-8, with what cannot be decoded replaced."""
    codec = bom_encoding(head) or (_unmarked(given) if given else "utf-8")
    try:
        return codecs.getincrementaldecoder(codec)("replace").decode(head).removeprefix("\ufeff")
    except (LookupError, UnicodeError, AssertionError):  # a codec that takes no handler
        return head.decode("utf-8", "replace")


def check_text(path: Path, kind: InputKind) -> None:
    """UndecodableInputError when an input assumed to be UTF-8 does not start as UTF-8 text.

    Looks at the first ``SNIFF_BYTES`` (decompressed): a byte no UTF-8 text holds there, or
    a NUL byte (UTF-16 without a byte-order mark reads as ASCII and NULs), means the file is
    in another encoding, and every row would be wrong alike. A character cut by the sniff's
    end is not a mistake. Said nothing when the encoding was told (a mark, ``--encoding``),
    for a format that is not text (Parquet), and for a file it cannot read (the reader says why).
    """
    if kind.encoding_given or not kind.text or not path.is_file():
        return
    try:
        with open_bytes(path, kind.compression) as stream:
            head = stream.read(SNIFF_BYTES)
    except (OSError, InputError):
        return
    file = str(path)
    nul = head.find(b"\x00")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < SNIFF_BYTES)
    except UnicodeDecodeError as exc:
        if nul < 0 or exc.start < nul:
            line = head.count(b"\n", 0, exc.start) + 1
            raise UndecodableInputError(
                f"not UTF-8 text (line {line:,} has byte 0x{head[exc.start]:02x}, which is not "
                "UTF-8), so every row would be read wrong and nothing was sent. Pass the file's "
                f"encoding: {option('encoding', 'latin-1')} (or cp1252, ...; `encoding` in a job "
                f"file); {option('encoding', 'utf-8')} reads it as UTF-8 anyway, each line that "
                "is not an error row",
                file=file,
            ) from exc
    if nul >= 0:
        line = head.count(b"\n", 0, nul) + 1
        order = "le" if nul % 2 else "be"  # "a\0" (little-endian) puts the NUL second
        raise UndecodableInputError(
            f"not UTF-8 text: line {line:,} holds a NUL byte, as text in UTF-16 without a "
            f"byte-order mark does, so nothing was sent. Pass its encoding: "
            f"{option('encoding', f'utf-16-{order}')} (`encoding` in a job file); "
            f"{option('encoding', 'utf-8')} reads it as UTF-8 anyway",
            file=file,
        )


def open_utf8(path: Path, kind: InputKind) -> IO[bytes]:
    """``path``'s content as UTF-8 bytes: decompressed, a byte-order mark dropped, and recoded
    from ``kind.encoding`` when that is not UTF-8 (undecodable bytes marked: module doc)."""
    stream = open_bytes(path, kind.compression)
    if is_utf8(kind.encoding):
        if stream.peek(len(codecs.BOM_UTF8)).startswith(codecs.BOM_UTF8):
            stream.read(len(codecs.BOM_UTF8))
        return stream
    return io.BufferedReader(_Recoded(stream, kind.encoding), _PIECE)


def open_text(path: Path, kind: InputKind) -> IO[str]:
    """``path``'s text, as :func:`open_utf8` gives it; bytes that are not UTF-8 are kept as
    surrogate escapes, so one bad cell is one bad row, not a failed read. Line breaks are
    left as they are (``newline=""``, as the csv module wants)."""
    return io.TextIOWrapper(
        open_utf8(path, kind), encoding="utf-8", errors="surrogateescape", newline=""
    )


class _Recoded(io.RawIOBase):
    """A byte stream in another encoding, read as UTF-8, a piece at a time."""

    def __init__(self, source: IO[bytes], encoding: str) -> None:
        super().__init__()
        self._source = source
        self._encoding = encoding
        self._decoder = codecs.getincrementaldecoder(encoding)(_MARK)
        self._out = b""
        self._at = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._at >= len(self._out):
            if self._done:
                return 0
            data = self._source.read(_PIECE)
            self._done = not data
            try:
                text = self._decoder.decode(data, final=self._done)
            except (UnicodeError, AssertionError) as exc:  # a codec that takes no handler
                raise OSError(f"cannot be decoded as {self._encoding}: {exc}") from exc
            self._out = text.encode("utf-8", "surrogatepass")
            self._at = 0
        size = min(len(buffer), len(self._out) - self._at)
        buffer[:size] = self._out[self._at : self._at + size]
        self._at += size
        return size

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


def not_text_reason(data: bytes, kind: InputKind) -> str | None:
    """Why ``data`` (text read through :func:`open_utf8`) is not text, naming the first bad
    byte as the file holds it; None when it is."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if is_utf8(kind.encoding):
            return f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        text = data.decode("utf-8", "surrogatepass")
        marks = (ord(ch) - 0xDC00 for ch in text if "\udc00" <= ch <= "\udcff")
        byte = next(marks, None)
        shown = f" (byte 0x{byte:02x})" if byte is not None else ""
        return f"not valid {encoding_name(kind.encoding)} text{shown}"
    return None


def not_text_cell(kind: InputKind) -> str:
    """The problem of a cell or element holding text that is not in the input's encoding."""
    if is_utf8(kind.encoding):
        return "not valid UTF-8"
    return f"not valid {encoding_name(kind.encoding)} text"


@dataclass(frozen=True)
class LongLine:
    """A line longer than the cap, skipped unread: its size in bytes, its line break not
    counted."""

    size: int


def bounded_lines(stream: IO[bytes], cap: int = MAX_ROW_BYTES) -> Iterator[bytes | LongLine]:
    """The lines of ``stream`` (each with its ``\\n``), or a :class:`LongLine` for one longer
    than ``cap`` bytes, of which no more than ``cap + 1`` bytes (in pieces, and a piece of
    ``_PIECE`` more while reading one) are ever held."""
    readline, first = stream.readline, first_piece(cap)
    while line := readline(first):
        yield line if is_whole(line, cap) else rest_of_line(stream, line, cap)


def first_piece(cap: int = MAX_ROW_BYTES) -> int:
    """How many bytes ``bounded_lines`` asks ``readline`` for at first: a line no longer is
    read at once (``is_whole``)."""
    return min(_PIECE, cap + 1)


def is_whole(line: bytes, cap: int = MAX_ROW_BYTES) -> bool:
    """Whether ``line``, as ``readline(first_piece(cap))`` gave it, is a whole line (most
    lines); else ``rest_of_line`` reads the rest."""
    return line[-1] == _NEWLINE or (len(line) <= cap and len(line) < _PIECE)


def rest_of_line(stream: IO[bytes], line: bytes, cap: int = MAX_ROW_BYTES) -> bytes | LongLine:
    """The line whose first piece is ``line`` (not whole: ``is_whole``), read on from
    ``stream``: its bytes, or a :class:`LongLine` when longer than ``cap`` (see
    ``bounded_lines``)."""
    pieces, size = [line], len(line)
    while size <= cap and not pieces[-1].endswith(b"\n"):
        piece = stream.readline(min(_PIECE, cap + 1 - size))
        if not piece:
            break
        pieces.append(piece)
        size += len(piece)
    if size <= cap or pieces[-1].endswith(b"\n"):
        return b"".join(pieces)
    del pieces, line  # before the rest is read: what is held stays one piece
    while piece := stream.readline(_PIECE):
        if piece.endswith(b"\n"):
            size += len(piece) - 1
            break
        size += len(piece)
    return LongLine(size)


def too_long(what: str, size: int, cap: int) -> str:
    """The problem of a row bigger than a request can be: ``what`` is "the line", ..."""
    return (
        f"{what} is {size:,} bytes, more than a whole request can be ({_bytes(cap)}, the "
        "Messages API's limit): it was not read, and is not sent"
    )


def _bytes(size: int) -> str:
    mib = size / (1 << 20)
    return f"{mib:g} MiB" if mib >= 1 and mib == int(mib) else f"{size:,} bytes"


def is_ascii_compatible(codec: str) -> bool:
    """Whether ASCII text is the same bytes in ``codec`` (UTF-8, latin-1, cp1252; not UTF-16)."""
    return codecs.getincrementalencoder(codec)().encode('{"id":\n') == b'{"id":\n'
