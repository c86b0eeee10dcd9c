"""The rules for each request field a row or a job sets, as the API would apply them.

One check per parameter (``CHECKS``), the shape of ``messages``, and the rules between
parameters (``cross_problems``). Each check takes a value as it came (a Parquet or CSV cell may
hold JSON text) and returns the value to send, or raises :class:`Invalid` with every reason it
is unusable. They are the API's rules (docs/api-facts.md §1), not the body's assembly, and a list
that grows with the API, so they live apart from ``request``, which runs them and gathers the
problems.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from batchrun.core.errors import Problem

MAX_JSON_DEPTH = 128
"""How deep lists and objects may nest in a row (serde_json's default limit).

Deeper values are refused as the row's problem: Python's JSON decoder and every recursive
walk over a value (copying, encoding, hashing) would otherwise fail with a RecursionError
at about a thousand levels, or earlier when the stack is already deep.
"""

MAX_INTEGER = 2**63 - 1
"""The largest integer parameter sent: the output's int columns and the API's are 64-bit."""


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
    """Content is a non-blank string or a non-empty list of blocks, each with a ``type``, and
    a text block has text."""
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
        elif kind == "text" and not (isinstance(block.get("text"), str) and block["text"]):
            # The API's own words for it: "text content blocks must be non-empty".
            yield f"{where}[{j}] is a text block with no text, which the API refuses: drop it"


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
    # Compared, never converted: NaN and infinities fail the range, and an int too large
    # for a float (10**400) must not raise OverflowError.
    if not _is_number(value) or not 0 <= value <= 1:
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
        decoded = loads_bounded(value)
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


THINKING_TYPES = ("enabled", "adaptive", "disabled", "between_tools")
"""``thinking.type``'s values: budgeted, adaptive, off, and thinking between tool calls only
(Sonnet 5.5). Which model takes which is the model table's (docs/api-facts.md §12.6)."""

EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
"""``output_config.effort``'s values, lowest first (docs/api-facts.md §12.2)."""

_MIN_THINKING_BUDGET = 1024


def _check_thinking(value: Any) -> dict[str, Any]:
    """The budget's upper bound (below max_tokens) is checked in :func:`cross_problems`."""
    value = _typed_object(value, THINKING_TYPES)
    if value["type"] == "between_tools" and len(value) > 1:
        raise Invalid("type 'between_tools' takes no other fields")
    if value["type"] == "enabled":
        budget = value.get("budget_tokens")
        if not _is_int(budget) or not _MIN_THINKING_BUDGET <= budget <= MAX_INTEGER:
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


def check_effort(value: Any) -> str:
    """``output_config.effort``: one of ``EFFORT_LEVELS``."""
    if value not in EFFORT_LEVELS:
        raise Invalid(f"must be one of {', '.join(EFFORT_LEVELS)}, not {describe(value)}")
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
    if thinking and thinking.get("type") in ("enabled", "adaptive") and forced in ("any", "tool"):
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
        return loads_bounded(value)
    except json.JSONDecodeError as exc:
        raise Invalid(
            f"not valid JSON ({exc.msg} at column {exc.colno}); expected {expected}"
        ) from exc
    except ValueError as exc:
        raise Invalid(f"not usable JSON ({exc}); expected {expected}") from exc


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
    if value > MAX_INTEGER:
        raise Invalid(f"must be at most {MAX_INTEGER} (2**63 - 1), not {describe(value)}")
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
    if isinstance(value, int) and value.bit_length() > 128:
        # repr of an int over 4,300 digits raises ValueError; its size is all that matters.
        return f"an integer of about {value.bit_length() * 30103 // 100000 + 1} digits"
    try:
        text = repr(value)
    except Exception:  # a foreign object whose repr fails must not hide the problem
        return f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


# --- JSON nesting and text that UTF-8 cannot carry ----------------------------------------------


def loads_bounded(text: str) -> Any:
    """``json.loads`` for text from a row: ValueError (never RecursionError) when too deep.

    NaN, Infinity and numbers too large for a float (``1e400``) are refused too: a request
    body holding them cannot be encoded, hashed or sent.
    """
    try:
        value = _DECODER.decode(text)
    except RecursionError as exc:
        raise TooDeep(nesting_reason()) from exc
    # Brackets in strings count too: a cheap bound, exact only for the rare text above it.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and too_deep(value):
        raise TooDeep(nesting_reason())
    return value


class TooDeep(ValueError):
    """JSON text whose lists and objects nest deeper than ``MAX_JSON_DEPTH``."""


def finite_float(text: str) -> float:
    """A JSON number as a float; ValueError for one no float holds (``1e400`` is infinity)."""
    number = float(text)
    if number in (_INF, -_INF):
        raise ValueError(f"the number {text[:40]} is out of range")
    return number


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON; accepting them would make request bodies unhashable."""
    raise ValueError(f"{name} is not allowed in JSON")


_INF = float("inf")
# Built once: json.loads(..., parse_constant=...) would build a decoder for every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=finite_float)


def nesting_reason(limit: int = MAX_JSON_DEPTH) -> str:
    return f"lists and objects nested deeper than {limit} levels"


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when lists and objects nest more than ``limit`` deep in ``value``.

    Walked with a stack of its own, never by recursion, so any depth is measured safely.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, _CONTAINERS))
    return False


_CONTAINERS = (Mapping, list, tuple)
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(text: str) -> int | None:
    """Where ``text`` holds a surrogate code point, which UTF-8 cannot encode; None if nowhere.

    JSON can write one (``"\\ud83d"``, half of an emoji cut in two); no valid text has one.
    """
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    return None if found is None else found.start()


def without_surrogates(text: str) -> str:
    """``text`` with every surrogate code point replaced by U+FFFD, so UTF-8 can encode it."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub("\ufffd", text)


def shown(text: str) -> str:
    """``text`` fit for a message: surrogates and control characters written as escapes."""
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def surrogate_at(value: Any) -> tuple[str, str] | None:
    """The first string (or key) in ``value`` that UTF-8 cannot encode: (where, code point).

    ``where`` is a path like ``[0].content`` ("" for ``value`` itself), ``code point`` the
    surrogate as ``\\ud83d``. Walked without recursion, in document order.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            at = lone_surrogate(item)
            if at is not None:
                return where, f"\\u{ord(item[at]):04x}"
        elif isinstance(item, Mapping):
            children: list[tuple[Any, str]] = []
            for key, child in item.items():
                name = str(key)
                path = f"{where}.{shown(name)}" if where else shown(name)
                at = lone_surrogate(name)
                if at is not None:
                    return path, f"\\u{ord(name[at]):04x}"
                children.append((child, path))
            stack.extend(reversed(children))
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed([(child, f"{where}[{i}]") for i, child in enumerate(item)]))
    return None


def surrogate_reason(where: str, code: str) -> str:
    """Why a value holding a lone surrogate is refused, with where it is."""
    place = f"{where}: " if where else ""
    return (
        f"{place}holds a lone surrogate {code} (half of a character such as an emoji, cut in "
        "two), which cannot be encoded as UTF-8"
    )


def surrogate_problems(record: Mapping[str, Any], skip: tuple[str, ...] = ()) -> list[Problem]:
    """A problem for each field of ``record`` (but ``skip``) holding text UTF-8 cannot encode."""
    problems = []
    for key, value in record.items():
        name = str(key)
        if name in skip:
            continue
        at = lone_surrogate(name)
        if at is not None:
            reason = surrogate_reason("", f"\\u{ord(name[at]):04x}")
            problems.append(Problem(shown(name), f"the field's name {reason}"))
            continue
        found = surrogate_at(value)
        if found is not None:
            problems.append(Problem(name, surrogate_reason(*found)))
    return problems


def failure(exc: BaseException) -> str:
    """``Type: message`` of an exception nothing foresaw: short, and encodable as UTF-8."""
    try:
        text = str(exc)
    except Exception:  # an exception whose str() fails still names its type
        text = ""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
