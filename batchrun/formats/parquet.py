"""Parquet, in and out.

In (``.parquet``, ``.pq``): read one record batch at a time; a row's number is its 1-based
row in the file. Its values come typed and sized: a known field whose column has a type no
value of it could be sent as (a ``prompt`` of ``list<string>``) is told from the schema
before a row is read (``mistyped_columns``), and is the problem of each row that sets it.
The footer holds the row count and the schema (its columns). Never compressed around: Parquet
compresses its own pages and is read by seeking.

Out (``.parquet``): zstd-compressed row groups of the output's schema; a partial output's
mark is in the file's own metadata (``formats.marks``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Collection, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrun.core.errors import InputError, Problem
from batchrun.formats.base import (
    ColumnQuery,
    Head,
    InputColumns,
    InputFormat,
    OutputFormat,
    Write,
    WriteOptions,
)
from batchrun.formats.marks import Partial, mark_in
from batchrun.rows.raw import SKIPPED, RawRow, Skip, guarded, unreadable_reason
from batchrun.rows.shape import Compression, InputKind
from batchrun.rows.text import MAX_ROW_BYTES

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

MAGIC = b"PAR1"

# -- in ---------------------------------------------------------------------------------------


@functools.cache
def _type_rules() -> dict[str, tuple[Callable[[Any], bool], str]]:
    """The Arrow types each known field may have. Text is accepted for structured parameters
    because docs/design.md §3.1 allows JSON strings there (request.build_request decodes
    them). ``id`` is checked per value by the common stage, like the other formats."""
    import pyarrow.types as pat

    def value_type(t: pa.DataType) -> pa.DataType:
        """The value type of a dictionary-encoded column (common for repeated strings)."""
        return t.value_type if pat.is_dictionary(t) else t

    def is_text(t: pa.DataType) -> bool:
        t = value_type(t)
        return bool(pat.is_string(t) or pat.is_large_string(t) or pat.is_string_view(t))

    def is_integer(t: pa.DataType) -> bool:
        return bool(pat.is_integer(value_type(t)))

    def is_number(t: pa.DataType) -> bool:
        t = value_type(t)
        return bool(pat.is_integer(t) or pat.is_floating(t))

    def is_list(t: pa.DataType) -> bool:
        t = value_type(t)
        return bool(
            pat.is_list(t)
            or pat.is_large_list(t)
            or pat.is_fixed_size_list(t)
            or pat.is_list_view(t)
        )

    def is_text_or_list(t: pa.DataType) -> bool:
        return is_text(t) or is_list(t)

    def is_text_or_struct(t: pa.DataType) -> bool:
        return is_text(t) or bool(pat.is_struct(t))

    return {
        "prompt": (is_text, "a string"),
        "model": (is_text, "a string"),
        "service_tier": (is_text, "a string"),
        "max_tokens": (is_integer, "an integer"),
        "top_k": (is_integer, "an integer"),
        "temperature": (is_number, "a number"),
        "top_p": (is_number, "a number"),
        "system": (is_text_or_list, "a string or a list of text blocks"),
        "messages": (is_text_or_list, "a list of messages or its JSON text"),
        "stop_sequences": (is_text_or_list, "a list of strings or its JSON text"),
        "tools": (is_text_or_list, "a list of tools or its JSON text"),
        "metadata": (is_text_or_struct, "a struct or its JSON text"),
        "tool_choice": (is_text_or_struct, "a struct or its JSON text"),
        "thinking": (is_text_or_struct, "a struct or its JSON text"),
    }


def _parquet_rows(
    path: Path, kind: InputKind, batch_size: int, skip: Skip, cap: int = MAX_ROW_BYTES
) -> Generator[RawRow, None, None]:
    """One raw row per Parquet row, read one record batch at a time (``kind`` is always plain:
    a compressed Parquet file is refused; its values come typed and sized, so ``cap`` is not
    the reader's: request building's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    del kind, cap
    file = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"not a readable Parquet file: {exc}", file=file) from exc
    with parquet:
        mistyped = _mistyped_columns(parquet.schema_arrow)
        line = 0
        for batch in _batches(parquet, batch_size, file):
            if all(skip(i) for i in range(line, line + batch.num_rows)):
                # Converting to Python is the cost; a batch nobody wants is never converted.
                line += batch.num_rows
                yield from [SKIPPED] * batch.num_rows
                continue
            for record in _records(batch):
                line += 1
                if skip(line - 1):
                    yield SKIPPED
                elif isinstance(record, BaseException):
                    yield RawRow(line, None, [Problem(None, unreadable_reason(record))])
                else:
                    yield guarded(line, lambda n, r: _parquet_row(n, r, mistyped), record)


def _records(batch: pa.RecordBatch) -> list[dict[str, Any] | BaseException]:
    """The batch's rows as dicts; a row Arrow cannot convert (invalid UTF-8 in a string
    column, say) comes as the exception, and the batch's other rows are still read."""
    import pyarrow as pa

    try:
        return list(batch.to_pylist())
    except (ValueError, pa.ArrowException):
        pass
    records: list[dict[str, Any] | BaseException] = []
    for i in range(batch.num_rows):
        try:
            records.append(batch.slice(i, 1).to_pylist()[0])
        except (ValueError, pa.ArrowException) as exc:
            records.append(exc)
    return records


