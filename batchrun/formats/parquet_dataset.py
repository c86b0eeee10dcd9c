"""A Parquet dataset, out: a folder of Parquet parts that readers take as one table.

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
the partial mark as a single file's does (``formats.marks``). Datasets written before the ids
(``part-00000.parquet``) are read as ever: every reader here follows the manifest.

Locally the dataset is built in a hidden sibling folder and swapped into place whole
(``store.commit``: one rename exchange on Linux), and the old folder removed. Why the whole
folder rather than new parts beside the old ones and ``_SUCCESS`` replaced: a reader that
lists the folder (pyarrow.dataset, a DuckDB glob) would then see both datasets' parts for as
long as the publish takes, twice the rows with no error; swapped whole, a listing is of one
dataset. And why the ids with the swap: a reader opens parts by name after it has listed
them or read ``_SUCCESS``, and a swap may come in between. With names of their own, a name
from the old dataset is not in the new one: that reader gets "file not found" (and reads
again), never another dataset's part under the old name. So a reader of ``_SUCCESS`` or of
the folder reads one dataset or fails, never a mix (``dataset_batches`` says so when a part
it lists is gone).

On an object store there is no rename of a folder: ``runs.output.RemoteDataset`` uploads the
parts (named after its run), then ``_SUCCESS``, then deletes the parts of an older run the new
manifest does not list. A reader that waits for ``_SUCCESS`` thus reads only parts it lists,
all complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrun.core.disk import fsync_dir, fsync_file
from batchrun.core.errors import OutputError
from batchrun.core.wording import option
from batchrun.formats.base import PART_BYTES, PART_ROWS, OutputFormat, Write, WriteOptions
from batchrun.formats.marks import Partial, mark_in, parse_mark
from batchrun.formats.parquet import open_parquet

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

NAME = "parquet-dataset"
SUCCESS = "_SUCCESS"  # a finished run's manifest
PARTIAL_MANIFEST = "_PARTIAL"  # a stopped run's
MANIFESTS = (SUCCESS, PARTIAL_MANIFEST)


OpenPart = Callable[[Path, "pa.Schema"], "pq.ParquetWriter"]
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
            "format": NAME,
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
    import pyarrow.parquet

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
            part = pyarrow.parquet.ParquetFile(fh)
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
            fsync_file(self.folder / name)
        manifest = Manifest(
            tuple(self.parts), tuple(self.part_rows), schema_fingerprint(self.schema), self._partial
        )
        write_manifest(self.folder, manifest)
        return manifest

    def abandon(self) -> None:
        import pyarrow as pa

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
    fsync_dir(folder)


def open_parquet_part(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A part's writer: zstd, as a single Parquet output is written."""
    return open_parquet(path, schema)


class ParquetDataset(OutputFormat):
    """A folder of Parquet parts and a manifest (``-o out/labels/``, ``--output-format
    parquet-dataset``); a folder named ``.parquet`` (as Spark writes them) is one too."""

    name = NAME
    described = "a folder of Parquet parts and a _SUCCESS manifest"
    folder = True
    folder_suffixes = (".parquet",)
    parts = "parquet"
    marks_itself = True  # in the manifest (_PARTIAL) and in each part's metadata
    from_python = False
    rank = 40

    @contextlib.contextmanager
    def writer(
        self, path: Path, schema: pa.Schema, options: WriteOptions | None = None
    ) -> Iterator[Write]:
        """Parts into the folder ``path``, its manifest written on a clean exit only, so a
        failure leaves a folder no reader takes for a dataset. A partial mark in
        ``schema``'s metadata goes into its parts and its manifest."""
        options = options or WriteOptions()
        writer = DatasetWriter(
            path,
            schema,
            part_rows=options.part_rows,
            part_bytes=options.part_bytes,
            partial=mark_in(schema.metadata),
            open_part=options.open_part,
        )
        try:
            yield writer.write
        except BaseException:
            writer.abandon()
            raise
        writer.finish()

    def batches(
        self, path: Path, wanted: pa.Schema, batch_rows: int, slice_bytes: int
    ) -> Iterator[pa.RecordBatch]:
        return dataset_batches(path, wanted, batch_rows)

    def row_count(self, path: Path) -> int:
        return dataset_rows(path)

    def exists(self, path: Path) -> bool:
        """A written dataset (its manifest) is there. An empty folder is none; a folder
        holding other files but no manifest is refused (OutputError), not overwritten."""
        return dataset_exists(path)

    def size(self, path: Path) -> int:
        return dataset_bytes(path)

    def modified_ns(self, path: Path) -> int | None:
        """When its manifest, the last file of a dataset, was written."""
        for name in (PARTIAL_MANIFEST, SUCCESS):
            with contextlib.suppress(OSError):
                return (path / name).stat().st_mtime_ns
        return None

    def read_mark(self, path: Path) -> Partial | None:
        """The ``partial`` of its ``_PARTIAL`` manifest, unless a finished run's ``_SUCCESS``
        is there."""
        if (path / SUCCESS).exists():
            return None
        try:
            data: Any = json.loads((path / PARTIAL_MANIFEST).read_text(encoding="utf-8"))
            return parse_mark(data["partial"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remove(self, path: Path) -> None:
        """Remove a dataset folder; one holding files but no manifest is refused
        (``dataset_exists``): ``-o ~/work/ --overwrite`` must not remove a folder batchrun
        did not write."""
        if path.is_dir() and not path.is_symlink():
            dataset_exists(path)
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


FORMATS = (ParquetDataset(),)
