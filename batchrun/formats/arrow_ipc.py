"""Arrow IPC files, out (``.arrow``): the output table as Arrow holds it in memory.

Written with ``pyarrow.ipc``'s file format (the random-access one, with a footer), one record
batch for each chunk of rows the writer is given (the final step writes ``CHUNK_ROWS`` at a
time), uncompressed: the point of the format is reading it in place, memory-mapped, without
decoding (``pyarrow.ipc.open_file(pyarrow.memory_map(path))``; polars ``pl.read_ipc``;
DuckDB's arrow extension); Parquet is the compact one. A partial output's mark is in the
schema's metadata, as Parquet's is (``formats.marks``).

Read back (to resume, report, merge) a record batch at a time with plain file reads, so the
batches handed out own their memory; the row count is told by the batches' headers alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from batchrun.formats.base import OutputFormat, Write, WriteOptions
from batchrun.formats.marks import Partial, mark_in

if TYPE_CHECKING:
    import pyarrow as pa


class ArrowIpcOutput(OutputFormat):
    name = "arrow"
    suffixes = (".arrow",)
    described = "an Arrow IPC file"
    marks_itself = True
    rank = 50

    @contextlib.contextmanager
    def writer(
        self, path: Path, schema: pa.Schema, options: WriteOptions | None = None
    ) -> Iterator[Write]:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, schema) as writer:

            def write(table: pa.Table) -> None:
                for batch in table.combine_chunks().to_batches():  # one, for a chunk
                    writer.write_batch(batch)

            yield write

    def batches(
        self, path: Path, wanted: pa.Schema, batch_rows: int, slice_bytes: int
    ) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        with pa.OSFile(str(path), "rb") as source:
            reader = ipc.open_file(source)
            present = [n for n in wanted.names if n in reader.schema.names]
            for number in range(reader.num_record_batches):
                batch = reader.get_batch(number).select(present)
                for offset in range(0, batch.num_rows, batch_rows):
                    yield batch.slice(offset, batch_rows)

    def row_count(self, path: Path) -> int:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        with pa.memory_map(str(path), "r") as source:
            return int(ipc.open_file(source).count_rows())

    def read_mark(self, path: Path) -> Partial | None:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        try:
            with pa.OSFile(str(path), "rb") as source:
                return mark_in(ipc.open_file(source).schema.metadata)
        except (OSError, ValueError, TypeError, pa.ArrowException):
            return None


FORMATS = (ArrowIpcOutput(),)
