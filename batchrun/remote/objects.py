"""Where files live: local paths, ``s3://`` and ``gs://`` URLs, behind one small interface.

This is the one module that uses ``pyarrow.fs``; the rest of batchrun sees ``Storage``::

    storage = Storage(StorageSettings.from_environ(os.environ))   # config passes the environ
    storage.upload(Path("labels.parquet"), "s3://bucket/out/labels.parquet")
    for info in storage.list("s3://bucket/out/labels.parquet.batchrun/journal"):
        ...

Credentials come only from where the AWS and Google libraries look (``AWS_ACCESS_KEY_ID``
and friends, ``~/.aws/credentials``, instance roles, Google's application default
credentials): batchrun never reads, holds or shows them. Endpoints: ``AWS_ENDPOINT_URL_S3``
or ``AWS_ENDPOINT_URL`` (S3-compatible servers such as moto or MinIO) and
``STORAGE_EMULATOR_HOST`` (a GCS emulator, used anonymously, as Google's own libraries do).

An upload is all or nothing. A process killed mid-upload leaves no object (an unfinished
multipart or resumable upload is invisible). But pyarrow has no way to abandon an upload
from inside the process: closing the stream, or losing it to the garbage collector, after an
error completes the object with what was written so far (measured on moto). So an upload to
an object store goes to a hidden temporary object beside the target, which is moved onto it
once complete and deleted if anything fails; a local upload is a temporary file renamed.

Small objects that several machines may race for (a lease) are written with a condition:
``create_only`` (absent only), ``replace_if`` and ``delete_if`` (only while the object is the
version read). pyarrow.fs has no conditional writes, so on S3 these go through boto3 (S3's
``If-None-Match: *`` and ``If-Match: <ETag>``; boto3 comes with moto in the dev tools and is
imported only here, only for them). Without boto3, on GCS and on local files, they check and
then write: right for one machine at a time, but two writers in the same instant may both
win (``conditions_atomic`` says which a location gets).

pyarrow's S3 filesystem leaves an empty "folder" object (``out/``, a zero-byte key ending in
``/``) wherever a delete or a move empties a folder, to keep the folder in its listings. The
store is not pyarrow's alone, so on S3 with boto3 deletes and moves go through boto3, which
leaves no such object behind (``_plain_delete``, ``_plain_move``).

Every failure is one ``StorageError`` whose message names the URL (without user, password
or query) and what failed in words: no such bucket, no such object, access denied, endpoint
unreachable.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import os
import posixpath
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol, TypeVar
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from batchrun.core.extras import has_extra
from batchrun.core.locations import StorageSettings, cached_copy_path
from batchrun.core.scrub import url_without_secrets
from batchrun.remote.errors import StorageError
from batchrun.rows.files import FileProblem

REMOTE_SCHEMES = ("s3", "gs")
_T = TypeVar("_T")
CHUNK_BYTES = 8 << 20
"""Bytes copied at a time by uploads and downloads: the memory a transfer holds."""

UPLOAD_MARK = ".batchrun-upload-"
"""In the name of a temporary object an upload writes before moving it into place."""

# Reasons, in words, for StorageError.reason.
NO_SUCH_BUCKET = "no such bucket"
NO_SUCH_OBJECT = "no such object"
ACCESS_DENIED = "access denied"
UNREACHABLE = "endpoint unreachable"
NO_SPACE = "no space left"

# What pyarrow's OSError messages say (AWS SDK error names, google-cloud-cpp statuses, curl).
_SIGNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (NO_SUCH_BUCKET, ("NO_SUCH_BUCKET", "bucket does not exist", "not found. To create")),
    (
        ACCESS_DENIED,
        (
            "ACCESS_DENIED",
            "INVALID_ACCESS_KEY_ID",
            "SIGNATURE_DOES_NOT_MATCH",
            "EXPIRED_TOKEN",
            "PERMISSION_DENIED",
            "UNAUTHENTICATED",
            "HTTP status code: 401",
            "HTTP status code: 403",
        ),
    ),
    (
        UNREACHABLE,
        (
            "NETWORK_CONNECTION",
            "Could not connect",
            "Could not resolve",
            "Couldn't connect",
            "Connection refused",
            "UNAVAILABLE",
        ),
    ),
)


@dataclass(frozen=True)
class Location:
    """A parsed location: ``scheme`` is "file", "s3" or "gs"; ``path`` what pyarrow.fs
    takes (``bucket/key`` for object stores, an absolute path for local files)."""

    scheme: str
    path: str
    shown: str

    @property
    def remote(self) -> bool:
        return self.scheme in REMOTE_SCHEMES

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0] if self.remote else ""

    @property
    def name(self) -> str:
        """The last part of the path: the file name."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def parse_location(url: str | Path, *, folder: bool = False) -> Location:
    """``url`` as a Location; a local path (or ``file://`` URL) is made absolute. A
    ``folder`` (what ``Storage.list`` takes) may be a whole bucket."""
    text = str(url)
    parts = urlsplit(text) if isinstance(url, str) else None
    if parts is not None and parts.scheme in REMOTE_SCHEMES:
        bucket = parts.netloc.rpartition("@")[2]
        key = parts.path.lstrip("/")
        if not bucket or not (key or folder):
            raise StorageError(url_without_secrets(text), "use", "it names no bucket and key")
        path = f"{bucket}/{key}" if key else bucket
        return Location(parts.scheme, path, url_without_secrets(text))
    if parts is not None and parts.scheme == "file":
        text = parts.path
    elif parts is not None and len(parts.scheme) > 1:
        raise StorageError(url_without_secrets(text), "use", f"unknown scheme {parts.scheme}://")
    path = str(Path(text).expanduser().absolute())
    return Location("file", path, path)