def _batches(parquet: pq.ParquetFile, batch_size: int, file: str) -> Iterator[pa.RecordBatch]:
    """The file's record batches; a corrupt page makes the rest of the file unusable."""
    import pyarrow as pa

    batches = parquet.iter_batches(batch_size=batch_size)
    while True:
        try:
            batch = next(batches, None)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"unreadable Parquet data: {exc}", file=file) from exc
        if batch is None:
            return
        yield batch


def _mistyped_columns(schema: pa.Schema) -> dict[str, str]:
    """Known fields whose column type can never hold a valid value: name -> reason."""
    rules = _type_rules()
    mistyped: dict[str, str] = {}
    for column in schema:
        rule = rules.get(column.name)
        if rule is not None and not rule[0](column.type):
            mistyped[column.name] = f"expected {rule[1]}, but the column has type {column.type}"
    return mistyped


def _parquet_row(line: int, record: dict[str, Any], mistyped: dict[str, str]) -> RawRow:
    """A record with nested nulls removed and a problem for each set, mistyped known field."""
    problems = [
        Problem(name, reason) for name, reason in mistyped.items() if record.get(name) is not None
    ]
    cleaned = {name: _without_null_keys(value) for name, value in record.items()}
    return RawRow(line, cleaned, problems)


def _without_null_keys(value: Any) -> Any:
    """Drop null-valued keys from nested structs.

    An Arrow struct has every key of its type in every row, so a list of content blocks of
    different kinds comes back with ``"source": None`` on text blocks and so on. Dropping them
    turns the value back into what the user meant.
    """
    if isinstance(value, dict):
        return {k: _without_null_keys(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_null_keys(item) for item in value]
    return value


def _schema(path: Path) -> pa.Schema | None:
    """The file's schema, from its footer; None when it cannot be read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException):
        return None


def _all_null(column: pa.Field) -> bool:
    """A column of Arrow's null type holds no value (pandas writes an all-None column so)."""
    import pyarrow as pa

    return bool(pa.types.is_null(column.type))


class ParquetInput(InputFormat):
    names = ("parquet",)
    suffixes = (".parquet", ".pq")
    unit = "row"
    text = False
    rank = 40
    sniff_rank = 0

    def sniff(self, head: Head) -> str | None:
        return self.name if head.data.startswith(MAGIC) else None

    def compressed(self, compression: Compression) -> str | None:
        return (
            f"a {compression}-compressed Parquet file cannot be read: Parquet compresses its "
            "own pages and is read by seeking, so decompress it first (it is no bigger)"
        )

    def rows(
        self, path: Path, kind: InputKind, batch_size: int, skip: Skip, cap: int = MAX_ROW_BYTES
    ) -> Generator[RawRow, None, None]:
        return _parquet_rows(path, kind, batch_size, skip, cap)

    def count(self, path: Path, kind: InputKind) -> int | None:
        """The row count its footer keeps."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            with pq.ParquetFile(path) as parquet:
                return int(parquet.metadata.num_rows)
        except (OSError, pa.ArrowException):
            return None

    def columns(self, query: ColumnQuery) -> InputColumns | None:
        """The schema's columns; for a quick look (which rows may hold a value), those of
        Arrow's null type left out: no row has a value there."""
        schema = _schema(query.path)
        if schema is None:
            return None
        names = tuple(f.name for f in schema if not (query.quick and _all_null(f)))
        return InputColumns(names, frozenset(n for n in query.asked if n in names), declared=True)

    def column_types(self, path: Path, kind: InputKind, names: Collection[str]) -> dict[str, Any]:
        """The schema's types (``formats.values.keepable``); an integer ``id`` column with
        an empty cell stays text (that row is named ``row-<index>``)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from batchrun.formats.values import keepable

        schema = _schema(path)
        if schema is None:
            return {}
        types = {}
        for name in names:
            i = schema.get_field_index(name)
            held = keepable(schema.field(i).type) if i >= 0 else None
            if held is None:
                continue
            if name == "id":
                if not pa.types.is_integer(held):
                    continue
                if pq.read_table(path, columns=[name]).column(0).null_count:
                    continue
            types[name] = held
        return types

    def mistyped_columns(self, path: Path) -> dict[str, str]:
        schema = _schema(path)
        if schema is None:
            return {}
        valued = [f.name for f in schema if not _all_null(f)]
        return {k: v for k, v in _mistyped_columns(schema).items() if k in valued}


# -- out --------------------------------------------------------------------------------------


def open_parquet(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet file's writer: zstd, as every Parquet output (and dataset part) is written."""
    import pyarrow.parquet as pq

    return pq.ParquetWriter(str(path), schema, compression="zstd")


class ParquetOutput(OutputFormat):
    name = "parquet"
    suffixes = (".parquet",)
    described = "Parquet"
    marks_itself = True
    rank = 10

    @contextlib.contextmanager
    def writer(
        self, path: Path, schema: pa.Schema, options: WriteOptions | None = None
    ) -> Iterator[Write]:
        with open_parquet(path, schema) as writer:
            yield writer.write_table

    def batches(
        self, path: Path, wanted: pa.Schema, batch_rows: int, slice_bytes: int
    ) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        present = [n for n in wanted.names if n in parquet.schema_arrow.names]
        yield from parquet.iter_batches(batch_rows, columns=present)

    def row_count(self, path: Path) -> int:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)

    def read_mark(self, path: Path) -> Partial | None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return mark_in(pq.read_schema(path).metadata)
        except (OSError, ValueError, TypeError, pa.ArrowException):
            return None


FORMATS = (ParquetInput(), ParquetOutput())
