"""Structured output (``--json-schema``): how it is asked for, what the answer is, its types.

Two ways to ask a model for an answer in a JSON shape, chosen per model by one function
(``structured_mode``, told what the model takes: ``cost.models.model_rules``):

* ``output_config.format`` (``FORMAT``): constrained decoding, the API's way on Claude 4.5 and
  later (docs/api-facts.md §13.1). The answer is the reply's text, JSON that fits the schema.
  The API takes a subset of JSON Schema there, so the schema is checked against that subset
  once, when the job is loaded (``format_schema``): what the API would refuse is refused
  before anything is sent, naming the keyword and where it is, and the one thing the API
  wants that changes nothing the user asked is added (``additionalProperties: false`` on an
  object that lists its properties and says nothing of others); ``$schema``, ``$id`` and
  ``$comment``, notes for validators, are left out of what is sent.
* a forced tool (``TOOL``): the older way, for a model that does not take the format (a
  gateway's alias whose rules say so). A tool whose ``input_schema`` is the schema, forced with
  ``tool_choice``; the call's ``input`` is the answer. Any JSON Schema goes there.

Either way every reply is checked with ``jsonschema`` (the one module that imports it): a
reply that does not satisfy the schema becomes an ``error`` row (``schema_mismatch``) with the
validation message, never a silently wrong label; a refusal (``stop_reason: refusal``) or an
answer cut off at ``max_tokens`` is an error row saying so (docs/api-facts.md §13.3).

The answer's types (``answer_fields``) follow from the schema, pure and free of Arrow: the
store turns them into typed columns (``store.typed``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from batchrun.core.errors import ConfigError
from batchrun.core.jsoncodec import compact

TOOL_NAME = "record_output"
"""The one tool a structured job defines when it is asked with a forced tool."""

SCHEMA_MISMATCH = "schema_mismatch"
"""error_type of a row whose reply does not satisfy the job's schema."""
REFUSAL = "refusal"
"""error_type of a row the model refused to answer (``stop_reason: refusal``)."""
CUT_OFF = "max_tokens"
"""error_type of a row whose structured answer was cut off at ``max_tokens``."""

Mode = Literal["format", "tool"]
FORMAT: Mode = "format"
TOOL: Mode = "tool"

_DESCRIPTION = "Record the answer. Always call this tool; its input is the whole answer."

FORCED_CHOICE: Mapping[str, Any] = {"type": "tool", "name": TOOL_NAME}
"""The ``tool_choice`` that makes the model call the tool."""

ANSWER_PREFIX = "answer_"
"""The answer's fields are the output's columns ``answer_<field>`` (``store.typed``)."""


def structured_mode(takes_format: bool, takes_forced_tool: bool) -> Mode | None:
    """How a model is asked for a structured answer: ``output_config.format`` where it takes
    it, a forced tool where it takes only that, None where it takes neither.

    >>> structured_mode(True, False), structured_mode(False, True), structured_mode(False, False)
    ('format', 'tool', None)
    """
    if takes_format:
        return FORMAT
    if takes_forced_tool:
        return TOOL
    return None


# --- the schema file ---------------------------------------------------------------------------


def load_schema(path: Path) -> dict[str, Any]:
    """The JSON Schema in ``path``, checked to be a valid schema of an object.

    The answer is an object (its properties become the output's columns, and a tool's
    ``input_schema`` must be one: docs/api-facts.md §1.1), so a schema whose ``type`` is
    anything else is refused here, once, rather than by the API on every row.
    """
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"json_schema {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"json_schema {path}: cannot read it: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"json_schema {path}: not valid JSON: {exc}") from exc
    return checked_schema(schema, str(path))


