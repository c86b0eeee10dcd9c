"""Local files in image and document blocks: resolve, check, sniff, encode, cache.

A row may point at a file (``{"type": "path", "path": "cat.png"}`` as a block's source, or the
``image`` / ``images`` / ``document`` columns); the API only takes the bytes, base64-encoded.
This module turns a path into the API's source object, and refuses, with a reason the user can
act on, everything the API would refuse or that a job file has no business reaching:

* the path must stay inside the media folder once resolved (the input file's folder, or
  ``--media-root``; ``..``, absolute paths elsewhere and symlinks pointing out are refused):
  input rows may come from people who do not run the job, and must not make it upload
  ``~/.ssh/id_rsa``;
* the media type comes from the bytes, never the name (a ``.png`` that is a JPEG is sent as
  JPEG, which the API insists on);
* the limits are checked on the size the file *says* before it is read, so an oversized file
  costs one ``stat``. Limits: an image at most ``IMAGE_MAX_BYTES`` raw (5 MB per image through
  the API, docs/api-facts.md §1.3); a PDF or text file must fit, base64-encoded, in the 32 MB
  request (docs/api-facts.md §1.3; the request as a whole is checked again in
  ``request.prepare_request``). Pixel limits (8000x8000 px) and PDF page limits (100
  pages) would need the file parsed and are left to the API.

Files are read when their row's request is built, which the runner does as the row is about
to be sent: a million images never sit in memory together. A file that many rows share is
read and encoded once, thanks to a small LRU cache keyed by the real path and what its
``stat`` says (``stat_stamp``), so an edited file is read afresh. The cache tells a listener of
every file a request is built from (``FileUse``): a run records them beside its output, and
its resume checks those files, and no other, for changes (``still_same``).
"""

from __future__ import annotations

import base64
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from batchrun.core.wording import option

IMAGE_MAX_BYTES = 5 * 1024 * 1024
"""The API's per-image limit (Anthropic docs, Vision: 5 MB per image through the API)."""

REQUEST_MAX_BYTES = 32 * 1024 * 1024
"""The Messages request limit (docs/api-facts.md §1.3); base64 makes a file 4/3 larger in it."""

DOCUMENT_MAX_BYTES = REQUEST_MAX_BYTES * 3 // 4
"""The largest PDF or text file whose base64 can fit in one request at all."""

Kind = Literal["image", "pdf", "text"]

_CACHE_ENTRIES = 32
_CACHE_BYTES = 64 * 1024 * 1024  # encoded bytes held at most; one big PDF must not pin memory


class FileProblem(ValueError):
    """A file a row refers to cannot be sent; the message says why, naming the path."""


@dataclass(frozen=True)
class EncodedFile:
    """A file ready for a source object: base64 for images and PDFs, the text for text."""

    kind: Kind
    media_type: str
    data: str


def sniff(content: bytes) -> tuple[Kind, str] | None:
    """The kind and media type ``content`` really is, or None when the API takes neither.

    >>> sniff(b"%PDF-1.7 ...")
    ('pdf', 'application/pdf')
    """
    if content.startswith(b"\xff\xd8\xff"):
        return "image", "image/jpeg"
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "image/png"
    if content.startswith((b"GIF87a", b"GIF89a")):
        return "image", "image/gif"
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image", "image/webp"
    if content.startswith(b"%PDF-"):
        return "pdf", "application/pdf"
    if b"\0" not in content:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return "text", "text/plain"
    return None


def resolve(root: Path, path: str) -> Path:
    """``path`` (relative to ``root``, or absolute) as a real path inside ``root``."""
    if not isinstance(path, str) or not path.strip():
        raise FileProblem(f"a file path must be a non-empty string, not {path!r}")
    candidate = Path(path) if os.path.isabs(path) else root / path
    try:
        real = candidate.resolve(strict=True)
    except FileNotFoundError as exc:
        raise FileProblem(f"file {path!r} not found (paths are relative to {root})") from exc
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise FileProblem(f"cannot resolve file {path!r}: {exc}") from exc
    if not real.is_relative_to(root.resolve()):
        raise FileProblem(
            f"file {path!r} is outside the media folder {root} (the input's folder, or "
            f"{option('media_root')}); refused"
        )
    return real


class MediaSource(Protocol):
    """A media folder that is not a local one (an ``s3://`` or ``gs://`` folder): the seam
    through which rows, which may not use the storage layer, read the files rows attach.
    The storage layer gives one (``remote.objects.StorageMedia``); config hands it down in
    place of the local folder. Both methods raise FileProblem, naming the file."""

    def identify(self, path: str) -> tuple[str, int]:
        """The file ``path`` refers to: a key that changes when it does, and its size."""
        ...

    def read(self, path: str) -> bytes: ...


@dataclass(frozen=True)
class FileUse:
    """A file a request was built from, as it was then: ``ref`` as the row names it, the
    ``real`` path it resolved to (None under a remote media folder) and ``stamp``, which
    changes when the file does (``stat_stamp``; a remote folder's ``identify``). A resume
    checks these instead of building every answered row's request again (``still_same``)."""

    ref: str
    real: str | None
    stamp: str


def stat_stamp(stat: os.stat_result) -> str:
    """What tells a local file changed: size, modification and change times, inode. The
    change time moves on any write, even one that puts the modification time back."""
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}"


def _remote_stamp(identity: str, size: int) -> str:
    return f"{identity}|{size}"