@dataclass(frozen=True)
class ObjectInfo:
    """What a stat or a listing says of one file: ``stamp`` is its size and modification
    time, which pyarrow gives (it gives no ETag). S3's times have whole seconds: an object
    replaced within the second by one of the same size keeps its stamp."""

    url: str
    size: int
    stamp: str

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


class Versioned(NamedTuple):
    """A small object's bytes and its version: the S3 ETag, else a hash of the bytes. A
    version is only ever compared with another given by the same ``Storage``."""

    data: bytes
    version: str


class Readable(Protocol):
    """What an upload reads from: ``read(n)`` gives up to n bytes, b"" at the end."""

    def read(self, size: int = -1, /) -> bytes: ...


def _open_local(path: Path) -> BinaryIO:
    return path.open("rb")


class Storage:
    """Reads and writes local files and objects, the same way.

    ``filesystems`` maps a scheme to a ready ``pyarrow.fs.FileSystem`` (tests, or a caller
    with options of its own); otherwise one is made per scheme and bucket from
    ``settings``. ``open_local`` opens a local file for an upload: a seam for tests that
    make the disk fail mid-read.
    """

    def __init__(
        self,
        settings: StorageSettings | None = None,
        *,
        filesystems: Mapping[str, pafs.FileSystem] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        open_local: Callable[[Path], BinaryIO] = _open_local,
    ) -> None:
        self.settings = settings or StorageSettings()
        self._given = dict(filesystems or {})
        self._made: dict[tuple[str, str], pafs.FileSystem] = {}
        self._chunk = chunk_bytes
        self._open_local = open_local
        self._boto: Any = None  # the boto3 client of the conditional writes, made on first use

    # -- the interface ----------------------------------------------------------------------

    def exists(self, url: str | Path) -> bool:
        return self.stat_or_none(url) is not None

    def stat(self, url: str | Path) -> ObjectInfo:
        """Size and stamp of a file; StorageError "no such object" when there is none."""
        info = self.stat_or_none(url)
        if info is None:
            loc = parse_location(url)
            raise self._missing(loc, "read", self._fs(loc))
        return info

    def stat_or_none(self, url: str | Path) -> ObjectInfo | None:
        loc = parse_location(url)
        with self._failing(loc, "read"):
            info = self._fs(loc).get_file_info(loc.path)
        if info.type != pafs.FileType.File:
            return None
        return _object_info(loc, info, str(url))

    @contextlib.contextmanager
    def open_input(self, url: str | Path) -> Iterator[Any]:
        """A file object for reading (``read(n)``, ``seek``), closed on leaving."""
        loc = parse_location(url)
        fs = self._fs(loc)
        with self._failing(loc, "read", fs):
            stream = fs.open_input_file(loc.path)
        try:
            yield _Translating(stream, self, loc)
        finally:
            with contextlib.suppress(OSError):
                stream.close()

    @contextlib.contextmanager
    def open_arrow(self, url: str | Path) -> Iterator[Any]:
        """pyarrow's own random-access file, for pyarrow's readers (``pq.ParquetFile``,
        ``pyarrow.csv``, ``pyarrow.json``) at full speed; closed on leaving. Errors on
        opening are StorageErrors; errors while reading stay pyarrow's OSErrors, which the
        caller translates with ``translate``."""
        loc = parse_location(url)
        fs = self._fs(loc)
        with self._failing(loc, "read", fs):
            stream = fs.open_input_file(loc.path)
        try:
            yield stream
        finally:
            with contextlib.suppress(OSError):
                stream.close()

    def translate(self, url: str | Path, action: str, exc: OSError) -> StorageError:
        """The StorageError for an OSError met while ``action``-ing ``url``."""
        loc = parse_location(url)
        if isinstance(exc, FileNotFoundError):
            return self._missing(loc, action, self._fs(loc))
        return _error(loc.shown, action, exc, self._endpoint(loc), loc.bucket)

    def read_bytes(self, url: str | Path) -> bytes:
        with self.open_input(url) as stream:
            data: bytes = stream.read()
            return data

    def download(self, url: str | Path, local: Path) -> int:
        """Copy ``url`` to ``local``, a chunk at a time, under a temporary name renamed at
        the end: a failed download never replaces ``local``. Returns the bytes copied."""
        loc = parse_location(url)
        fs = self._fs(loc)
        with self._failing(loc, "read", fs):
            source = fs.open_input_stream(loc.path)
        storage = self

        class Reading:
            """The object's stream, its failures named as reads of ``url``."""

            def read(self, size: int = -1) -> bytes:
                with storage._failing(loc, "read", fs):
                    chunk: bytes = source.read(size)
                return chunk

        with source:
            return self._write_local(Reading(), local, loc.shown)

    def cached_copy(self, url: str, cache_home: Path) -> Path:
        """The local copy of ``url`` in the cache folder (``core.locations.cached_copy_path``),
        downloaded only when the object's stamp differs from the one the copy was made from
        (a re-run reads its input once)."""
        info = self.stat(url)
        local = cached_copy_path(url, cache_home)
        stamp = local.with_name(f".{local.name}.stamp")
        try:
            current = local.exists() and stamp.read_text(encoding="utf-8") == info.stamp
        except OSError:
            current = False
        if not current:
            self.download(url, local)
            stamp.write_text(info.stamp, encoding="utf-8")
        return local

    def upload(self, local: Path, url: str | Path) -> int:
        """Copy the file ``local`` to ``url``, all or nothing. Returns the bytes copied."""
        try:
            source = self._open_local(local)
        except OSError as exc:
            raise _error(str(local), "read", exc) from exc
        with source:
            return self.upload_from(source, url, source_name=str(local))

    def upload_from(self, source: Readable, url: str | Path, *, source_name: str = "") -> int:
        """Copy what ``source.read`` gives until it is empty to ``url``, all or nothing."""
        loc = parse_location(url)
        if not loc.remote:
            return self._write_local(source, Path(loc.path), source_name)
        fs = self._fs(loc)
        tmp = _temporary_path(loc)
        with self._failing(loc, "write", fs):
            out = fs.open_output_stream(tmp)
        copied = 0
        complete = False
        try:
            for chunk in self._chunks(source, source_name):
                with self._failing(loc, "write", fs):
                    out.write(chunk)
                copied += len(chunk)
            with self._failing(loc, "write", fs):
                out.close()
            self._plain_move(loc, fs, tmp)
            complete = True
        finally:
            if not complete:
                # Closing completes the temporary object (pyarrow cannot abandon it): then
                # it is deleted, and the target was never touched.
                with contextlib.suppress(OSError):
                    out.close()
                with contextlib.suppress(OSError, StorageError):
                    self._plain_delete(loc, fs, tmp)
        return copied

    def _plain_move(self, loc: Location, fs: pafs.FileSystem, tmp: str) -> None:
        """Move the object at ``tmp`` (a path in ``loc``'s bucket) onto ``loc``, leaving no
        folder marker behind (see the module's docstring)."""
        if loc.scheme == "s3" and _boto3_available():
            bucket, key = loc.path.split("/", 1)
            source = {"Bucket": bucket, "Key": tmp.split("/", 1)[1]}
            self._s3_conditional(
                loc, "write", lambda client, b, k: client.copy(source, bucket, key)
            )
            self._plain_delete(loc, fs, tmp)
            return
        with self._failing(loc, "write", fs):
            fs.move(tmp, loc.path)

    def _plain_delete(self, loc: Location, fs: pafs.FileSystem, path: str) -> None:
        """Delete the object at ``path`` (in ``loc``'s bucket; none there is no error),
        leaving no folder marker behind (see the module's docstring)."""
        if loc.scheme == "s3" and _boto3_available():
            key = path.split("/", 1)[1]
            self._s3_conditional(
                loc,
                "delete",
                lambda client, bucket, k: client.delete_object(Bucket=bucket, Key=key),
            )
            return
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _error(loc.shown, "delete", exc) from exc

    def _write_local(self, source: Readable, target: Path, source_name: str) -> int:
        """A temporary file beside ``target``, synced, then renamed onto it."""
        tmp = target.with_name(f".{target.name}{UPLOAD_MARK}{os.getpid()}-{secrets.token_hex(6)}")
        copied = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as out:
                for chunk in self._chunks(source, source_name):
                    out.write(chunk)
                    copied += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            raise _error(str(target), "write", exc) from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        return copied

    def _chunks(self, source: Readable, source_name: str) -> Iterator[bytes]:
        """What ``source`` gives, a chunk at a time, until it is empty; its failures named
        as reads of ``source_name``."""
        while True:
            try:
                chunk = source.read(self._chunk)
            except OSError as exc:
                raise _error(source_name or "the upload's source", "read", exc) from exc
            if not chunk:
                return
            yield chunk

    def write_bytes(self, url: str | Path, data: bytes) -> None:
        self.upload_from(_BytesReader(data), url)

    def list(self, prefix: str | Path, *, unfinished_uploads: bool = False) -> list[ObjectInfo]:
        """The files under the folder ``prefix`` (at any depth), sorted by URL; none when
        the folder does not exist. Temporary objects of unfinished uploads are left out, or,
        with ``unfinished_uploads``, are all that is listed (for their owner to remove)."""
        loc = parse_location(prefix, folder=True)
        fs = self._fs(loc)
        base = str(prefix).rstrip("/")
        selector = pafs.FileSelector(loc.path.rstrip("/"), recursive=True, allow_not_found=True)
        with self._failing(loc, "list", fs):
            infos = fs.get_file_info(selector)
            # An empty listing: is the bucket there at all?
            if not infos and loc.remote and _missing_bucket(fs, loc):
                raise StorageError(loc.shown, "list", f"{NO_SUCH_BUCKET} {loc.bucket!r}")
        found = []
        root = loc.path.rstrip("/")
        for info in infos:
            if info.type != pafs.FileType.File or (UPLOAD_MARK in info.base_name) != (
                unfinished_uploads
            ):
                continue
            url = base + info.path[len(root) :]
            found.append(_object_info(loc, info, url))
        return sorted(found, key=lambda o: o.url)

    def delete(self, url: str | Path, *, missing_ok: bool = True) -> None:
        loc = parse_location(url)
        fs = self._fs(loc)
        if not missing_ok and self.stat_or_none(url) is None:
            raise self._missing(loc, "delete", fs)
        self._plain_delete(loc, fs, loc.path)

    def check_writable(self, url: str | Path) -> None:
        """StorageError unless an object can be written beside ``url``: a tiny probe object
        is written and deleted, so that a run stops before it sends anything."""
        loc = parse_location(url)
        token = secrets.token_hex(6)
        if loc.remote:
            probe = f"{url}.batchrun/probe-{token}"
        else:
            probe = str(Path(loc.path).with_name(f".{loc.name}.batchrun-probe-{token}"))
        try:
            self.write_bytes(probe, b"")
        except StorageError as exc:
            raise StorageError(loc.shown, "write", exc.reason) from exc
        self.delete(probe)

    # -- conditional writes of small objects ----------------------------------------------------

    def conditions_atomic(self, url: str | Path) -> bool:
        """Whether ``create_only`` and ``replace_if`` are atomic at ``url`` (S3 with boto3,
        and ``create_only`` of a local file), or check-then-write."""
        loc = parse_location(url)
        return (loc.scheme == "s3" and _boto3_available()) or loc.scheme == "file"

    def read_versioned(self, url: str | Path) -> Versioned | None:
        """The object's bytes and version, or None when there is none."""
        loc = parse_location(url)
        if loc.scheme == "s3" and _boto3_available():
            return self._s3_conditional(
                loc, "read", lambda client, bucket, key: _s3_get(client, bucket, key)
            )
        if self.stat_or_none(url) is None:
            return None
        try:
            data = self.read_bytes(url)
        except StorageError as exc:
            if exc.reason in (NO_SUCH_OBJECT, "no such file"):
                return None  # deleted between the stat and the read
            raise
        return Versioned(data, _content_version(data))

    def create_only(self, url: str | Path, data: bytes) -> str | None:
        """Write ``data`` to ``url`` only if no object is there: its version, or None when
        one was there already (nothing written)."""
        loc = parse_location(url)
        if loc.scheme == "s3" and _boto3_available():
            return self._s3_conditional(
                loc, "write", lambda client, bucket, key: _s3_put(client, bucket, key, data, None)
            )
        if loc.scheme == "file":
            return self._create_local(Path(loc.path), data)
        if self.exists(url):
            return None
        self.write_bytes(url, data)
        return _content_version(data)

    def replace_if(self, url: str | Path, data: bytes, version: str) -> str | None:
        """Write ``data`` over ``url`` only while it is at ``version``: the new version, or
        None when the object changed or went (nothing written)."""
        loc = parse_location(url)
        if loc.scheme == "s3" and _boto3_available():
            return self._s3_conditional(
                loc,
                "write",
                lambda client, bucket, key: _s3_put(client, bucket, key, data, version),
            )
        current = self.read_versioned(url)
        if current is None or current.version != version:
            return None
        self.write_bytes(url, data)
        return _content_version(data)

    def delete_if(self, url: str | Path, version: str) -> bool:
        """Delete ``url`` only while it is at ``version``; whether it was deleted."""
        loc = parse_location(url)
        if loc.scheme == "s3" and _boto3_available():
            return self._s3_conditional(
                loc, "delete", lambda client, bucket, key: _s3_delete(client, bucket, key, version)
            )
        current = self.read_versioned(url)
        if current is None or current.version != version:
            return False
        self.delete(url)
        return True

    def _create_local(self, target: Path, data: bytes) -> str | None:
        """A temporary file linked to ``target``: the link fails, atomically, if it exists."""
        tmp = target.with_name(f".{target.name}{UPLOAD_MARK}{os.getpid()}-{secrets.token_hex(6)}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, target)
            except FileExistsError:
                return None
        except OSError as exc:
            raise _error(str(target), "write", exc) from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        return _content_version(data)

    def _s3_conditional(
        self, loc: Location, action: str, call: Callable[[Any, str, str], _T]
    ) -> _T:
        """``call(client, bucket, key)`` with boto3's errors as StorageErrors naming ``loc``."""
        errors = _botocore_errors()
        bucket, key = loc.path.split("/", 1)
        try:
            return call(self._s3_client(), bucket, key)
        except errors.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                raise StorageError(loc.shown, action, f"{NO_SUCH_BUCKET} {bucket!r}") from None
            if code in _S3_DENIED or status in (401, 403):
                raise StorageError(
                    loc.shown, action, ACCESS_DENIED, "check the credentials the AWS tools find"
                ) from None
            raise StorageError(loc.shown, action, f"failed ({code or status})") from None
        except errors.EndpointConnectionError:
            hint = f"nothing answers at {self._endpoint(loc)}"
            raise StorageError(loc.shown, action, UNREACHABLE, hint) from None
        except errors.BotoCoreError as exc:
            raise StorageError(loc.shown, action, f"failed ({type(exc).__name__})") from None

    def _s3_client(self) -> Any:
        """One boto3 S3 client, made on first use. Credentials and region: boto3's own
        lookup (environment, config files, instance role), the same pyarrow's SDK does."""
        if self._boto is None:
            boto3 = importlib.import_module("boto3")
            botocore_config = importlib.import_module("botocore.config")
            config = botocore_config.Config(
                connect_timeout=10, read_timeout=30, retries={"max_attempts": 3}
            )
            self._boto = boto3.client("s3", endpoint_url=self.settings.s3_endpoint, config=config)
        return self._boto

    # -- filesystems and errors -------------------------------------------------------------

    def _fs(self, loc: Location) -> pafs.FileSystem:
        given = self._given.get(loc.scheme)
        if given is not None:
            return given
        key = (loc.scheme, loc.bucket)
        if key not in self._made:
            with self._failing(loc, "open"):
                self._made[key] = self._make_fs(loc)
        return self._made[key]

    def _make_fs(self, loc: Location) -> pafs.FileSystem:
        if loc.scheme == "file":
            return pafs.LocalFileSystem()
        if loc.scheme == "s3":
            endpoint = self.settings.s3_endpoint
            if endpoint is None:  # AWS itself: from_uri finds the bucket's region
                return pafs.FileSystem.from_uri(f"s3://{loc.bucket}")[0]
            scheme, host = _split_endpoint(endpoint)
            return pafs.S3FileSystem(endpoint_override=host, scheme=scheme)
        endpoint = self.settings.gcs_endpoint
        if endpoint is None:
            return pafs.GcsFileSystem()
        scheme, host = _split_endpoint(endpoint)
        return pafs.GcsFileSystem(anonymous=True, endpoint_override=host, scheme=scheme)

    @contextlib.contextmanager
    def _failing(
        self, loc: Location, action: str, fs: pafs.FileSystem | None = None
    ) -> Iterator[None]:
        """OSErrors inside become StorageErrors naming ``loc`` and what failed."""
        try:
            yield
        except FileNotFoundError as exc:
            raise self._missing(loc, action, fs) from exc
        except OSError as exc:
            raise _error(loc.shown, action, exc, self._endpoint(loc), loc.bucket) from exc

    def _missing(self, loc: Location, action: str, fs: pafs.FileSystem | None) -> StorageError:
        """ "No such object", or "no such bucket" when the bucket is what is missing (pyarrow
        says FileNotFoundError for both)."""
        if loc.remote and fs is not None:
            with contextlib.suppress(OSError):
                if _missing_bucket(fs, loc):
                    return StorageError(loc.shown, action, f"{NO_SUCH_BUCKET} {loc.bucket!r}")
        return StorageError(loc.shown, action, NO_SUCH_OBJECT if loc.remote else "no such file")

    def _endpoint(self, loc: Location) -> str:
        if loc.scheme == "s3":
            return url_without_secrets(self.settings.s3_endpoint or "the AWS S3 endpoint")
        if loc.scheme == "gs":
            return url_without_secrets(self.settings.gcs_endpoint or "the Google endpoint")
        return ""


class StorageMedia:
    """A media folder on S3 or GCS (``s3://b/media/``), for the files rows attach: the
    ``rows.files.MediaSource`` a remote job hands down in place of a local folder. A
    reference is relative to the folder and may not leave it (an absolute path or ``..``
    out of it is refused, as it is for a local folder)."""

    def __init__(self, storage: Storage, folder_url: str) -> None:
        self.storage = storage
        self.folder = folder_url.rstrip("/")
        self.shown = url_without_secrets(self.folder)

    def url_of(self, path: str) -> str:
        relative = posixpath.normpath(path.replace("\\", "/"))
        if path.startswith("/") or relative == ".." or relative.startswith("../"):
            raise FileProblem(f"file {path!r} is outside the media folder {self.shown}; refused")
        return f"{self.folder}/{relative}"

    def identify(self, path: str) -> tuple[str, int]:
        url = self.url_of(path)
        try:
            info = self.storage.stat_or_none(url)
        except StorageError as exc:
            raise FileProblem(f"cannot read file {path!r}: {exc}") from None
        if info is None:
            raise FileProblem(f"file {path!r} not found (paths are relative to {self.shown})")
        return f"{url_without_secrets(url)}@{info.stamp}", info.size

    def read(self, path: str) -> bytes:
        try:
            return self.storage.read_bytes(self.url_of(path))
        except StorageError as exc:
            raise FileProblem(f"cannot read file {path!r}: {exc}") from None


class _Translating:
    """A pyarrow input file whose OSErrors become StorageErrors."""

    def __init__(self, stream: Any, storage: Storage, loc: Location) -> None:
        self._stream = stream
        self._storage = storage
        self._loc = loc

    def read(self, size: int = -1) -> bytes:
        with self._storage._failing(self._loc, "read"):
            data: bytes = self._stream.read() if size < 0 else self._stream.read(size)
            return data

    def seek(self, offset: int, whence: int = 0) -> int:
        with self._storage._failing(self._loc, "read"):
            return int(self._stream.seek(offset, whence))

    def tell(self) -> int:
        return int(self._stream.tell())

    def size(self) -> int:
        return int(self._stream.size())


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def read(self, size: int = -1) -> bytes:
        size = len(self._data) if size < 0 else size
        chunk, self._data = self._data[:size], self._data[size:]
        return bytes(chunk)


_S3_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
}


