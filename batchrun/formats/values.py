"""Typed columns and their text: what a run keeps as text and a final output holds typed.

Inside a run the id, the kept input columns and the structured answer are text (the journal's
JSON lines hold them so, ``store.columns``); a final output holds them with their types
(``store.typed``). These are the two directions, for any column:

* ``as_text``: a typed column as text. Numbers, booleans, dates and timestamps as their cast
  to a string (``1``, ``1.5``, ``true``, ``2026-12-07``), which casts back to the same value;
  lists and structs as JSON text. A string column as it is.
* ``from_text``: text back to a type: a cast for the scalars, pyarrow's JSON reader for lists
  and structs (``parse_json``). A text that does not read as the type is null.

``keepable`` says which types an output keeps (every type a JSON text or a cast can carry);
``JsonKinds`` learns a column's type from JSON values (a JSON lines input's, which declares
none). No Arrow at import: the registry imports this module to look for formats.
"""

from __future__ import annotations

import datetime
import decimal
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


def is_nested(kind: pa.DataType) -> bool:
    """A list or a struct (what CSV cells and casts cannot hold: JSON text instead)."""
    import pyarrow.types as pat

    return bool(
        pat.is_list(kind)
        or pat.is_large_list(kind)
        or pat.is_fixed_size_list(kind)
        or pat.is_struct(kind)
        or pat.is_map(kind)
    )


def keepable(kind: pa.DataType) -> pa.DataType | None:
    """The type an output holds a column of ``kind`` as: itself when text can carry it back
    (numbers, booleans, strings, dates, timestamps, decimals, and lists and structs of
    those), the value type of a dictionary-encoded column; None for what it cannot (binary,
    times of day, durations, maps, unions...), which stays text."""
    import pyarrow as pa
    import pyarrow.types as pat

    if pat.is_dictionary(kind):
        return keepable(kind.value_type)
    if pat.is_large_string(kind) or pat.is_string_view(kind):
        return pa.string()
    if (
        pat.is_string(kind)
        or pat.is_boolean(kind)
        or pat.is_integer(kind)
        or pat.is_floating(kind)
        or pat.is_decimal(kind)
        or pat.is_date(kind)
        or pat.is_timestamp(kind)
    ):
        return kind
    if pat.is_list(kind) or pat.is_large_list(kind) or pat.is_fixed_size_list(kind):
        item = keepable(kind.value_type)
        return None if item is None else pa.list_(item)
    if pat.is_struct(kind):
        fields = []
        for i in range(kind.num_fields):
            child = kind.field(i)
            held = keepable(child.type)
            if held is None:
                return None
            fields.append(pa.field(child.name, held))
        return pa.struct(fields) if fields else None
    return None


# -- typed -> text ------------------------------------------------------------------------------


