"""Partitioned outputs: a folder of Parquet parts that readers take as one table.

An output that names a folder (``-o out/labels/``, ``s3://b/out/``, or ``--output-format
parquet-dataset``) is written as parts of a bounded size, in input order across parts, then a
manifest last::

    out/labels/part-00000-<id>.parquet   input rows 0 .. part_rows-1
    out/labels/part-00001-<id>.parquet   the next part_rows, ...
    out/labels/_SUCCESS                  JSON: the parts in order, their rows, the row count
                                         and the schema's fingerprint; written after every part

``<id>`` is new for every dataset written (``new_dataset_id``: its UTC time and a random
part), so no two datasets ever written in one place share a part name. pyarrow.dataset,
DuckDB, Spark and polars read the folder as one table (they skip names that start with ``_``
or ``.``); the parts' names sort in input order. A stopped run's partial dataset has
``_PARTIAL`` (the same JSON, with ``partial``) instead of ``_SUCCESS``, so a reader that waits
for ``_SUCCESS`` never takes it for a finished job, and each part's Parquet metadata carries
the partial mark as a single file's does (``store.partial``). Datasets written before the ids
(``part-00000.parquet``) are read as ever: every reader here follows the manifest.

Locally the dataset is built in a hidden sibling folder and swapped into place whole
(``replace_folder``: one rename exchange on Linux), and the old folder removed. Why the whole
folder rather than new parts beside the old ones and ``_SUCCESS`` replaced: a reader that
lists the folder (pyarrow.dataset, a DuckDB glob) would then see both datasets' parts for as
long as the publish takes, twice the rows with no error; swapped whole, a listing is of one
dataset. And why the ids with the swap: a reader opens parts by name after it has listed
them or read ``_SUCCESS``, and a swap may come in between. With names of their own, a name
from the old dataset is not in the new one: that reader gets "file not found" (and reads
again), never another dataset's part under the old name. So a reader of ``_SUCCESS`` or of
the folder reads one dataset or fails, never a mix (``dataset_batches`` says so when a part
it lists is gone).

On an object store there is no rename of a folder: ``RemoteDataset.publish`` uploads the
parts (named after its run), then ``_SUCCESS``, then deletes the parts of an older run the new
manifest does not list. A reader that waits for ``_SUCCESS`` thus reads only parts it lists,
all complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import glob
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.core.errors import OutputError
from batchrun.core.wording import option
from batchrun.store.partial import PARTIAL_MANIFEST, SUCCESS, Partial

DATASET: Literal["parquet-dataset"] = "parquet-dataset"
MANIFESTS = (SUCCESS, PARTIAL_MANIFEST)
# Rows per part: a million ~1 KB rows make a part of a few hundred MB of Parquet, the size
# Spark and DuckDB split work by; PART_BYTES bounds parts of long answers (Arrow bytes, before
# compression: a part on disk is smaller).
PART_ROWS = 1_000_000
PART_BYTES = 1 << 30
ASIDE_SUFFIX = ".old"  # an old dataset moved aside while the new one is swapped in


OpenPart = Callable[[Path, pa.Schema], pq.ParquetWriter]
"""Opens a part's Parquet writer (``open_parquet_part``; a seam for tests)."""


def new_dataset_id() -> str:
    """A dataset's own id for its parts' names: its start (UTC) and a random part,
    ``20261202T031500Z-a1b2c3``."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


def part_name(number: int, dataset_id: str | None = None) -> str:
    """``part-00002-<dataset_id>.parquet``; ``part-00002.parquet`` without an id (the names
    of datasets written before the ids, still read)."""
    if dataset_id is None:
        return f"part-{number:05d}.parquet"
    return f"part-{number:05d}-{dataset_id}.parquet"


def is_part_name(name: str) -> bool:
    return name.startswith("part-") and name.endswith(".parquet")


def names_folder(text: str) -> bool:
    """Whether an output as the user wrote it names a folder: it ends with a slash."""
    return text.endswith("/") or text.endswith(os.sep)


def schema_fingerprint(schema: pa.Schema) -> str:
    """A digest of the columns' names and types (metadata left out): equal for parts that
    any reader can take as one table."""
    return hashlib.sha256(schema.remove_metadata().serialize().to_pybytes()).hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    """What ``_SUCCESS`` (or ``_PARTIAL``) says: the parts in input order, their rows."""

    parts: tuple[str, ...]
    part_rows: tuple[int, ...]
    schema: str
    partial: Partial | None = None

    @property
    def rows(self) -> int:
        return sum(self.part_rows)

    def renamed(self, names: Sequence[str]) -> Manifest:
        """The same dataset with its parts under ``names`` (a remote copy's own names)."""
        return Manifest(tuple(names), self.part_rows, self.schema, self.partial)

    @property
    def file_name(self) -> str:
        return SUCCESS if self.partial is None else PARTIAL_MANIFEST

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "format": DATASET,
            "rows": self.rows,
            "schema": self.schema,
            "parts": [
                {"name": n, "rows": r} for n, r in zip(self.parts, self.part_rows, strict=True)
            ],
        }
        if self.partial is not None:
            data["partial"] = {"rows": self.partial.rows, "of": self.partial.of}
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def parse(cls, text: str) -> Manifest:
        data = json.loads(text)
        parts = tuple(str(p["name"]) for p in data["parts"])
        if any(not is_part_name(name) or "/" in name for name in parts):
            raise ValueError("a part name that is not one")
        rows = tuple(int(p["rows"]) for p in data["parts"])
        raw = data.get("partial")
        partial = Partial(int(raw["rows"]), int(raw["of"])) if raw is not None else None
        return cls(parts, rows, str(data["schema"]), partial)