def _boto3_available() -> bool:
    # Imported, not just found: a boto3 that is there but broken is taken as absent (the
    # check-then-write fallback), never an ImportError in the middle of a run.
    return has_extra("boto3")


def _botocore_errors() -> Any:
    """botocore's exception classes (imported so, untyped, only where S3 is conditional)."""
    return importlib.import_module("botocore.exceptions")


def _content_version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _s3_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _s3_get(client: Any, bucket: str, key: str) -> Versioned | None:
    client_error = _botocore_errors().ClientError

    try:
        reply = client.get_object(Bucket=bucket, Key=key)
    except client_error as exc:
        if _s3_code(exc) == "NoSuchKey":
            return None
        raise
    return Versioned(reply["Body"].read(), str(reply["ETag"]))


def _s3_put(client: Any, bucket: str, key: str, data: bytes, version: str | None) -> str | None:
    """PutObject, create-only (``version`` None) or only over ``version``; None when the
    condition failed (412; 404 or 409 when the object went or is being written)."""
    client_error = _botocore_errors().ClientError

    condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
    try:
        reply = client.put_object(Bucket=bucket, Key=key, Body=data, **condition)
    except client_error as exc:
        if _s3_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
            return None
        raise
    return str(reply["ETag"])


def _s3_delete(client: Any, bucket: str, key: str, version: str) -> bool:
    client_error = _botocore_errors().ClientError

    try:
        client.delete_object(Bucket=bucket, Key=key, IfMatch=version)
    except client_error as exc:
        if _s3_code(exc) in ("PreconditionFailed", "NoSuchKey"):
            return False
        raise
    return True