def as_text(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """``column`` as text (see the module's docstring); a string column as it is."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pat

    kind = column.type
    if pat.is_string(kind):
        return column
    if pat.is_dictionary(kind):
        return as_text(column.cast(kind.value_type))
    if is_nested(kind) or pat.is_binary(kind) or pat.is_large_binary(kind):
        texts = [value_text(value) for value in column.to_pylist()]
        return pa.array(texts, pa.string())
    return pc.cast(column, pa.string())


def value_text(value: Any) -> str | None:
    """One value as text, as a run keeps it: a string as it is, a date or time in ISO 8601,
    a number or boolean as JSON writes it, a list or object as JSON text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


# -- text -> typed ------------------------------------------------------------------------------


def from_text(column: pa.Array | pa.ChunkedArray, kind: pa.DataType) -> pa.Array:
    """Text (``as_text``'s, or a run's) as a column of ``kind``; a text that does not read as
    ``kind`` is null."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pat

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.type == kind:
        return column
    if pat.is_string(kind) or pat.is_large_string(kind):
        return column.cast(kind)
    if is_nested(kind):
        return parse_json(column.to_pylist(), kind)
    try:
        return pc.cast(column, kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([_cast_one(text, kind) for text in column.to_pylist()], kind)


def _cast_one(text: str | None, kind: pa.DataType) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if text is None:
        return None
    try:
        return pc.cast(pa.array([text], pa.string()), kind)[0].as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def parse_json(texts: Iterable[str | None], kind: pa.DataType) -> pa.Array:
    """JSON texts (one value each; None: null) as a column of ``kind``, read by pyarrow's JSON
    reader; when a text will not read as ``kind``, each is read alone and the ones that will
    not are null."""
    import pyarrow as pa

    values = list(texts)
    lines = "".join(_line(text) for text in values)
    try:
        return _read_lines(lines.encode("utf-8"), kind, len(values))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    arrays = []
    for text in values:
        try:
            arrays.append(_read_lines(_line(text).encode("utf-8"), kind, 1))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            arrays.append(pa.nulls(1, kind))
    return pa.concat_arrays(arrays) if arrays else pa.nulls(0, kind)


def _line(text: str | None) -> str:
    # One JSON text can hold no raw line break (JSON escapes them in strings): one per line.
    return '{"v":' + (text if text is not None else "null") + "}\n"


def _read_lines(data: bytes, kind: pa.DataType, count: int) -> pa.Array:
    import pyarrow as pa
    import pyarrow.json as pj

    if not count:
        return pa.nulls(0, kind)
    read = pj.ReadOptions(block_size=len(data) + 1, use_threads=False)
    parse = pj.ParseOptions(
        explicit_schema=pa.schema([pa.field("v", kind)]), unexpected_field_behavior="ignore"
    )
    table = pj.read_json(pa.BufferReader(data), read, parse)
    if table.num_rows != count:
        raise pa.ArrowInvalid(f"read {table.num_rows} values of {count}")
    return table.column(0).combine_chunks()


# -- the kinds of JSON values ---------------------------------------------------------------------


class JsonKinds:
    """What the JSON values of one column are, learnt value by value, and the type that
    holds them all (``arrow_type``): integers are ``int64``, numbers with integers among
    them ``float64``, booleans, strings, lists of one kind, objects (a ``struct`` of every
    key seen), a mix of kinds is text (JSON text but for strings, as a run keeps it).
    ``missing`` counts rows with no value."""

    __slots__ = ("fields", "items", "kind", "missing", "seen")

    def __init__(self) -> None:
        self.kind: str | None = None  # None: no value yet
        self.items: JsonKinds | None = None
        self.fields: dict[str, JsonKinds] = {}
        self.missing = 0
        self.seen = 0

    @property
    def settled(self) -> bool:
        """No value to come can give it another type than text."""
        return self.kind in ("string", "mixed")

    def observe(self, value: Any, depth: int = 0) -> None:
        if value is None:
            self.missing += 1
            return
        self.seen += 1
        kind = _kind_of(value)
        if depth > 32:
            kind = "mixed"
        if self.kind is None:
            self.kind = kind
        elif self.kind != kind:
            numbers = {self.kind, kind} == {"integer", "number"}
            self.kind = "number" if numbers else "mixed"
        if self.kind == "list" and isinstance(value, list):
            items = self.items or JsonKinds()
            for item in value:
                items.observe(item, depth + 1)
            self.items = items
        elif self.kind == "object" and isinstance(value, Mapping):
            for name in self.fields.keys() - value.keys():
                self.fields[name].missing += 1
            for name, item in value.items():
                if name not in self.fields:
                    self.fields[name] = JsonKinds()
                    self.fields[name].missing = self.seen - 1
                self.fields[name].observe(item, depth + 1)

    def arrow_type(self) -> pa.DataType:
        import pyarrow as pa

        return self._typed() or pa.string()

    def _typed(self) -> pa.DataType | None:
        """The type, or None where kinds mix (a list or object holding a mix is text whole:
        no part of it may become null for want of a type)."""
        import pyarrow as pa

        if self.kind is None or self.kind == "string":
            return pa.string()
        if self.kind == "integer":
            return pa.int64()
        if self.kind == "number":
            return pa.float64()
        if self.kind == "boolean":
            return pa.bool_()
        if self.kind == "list":
            item = self.items._typed() if self.items is not None else pa.string()
            return None if item is None else pa.list_(item)
        if self.kind == "object" and self.fields:
            fields = []
            for name, kinds in self.fields.items():
                typed = kinds._typed()
                if typed is None:
                    return None
                fields.append(pa.field(name, typed))
            return pa.struct(fields)
        return None


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer" if -(2**63) <= value < 2**63 else "mixed"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return "mixed"