def read_manifest(folder: Path) -> Manifest | None:
    """The dataset's manifest; None when the folder has none (no dataset, or none finished).
    OutputError for a manifest that cannot be read."""
    for name in MANIFESTS:
        path = folder / name
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            return Manifest.parse(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise OutputError(f"{path} is not a batchrun dataset manifest: {exc}") from exc
    return None


def dataset_exists(folder: Path) -> bool:
    """Whether ``folder`` holds a written dataset. An empty folder is none; a folder holding
    other files but no manifest is refused, not overwritten."""
    if not folder.is_dir():
        return False
    if read_manifest(folder) is not None:
        return True
    if any(folder.iterdir()):
        raise OutputError(
            f"{folder} holds files but no {SUCCESS}: it is not a dataset batchrun wrote. "
            f"Move them away, or write to another folder ({option('output', 'OUT')})"
        )
    return False


def dataset_rows(folder: Path) -> int:
    manifest = read_manifest(folder)
    if manifest is None:
        raise OutputError(f"{folder}: no {SUCCESS}, so no finished dataset")
    return manifest.rows


def dataset_bytes(folder: Path) -> int:
    """The bytes a dataset's files take (what the final step must hold until the swap)."""
    with contextlib.suppress(OSError):
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return 0


def dataset_batches(folder: Path, wanted: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The manifest's parts in order, ``batch_rows`` at a time, with those of ``wanted``'s
    columns each part has (the caller conforms them). OutputError when a part it lists is
    gone: the dataset was replaced while it was read (its parts' names are its own, so no
    part of another dataset is ever read in its place)."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise OutputError(f"{folder}: no {SUCCESS}, so no finished dataset")
    for name in manifest.parts:
        try:
            fh = (folder / name).open("rb")
        except FileNotFoundError as exc:
            raise OutputError(
                f"{folder / name}, a part its {SUCCESS} lists, is gone: the dataset was "
                "replaced while it was read (or the part deleted). Read it again"
            ) from exc
        with fh:
            part = pq.ParquetFile(fh)
            try:
                present = [n for n in wanted.names if n in part.schema_arrow.names]
                yield from part.iter_batches(batch_rows, columns=present)
            finally:
                part.close()


class DatasetWriter:
    """Writes tables, in order, as parts of at most ``part_rows`` rows (and about
    ``part_bytes`` Arrow bytes) into ``folder``; ``finish`` writes the manifest last.

    The parts are named with ``dataset_id`` (a new ``new_dataset_id`` by default).
    ``open_part`` opens a part's file (a seam: tests make the disk fail mid-dataset).
    """

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        *,
        part_rows: int = PART_ROWS,
        part_bytes: int = PART_BYTES,
        partial: Partial | None = None,
        open_part: OpenPart | None = None,
        dataset_id: str | None = None,
    ) -> None:
        if part_rows < 1:
            raise ValueError("part_rows must be at least 1")
        self.folder = folder
        self.schema = schema
        self._part_rows = part_rows
        self._part_bytes = part_bytes
        self._partial = partial
        self._open_part = open_part or open_parquet_part
        self.dataset_id = dataset_id or new_dataset_id()
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_part = 0
        self._bytes_in_part = 0
        self.parts: list[str] = []
        self.part_rows: list[int] = []
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, table: pa.Table) -> None:
        offset = 0
        while offset < table.num_rows:
            if self._writer is None:
                self._start_part()
            assert self._writer is not None
            room = self._part_rows - self._rows_in_part
            piece = table.slice(offset, room)
            self._writer.write_table(piece)
            offset += piece.num_rows
            self._rows_in_part += piece.num_rows
            self._bytes_in_part += piece.nbytes
            self.part_rows[-1] = self._rows_in_part
            if self._rows_in_part >= self._part_rows or self._bytes_in_part >= self._part_bytes:
                self._end_part()

    def finish(self) -> Manifest:
        """Close the last part, fsync every part, then write the manifest and fsync it."""
        self._end_part()
        for name in self.parts:
            _fsync_file(self.folder / name)
        manifest = Manifest(
            tuple(self.parts), tuple(self.part_rows), schema_fingerprint(self.schema), self._partial
        )
        write_manifest(self.folder, manifest)
        return manifest

    def abandon(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                self._writer.close()
            self._writer = None

    def _start_part(self) -> None:
        name = part_name(len(self.parts), self.dataset_id)
        self._writer = self._open_part(self.folder / name, self.schema)
        self.parts.append(name)
        self.part_rows.append(0)
        self._rows_in_part = self._bytes_in_part = 0

    def _end_part(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write ``manifest`` into ``folder`` and sync it: the last file of a dataset."""
    path = folder / manifest.file_name
    with path.open("w", encoding="utf-8") as fh:
        fh.write(manifest.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(folder)


def open_parquet_part(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A part's writer: zstd, as a single Parquet output is written."""
    return pq.ParquetWriter(str(path), schema, compression="zstd")


@contextlib.contextmanager
def dataset_writer(
    folder: Path,
    schema: pa.Schema,
    *,
    part_rows: int = PART_ROWS,
    part_bytes: int = PART_BYTES,
    partial: Partial | None = None,
    open_part: OpenPart | None = None,
) -> Iterator[Callable[[pa.Table], None]]:
    """A write(table) function for a dataset in ``folder``: its manifest is written on a
    clean exit only, so a failure leaves a folder no reader takes for a dataset. The
    partial mark, if any, is read from ``schema``'s metadata by the caller and given here."""
    writer = DatasetWriter(
        folder,
        schema,
        part_rows=part_rows,
        part_bytes=part_bytes,
        partial=partial,
        open_part=open_part,
    )
    try:
        yield writer.write
    except BaseException:
        writer.abandon()
        raise
    writer.finish()


# -- swapping a folder into place ---------------------------------------------------------


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the
    system has no such call, and the caller swaps in two renames."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    result = renameat2(_AT_FDCWD, bytes(a), _AT_FDCWD, bytes(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # this file system cannot
        return False
    raise OSError(err, os.strerror(err), str(b))


def aside_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.{os.getpid()}.{secrets.token_hex(6)}{ASIDE_SUFFIX}")


def replace_folder(new: Path, output: Path) -> None:
    """Put the complete dataset ``new`` (a sibling of ``output``) in ``output``'s place.

    An existing dataset is swapped out in one step where the system can (Linux), so a
    reader sees the old dataset or the new one, never neither; elsewhere it is renamed
    aside first, and ``recover_aside`` puts it back if a crash came between the renames.
    The old dataset is then removed."""
    if not output.exists():
        os.replace(new, output)
    elif output.is_dir() and _exchange(new, output):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old dataset
    else:
        aside = aside_path(output)
        os.replace(output, aside)
        os.replace(new, output)
        _remove(aside)
    _fsync_dir(output.parent)


def recover_aside(output: Path) -> None:
    """After a crash between ``replace_folder``'s two renames: the old dataset back in
    place when no dataset is; leftovers removed. Only under the output's lock."""
    asides = sorted(output.parent.glob(f".{glob.escape(output.name)}.*{ASIDE_SUFFIX}"))
    for aside in asides:
        if not output.exists() and read_manifest(aside) is not None:
            os.replace(aside, output)
        else:
            _remove(aside)


def remove_output(path: Path) -> None:
    """Remove an output, file or dataset folder (``--overwrite``). A folder holding files
    but no manifest is refused (``dataset_exists``): ``-o ~/work/ --overwrite`` must not
    remove a folder batchrun did not write."""
    if path.is_dir() and not path.is_symlink():
        dataset_exists(path)
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        _fsync_file(path)
