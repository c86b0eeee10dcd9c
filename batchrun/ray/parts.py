"""Committed parts: each finished block of a Ray stage, one Parquet file, written atomically.

Layout for ``parts_dir=out/parts``::

    out/parts/<job>/<block>.parquet        the block's finished rows (output schema)
    out/parts/<job>/.<block>.<pid>.<hex>.tmp   while one is written

``<job>`` is the start of ``store.resume.job_fingerprint`` (the request defaults: model,
system, max_tokens ...), so parts of another job are never taken for this one's; ``<block>``
a hash of the block's ids in order, so the same block of a re-run finds its own part without
reading any other. A part holds only rows that are final (answered, or an error the API
gave); rows a block could not finish (a budget stop, a run-stopping error) are left out, so a
re-run sends them.

Written to a temporary name and renamed: a worker killed mid-write leaves a ``.tmp`` file,
never a torn part, and readers ignore ``.tmp`` files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.core.disk import fsync_dir
from batchrun.store.columns import STATUS_OK
from batchrun.store.sink import output_batches

PART_SUFFIX = ".parquet"
_TMP_SUFFIX = ".tmp"
_JOB_CHARS = 16  # of the fingerprint's 64: enough to keep jobs apart, short enough to read


def job_folder(parts_dir: Path, fingerprint: str) -> Path:
    """Where the parts of the job with ``fingerprint`` live."""
    return parts_dir / fingerprint[:_JOB_CHARS]


def part_name(ids: Sequence[str]) -> str:
    """The part file of the block holding ``ids``, in this order."""
    digest = hashlib.sha256(json.dumps(list(ids), ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()[:32] + PART_SUFFIX


def part_paths(folder: Path) -> list[Path]:
    """The committed parts of a job folder (temporary files left by killed writers aside)."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.name.endswith(PART_SUFFIX) and not p.name.startswith(".")
    )


def write_part(folder: Path, name: str, table: pa.Table) -> Path:
    """``table`` as the part ``name`` of ``folder``: written under a temporary name, fsynced,
    then renamed over any older version (readers see the old part or the new, never half)."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    tmp = folder / f".{name}.{os.getpid()}.{secrets.token_hex(6)}{_TMP_SUFFIX}"
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(folder)
    return final


def read_part(path: Path, schema: pa.Schema) -> pa.Table:
    """A part as ``schema`` (a part written with other kept columns is conformed to it)."""
    return pa.Table.from_batches(list(output_batches(path, schema)), schema)


def part_ids(path: Path) -> Iterator[str]:
    """The ids of a part, read from its id column only."""
    table = pq.read_table(path, columns=["id"])
    yield from table.column("id").to_pylist()


class Committed:
    """What earlier blocks committed, looked up by id: the rows a re-run need not send.

    ``index`` maps each committed id to the part holding it; it is read once (id, status and
    hash columns only: about 100 bytes a row), when first needed, so a block whose rows were
    committed under other boundaries (another batch size, another parallelism) is still not
    sent again. The block's own part is always read afresh: it may be newer than the index.
    """

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        self.folder = folder
        self.schema = schema
        self._index: dict[str, Path] | None = None

    def rows(self, ids: Iterable[str], own: Path) -> dict[str, dict[str, Any]]:
        """The committed rows among ``ids``: from ``own`` (the block's part) and the others."""
        wanted = set(ids)
        found: dict[str, dict[str, Any]] = {}
        if own.exists():
            found.update(_rows_of(read_part(own, self.schema), wanted))
        missing = wanted - found.keys()
        if not missing:
            return found
        by_part: dict[Path, set[str]] = {}
        for row_id in missing:
            path = self.index.get(row_id)
            if path is not None and path != own:
                by_part.setdefault(path, set()).add(row_id)
        for path, some in by_part.items():
            with contextlib.suppress(FileNotFoundError):  # replaced since: its rows moved on
                found.update(_rows_of(read_part(path, self.schema), some))
        return found

    @property
    def index(self) -> Mapping[str, Path]:
        if self._index is None:
            self._index = {}
            for path in part_paths(self.folder):
                with contextlib.suppress(FileNotFoundError):
                    for row_id in part_ids(path):
                        self._index[row_id] = path
        return self._index


def _rows_of(table: pa.Table, ids: set[str]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in table.to_pylist() if row["id"] in ids}


def reusable(prior: Mapping[str, Any] | None, request_hash: str | None, retry_errors: bool) -> bool:
    """Whether a committed row stands for the row now: the same request, and final (an error
    only counts as final without ``--retry-errors``, as for a file run's resume)."""
    if prior is None or request_hash is None or prior.get("request_hash") != request_hash:
        return False
    return prior.get("status") == STATUS_OK or not retry_errors


__all__ = [
    "PART_SUFFIX",
    "Committed",
    "job_folder",
    "part_ids",
    "part_name",
    "part_paths",
    "read_part",
    "reusable",
    "write_part",
]