def checked_schema(schema: Any, where: str) -> dict[str, Any]:
    """``schema`` (from ``where``, as messages name it), checked as ``load_schema`` checks."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ConfigError(f'json_schema {where}: must be a JSON Schema with "type": "object"')
    from jsonschema import Draft202012Validator  # ~0.1 s to import: only jobs that use it
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(f"json_schema {where}: not a valid JSON Schema: {exc.message}") from exc
    return schema


# --- what output_config.format takes (docs/api-facts.md §13.2) --------------------------------

# Keywords the API's structured outputs take, with the limits checked below.
_TAKEN = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "enum", "const",
        "anyOf", "allOf", "$ref", "$defs", "definitions", "format", "minItems", "pattern",
        "title", "description", "default",
    }
)  # fmt: skip
# Notes for a validator, not constraints: left out of what is sent.
_NOTES = frozenset({"$schema", "$id", "$comment"})
_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
# What to do instead, by keyword the API does not take.
_INSTEAD = {
    "oneOf": "write `anyOf` (every branch the answer may match)",
    "additionalProperties": "list the object's properties, with `additionalProperties: false`",
    "minItems": "only 0 and 1 are taken: say the rest in the `description`",
}
_SAY_IT = "say it in the field's `description` instead"


@dataclass(frozen=True)
class FormatSchema:
    """A schema as ``output_config.format`` sends it (``schema``), or why it cannot be
    (``problem``: a sentence naming the file, the keyword and where it is)."""

    schema: Mapping[str, Any] | None
    problem: str | None = None


class _Refused(Exception):
    """Why the API would refuse the schema, naming the keyword and where it is."""


def format_schema(schema: Mapping[str, Any], where: str) -> FormatSchema:
    """``schema`` as ``output_config.format`` takes it, or the reason the API would refuse it.

    Nothing is changed that changes what the user asked: ``additionalProperties: false`` is
    added to objects that list their properties and say nothing of others (the answer has
    the keys listed), and ``$schema``/``$id``/``$comment`` are left out. Anything else the
    API does not take is a problem, not dropped.

    >>> format_schema({"type": "object", "properties": {"n": {"type": "integer"}}}, "s").schema
    {'type': 'object', 'properties': {'n': {'type': 'integer'}}, 'additionalProperties': False}
    >>> print(format_schema({"type": "object", "properties": {"n": {"type": "integer",
    ...     "minimum": 0}}}, "s.json").problem)  # doctest: +ELLIPSIS
    json_schema s.json: `minimum` at /properties/n is not taken by structured outputs...
    """
    try:
        _check_refs(schema)
        sent = _format_node(schema, "", schema)
    except _Refused as refused:
        return FormatSchema(None, f"json_schema {where}: {refused}")
    return FormatSchema(sent)


def _format_node(node: Any, pointer: str, root: Mapping[str, Any]) -> Any:
    if not isinstance(node, Mapping):
        return node  # a boolean schema: jsonschema has checked it
    out: dict[str, Any] = {}
    for key, value in node.items():
        at = pointer or "the root"
        if key in _NOTES:
            continue
        if key not in _TAKEN:
            instead = _INSTEAD.get(key, _SAY_IT)
            raise _Refused(f"`{key}` at {at} is not taken by structured outputs: {instead}")
        if key in ("properties", "$defs", "definitions"):
            out[key] = {
                name: _format_node(sub, f"{pointer}/{key}/{_escaped(name)}", root)
                for name, sub in value.items()
            }
        elif key in ("anyOf", "allOf"):
            out[key] = [
                _format_node(sub, f"{pointer}/{key}/{i}", root) for i, sub in enumerate(value)
            ]
            if key == "allOf" and any(isinstance(s, Mapping) and "$ref" in s for s in value):
                raise _Refused(f"`allOf` with a `$ref` at {at} is not taken: inline it")
        elif key == "items":
            if not isinstance(value, Mapping):
                raise _Refused(f"`items` at {at} must be one schema")
            out[key] = _format_node(value, f"{pointer}/items", root)
        else:
            out[key] = value
        _check_value(key, value, pointer)
    if _is_object(node) and "additionalProperties" not in node:
        if not node.get("properties"):
            raise _Refused(
                f"an object with no `properties` at {pointer or 'the root'} (any keys) "
                "cannot be decoded: list its properties"
            )
        out["additionalProperties"] = False
    return out


def _check_value(key: str, value: Any, pointer: str) -> None:
    at = pointer or "the root"
    if key == "additionalProperties" and value is not False:
        raise _Refused(f"`additionalProperties` at {at} must be false: {_INSTEAD[key]}")
    if key == "minItems" and value not in (0, 1):
        raise _Refused(f"`minItems: {value}` at {at}: {_INSTEAD[key]}")
    if key == "format" and value not in _FORMATS:
        taken = ", ".join(sorted(_FORMATS))
        raise _Refused(f"`format: {value}` at {at} is not taken (taken: {taken})")
    if key == "type":
        kinds = value if isinstance(value, list) else [value]
        unknown = [k for k in kinds if k not in _TYPES]
        if unknown:
            raise _Refused(f"`type: {unknown[0]}` at {at} is not a JSON Schema type")
    if key in ("enum", "const"):
        values = value if key == "enum" and isinstance(value, list) else [value]
        if any(isinstance(v, (dict, list)) for v in values):
            raise _Refused(f"`{key}` at {at} holds a list or an object: only strings, "
                           "numbers, booleans and null are taken")  # fmt: skip
    if key == "$ref" and not str(value).startswith("#"):
        raise _Refused(f"`$ref: {value}` at {at} points outside the schema: inline it")


def _is_object(node: Mapping[str, Any]) -> bool:
    kind = node.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind)


def _escaped(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _check_refs(schema: Mapping[str, Any]) -> None:
    """``_Refused`` for a ``$ref`` that reaches itself (a recursive schema, which the API
    refuses) or points at nothing."""

    def walk(node: Any, pointer: str, seen: tuple[str, ...]) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{pointer}/{i}", seen)
            return
        if not isinstance(node, Mapping):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            if ref in seen:
                raise _Refused(
                    f"`$ref: {ref}` at {pointer or 'the root'} makes the schema recursive, "
                    "which structured outputs cannot decode"
                )
            walk(_resolve(schema, ref, pointer), ref[1:], (*seen, ref))
        for key, value in node.items():
            if key not in ("$ref", "$defs", "definitions"):
                walk(value, f"{pointer}/{_escaped(str(key))}", seen)

    walk(schema, "", ())


def _resolve(root: Mapping[str, Any], ref: str, pointer: str = "") -> Any:
    """The schema a local ``$ref`` (``#/$defs/Item``) names."""
    node: Any = root
    for part in ref[1:].split("/")[1:] if ref != "#" else ():
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise _Refused(f"`$ref: {ref}` at {pointer or 'the root'} names nothing in the schema")
        node = node[part]
    return node


# --- how the request asks for it ---------------------------------------------------------------


@dataclass(frozen=True)
class StructuredRequest:
    """What every request of a ``--json-schema`` job carries: the schema as given (a forced
    tool's ``input_schema``, and what replies are checked against), and as
    ``output_config.format`` sends it (``format``; None with the ``problem`` that keeps it
    from being sent so)."""

    schema: Mapping[str, Any]
    format: Mapping[str, Any] | None
    problem: str | None = None

    @classmethod
    def of(cls, schema: Mapping[str, Any], where: str) -> StructuredRequest:
        """For ``schema`` from ``where`` (its file, as messages name it)."""
        sent = format_schema(schema, where)
        return cls(schema, sent.schema, sent.problem)


def structured_tool(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The tool definition for ``schema`` (the forced-tool way)."""
    return {"name": TOOL_NAME, "description": _DESCRIPTION, "input_schema": dict(schema)}


def with_format(body: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """Put ``output_config.format`` in ``body``, beside whatever ``output_config`` holds
    (``effort``): the keys merge, neither replaces the other."""
    config = dict(body.get("output_config") or {})
    config["format"] = {"type": "json_schema", "schema": dict(schema)}
    body["output_config"] = config


def asked_mode(body: Mapping[str, Any]) -> Mode | None:
    """How ``body`` asks for a structured answer, read off the request itself."""
    config = body.get("output_config")
    if isinstance(config, Mapping) and isinstance(config.get("format"), Mapping):
        return FORMAT
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("name") == TOOL_NAME:
        return TOOL
    return None


# --- the answer --------------------------------------------------------------------------------


def structured_answer(
    message: Mapping[str, Any],
    schema: Mapping[str, Any],
    mode: Mode = TOOL,
    fields: tuple[AnswerField, ...] | None = None,
) -> tuple[str | None, str | None, str | None]:
    """(the answer as compact JSON, None, None), or (None, error_type, why) when the reply
    holds no answer that fits ``schema``.

    ``mode`` is how the request asked (``asked_mode``): with ``FORMAT`` the answer is the
    reply's text, with ``TOOL`` the forced tool's input. A refusal and an answer cut off at
    ``max_tokens`` are errors whatever they hold. ``fields`` (``answer_fields(schema)``) are
    the columns the answer fills: a value no column of its type can hold (an integer past
    64 bits) is an error too, and a whole number written ``3.0`` where the schema says
    ``integer`` is written ``3``.

    >>> structured_answer({"content": [{"type": "tool_use", "name": "record_output",
    ...     "input": {"label": "positive"}}], "stop_reason": "tool_use"}, {"type": "object"})
    ('{"label":"positive"}', None, None)
    """
    stop = message.get("stop_reason")
    if stop == "refusal":
        details = message.get("stop_details")
        why = ""
        if isinstance(details, Mapping):
            said = details.get("explanation") or details.get("category")
            why = f": {said}" if said else ""
        return None, REFUSAL, f"the model refused to answer (stop_reason refusal){why}"
    if stop == "max_tokens":
        return (
            None,
            CUT_OFF,
            ("the answer was cut off at max_tokens before it was complete: raise max_tokens"),
        )
    if mode == FORMAT:
        answer, problem = _text_answer(message)
    else:
        answer, problem = _tool_answer(message)
    if problem is not None:
        return None, SCHEMA_MISMATCH, problem
    error = _validator(json.dumps(schema, sort_keys=True)).best_match_error(answer)
    if error is not None:
        return None, SCHEMA_MISMATCH, error
    if fields is not None:
        try:
            answer = {**answer, **_fitted_fields(answer, fields)}
        except _Unfit as exc:
            return None, SCHEMA_MISMATCH, f"the reply's {exc}"
    return compact(answer), None, None


def _text_answer(message: Mapping[str, Any]) -> tuple[Any, str | None]:
    texts = [
        str(block.get("text", ""))
        for block in message.get("content") or []
        if isinstance(block, Mapping) and block.get("type") == "text"
    ]
    if not texts:
        return None, f"the reply has no text (stop_reason {message.get('stop_reason')})"
    try:
        return json.loads("".join(texts)), None
    except ValueError as exc:
        return None, f"the reply's text is not JSON ({exc})"


def _tool_answer(message: Mapping[str, Any]) -> tuple[Any, str | None]:
    calls = [
        block
        for block in message.get("content") or []
        if isinstance(block, Mapping)
        and block.get("type") == "tool_use"
        and block.get("name") == TOOL_NAME
    ]
    if not calls:
        stop = message.get("stop_reason")
        return None, f"the reply has no {TOOL_NAME} call (stop_reason {stop})"
    return calls[0].get("input"), None


class _Checker:
    def __init__(self, schema: Mapping[str, Any]) -> None:
        from jsonschema import Draft202012Validator

        self._validator = Draft202012Validator(dict(schema))

    def best_match_error(self, instance: Any) -> str | None:
        errors = sorted(self._validator.iter_errors(instance), key=lambda e: list(e.path))
        if not errors:
            return None
        first = errors[0]
        where = "/".join(str(part) for part in first.absolute_path) or "(root)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"the reply does not satisfy the schema at {where}: {first.message}{more}"


@lru_cache(maxsize=8)
def _validator(schema_json: str) -> _Checker:
    """One compiled validator per schema (a job has one; rows may not change it)."""
    return _Checker(json.loads(schema_json))


# --- the answer's types ------------------------------------------------------------------------

Kind = Literal["string", "integer", "number", "boolean", "list", "object", "json"]
"""What a value of the answer is, as a column holds it. ``json``: no one type fits (an
``anyOf`` of kinds, an object whose keys are not listed), so the column holds its JSON text."""


@dataclass(frozen=True)
class AnswerType:
    """One value's type: a ``kind``; a list's ``items``; an object's ``fields``."""

    kind: Kind
    items: AnswerType | None = None
    fields: tuple[AnswerField, ...] = ()


@dataclass(frozen=True)
class AnswerField:
    """A property of an object in the answer: its name, type, and whether the schema
    requires it (a field it does not require may be absent: null in its column)."""

    name: str
    type: AnswerType
    required: bool


_JSON = AnswerType("json")


def answer_fields(schema: Mapping[str, Any]) -> tuple[AnswerField, ...]:
    """The answer's top-level fields and their types, from its schema (an object's).

    >>> [(f.name, f.type.kind, f.required) for f in answer_fields({"type": "object",
    ...     "properties": {"score": {"type": "number"}, "tags": {"type": "array",
    ...     "items": {"type": "string"}}}, "required": ["score"]})]
    [('score', 'number', True), ('tags', 'list', False)]
    """
    return _type_of(schema, schema, ()).fields


def _type_of(node: Any, root: Mapping[str, Any], refs: tuple[str, ...]) -> AnswerType:
    if not isinstance(node, Mapping):
        return _JSON
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        if ref in refs:
            return _JSON  # recursive: no finite column type
        try:
            target = _resolve(root, ref)
        except _Refused:
            return _JSON
        return _type_of(target, root, (*refs, ref))
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1:
        return _type_of(all_of[0], root, refs)
    any_of = node.get("anyOf", node.get("oneOf"))
    if isinstance(any_of, list):
        branches = [b for b in any_of if not (isinstance(b, Mapping) and b.get("type") == "null")]
        return _merged([_type_of(b, root, refs) for b in branches])
    if "const" in node:
        return _literal_type([node["const"]])
    if isinstance(node.get("enum"), list):
        return _literal_type(node["enum"])
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return _merged([_type_of({**node, "type": k}, root, refs) for k in kinds])
    if kind == "object" or (kind is None and "properties" in node):
        properties = node.get("properties")
        if not isinstance(properties, Mapping) or not properties:
            return _JSON
        required = set(node.get("required") or ())
        fields = tuple(
            AnswerField(str(name), _type_of(sub, root, refs), name in required)
            for name, sub in properties.items()
        )
        return AnswerType("object", fields=fields)
    if kind == "array":
        items = node.get("items")
        return AnswerType("list", items=_type_of(items, root, refs) if items else _JSON)
    if kind in ("string", "integer", "number", "boolean"):
        return AnswerType(kind)
    return _JSON


def _literal_type(values: list[Any]) -> AnswerType:
    kinds = {_literal_kind(v) for v in values if v is not None}
    return _merged([AnswerType(k) for k in kinds]) if kinds else AnswerType("string")


def _literal_kind(value: Any) -> Kind:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "json"


def _merged(types: list[AnswerType]) -> AnswerType:
    """The one type that holds values of every type in ``types``: integers and numbers are
    numbers; any other mix is JSON text."""
    distinct = list(dict.fromkeys(types))
    if not distinct:
        return AnswerType("string")  # only null: an empty column
    if len(distinct) == 1:
        return distinct[0]
    if {t.kind for t in distinct} == {"integer", "number"}:
        return AnswerType("number")
    return _JSON


class _Unfit(Exception):
    pass


def _fitted_fields(answer: Any, fields: tuple[AnswerField, ...]) -> dict[str, Any]:
    """The answer's fields, each made what its column holds (see ``structured_answer``)."""
    if not isinstance(answer, Mapping):
        return {}
    return {f.name: _fitted(answer[f.name], f.type, f.name) for f in fields if f.name in answer}


_INT64 = (-(2**63), 2**63 - 1)


def _fitted(value: Any, kind: AnswerType, where: str) -> Any:
    if value is None or kind.kind in ("json", "string", "boolean"):
        return value
    if kind.kind == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
            raise _Unfit(f"`{where}` is {value}, past what a 64-bit integer column holds")
        return value
    if kind.kind == "number":
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                if math.isinf(float(value)):
                    raise OverflowError
            except OverflowError:
                raise _Unfit(f"`{where}` is {value}, past what a float column holds") from None
        return value
    if kind.kind == "list" and isinstance(value, list) and kind.items is not None:
        return [_fitted(item, kind.items, f"{where}[{i}]") for i, item in enumerate(value)]
    if kind.kind == "object" and isinstance(value, Mapping):
        return {
            **value,
            **{
                f.name: _fitted(value[f.name], f.type, f"{where}.{f.name}")
                for f in kind.fields
                if f.name in value
            },
        }
    return value