def _missing_bucket(fs: pafs.FileSystem, loc: Location) -> bool:
    return bool(fs.get_file_info(loc.bucket).type == pafs.FileType.NotFound)


def _temporary_path(loc: Location) -> str:
    """A hidden name beside the target, unique to this upload."""
    folder, _, name = loc.path.rpartition("/")
    return f"{folder}/.{name}{UPLOAD_MARK}{os.getpid()}-{secrets.token_hex(6)}"


def _object_info(loc: Location, info: pafs.FileInfo, url: str) -> ObjectInfo:
    mtime = info.mtime_ns if info.mtime_ns is not None else 0
    return ObjectInfo(url if loc.remote else info.path, int(info.size), f"{info.size}:{mtime}")


def _split_endpoint(endpoint: str) -> tuple[str, str]:
    """``http://host:port`` as ("http", "host:port"); a bare host means https."""
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    return parts.scheme or "https", parts.netloc.rpartition("@")[2]


def _error(
    shown: str, action: str, exc: OSError, endpoint: str = "", bucket: str = ""
) -> StorageError:
    """The StorageError for an OSError of pyarrow or the OS: what failed, in words."""
    text = str(exc)
    for reason, signs in _SIGNS:
        if any(sign in text for sign in signs):
            if reason == NO_SUCH_BUCKET and bucket:
                return StorageError(shown, action, f"{reason} {bucket!r}")
            hint = ""
            if reason == UNREACHABLE and endpoint:
                hint = f"nothing answers at {endpoint}"
            elif reason == ACCESS_DENIED:
                hint = "check the credentials the AWS or Google tools find (environment, config)"
            return StorageError(shown, action, reason, hint)
    if isinstance(exc, FileNotFoundError):
        return StorageError(shown, action, "no such file")
    if isinstance(exc, PermissionError):
        return StorageError(shown, action, "permission denied")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(shown, action, NO_SPACE)
    detail = exc.strerror or text.splitlines()[0] if text else type(exc).__name__
    return StorageError(shown, action, f"failed ({detail})")
