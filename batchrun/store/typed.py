"""The final output's typed columns: the structured answer's fields, the kept input columns and
the id, each with its type (docs/design.md §3.3).

Inside a run these are text: the journal keeps the id and the kept columns as text
(``formats.values.as_text``'s form) and the answer as ``structured_json``, so every reader
of the journal and of an earlier output (a resume, a merge, a report) sees one shape. The
types are put on when a final output is written, by its one committer (``store.commit``),
chunk by chunk: ``OutputTypes.schema`` is the typed schema, ``OutputTypes.typed`` a chunk made
so. Reading a typed output back as text is ``journal.conform``'s (``as_text``).

The answer's fields become columns of their own, ``answer_<field>``, after every other column
(``answer_columns``): a flat table reads the same from pandas, SQL or a spreadsheet, a CSV
output holds one value per cell, and a kept column is never nested inside. A field that is
an object in the schema is a struct column, an array a list column; every answer column is
null in an error row, and a field the schema does not require is null where the answer leaves
it out.

    types = OutputTypes(id_type=pa.int64(), kept={"stars": pa.int64()},
                        answer=answer_fields(schema))
    schema = types.schema(output_schema(["stars"]))
    chunk = types.typed(text_chunk, schema)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from batchrun.core.jsoncodec import compact
from batchrun.formats.values import from_text, parse_json
from batchrun.rows.structured import ANSWER_PREFIX, AnswerField, AnswerType


def answer_columns(fields: tuple[AnswerField, ...]) -> tuple[str, ...]:
    """The output columns the answer's fields fill, in the schema's order."""
    return tuple(ANSWER_PREFIX + f.name for f in fields)


def arrow_type(kind: AnswerType) -> pa.DataType:
    """The Arrow type of one value of the answer (``rows.structured.Kind``)."""
    if kind.kind == "integer":
        return pa.int64()
    if kind.kind == "number":
        return pa.float64()
    if kind.kind == "boolean":
        return pa.bool_()
    if kind.kind == "list":
        return pa.list_(arrow_type(kind.items) if kind.items else pa.string())
    if kind.kind == "object" and kind.fields:
        return pa.struct([pa.field(f.name, arrow_type(f.type)) for f in kind.fields])
    return pa.string()  # a string, or the JSON text of a value no one type holds


@dataclass(frozen=True)
class OutputTypes:
    """The types a final output gives its id (``id_type``), kept columns (``kept``, by name;
    a column not named stays text) and answer (``answer``, the schema's fields)."""

    id_type: pa.DataType = field(default_factory=pa.string)
    kept: Mapping[str, pa.DataType] = field(default_factory=dict)
    answer: tuple[AnswerField, ...] = ()

    @property
    def plain(self) -> bool:
        """Nothing to type: the output is its text."""
        return pa.types.is_string(self.id_type) and not self.kept and not self.answer

    def schema(self, text: pa.Schema) -> pa.Schema:
        """``text`` (a run's output schema) with its columns typed and the answer's columns
        after them; its metadata kept (a partial mark)."""
        fields = []
        for f in text:
            if f.name == "id":
                fields.append(pa.field("id", self.id_type))
            elif f.name in self.kept:
                fields.append(pa.field(f.name, self.kept[f.name]))
            else:
                fields.append(f)
        taken = set(text.names)
        for answer in self.answer:
            name = ANSWER_PREFIX + answer.name
            if name not in taken:
                fields.append(pa.field(name, arrow_type(answer.type)))
        return pa.schema(fields, metadata=text.metadata)

    def typed(self, table: pa.Table, schema: pa.Schema) -> pa.Table:
        """``table`` (text, of the schema ``schema`` was made from) as ``schema`` says."""
        columns = []
        for f in schema:
            i = table.schema.get_field_index(f.name)
            if i >= 0:
                column = table.column(i)
                columns.append(column if column.type == f.type else from_text(column, f.type))
        names = [f.name for f in schema if table.schema.get_field_index(f.name) >= 0]
        if self.answer and "structured_json" in table.schema.names:
            # flatten(): a null answer (an error row) makes every field null
            answers = self._answers(table.column("structured_json")).flatten()
            for answer, values in zip(self.answer, answers, strict=True):
                name = ANSWER_PREFIX + answer.name
                if name not in names:
                    names.append(name)
                    columns.append(values)
        kept = pa.schema([schema.field(n) for n in names], metadata=schema.metadata)
        return pa.Table.from_arrays(columns, schema=kept)

    def _answers(self, texts: pa.ChunkedArray | pa.Array) -> pa.StructArray:
        """The answers (``structured_json``, null in an error row) as one struct column."""
        kind = pa.struct([pa.field(f.name, arrow_type(f.type)) for f in self.answer])
        values = texts.to_pylist()
        if any(_has_json(f.type) for f in self.answer):
            values = [_with_json_text(text, self.answer) for text in values]
        parsed = parse_json(values, kind)
        assert isinstance(parsed, pa.StructArray)
        return parsed


def _has_json(kind: AnswerType) -> bool:
    if kind.kind == "json":
        return True
    if kind.kind == "list" and kind.items is not None:
        return _has_json(kind.items)
    return any(_has_json(f.type) for f in kind.fields)


def _with_json_text(text: str | None, fields: tuple[AnswerField, ...]) -> str | None:
    """An answer's JSON with each value of no one type (``json``) written as its JSON text,
    which its string column holds."""
    if text is None:
        return None
    return json.dumps(_texts(json.loads(text), AnswerType("object", fields=fields)))


def _texts(value: Any, kind: AnswerType) -> Any:
    if value is None:
        return None
    if kind.kind == "json":
        return compact(value)
    if kind.kind == "list" and isinstance(value, list) and kind.items is not None:
        return [_texts(item, kind.items) for item in value]
    if kind.kind == "object" and isinstance(value, dict):
        return {f.name: _texts(value.get(f.name), f.type) for f in kind.fields}
    return value
