"""The mark of a partial output: the file a stopped run leaves with only the rows it finished.

A run stopped by its budget, a signal or a fatal error writes its output anyway, so what is
finished can be read (``Sink.write_finished``). Such a file holds the finished rows in input
order with the unfinished ones left out, so its positions are not input indexes: it is never
read back as a source. The journal beside it keeps every row the file holds, and the run that
finishes the job builds the final file from the journal alone.

Where the mark lives is its output format's choice (``OutputFormat.marks_itself``):

- In the file's own metadata (``batchrun.partial`` in the schema's metadata: Parquet, Arrow
  IPC; a Parquet dataset's manifest), so it travels with the file; ``pq.read_schema(path)
  .metadata`` shows it to any reader. A writer finds it in the schema it is given
  (``partial_metadata``).
- Beside the file, for formats with no metadata (JSON lines, CSV): ``labels.jsonl.partial.json``
  names the file it describes by inode, size and modification time. It is written before
  the partial file is renamed into place (a rename keeps all three; ``store.commit``), so
  there is no moment when a partial file stands unmarked; a mark left over from an earlier
  file names another inode and is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARTIAL_KEY = b"batchrun.partial"
MARK_SUFFIX = ".partial.json"


@dataclass(frozen=True)
class Partial:
    """A partial output: it holds ``rows`` of the input's ``of`` rows."""

    rows: int
    of: int

    def __str__(self) -> str:
        return f"partial: {self.rows:,} of {self.of:,} rows"


def partial_metadata(partial: Partial) -> dict[bytes, bytes]:
    """The schema metadata that marks an output partial, for formats that carry it."""
    return {PARTIAL_KEY: json.dumps({"rows": partial.rows, "of": partial.of}).encode()}


def mark_in(metadata: Mapping[bytes, bytes] | None) -> Partial | None:
    """The partial mark a schema's ``metadata`` carries (None: a complete output's). A mark
    that cannot be read is no mark: ValueError."""
    raw = (metadata or {}).get(PARTIAL_KEY)
    return None if raw is None else parse_mark(json.loads(raw))


def mark_path(output: Path) -> Path:
    """Where the mark of an output that cannot carry it lives: beside it."""
    return output.with_name(output.name + MARK_SUFFIX)


def read_mark_beside(output: Path) -> Partial | None:
    """The mark beside ``output``, when it names the file there now; None for a complete
    output, no output, or a mark that cannot be read."""
    try:
        data: Any = json.loads(mark_path(output).read_text(encoding="utf-8"))
        if data.get("file") != list(_file_id(output)):
            return None  # a mark of an earlier file in this place
        return parse_mark(data)
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return None


def mark_beside(written: Path, output: Path, partial: Partial, tmp: Path) -> None:
    """Mark ``written`` (the new file, before it is renamed to ``output``) partial, beside
    ``output``; the mark is written as ``tmp``, then renamed."""
    data = {"rows": partial.rows, "of": partial.of, "file": list(_file_id(written))}
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, mark_path(output))


def clear_mark(output: Path) -> None:
    """Remove the mark beside ``output`` (the output is complete now, or removed)."""
    with contextlib.suppress(FileNotFoundError):
        mark_path(output).unlink()


def parse_mark(data: Any) -> Partial:
    """A mark's JSON (``{"rows": ..., "of": ...}``) as a Partial; ValueError if it is none."""
    try:
        rows, of = int(data["rows"]), int(data["of"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a partial output's mark: {exc}") from exc
    if not 0 <= rows <= of:
        raise ValueError("not a partial output's mark")
    return Partial(rows, of)


def _file_id(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns)