def still_same(use: FileUse, root: Path | MediaSource) -> bool:
    """Whether ``use.ref`` still names the same, unchanged file under ``root``."""
    try:
        if not isinstance(root, Path):
            return use.real is None and _remote_stamp(*root.identify(use.ref)) == use.stamp
        if use.real is None:
            return False
        real = resolve(root, use.ref)
        return str(real) == use.real and stat_stamp(real.stat()) == use.stamp
    except (FileProblem, OSError, ValueError):
        return False


class FileCache:
    """Encoded files by (where, ``stamp``), least recently used dropped first.

    Bounded both in entries and in encoded bytes held. ``on_use`` is told of every file a
    request is built from (``FileUse``), read or found here: a run records them beside its
    output (``store.referenced``), so that its resume checks exactly those files.
    """

    def __init__(
        self,
        entries: int = _CACHE_ENTRIES,
        max_bytes: int = _CACHE_BYTES,
        *,
        on_use: Callable[[FileUse], None] | None = None,
    ) -> None:
        self._entries = entries
        self._max_bytes = max_bytes
        self._held = 0
        self._files: OrderedDict[tuple[str, str], EncodedFile] = OrderedDict()
        self._on_use = on_use
        self.reads = 0  # files actually read from disk (tests check sharing)

    def load(self, root: Path | MediaSource, path: str) -> EncodedFile:
        """The file ``path`` refers to, checked and encoded; FileProblem says what is wrong."""
        if not isinstance(root, Path):
            return self._load_from(root, path)
        real = resolve(root, path)
        try:
            stat = real.stat()
        except OSError as exc:
            raise FileProblem(f"cannot read file {path!r}: {exc.strerror}") from exc
        if not real.is_file():
            raise FileProblem(f"{path!r} is not a regular file")
        key = (str(real), stat_stamp(stat))
        found = self._files.get(key)
        if found is not None:
            self._files.move_to_end(key)
        else:
            if stat.st_size > DOCUMENT_MAX_BYTES:
                raise FileProblem(_too_big(path, stat.st_size, DOCUMENT_MAX_BYTES, "any file"))
            found = _read(real, path)
            self._keep(key, found)
        self._used(FileUse(path, *key))
        return found

    def _load_from(self, source: MediaSource, path: str) -> EncodedFile:
        if not isinstance(path, str) or not path.strip():
            raise FileProblem(f"a file path must be a non-empty string, not {path!r}")
        identity, size = source.identify(path)
        key = (identity, _remote_stamp(identity, size))
        found = self._files.get(key)
        if found is not None:
            self._files.move_to_end(key)
        else:
            if size > DOCUMENT_MAX_BYTES:
                raise FileProblem(_too_big(path, size, DOCUMENT_MAX_BYTES, "any file"))
            found = _encode(source.read(path), path)
            self._keep(key, found)
        self._used(FileUse(path, None, key[1]))
        return found

    def _used(self, use: FileUse) -> None:
        if self._on_use is not None:
            self._on_use(use)

    def _keep(self, key: tuple[str, str], encoded: EncodedFile) -> None:
        self.reads += 1
        size = len(encoded.data)
        if size > self._max_bytes:
            return
        self._files[key] = encoded
        self._held += size
        while len(self._files) > self._entries or self._held > self._max_bytes:
            _, dropped = self._files.popitem(last=False)
            self._held -= len(dropped.data)


def _read(real: Path, shown: str) -> EncodedFile:
    try:
        content = real.read_bytes()
    except OSError as exc:
        raise FileProblem(f"cannot read file {shown!r}: {exc.strerror}") from exc
    return _encode(content, shown)


def _encode(content: bytes, shown: str) -> EncodedFile:
    sniffed = sniff(content)
    if sniffed is None:
        raise FileProblem(
            f"file {shown!r} is not a type the API accepts "
            "(JPEG, PNG, GIF, WebP, PDF or UTF-8 text)"
        )
    kind, media_type = sniffed
    if kind == "image" and len(content) > IMAGE_MAX_BYTES:
        raise FileProblem(_too_big(shown, len(content), IMAGE_MAX_BYTES, "an image"))
    if kind == "text":
        return EncodedFile(kind, media_type, content.decode("utf-8"))
    return EncodedFile(kind, media_type, base64.b64encode(content).decode("ascii"))


def _too_big(shown: str, size: int, limit: int, what: str) -> str:
    mb = 1024 * 1024
    return f"file {shown!r} is {size / mb:.1f} MB, over the API's {limit / mb:.0f} MB for {what}"


DEFAULT_CACHE = FileCache()
"""The process's cache: requests are built one row at a time, in one thread."""


def source_for(
    block_type: str, path: str, root: Path | MediaSource, cache: FileCache | None = None
) -> Any:
    """The API source object for a ``block_type`` ("image" or "document") block's file.

    >>> source_for("document", "notes.txt", Path("sample_data"))  # doctest: +SKIP
    {'type': 'text', 'media_type': 'text/plain', 'data': '...'}
    """
    encoded = (cache or DEFAULT_CACHE).load(root, path)
    if block_type == "image":
        if encoded.kind != "image":
            raise FileProblem(f"file {path!r} is {encoded.media_type}, not an image")
        return {"type": "base64", "media_type": encoded.media_type, "data": encoded.data}
    if encoded.kind == "image":
        raise FileProblem(f"file {path!r} is an image: attach it as an image, not a document")
    if encoded.kind == "text":
        return {"type": "text", "media_type": "text/plain", "data": encoded.data}
    return {"type": "base64", "media_type": encoded.media_type, "data": encoded.data}
