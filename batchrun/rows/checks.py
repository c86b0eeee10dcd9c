"""The rules for each request field a row or a job sets, as the API would apply them.

One check per parameter (``CHECKS``), the shape of ``messages``, and the rules between
parameters (``cross_problems``). Each check takes a value as it came (a Parquet or CSV cell may
hold JSON text) and returns the value to send, or raises :class:`Invalid` with every reason it
is unusable. They are the API's rules (API-FACTS §1), not the body's assembly, and a list that
grows with the API, so they live apart from ``request``, which runs them and gathers the
problems.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from batchrun.core.errors import Problem


class Invalid(Exception):
    """Raised by a field check: the reasons the value is unusable (one Problem each)."""

    def __init__(self, *reasons: str) -> None:
        super().__init__(*reasons)
        self.reasons = reasons


# --- messages --------------------------------------------------------------------------------

_ROLES = ("user", "assistant")


def check_messages(value: Any) -> list[dict[str, Any]]:
    """A non-empty list of ``{role, content}`` turns, starting with the user."""
    value = _from_json(value, "a list of messages")
    if not is_list(value) or not value:
        raise Invalid(
            f"must be a non-empty list of {{role, content}} messages, not {describe(value)}"
        )
    reasons = [reason for i, turn in enumerate(value) for reason in _turn_problems(i, turn)]
    if reasons:
        raise Invalid(*reasons)
    return [_plain(turn) for turn in value]


def _turn_problems(i: int, turn: Any) -> Iterator[str]:
    """What is wrong with message ``i``."""
    if not isinstance(turn, Mapping):
        yield f"[{i}] must be an object with role and content, not {describe(turn)}"
        return
    unknown = sorted(str(key) for key in turn if key not in ("role", "content"))
    if unknown:
        yield f"[{i}] has unknown keys {', '.join(map(repr, unknown))}; only role and content"
    role = turn.get("role")
    if role not in _ROLES:
        yield f"[{i}].role must be 'user' or 'assistant', not {describe(role)}"
    elif i == 0 and role != "user":
        yield "[0].role: the first message must come from the user"
    yield from _content_problems(f"[{i}].content", turn.get("content"))


def _content_problems(where: str, content: Any) -> Iterator[str]:
    """Content is a non-blank string or a non-empty list of blocks, each with a ``type``."""
    if isinstance(content, str):
        if not content.strip():
            yield f"{where} must not be empty"
        return
    if not is_list(content) or not content:
        found = describe(content)
        yield f"{where} must be a non-empty string or list of content blocks, not {found}"
        return
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, Mapping) else None
        if not isinstance(kind, str) or not kind:
            yield f"{where}[{j}] must be an object with a 'type' string"


# --- parameters --------------------------------------------------------------------------------


def _check_model(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"must be a non-empty string, not {describe(value)}")
    return value


def _check_max_tokens(value: Any) -> int:
    return _integer(value, minimum=1)


def _check_top_k(value: Any) -> int:
    return _integer(value, minimum=0)


def _check_unit_interval(value: Any) -> float | int:
    """``temperature`` and ``top_p``: a number from 0 to 1."""
    if not _is_number(value) or not math.isfinite(value) or not 0 <= value <= 1:
        raise Invalid(f"must be a number from 0 to 1, not {describe(value)}")
    checked: float | int = value
    return checked


def _check_system(value: Any) -> str | list[dict[str, Any]]:
    """A string, or a list of text blocks (also as JSON text starting with ``[``).

    A string that starts with ``[`` but is not a JSON list is kept as plain text: a system
    prompt like ``"[Draft] You are..."`` is ordinary text, and rejecting it would be wrong.
    """
    if isinstance(value, str):
        value = json_list_or_text(value)
        if isinstance(value, str):
            return value
    if not is_list(value) or not value:
        raise Invalid(f"must be a string or a non-empty list of text blocks, not {describe(value)}")
    reasons = [
        f"[{i}] must be a text block {{'type': 'text', 'text': ...}} with non-empty text"
        for i, block in enumerate(value)
        if not _is_text_block(block)
    ]
    if reasons:
        raise Invalid(*reasons)
    return [_plain(block) for block in value]


def json_list_or_text(value: str) -> Any:
    """``value`` decoded when it is the JSON text of a list, else ``value`` itself."""
    if not value.lstrip().startswith("["):
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, list) else value


def _is_text_block(block: Any) -> bool:
    return (
        isinstance(block, Mapping)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
        and bool(block["text"].strip())
    )


def _check_stop_sequences(value: Any) -> list[str]:
    value = _from_json(value, "a list of strings")
    if not is_list(value) or not all(isinstance(s, str) and s for s in value):
        raise Invalid(f"must be a list of non-empty strings, not {describe(value)}")
    return list(value)


def _check_metadata(value: Any) -> dict[str, Any]:
    value = _from_json(value, "an object")
    if not isinstance(value, Mapping):
        raise Invalid(f"must be an object like {{'user_id': ...}}, not {describe(value)}")
    unknown = sorted(str(key) for key in value if key != "user_id")
    reasons = []
    if unknown:
        reasons.append(f"has unknown keys {', '.join(map(repr, unknown))}; only user_id")
    user_id = value.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        reasons.append(f"user_id must be a string or null, not {describe(user_id)}")
    if reasons:
        raise Invalid(*reasons)
    return _plain_object(value)


def _check_tools(value: Any) -> list[dict[str, Any]]:
    value = _from_json(value, "a list of tools")
    if not is_list(value):
        raise Invalid(f"must be a list of tool definitions, not {describe(value)}")
    reasons = [
        f"[{i}] must be an object with a non-empty 'name'"
        for i, tool in enumerate(value)
        if not (isinstance(tool, Mapping) and is_nonblank(tool.get("name")))
    ]
    if reasons:
        raise Invalid(*reasons)
    return [_plain(tool) for tool in value]


_TOOL_CHOICES = ("auto", "any", "tool", "none")


def _check_tool_choice(value: Any) -> dict[str, Any]:
    value = _typed_object(value, _TOOL_CHOICES)
    kind = value["type"]
    if kind == "tool" and not is_nonblank(value.get("name")):
        raise Invalid("type 'tool' needs the tool's 'name'")
    return _plain_object(value)


_THINKING_TYPES = ("enabled", "adaptive", "disabled")
_MIN_THINKING_BUDGET = 1024


def _check_thinking(value: Any) -> dict[str, Any]:
    """The budget's upper bound (below max_tokens) is checked in :func:`cross_problems`."""
    value = _typed_object(value, _THINKING_TYPES)
    if value["type"] == "enabled":
        budget = value.get("budget_tokens")
        if not _is_int(budget) or budget < _MIN_THINKING_BUDGET:
            raise Invalid(
                f"type 'enabled' needs an integer budget_tokens of at least "
                f"{_MIN_THINKING_BUDGET}, not {describe(budget)}"
            )
    return _plain_object(value)


_SERVICE_TIERS = ("auto", "standard_only")


def _check_service_tier(value: Any) -> str:
    if value not in _SERVICE_TIERS:
        raise Invalid(f"must be 'auto' or 'standard_only', not {describe(value)}")
    checked: str = value
    return checked


CHECKS: dict[str, Callable[[Any], Any]] = {
    "model": _check_model,
    "max_tokens": _check_max_tokens,
    "system": _check_system,
    "temperature": _check_unit_interval,
    "top_p": _check_unit_interval,
    "top_k": _check_top_k,
    "stop_sequences": _check_stop_sequences,
    "metadata": _check_metadata,
    "tools": _check_tools,
    "tool_choice": _check_tool_choice,
    "thinking": _check_thinking,
    "service_tier": _check_service_tier,
}


def cross_problems(body: Mapping[str, Any]) -> list[Problem]:
    """Rules between parameters: thinking's budget below max_tokens, and no forced tool.

    The API refuses thinking together with a ``tool_choice`` that forces tool use (``any``
    or ``tool``): extended thinking only works with ``auto`` or ``none``.
    """
    thinking = body.get("thinking")
    max_tokens = body.get("max_tokens")
    choice = body.get("tool_choice")
    forced = choice.get("type") if isinstance(choice, Mapping) else None
    if thinking and thinking.get("type") != "disabled" and forced in ("any", "tool"):
        reason = f"cannot be used with tool_choice {forced!r}, which forces a tool"
        return [Problem("thinking", reason)]
    if not thinking or thinking.get("type") != "enabled" or max_tokens is None:
        return []
    budget = thinking["budget_tokens"]
    if budget >= max_tokens:
        reason = f"budget_tokens ({budget}) must be less than max_tokens ({max_tokens})"
        return [Problem("thinking", reason)]
    return []


# --- small helpers -----------------------------------------------------------------------------


def _from_json(value: Any, expected: str) -> Any:
    """``value`` decoded from JSON text when it is a string (Parquet/CSV cells), else as is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise Invalid(
            f"not valid JSON ({exc.msg} at column {exc.colno}); expected {expected}"
        ) from exc


def _typed_object(value: Any, types: tuple[str, ...]) -> Mapping[str, Any]:
    """An object (or its JSON text) whose ``type`` is one of ``types``."""
    value = _from_json(value, "an object")
    if not isinstance(value, Mapping):
        raise Invalid(f"must be an object with a 'type', not {describe(value)}")
    if value.get("type") not in types:
        allowed = ", ".join(repr(t) for t in types)
        raise Invalid(f"type must be one of {allowed}, not {describe(value.get('type'))}")
    return value


def _integer(value: Any, *, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise Invalid(f"must be an integer of at least {minimum}, not {describe(value)}")
    checked: int = value
    return checked


def _is_int(value: Any) -> bool:
    """True for ints; bool is not an int here (``True`` tokens is a mistake, not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def is_nonblank(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _plain_object(value: Mapping[Any, Any]) -> dict[str, Any]:
    """A deep copy of a mapping as a dict of plain values, ready for JSON."""
    return {str(key): _plain(item) for key, item in value.items()}


def _plain(value: Any) -> Any:
    """A deep copy with mappings as dicts and sequences as lists, ready for JSON."""
    if isinstance(value, Mapping):
        return _plain_object(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def describe(value: Any) -> str:
    """A value for a message: short repr for scalars, the JSON kind for containers."""
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an empty list" if not value else "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
