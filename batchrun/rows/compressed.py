"""Compressed inputs: which codec a file uses, and its bytes decompressed, as a stream.

gzip, bzip2 and zstd, through pyarrow's codecs (``pa.CompressedInputStream``), so no other
library is needed. The codec is told by the file's first bytes (its magic number), not its
name alone: a ``.gz`` suffix only says what to expect, and a file named ``.gz`` that is not
gzip is refused rather than read as garbage. Decompression streams: memory stays one buffer
whatever the file's size. What the bytes are as text is ``rows.text``'s.

    kind = compression_of(Path("reviews.jsonl.gz"))    # "gzip"
    with open_bytes(Path("reviews.jsonl.gz"), kind) as stream:
        for line in stream: ...
"""

from __future__ import annotations

import io
from pathlib import Path

from batchrun.core.errors import InputError
from batchrun.core.wording import option
from batchrun.rows.shape import Compression as Compression  # re-exported for the readers

# What each codec's output is named with, for files batchrun names itself (stdin's spool).
SUFFIX_OF: dict[Compression, str] = {"gzip": ".gz", "bz2": ".bz2", "zstd": ".zst"}

_MAGIC: tuple[tuple[bytes, Compression], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
# "BZh" and a block size 1-9, then the block magic (pi's digits) or the end-of-stream magic
# (sqrt(pi)'s): ten bytes, so a CSV header that happens to start with "BZh" is not taken.
_BZIP2_BLOCKS = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")
HEAD_BYTES = 10  # what ``sniff`` needs to see
_BUFFER = 1 << 16


def sniff(head: bytes) -> Compression | None:
    """The codec whose magic number ``head`` (a file's first bytes) starts with, or None."""
    for magic, codec in _MAGIC:
        if head.startswith(magic):
            return codec
    if (
        len(head) >= HEAD_BYTES
        and head.startswith(b"BZh")
        and head[3:4] in b"123456789"
        and head[4:10] in _BZIP2_BLOCKS
    ):
        return "bz2"
    return None


def compression_of(path: Path, named: Compression | None = None) -> Compression | None:
    """How ``path`` is compressed, from its first bytes; ``named`` is what its suffix said.

    InputError when the suffix names a codec the bytes do not start with. A file that cannot
    be opened gives ``named``: the reader opening it says why it cannot. So does a pipe
    (``<(zcat rows.gz)``), whose first bytes looking would take from the reader.
    """
    if not path.is_file():
        return named
    try:
        with path.open("rb") as stream:
            head = stream.read(HEAD_BYTES)
    except OSError:
        return named
    found = sniff(head)
    if named is not None and found is None and head:
        raise InputError(
            f"the name says {named}-compressed, but the file does not start like one "
            f"(rename it, or give its format with {option('input_format')})",
            file=str(path),
        )
    return found


def open_bytes(path: Path, compression: Compression | None) -> io.BufferedReader:
    """``path``'s bytes, decompressed, as a buffered binary stream (iterating gives lines).

    A corrupt stream raises OSError where it is read, which readers report as the file's.
    """
    # Arrow's codecs are loaded by the first compressed file, not by importing this module:
    # the format modules (``batchrun.formats``) import it, and ``--help`` lists them.
    import pyarrow as pa

    try:
        if compression is None:
            return path.open("rb")
        raw = pa.CompressedInputStream(pa.OSFile(str(path), "rb"), compression)
    except (OSError, pa.ArrowException) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise InputError(f"cannot read: {reason}", file=str(path)) from exc
    return io.BufferedReader(raw, _BUFFER)  # NativeFile reads like a raw stream
