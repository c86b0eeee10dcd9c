"""Row + job defaults -> the Messages API request body; pure but for reading the files rows name.

A row that breaks a rule the API would reject (API-FACTS §1) is never sent: paying for a 400 is
waste, and ten million rows would repeat it ten million times. :func:`build_request` therefore
checks every field and raises one :class:`InvalidRowError` listing *every* problem, so a user
fixes a row once, not once per problem. It knows neither file nor row; the caller locates the
error with :meth:`InvalidRowError.located`.

This is the one place where structured parameters given as JSON text are decoded (Parquet and
CSV cannot always hold lists and objects), for every input format alike.

Example::

    >>> build_request({"prompt": "Hi"}, RequestDefaults(model="claude-haiku-4-5", max_tokens=5))
    {'model': 'claude-haiku-4-5', 'max_tokens': 5, 'messages': [{'role': 'user', 'content': 'Hi'}]}
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from batchrun.core.errors import InvalidRowError, Problem
from batchrun.rows.files import FileProblem, source_for

# The order of keys in every body, so equal requests look equal in logs and journals.
_BODY_ORDER: tuple[str, ...] = (
    "model",
    "max_tokens",
    "system",
    "messages",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
)

PARAM_NAMES: frozenset[str] = frozenset(_BODY_ORDER) - {"messages"}
"""Request parameters a row may set, overriding the job's defaults."""

ATTACH_FIELDS: tuple[str, ...] = ("image", "images", "document")
"""Columns whose paths or URLs become image / document blocks before the prompt's text."""

ROW_FIELDS: frozenset[str] = PARAM_NAMES | {"prompt", "messages", *ATTACH_FIELDS}
"""Row fields with a meaning of their own; every other column is a template variable."""

_REQUIRED = ("model", "max_tokens")

MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""The API's request size limit (API-FACTS §1): larger bodies get 413 before reaching it."""

# A column this close to a field name is almost surely a typo of it, not a template variable.
_TYPO_CUTOFF = 0.8


@dataclass(frozen=True)
class RequestDefaults:
    """The job's request defaults; None means not set. A row's own value wins over each.

    ``template`` builds the prompt from the row's columns (``"Summarize {title}:\\n\\n{body}"``)
    for rows that have neither ``prompt`` nor ``messages``.
    """

    model: str | None = None
    max_tokens: int | None = None
    system: str | list[dict[str, Any]] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: tuple[str, ...] | None = None
    metadata: Mapping[str, Any] | None = None
    tools: tuple[Mapping[str, Any], ...] | None = None
    tool_choice: Mapping[str, Any] | None = None
    thinking: Mapping[str, Any] | None = None
    service_tier: str | None = None
    template: str | None = None
    cache_system: Mapping[str, Any] | None = None  # a cache_control put on the system prompt


class _Invalid(Exception):
    """Raised by a field check: the reasons the value is unusable (one Problem each)."""

    def __init__(self, *reasons: str) -> None:
        super().__init__(*reasons)
        self.reasons = reasons


# --- entry points ----------------------------------------------------------------------------


def build_request(
    fields: Mapping[str, Any], defaults: RequestDefaults, *, base_dir: Path | None = None
) -> dict[str, Any]:
    """The JSON body to POST for one row (without ``stream``: the client adds it).

    Row fields override ``defaults``; None-valued fields count as not set. Raises
    :class:`InvalidRowError` listing every problem found. ``base_dir`` is the input file's
    folder: local files (``path`` sources, the ``image``/``document`` columns) are read from
    it, and only from it (``batchrun.files``); without it a row naming a local file is refused.
    """
    problems: list[Problem] = []
    body: dict[str, Any] = {}
    for name in _BODY_ORDER:
        if name == "messages":
            messages, message_problems = _conversation(fields, defaults.template, base_dir)
            problems.extend(message_problems)
            if messages is not None:
                body["messages"] = messages
            continue
        value = _setting(name, fields, defaults)
        if value is None:
            if name in _REQUIRED:
                problems.append(Problem(name, "required; set it in the job or the row"))
            continue
        try:
            body[name] = _CHECKS[name](value)
        except _Invalid as exc:
            problems.extend(Problem(name, reason) for reason in exc.reasons)
    if defaults.cache_system is not None and "system" in body:
        body["system"] = _cached_system(body["system"], defaults.cache_system)
    problems.extend(_cross_problems(body))
    problems.extend(_typo_problems(fields, defaults.template))
    if problems:
        raise InvalidRowError(problems)
    return body


