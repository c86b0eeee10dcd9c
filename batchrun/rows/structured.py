"""Structured output (``--json-schema``): one forced tool, its input checked against the schema.

The Messages API has no "answer in this JSON shape" switch that every model honours; the
dependable way is a tool whose ``input_schema`` is the schema, forced with ``tool_choice``:
the model must answer by calling it, and the call's ``input`` is the structured answer.

The model can still produce input that breaks the schema (a missing required key, a value
outside an enum), so every reply is checked with ``jsonschema`` (the one module that imports
it): a reply that does not satisfy the schema becomes an ``error`` row (``schema_mismatch``)
with the validation message, never a silently wrong label.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from batchrun.core.errors import ConfigError
from batchrun.core.jsoncodec import compact

TOOL_NAME = "record_output"
"""The one tool a structured job defines; its input is the row's answer."""

SCHEMA_MISMATCH = "schema_mismatch"
"""error_type of a row whose reply does not satisfy the job's schema."""

_DESCRIPTION = "Record the answer. Always call this tool; its input is the whole answer."


def load_schema(path: Path) -> dict[str, Any]:
    """The JSON Schema in ``path``, checked to be a valid schema for a tool's input.

    A tool's ``input_schema`` must describe an object (docs/api-facts.md §1.1), so a schema whose
    ``type`` is anything else is refused here, once, rather than by the API on every row.
    """
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"json_schema {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"json_schema {path}: cannot read it: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"json_schema {path}: not valid JSON: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ConfigError(f'json_schema {path}: must be a JSON Schema with "type": "object"')
    from jsonschema import Draft202012Validator  # ~0.1 s to import: only jobs that use it
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(f"json_schema {path}: not a valid JSON Schema: {exc.message}") from exc
    return schema


def structured_tool(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The tool definition for ``schema``."""
    return {"name": TOOL_NAME, "description": _DESCRIPTION, "input_schema": dict(schema)}


FORCED_CHOICE: Mapping[str, Any] = {"type": "tool", "name": TOOL_NAME}
"""The ``tool_choice`` that makes the model call the tool."""


def structured_answer(
    message: Mapping[str, Any], schema: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """(the tool's input as JSON, None) or (None, why the reply does not fit the schema).

    >>> structured_answer({"content": [{"type": "tool_use", "name": "record_output",
    ...     "input": {"label": "positive"}}]}, {"type": "object"})
    ('{"label":"positive"}', None)
    """
    content = message.get("content") or []
    calls = [
        block
        for block in content
        if isinstance(block, Mapping)
        and block.get("type") == "tool_use"
        and block.get("name") == TOOL_NAME
    ]
    if not calls:
        stop = message.get("stop_reason")
        return None, f"the reply has no {TOOL_NAME} call (stop_reason {stop})"
    answer = calls[0].get("input")
    error = _validator(json.dumps(schema, sort_keys=True)).best_match_error(answer)
    if error is not None:
        return None, error
    return compact(answer), None


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
