"""The output of ``run --engine ray``, assembled without holding it (``OutputSpool``).

Each block the workers return is written, as it arrives, to a spool file beside the output:
an Arrow IPC file of the output's columns and each row's input index (``INDEX_COLUMN``), one
record batch per block, sorted within it. In memory the spool keeps each batch's lowest and
highest index (16 bytes a block). Once every block is back, the output is written from the
spool in input order, a window of ``CHUNK_ROWS`` rows at a time: a window reads the batches
whose index range overlaps it. The driver cuts blocks of consecutive input rows (``ray.job``),
so few batches overlap any window; a block that came back spread wide (Ray may join blocks)
is read once for each window it spans, never held. Memory: a window of rows and the batches
it overlaps, whatever the job's size.

Every input row must come back exactly once: a row repeated (a block Ray ran twice) is
written once; a row missing is an internal error, and nothing is written.
"""

from __future__ import annotations

import contextlib
import os
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from batchrun.core.errors import OutputError
from batchrun.ray.stage import INDEX_COLUMN, indexed_schema
from batchrun.store.columns import STATUS_OK
from batchrun.store.sink import CHUNK_ROWS


class OutputSpool:
    """The answered blocks of one ``--engine ray`` run, on disk as they arrive::

        with OutputSpool(path, output_schema()) as spool:
            for block in answered_blocks:      # each with INDEX_COLUMN
                spool.add(block)
            ok = spool.write_into(write, total_rows)   # in input order

    The file is removed on leaving the ``with``."""

    def __init__(self, path: Path, schema: pa.Schema, *, window: int = CHUNK_ROWS) -> None:
        self.path = path
        self.schema = indexed_schema(schema)
        self.rows = 0  # rows on disk
        self._window = window
        self._low = array("q")  # each batch's lowest input index ...
        self._high = array("q")  # ... and highest
        self._file: pa.NativeFile | None = None
        self._writer: ipc.RecordBatchFileWriter | None = None

    def __enter__(self) -> OutputSpool:
        self._file = pa.OSFile(str(self.path), "wb")
        self._writer = ipc.new_file(self._file, self.schema)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()
        self.path.unlink(missing_ok=True)

    @property
    def bytes(self) -> int:
        """The spool's size on disk."""
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0

    def add(self, block: pa.Table) -> None:
        """``block``'s rows (the output's columns and ``INDEX_COLUMN``) onto the spool, sorted
        by their input index: written now, not kept."""
        if self._writer is None:
            raise OutputError("internal error: the spool is not open")
        if block.num_rows == 0:
            return
        table = block.select(self.schema.names).cast(self.schema)
        table = table.take(pc.sort_indices(table.column(INDEX_COLUMN))).combine_chunks()
        indexes = table.column(INDEX_COLUMN)
        for batch in table.to_batches():  # one, once combined
            self._writer.write_batch(batch)
            self._low.append(batch.column(INDEX_COLUMN)[0].as_py())
            self._high.append(batch.column(INDEX_COLUMN)[-1].as_py())
        self.rows += len(indexes)

    def _close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                writer.close()
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def write_into(self, write: Callable[[pa.Table], None], total_rows: int) -> int:
        """Input rows 0..``total_rows``-1, each once, in input order, to ``write`` (the
        output's columns, a window at a time); how many are ok. OutputError naming the first
        row no block brought back (nothing should be written then)."""
        if self._writer is None:
            raise OutputError("internal error: the spool is not open")
        self._close()
        ok = 0
        output_names = [name for name in self.schema.names if name != INDEX_COLUMN]
        with pa.OSFile(str(self.path), "rb") as file:
            reader = ipc.open_file(file)
            for start, table in self._windows(reader, total_rows):
                table = _once_each(table, start, min(start + self._window, total_rows))
                ok += pc.sum(pc.equal(table.column("status"), STATUS_OK)).as_py() or 0
                write(table.select(output_names))
        return ok

    def _windows(
        self, reader: ipc.RecordBatchFileReader, total_rows: int
    ) -> Iterator[tuple[int, pa.Table]]:
        """Each window's rows from the batches that overlap it, sorted by input index."""
        order = sorted(range(len(self._low)), key=lambda k: self._low[k])
        overlapping: list[int] = []
        taken = 0
        for start in range(0, total_rows, self._window):
            end = min(start + self._window, total_rows)
            while taken < len(order) and self._low[order[taken]] < end:
                overlapping.append(order[taken])
                taken += 1
            overlapping = [k for k in overlapping if self._high[k] >= start]
            pieces = []
            for k in overlapping:
                batch = reader.get_batch(k)
                index = batch.column(INDEX_COLUMN)
                pieces.append(
                    batch.filter(pc.and_(pc.greater_equal(index, start), pc.less(index, end)))
                )
            table = pa.Table.from_batches(pieces, self.schema)
            yield start, table.take(pc.sort_indices(table.column(INDEX_COLUMN)))
        beyond = [k for k in range(len(self._high)) if self._high[k] >= total_rows]
        if beyond:
            raise OutputError(
                f"internal error: a block came back with input row {self._high[beyond[0]]}, "
                f"and the input has {total_rows:,} rows"
            )


def _once_each(table: pa.Table, start: int, end: int) -> pa.Table:
    """``table`` (sorted by input index) with each of rows start..end-1 once: a repeat is
    dropped; a row missing is an OutputError."""
    keep = []
    expected = start
    for position, index in enumerate(table.column(INDEX_COLUMN).to_pylist()):
        if index == expected:
            keep.append(position)
            expected += 1
        elif index > expected:
            break
    if expected != end:
        raise OutputError(
            f"internal error: no block brought back input row {expected}: the output is not "
            "written (run the same command again: the rows answered are kept in the parts)"
        )
    return table if len(keep) == table.num_rows else table.take(pa.array(keep, pa.int64()))