@dataclass(frozen=True)
class PreparedRequest:
    """A body ready to send, its identity for resume, and its size on the wire.

    ``content`` is the body's canonical JSON (sorted keys, compact, UTF-8): what ``hash`` is
    the digest of, and a valid request body as it is, so it is sent instead of encoding the
    body a second time.
    """

    body: dict[str, Any]
    hash: str
    size: int
    content: bytes


def prepare_request(
    fields: Mapping[str, Any], defaults: RequestDefaults, *, base_dir: Path | None = None
) -> PreparedRequest:
    """``build_request`` plus the checks that need the encoded body (the 32 MB limit).

    The canonical JSON is made once and serves both the hash and the size. Files are hashed
    as sent (their base64 or text is in the body), so the hash is stable across runs and an
    edited file makes a different request, which resume notices.
    """
    body = build_request(fields, defaults, base_dir=base_dir)
    canonical = _canonical_json(body)
    if len(canonical) > MAX_REQUEST_BYTES:
        mb = len(canonical) / (1024 * 1024)
        raise InvalidRowError(
            [Problem(None, f"the request is {mb:.1f} MB, over the API's 32 MB limit")]
        )
    return PreparedRequest(body, hashlib.sha256(canonical).hexdigest(), len(canonical), canonical)


def check_defaults(defaults: RequestDefaults) -> list[Problem]:
    """Every problem in the job's own defaults (each set parameter, and the template).

    Lets configuration loading reject a bad job once, instead of every row failing alike.
    """
    problems: list[Problem] = []
    for name in _BODY_ORDER:
        value = None if name == "messages" else getattr(defaults, name)
        if value is None:
            continue
        try:
            _CHECKS[name](value)
        except _Invalid as exc:
            problems.extend(Problem(name, reason) for reason in exc.reasons)
    if defaults.template is not None:
        try:
            template_fields(defaults.template)
        except ValueError as exc:
            problems.append(Problem("template", str(exc)))
    if not problems:  # rules between the job's own values (thinking vs max_tokens, tools)
        names = ("thinking", "tool_choice", "max_tokens")
        problems.extend(_cross_problems({name: getattr(defaults, name) for name in names}))
    return problems


def request_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the body's canonical JSON, ignoring ``stream``.

    Canonical: sorted keys, compact separators, UTF-8 without escapes. Two bodies that mean the
    same request get the same hash whatever their key order or transport, so resume and dedup
    can recognise work already paid for.
    """
    return hashlib.sha256(_canonical_json(body)).hexdigest()


def _canonical_json(body: Mapping[str, Any]) -> bytes:
    content = {key: value for key, value in body.items() if key != "stream"}
    return _canonical_encoder().encode(content).encode("utf-8")


@lru_cache(maxsize=1)
def _canonical_encoder() -> json.JSONEncoder:
    """Built once (json.dumps with options builds one per call, and this runs per row)."""
    return json.JSONEncoder(
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )


def _typo_problems(fields: Mapping[str, Any], template: str | None) -> list[Problem]:
    """Columns that look like a misspelt field (``max_token``) and feed no template."""
    try:
        used = template_fields(template) if template else frozenset()
    except ValueError:
        used = frozenset()  # the template's own problem is reported on its own
    problems = []
    for name in fields:
        if name in ROW_FIELDS or name in used or name == "id":
            continue
        close = difflib.get_close_matches(name, ROW_FIELDS, n=1, cutoff=_TYPO_CUTOFF)
        if close:
            problems.append(Problem(name, f"unknown field (did you mean `{close[0]}`?)"))
    return problems


def template_fields(template: str) -> frozenset[str]:
    """The ``{column}`` names ``template`` uses; ValueError if the template is not acceptable.

    Only plain names are allowed: no positional ``{}``/``{0}``, no attribute or index access
    (``{a.b}``, ``{a[0]}``), no conversions or format specs. Rows come from files users may not
    control, and a template that could reach into objects has no business in a prompt.
    """
    return frozenset(name for _, name in _parsed_template(template) if name is not None)


# --- settings and the conversation -------------------------------------------------------------


def _setting(name: str, fields: Mapping[str, Any], defaults: RequestDefaults) -> Any:
    """The row's value for a parameter, else the job's default, else None."""
    value = fields.get(name)
    return getattr(defaults, name) if value is None else value


def _conversation(
    fields: Mapping[str, Any], template: str | None, base_dir: Path | None
) -> tuple[list[dict[str, Any]] | None, list[Problem]]:
    """The conversation with attachments added and local files read (see ``_with_files``)."""
    messages, problems = _bare_conversation(fields, template)
    if messages is None:
        return None, problems
    attached = _attachments(fields, template)
    if attached and fields.get("messages") is not None:
        names = ", ".join(name for name, _ in attached)
        return None, [Problem(names, "attachment columns go with prompt or template, not messages")]
    files_problems = _with_files(messages, attached, base_dir)
    return (None, files_problems) if files_problems else (messages, [])


def _attachments(fields: Mapping[str, Any], template: str | None) -> list[tuple[str, Any]]:
    """(column, value) for each attachment column set and not used by the template as text."""
    try:
        used = template_fields(template) if template else frozenset()
    except ValueError:
        used = frozenset()
    return [
        (name, fields[name])
        for name in ATTACH_FIELDS
        if fields.get(name) is not None and name not in used
    ]


def _with_files(
    messages: list[dict[str, Any]], attached: list[tuple[str, Any]], base_dir: Path | None
) -> list[Problem]:
    """Put the attachments before the prompt's text, and read every ``path`` source, in place.

    Images come first, then documents, then the text: the order the API's docs recommend.
    """
    problems: list[Problem] = []
    blocks: list[dict[str, Any]] = []
    for name, value in attached:
        block_type = "document" if name == "document" else "image"
        refs = _refs(value)
        if refs is None:
            shown = _describe(value)
            problems.append(Problem(name, f"must be a path, a URL or a list of them, not {shown}"))
            continue
        for ref in refs:
            try:
                blocks.append({"type": block_type, "source": _source(block_type, ref, base_dir)})
            except FileProblem as exc:
                problems.append(Problem(name, str(exc)))
    if blocks and not problems:
        first = messages[0]
        text = first["content"]
        first["content"] = [*blocks, {"type": "text", "text": text}]
    for i, turn in enumerate(messages):
        content = turn["content"]
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            source = block.get("source")
            if block.get("type") not in ("image", "document") or not isinstance(source, dict):
                continue
            if source.get("type") != "path":
                continue
            try:
                block["source"] = _source(block["type"], source.get("path"), base_dir)
            except FileProblem as exc:
                problems.append(Problem("messages", f"[{i}].content[{j}]: {exc}"))
    return problems


def _refs(value: Any) -> list[str] | None:
    """An attachment cell as a list of references: one string, a list, or a list's JSON text."""
    if isinstance(value, str):
        value = _json_list_or_text(value)
    refs = list(value) if _is_list(value) else [value]
    return refs if refs and all(_is_nonblank(ref) for ref in refs) else None


