"""Prompt templates: ``"Summarize {title}:\\n\\n{body}"`` filled from a row's columns.

A job's ``template`` builds every row's user message; a row's ``prompt`` is a column like the
others (``"Classify: {prompt}"``). Templates are their own small language (``str.format``
syntax cut down to plain names), with rules of their own about what a file of rows may reach,
so they are parsed and filled here and ``request`` only asks for the text.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from batchrun.core.errors import Problem
from batchrun.rows.checks import failure

BRACES_HINT = 'for literal braces (JSON in the prompt, say) write {{ and }}: {{"a": 1}}'
"""The end of every message refusing a template's field: literal braces are the usual cause."""


def fill_template(template: str, fields: Mapping[str, Any]) -> tuple[str | None, list[Problem]]:
    """The template filled from the row's columns; a missing column is a problem naming it."""
    try:
        parts = parse_template(template)
    except ValueError as exc:
        return None, [Problem("template", str(exc))]
    problems = [
        Problem(name, "the template uses this column, but the row has no value for it")
        for name in sorted({name for _, name in parts if name is not None})
        if fields.get(name) is None
    ]
    if problems:
        return None, problems
    pieces: list[str] = []
    for literal, name in parts:
        pieces.append(literal)
        if name is None:
            continue
        try:
            pieces.append(_render(fields[name]))
        except (ValueError, TypeError, RecursionError) as exc:  # a value with no JSON text
            problems.append(Problem(name, f"cannot be put in the prompt ({failure(exc)})"))
    if problems:
        return None, problems
    text = "".join(pieces)
    if not text.strip():
        return None, [Problem("template", "the filled template is empty")]
    return text, []


def _render(value: Any) -> str:
    """A column value as prompt text: strings as they are, objects and lists as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


@lru_cache(maxsize=64)
def parse_template(template: str) -> tuple[tuple[str, str | None], ...]:
    """(literal text, column name or None) pairs; ``{{``/``}}`` are already unescaped."""
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid template: {exc}; {BRACES_HINT}") from exc
    return tuple(
        (literal, None if name is None else _plain_name(name, spec, conversion))
        for literal, name, spec, conversion in pieces
    )


def _plain_name(name: str, spec: str | None, conversion: str | None) -> str:
    """``name`` if it is a plain column name with no conversion or format spec.

    Every refusal carries the escape hint: the likeliest cause is literal text with braces,
    such as JSON (``{"a": 1}`` parses as the field ``"a"`` with the format spec `` 1``).
    """
    shown = (
        "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
    )
    if not name.strip() or name.isdigit():
        raise ValueError(f"template field {shown} has no name; write {{column}}, or {BRACES_HINT}")
    if any(char in name for char in '.[]"') or name != name.strip():
        raise ValueError(
            f"template field {shown}: only plain column names are allowed; {BRACES_HINT}"
        )
    if conversion or spec:
        raise ValueError(
            f"template field {shown}: conversions and format specs are not allowed; {BRACES_HINT}"
        )
    return name
