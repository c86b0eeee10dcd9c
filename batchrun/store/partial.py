"""The mark of a partial output: the file a stopped run leaves with only the rows it finished.

A run stopped by its budget, a signal or a fatal error writes its output anyway, so what is
finished can be read (``Sink.finalize(..., stopped=True)``). Such a file holds the finished
rows in input order with the unfinished ones left out, so its positions are not input
indexes: it is never read back as a source. The journal beside it keeps every row the file
holds, and the run that finishes the job builds the final file from the journal alone.

Where the mark lives:

- Parquet: in the file's own metadata (``batchrun.partial``), so it travels with the file;
  ``pq.read_schema(path).metadata`` shows it to any reader.
- JSON lines and CSV have no metadata: a file beside the output, ``labels.jsonl.partial.json``,
  names the file it describes by inode, size and modification time. It is written before the
  partial file is renamed into place (a rename keeps all three), so there is no moment when
  a partial JSONL file stands unmarked; a mark left over from an earlier file names another
  inode and is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PARTIAL_KEY = b"batchrun.partial"
# A dataset folder's manifests (``store.dataset``): a stopped run's, and a finished run's.
PARTIAL_MANIFEST = "_PARTIAL"
SUCCESS = "_SUCCESS"
MARK_SUFFIX = ".partial.json"


@dataclass(frozen=True)
class Partial:
    """A partial output: it holds ``rows`` of the input's ``of`` rows."""

    rows: int
    of: int

    def __str__(self) -> str:
        return f"partial: {self.rows:,} of {self.of:,} rows"


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def mark_path(output: Path) -> Path:
    return output.with_name(output.name + MARK_SUFFIX)


def parquet_metadata(partial: Partial) -> dict[bytes, bytes]:
    """The schema metadata that marks a Parquet output partial."""
    return {PARTIAL_KEY: json.dumps({"rows": partial.rows, "of": partial.of}).encode()}


def read_partial(output: Path) -> Partial | None:
    """The output's partial mark; None for a complete output, or no output at all."""
    if output.is_dir():
        return _folder_partial(output)
    try:
        if is_parquet(output):
            metadata = pq.read_schema(output).metadata or {}
            raw = metadata.get(PARTIAL_KEY)
            return _parse(json.loads(raw)) if raw is not None else None
        data: Any = json.loads(mark_path(output).read_text(encoding="utf-8"))
        if data.get("file") != list(_file_id(output)):
            return None  # a mark of an earlier file in this place
        return _parse(data)
    except (OSError, ValueError, TypeError, AttributeError, KeyError, pa.ArrowException):
        return None  # no output, no mark, or a mark we cannot read: a complete output


def mark_jsonl(written: Path, output: Path, partial: Partial, tmp: Path) -> None:
    """Mark ``written`` (the new JSONL file, before it is renamed to ``output``) partial."""
    data = {"rows": partial.rows, "of": partial.of, "file": list(_file_id(written))}
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, mark_path(output))


def clear_mark(output: Path) -> None:
    """Remove a JSONL output's mark (the output is complete now, or removed)."""
    with contextlib.suppress(FileNotFoundError):
        mark_path(output).unlink()


def _file_id(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _folder_partial(folder: Path) -> Partial | None:
    """A dataset folder's mark: the ``partial`` of its ``_PARTIAL`` manifest, unless a
    finished run's ``_SUCCESS`` is there."""
    if (folder / SUCCESS).exists():
        return None
    try:
        data: Any = json.loads((folder / PARTIAL_MANIFEST).read_text(encoding="utf-8"))
        return _parse(data["partial"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _parse(data: Any) -> Partial:
    rows, of = int(data["rows"]), int(data["of"])
    if not 0 <= rows <= of:
        raise ValueError("not a partial output's mark")
    return Partial(rows, of)