def _source(block_type: str, ref: Any, base_dir: Path | None) -> dict[str, Any]:
    """A URL source for ``http(s)://`` references, else the local file's encoded source."""
    if isinstance(ref, str) and ref.startswith(("https://", "http://")):
        return {"type": "url", "url": ref}
    if base_dir is None:
        raise FileProblem(f"local file {ref!r} needs an input file (paths are relative to it)")
    source: dict[str, Any] = source_for(block_type, ref, base_dir)
    return source


def _bare_conversation(
    fields: Mapping[str, Any], template: str | None
) -> tuple[list[dict[str, Any]] | None, list[Problem]]:
    """The ``messages`` list, from exactly one of: prompt, messages, the job's template."""
    prompt = fields.get("prompt")
    messages = fields.get("messages")
    if prompt is not None and messages is not None:
        return None, [Problem("prompt", "a row gives either prompt or messages, not both")]
    if prompt is not None:
        return _from_prompt(prompt)
    if messages is not None:
        try:
            return _check_messages(messages), []
        except _Invalid as exc:
            return None, [Problem("messages", reason) for reason in exc.reasons]
    if template is not None:
        return _from_template(template, fields)
    return None, [Problem(None, "missing prompt or messages (and the job has no template)")]


def _from_prompt(prompt: Any) -> tuple[list[dict[str, Any]] | None, list[Problem]]:
    """A single user turn holding ``prompt``."""
    if not isinstance(prompt, str) or not prompt.strip():
        return None, [Problem("prompt", f"must be a non-empty string, not {_describe(prompt)}")]
    return [{"role": "user", "content": prompt}], []


def _from_template(
    template: str, fields: Mapping[str, Any]
) -> tuple[list[dict[str, Any]] | None, list[Problem]]:
    """The template filled from the row's columns; a missing column is a problem naming it."""
    try:
        parts = _parsed_template(template)
    except ValueError as exc:
        return None, [Problem("template", str(exc))]
    problems = [
        Problem(name, "the template uses this column, but the row has no value for it")
        for name in sorted({name for _, name in parts if name is not None})
        if fields.get(name) is None
    ]
    if problems:
        return None, problems
    text = "".join(
        literal + ("" if name is None else _render(fields[name])) for literal, name in parts
    )
    if not text.strip():
        return None, [Problem("template", "the filled template is empty")]
    return [{"role": "user", "content": text}], []


