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
read and encoded once, thanks to a small LRU cache keyed by (real path, mtime, size), so an
edited file is read afresh.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Iterable
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


class FileCache:
    """Encoded files by (real path, mtime, size), least recently used dropped first.

    Bounded both in entries and in encoded bytes held.
    """

    def __init__(self, entries: int = _CACHE_ENTRIES, max_bytes: int = _CACHE_BYTES) -> None:
        self._entries = entries
        self._max_bytes = max_bytes
        self._held = 0
        self._files: OrderedDict[tuple[str, int, int], EncodedFile] = OrderedDict()
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
        key = (str(real), stat.st_mtime_ns, stat.st_size)
        found = self._files.get(key)
        if found is not None:
            self._files.move_to_end(key)
            return found
        if stat.st_size > DOCUMENT_MAX_BYTES:
            raise FileProblem(_too_big(path, stat.st_size, DOCUMENT_MAX_BYTES, "any file"))
        encoded = _read(real, path)
        self._keep(key, encoded)
        return encoded

    def _load_from(self, source: MediaSource, path: str) -> EncodedFile:
        if not isinstance(path, str) or not path.strip():
            raise FileProblem(f"a file path must be a non-empty string, not {path!r}")
        identity, size = source.identify(path)
        key = (identity, 0, size)
        found = self._files.get(key)
        if found is not None:
            self._files.move_to_end(key)
            return found
        if size > DOCUMENT_MAX_BYTES:
            raise FileProblem(_too_big(path, size, DOCUMENT_MAX_BYTES, "any file"))
        encoded = _encode(source.read(path), path)
        self._keep(key, encoded)
        return encoded

    def _keep(self, key: tuple[str, int, int], encoded: EncodedFile) -> None:
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


# The files batchrun keeps beside any output ``<name>.parquet`` / ``<name>.jsonl``: its
# journal, state and batches files, and hidden ones (``.<name>.jsonl.lock``, temporaries).
# They change with every run, and no row has any business referring to them.
_RUN_FILES = re.compile(
    r"(?:.+\.(?:parquet|jsonl|csv)\.(?:journal|state\.json|batches|partial\.json)"
    r"|\..+\.(?:parquet|jsonl|csv)\..+)",
    re.IGNORECASE,
)


def folder_stamp(root: Path, limit: int = 200_000, *, skip: Iterable[Path] = ()) -> str:
    """(path, mtime, size, inode) of every file under ``root``, as a short digest.

    Lets a resume trust earlier answers without re-reading the files rows point at: if any
    such file changed, the stamp differs and the runner checks every row's request hash
    (which covers the file's bytes). A row may refer to any file inside the input's folder,
    whatever its name (its type comes from its bytes, see ``resolve`` and ``sniff``), so
    every file is stamped but these, which change with every run:

    * ``skip``: the input (it has its own stamp, which lets rows be appended) and the
      output, each with the files batchrun keeps beside it (``<name>.journal``,
      ``.<name>.lock``, ...);
    * the files batchrun keeps beside any other output (``_RUN_FILES``).

    "" when there are none (text jobs keep their fingerprint as it was). Past ``limit``
    directory entries a fresh random stamp: too many to stamp in about a second, so such
    jobs always take the checked (slower, exact) path.
    """
    skipped: dict[str, set[str]] = {}
    for path in skip:
        skipped.setdefault(os.path.realpath(path.parent), set()).add(path.name)
    digest = hashlib.sha256()
    seen = 0
    visited = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        visited += len(dirnames) + len(filenames)
        if visited > limit:
            return ":" + os.urandom(8).hex()
        own = skipped.get(os.path.realpath(dirpath), set())
        for name in sorted(filenames):
            if _RUN_FILES.fullmatch(name) or any(_beside(name, mine) for mine in own):
                continue
            seen += 1
            full = os.path.join(dirpath, name)
            try:
                stat = os.stat(full)  # through a symlink: the file a row would read
            except OSError:
                digest.update(f"{full}\0-\n".encode())  # unreadable now: still counted
                continue
            digest.update(f"{full}\0{stat.st_mtime_ns}\0{stat.st_size}\0{stat.st_ino}\n".encode())
    return ":" + digest.hexdigest()[:16] if seen else ""


def _beside(name: str, mine: str) -> bool:
    """Whether ``name`` is the file ``mine`` or one batchrun keeps beside it."""
    return name == mine or name.startswith((f"{mine}.", f".{mine}."))