def _render(value: Any) -> str:
    """A column value as prompt text: strings as they are, objects and lists as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


@lru_cache(maxsize=64)
def _parsed_template(template: str) -> tuple[tuple[str, str | None], ...]:
    """(literal text, column name or None) pairs; ``{{``/``}}`` are already unescaped."""
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"invalid template: {exc} (write {{{{ and }}}} for literal braces)"
        ) from exc
    return tuple(
        (literal, None if name is None else _plain_name(name, spec, conversion))
        for literal, name, spec, conversion in pieces
    )


def _plain_name(name: str, spec: str | None, conversion: str | None) -> str:
    """``name`` if it is a plain column name with no conversion or format spec."""
    shown = (
        "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
    )
    if not name.strip() or name.isdigit():
        raise ValueError(f"template field {shown} has no name; write {{column}}")
    if any(char in name for char in ".[]") or name != name.strip():
        raise ValueError(f"template field {shown}: only plain column names are allowed")
    if conversion or spec:
        raise ValueError(f"template field {shown}: conversions and format specs are not allowed")
    return name


# --- messages --------------------------------------------------------------------------------

_ROLES = ("user", "assistant")


def _check_messages(value: Any) -> list[dict[str, Any]]:
    """A non-empty list of ``{role, content}`` turns, starting with the user."""
    value = _from_json(value, "a list of messages")
    if not _is_list(value) or not value:
        raise _Invalid(
            f"must be a non-empty list of {{role, content}} messages, not {_describe(value)}"
        )
    reasons = [reason for i, turn in enumerate(value) for reason in _turn_problems(i, turn)]
    if reasons:
        raise _Invalid(*reasons)
    return [_plain(turn) for turn in value]


def _turn_problems(i: int, turn: Any) -> Iterator[str]:
    """What is wrong with message ``i``."""
    if not isinstance(turn, Mapping):
        yield f"[{i}] must be an object with role and content, not {_describe(turn)}"
        return
    unknown = sorted(str(key) for key in turn if key not in ("role", "content"))
    if unknown:
        yield f"[{i}] has unknown keys {', '.join(map(repr, unknown))}; only role and content"
    role = turn.get("role")
    if role not in _ROLES:
        yield f"[{i}].role must be 'user' or 'assistant', not {_describe(role)}"
    elif i == 0 and role != "user":
        yield "[0].role: the first message must come from the user"
    yield from _content_problems(f"[{i}].content", turn.get("content"))


def _content_problems(where: str, content: Any) -> Iterator[str]:
    """Content is a non-blank string or a non-empty list of blocks, each with a ``type``."""
    if isinstance(content, str):
        if not content.strip():
            yield f"{where} must not be empty"
        return
    if not _is_list(content) or not content:
        found = _describe(content)
        yield f"{where} must be a non-empty string or list of content blocks, not {found}"
        return
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, Mapping) else None
        if not isinstance(kind, str) or not kind:
            yield f"{where}[{j}] must be an object with a 'type' string"


# --- parameters --------------------------------------------------------------------------------


def _check_model(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be a non-empty string, not {_describe(value)}")
    return value


def _check_max_tokens(value: Any) -> int:
    return _integer(value, minimum=1)


def _check_top_k(value: Any) -> int:
    return _integer(value, minimum=0)


def _check_unit_interval(value: Any) -> float | int:
    """``temperature`` and ``top_p``: a number from 0 to 1."""
    if not _is_number(value) or not math.isfinite(value) or not 0 <= value <= 1:
        raise _Invalid(f"must be a number from 0 to 1, not {_describe(value)}")
    checked: float | int = value
    return checked


def _check_system(value: Any) -> str | list[dict[str, Any]]:
    """A string, or a list of text blocks (also as JSON text starting with ``[``).

    A string that starts with ``[`` but is not a JSON list is kept as plain text: a system
    prompt like ``"[Draft] You are..."`` is ordinary text, and rejecting it would be wrong.
    """
    if isinstance(value, str):
        value = _json_list_or_text(value)
        if isinstance(value, str):
            return value
    if not _is_list(value) or not value:
        raise _Invalid(
            f"must be a string or a non-empty list of text blocks, not {_describe(value)}"
        )
    reasons = [
        f"[{i}] must be a text block {{'type': 'text', 'text': ...}} with non-empty text"
        for i, block in enumerate(value)
        if not _is_text_block(block)
    ]
    if reasons:
        raise _Invalid(*reasons)
    return [_plain(block) for block in value]


def _cached_system(
    system: str | list[dict[str, Any]], control: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The system prompt as blocks, its last marked for caching (``cache_system``).

    A cache breakpoint caches everything before it too (tools, earlier system blocks), so
    marking the last block caches the whole system prompt; a block already marked keeps its
    own ``cache_control``.
    """
    blocks: list[dict[str, Any]] = (
        [{"type": "text", "text": system}] if isinstance(system, str) else system
    )
    last = blocks[-1]
    if "cache_control" not in last:
        blocks[-1] = {**last, "cache_control": dict(control)}
    return blocks


def _json_list_or_text(value: str) -> Any:
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
    if not _is_list(value) or not all(isinstance(s, str) and s for s in value):
        raise _Invalid(f"must be a list of non-empty strings, not {_describe(value)}")
    return list(value)


def _check_metadata(value: Any) -> dict[str, Any]:
    value = _from_json(value, "an object")
    if not isinstance(value, Mapping):
        raise _Invalid(f"must be an object like {{'user_id': ...}}, not {_describe(value)}")
    unknown = sorted(str(key) for key in value if key != "user_id")
    reasons = []
    if unknown:
        reasons.append(f"has unknown keys {', '.join(map(repr, unknown))}; only user_id")
    user_id = value.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        reasons.append(f"user_id must be a string or null, not {_describe(user_id)}")
    if reasons:
        raise _Invalid(*reasons)
    return _plain_object(value)


def _check_tools(value: Any) -> list[dict[str, Any]]:
    value = _from_json(value, "a list of tools")
    if not _is_list(value):
        raise _Invalid(f"must be a list of tool definitions, not {_describe(value)}")
    reasons = [
        f"[{i}] must be an object with a non-empty 'name'"
        for i, tool in enumerate(value)
        if not (isinstance(tool, Mapping) and _is_nonblank(tool.get("name")))
    ]
    if reasons:
        raise _Invalid(*reasons)
    return [_plain(tool) for tool in value]


_TOOL_CHOICES = ("auto", "any", "tool", "none")


def _check_tool_choice(value: Any) -> dict[str, Any]:
    value = _typed_object(value, _TOOL_CHOICES)
    kind = value["type"]
    if kind == "tool" and not _is_nonblank(value.get("name")):
        raise _Invalid("type 'tool' needs the tool's 'name'")
    return _plain_object(value)


_THINKING_TYPES = ("enabled", "adaptive", "disabled")
_MIN_THINKING_BUDGET = 1024


def _check_thinking(value: Any) -> dict[str, Any]:
    """The budget's upper bound (below max_tokens) is checked in :func:`_cross_problems`."""
    value = _typed_object(value, _THINKING_TYPES)
    if value["type"] == "enabled":
        budget = value.get("budget_tokens")
        if not _is_int(budget) or budget < _MIN_THINKING_BUDGET:
            raise _Invalid(
                f"type 'enabled' needs an integer budget_tokens of at least "
                f"{_MIN_THINKING_BUDGET}, not {_describe(budget)}"
            )
    return _plain_object(value)


_SERVICE_TIERS = ("auto", "standard_only")


def _check_service_tier(value: Any) -> str:
    if value not in _SERVICE_TIERS:
        raise _Invalid(f"must be 'auto' or 'standard_only', not {_describe(value)}")
    checked: str = value
    return checked


_CHECKS: dict[str, Callable[[Any], Any]] = {
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


def _cross_problems(body: Mapping[str, Any]) -> list[Problem]:
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
        raise _Invalid(
            f"not valid JSON ({exc.msg} at column {exc.colno}); expected {expected}"
        ) from exc


def _typed_object(value: Any, types: tuple[str, ...]) -> Mapping[str, Any]:
    """An object (or its JSON text) whose ``type`` is one of ``types``."""
    value = _from_json(value, "an object")
    if not isinstance(value, Mapping):
        raise _Invalid(f"must be an object with a 'type', not {_describe(value)}")
    if value.get("type") not in types:
        allowed = ", ".join(repr(t) for t in types)
        raise _Invalid(f"type must be one of {allowed}, not {_describe(value.get('type'))}")
    return value


def _integer(value: Any, *, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise _Invalid(f"must be an integer of at least {minimum}, not {_describe(value)}")
    checked: int = value
    return checked


def _is_int(value: Any) -> bool:
    """True for ints; bool is not an int here (``True`` tokens is a mistake, not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _is_nonblank(value: Any) -> bool:
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


def _json_default(value: Any) -> Any:
    """Let request_hash accept read-only mappings (e.g. MappingProxyType) as objects."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _describe(value: Any) -> str:
    """A value for a message: short repr for scalars, the JSON kind for containers."""
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an empty list" if not value else "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
