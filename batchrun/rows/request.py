"""Row + job defaults -> the Messages API request body; pure but for reading the files rows name.

A row that breaks a rule the API would reject (docs/api-facts.md §1) is never sent: paying for a
400 is waste, and ten million rows would repeat it ten million times. :func:`build_request`
therefore checks every field and raises one :class:`InvalidRowError` listing *every* problem, so
a user fixes a row once, not once per problem. It knows neither file nor row; the caller locates
the error with :meth:`InvalidRowError.located`.

This module assembles the body: the settings, the conversation (prompt, messages or the job's
template, with attachments and local files), the system prompt's cache mark, and the
canonical JSON that resume hashes; ``prefix`` places ``--cache auto``'s breakpoints after
the hash is taken (see ``PreparedRequest``). The rule each field must meet is in ``checks`` (a list
that grows with the API) and the template language in ``template``; apart, each reads as one
thing. ``checks`` is also the one place where structured parameters given as JSON text are
decoded (Parquet and CSV cannot always hold lists and objects), for every input format alike.

Example::

    >>> build_request({"prompt": "Hi"}, RequestDefaults(model="claude-haiku-4-5", max_tokens=5))
    {'model': 'claude-haiku-4-5', 'max_tokens': 5, 'messages': [{'role': 'user', 'content': 'Hi'}]}
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from batchrun.core.errors import InvalidRowError, Problem
from batchrun.core.frozen import frozen
from batchrun.core.jsoncodec import one_shot
from batchrun.core.wording import said
from batchrun.rows.checks import (
    CHECKS,
    Invalid,
    check_effort,
    check_messages,
    cross_problems,
    describe,
    failure,
    is_list,
    is_nonblank,
    json_list_or_text,
    surrogate_at,
    surrogate_problems,
    surrogate_reason,
)
from batchrun.rows.files import FileCache, FileProblem, MediaSource, source_for
from batchrun.rows.prefix import (
    MAX_BREAKPOINTS,
    CachePolicy,
    SeenFiles,
    SharedParts,
    breakpoints_by_part,
    count_breakpoints,
    place_breakpoints,
    template_head,
)
from batchrun.rows.structured import (
    FORCED_CHOICE,
    FORMAT,
    TOOL,
    Mode,
    StructuredRequest,
    structured_tool,
    with_format,
)
from batchrun.rows.template import fill_template, parse_template

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
"""The API's request size limit: larger bodies get 413 before reaching it
(docs/api-facts.md §1.3)."""

# A column this close to a field name is almost surely a typo of it, not a template variable.
_TYPO_CUTOFF = 0.8


@dataclass(frozen=True)
class RequestDefaults:
    """The job's request defaults; None means not set. A row's own value wins over each.

    ``template`` builds every row's user message from the row's columns
    (``"Summarize {title}:\\n\\n{body}"``); a row's ``prompt`` is one of them (``{prompt}``).
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
    cache: CachePolicy | None = None  # --cache auto: breakpoints at the end of what rows share
    effort: str | None = None  # output_config.effort of every request (EFFORT_LEVELS)
    # Send without the sampling settings a row's model does not take, instead of refusing
    # the row (cost.models decides which; ``build_request``'s ``leave_out``).
    drop_unsupported: bool = False
    structured: StructuredRequest | None = None  # --json-schema: how every answer is asked for


AskStructured = Callable[[str], "Mode | None"]
"""How a model is asked for a structured answer (``rows.structured.structured_mode``, told
what the model takes), by the model's name."""


# --- entry points ----------------------------------------------------------------------------


def build_request(
    fields: Mapping[str, Any],
    defaults: RequestDefaults,
    *,
    base_dir: Path | MediaSource | None = None,
    files: FileCache | None = None,
    ask: AskStructured | None = None,
    leave_out: Collection[str] = (),
) -> dict[str, Any]:
    """The JSON body to POST for one row (without ``stream``: the client adds it).

    Row fields override ``defaults``; None-valued fields count as not set. Raises
    :class:`InvalidRowError` listing every problem found. ``base_dir`` is the input file's
    folder: local files (``path`` sources, the ``image``/``document`` columns) are read from
    it, and only from it (``rows.files``); without it a row naming a local file is refused.
    ``files`` reads them (the process's cache when None): a run's own tells it which files
    its requests were built from.
    ``ask`` says how the row's model is asked for a structured answer when the job has a
    schema (``defaults.structured``); without it, ``output_config.format``.
    ``leave_out``: parameters not to send whatever the row or the job says (the sampling
    settings ``--drop-unsupported`` drops for a model that does not take them).
    """
    problems: list[Problem] = []
    body: dict[str, Any] = {}
    job = _job_plan(defaults)
    for name in job.names(fields):
        if name == "messages":
            messages, message_problems = _conversation(fields, defaults.template, base_dir, files)
            problems.extend(message_problems)
            if messages is not None:
                body["messages"] = messages
            continue
        if name in leave_out:
            value = None
        else:  # setting_value, spelled out: this runs for every parameter of every row
            value = fields.get(name)
            if value is None:
                value = job.values.get(name)
        if value is None:
            if name in _REQUIRED:
                problems.append(Problem(name, "required; set it in the job or the row"))
            continue
        try:
            checked = CHECKS[name](value)
        except Invalid as exc:
            problems.extend(Problem(name, reason) for reason in exc.reasons)
            continue
        if name == "system" and isinstance(checked, str) and not checked.strip():
            continue  # a blank system prompt is none: the API refuses an empty text block
        body[name] = checked
    if defaults.effort is not None:
        merge_output_config(body, "effort", defaults.effort)
    problems.extend(_too_many_marks(body))
    if (
        defaults.cache_system is not None
        and "system" in body
        and count_breakpoints(body) < MAX_BREAKPOINTS  # the row's own marks come first
    ):
        body["system"] = _cached_system(body["system"], defaults.cache_system)
    if defaults.structured is not None and isinstance(body.get("model"), str):
        mode = ask(body["model"]) if ask is not None else FORMAT
        problems.extend(_ask_structured(body, defaults.structured, mode))
    problems.extend(cross_problems(body))
    problems.extend(_typo_problems(fields, defaults.template))
    if problems:
        raise InvalidRowError(problems)
    return body


@dataclass(frozen=True)
class _JobPlan:
    """What of ``build_request``'s walk over the body's fields is the same for every row of
    a job: the parameters the job sets (``values``), and the fields looked at whatever the
    row holds (``always``: the job's, the required ones, the conversation), in body order.
    A row's own parameter adds its name; every other field has no value to check."""

    defaults: RequestDefaults
    values: dict[str, Any]
    always: frozenset[str]
    order: tuple[str, ...]

    def names(self, fields: Mapping[str, Any]) -> tuple[str, ...]:
        """The fields to build for a row with ``fields``, in body order."""
        own = fields.keys() & PARAM_NAMES
        if own <= self.always:
            return self.order
        wanted = self.always | own
        return tuple(name for name in _BODY_ORDER if name in wanted)


_last_plan: _JobPlan | None = None  # a run's rows share their defaults: the last job's plan


def _job_plan(defaults: RequestDefaults) -> _JobPlan:
    global _last_plan
    plan = _last_plan
    if plan is not None and plan.defaults is defaults:
        return plan
    values = {
        name: getattr(defaults, name) for name in PARAM_NAMES if getattr(defaults, name) is not None
    }
    always = frozenset({*values, *_REQUIRED, "messages"})
    order = tuple(name for name in _BODY_ORDER if name in always)
    plan = _last_plan = _JobPlan(defaults, values, always, order)
    return plan


def _ask_structured(
    body: dict[str, Any], structured: StructuredRequest, mode: Mode | None
) -> list[Problem]:
    """Ask ``body`` for the job's structured answer the way its model takes (in place)."""
    model = body["model"]
    if mode is None:
        return [
            Problem(
                "model",
                f"`{model}` takes neither output_config.format nor a forced tool_choice: "
                "json_schema cannot be asked of it",
            )
        ]
    if mode == FORMAT:
        if structured.format is None:
            return [Problem("json_schema", structured.problem or "cannot be sent")]
        with_format(body, structured.format)
        return []
    assert mode == TOOL
    given = [name for name in ("tools", "tool_choice") if name in body]
    if given:
        return [
            Problem(
                given[0],
                f"json_schema is asked of `{model}` with a tool of its own, forced: the row's "
                f"`{given[0]}` cannot go with it",
            )
        ]
    body["tools"] = [structured_tool(structured.schema)]
    body["tool_choice"] = dict(FORCED_CHOICE)
    return []


@frozen  # made for every row: frozen to the type checker, quick to make
class PreparedRequest:
    """A body ready to send, its identity for resume, and its size on the wire.

    ``content`` is the body's canonical JSON (sorted keys, compact, UTF-8), a valid request
    body as it is, so it is sent instead of encoding the body a second time; a body holding a
    schema keeps its own key order instead (``_as_sent``). ``hash`` is the
    digest of the same JSON *before* the breakpoints ``--cache auto`` placed: a cache mark
    changes what is billed, not the answer, so outputs made before automatic caching (or with
    ``--cache off``) resume without their rows counting as changed requests, and identical
    requests stay identical whatever the cache mode.

    ``prefix_key`` names the request's prefix group when a breakpoint was placed: requests
    with equal keys read the same cache entry (``rows.prefix.place_breakpoints``).
    """

    body: dict[str, Any]
    hash: str
    size: int
    content: bytes
    prefix_key: str | None = None


def prepare_request(
    fields: Mapping[str, Any],
    defaults: RequestDefaults,
    *,
    base_dir: Path | MediaSource | None = None,
    seen_files: SeenFiles | None = None,
    files: FileCache | None = None,
    ask: AskStructured | None = None,
    leave_out: Collection[str] = (),
) -> PreparedRequest:
    """``build_request`` plus the checks that need the encoded body (the 32 MB limit).

    ``seen_files``, kept by the caller for a run, lets ``--cache auto`` mark files that rows
    attach alike (``rows.prefix``); ``ask`` and ``leave_out`` are ``build_request``'s.

    The canonical JSON is made once and serves both the hash and the size. Files are hashed
    as sent (their base64 or text is in the body), so the hash is stable across runs and an
    edited file makes a different request, which resume notices. A body that has no JSON
    (text with a lone surrogate, NaN, bytes) is the row's :class:`InvalidRowError` too.
    """
    body = build_request(
        fields, defaults, base_dir=base_dir, files=files, ask=ask, leave_out=leave_out
    )
    try:
        canonical = _canonical_json(body)
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidRowError(_unencodable(fields, body, exc)) from exc
    digest = hashlib.sha256(canonical).hexdigest()
    prefix_key = None
    if defaults.cache is not None:
        shared = shared_parts(fields, defaults)
        prefix_key = place_breakpoints(body, shared, defaults.cache, seen_files)
        if prefix_key is not None:
            canonical = _canonical_json(body)  # encodable: only cache marks were added
    if len(canonical) > MAX_REQUEST_BYTES:
        mb = len(canonical) / (1024 * 1024)
        raise InvalidRowError(
            [Problem(None, f"the request is {mb:.1f} MB, over the API's 32 MB limit")]
        )
    return PreparedRequest(body, digest, len(canonical), _as_sent(body, canonical), prefix_key)


def _as_sent(body: Mapping[str, Any], canonical: bytes) -> bytes:
    """The JSON sent for ``body``: its ``canonical`` JSON, unless it carries a schema the
    model reads in order. A structured answer writes its fields in the order its schema
    lists them (docs/api-facts.md §13.1), and a tool's ``input_schema`` is read the same
    way: a job that puts a ``reasoning`` field before its ``label`` must be sent so, not
    with the keys sorted. Such a body is encoded again in its own order (the same bytes,
    rearranged: the size is the canonical JSON's)."""
    if "output_config" not in body and "tools" not in body:
        return canonical
    content = {key: value for key, value in body.items() if key != "stream"}
    return _ordered()(content).encode("utf-8")


def shared_parts(fields: Mapping[str, Any], defaults: RequestDefaults) -> SharedParts:
    """What of a row's request comes from the job, and so is the same in every row."""
    template = defaults.template
    no_turns = fields.get("messages") is None
    attached = no_turns and bool(_attachments(fields, template))
    return _shared_parts(
        defaults.tools is not None and fields.get("tools") is None,
        defaults.system is not None and fields.get("system") is None,
        template_head(template) if template is not None and no_turns and not attached else None,
        not no_turns,
        attached,
    )


@lru_cache(maxsize=256)
def _shared_parts(
    tools: bool, system: bool, head: str | None, turns: bool, files: bool
) -> SharedParts:
    """One ``SharedParts`` for each of the few there are in a run, not one made a row."""
    return SharedParts(
        tools=tools, system=system, template_head=head, leading_turns=turns, leading_files=files
    )


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
            CHECKS[name](value)
        except Invalid as exc:
            problems.extend(Problem(name, reason) for reason in exc.reasons)
    if defaults.effort is not None:
        try:
            check_effort(defaults.effort)
        except Invalid as exc:
            problems.extend(Problem("effort", reason) for reason in exc.reasons)
    if defaults.template is not None and not defaults.template.strip():
        problems.append(Problem("template", "is empty: every row's user message would be empty"))
    elif defaults.template is not None:
        try:
            template_fields(defaults.template)
        except ValueError as exc:
            problems.append(Problem("template", str(exc)))
    if not problems:  # rules between the job's own values (thinking vs max_tokens, tools)
        names = ("thinking", "tool_choice", "max_tokens")
        problems.extend(cross_problems({name: getattr(defaults, name) for name in names}))
    return problems


def request_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the body's canonical JSON, ignoring ``stream``.

    Canonical: sorted keys, compact separators, UTF-8 without escapes. Two bodies that mean the
    same request get the same hash whatever their key order or transport, so resume and dedup
    can recognise work already paid for.
    """
    return hashlib.sha256(_canonical_json(body)).hexdigest()


def _canonical_json(body: Mapping[str, Any]) -> bytes:
    # A built body is a dict without ``stream``: encoded as it is, not copied first.
    if type(body) is dict and "stream" not in body:
        content: Mapping[str, Any] = body
    else:
        content = {key: value for key, value in body.items() if key != "stream"}
    return _canonical()(content).encode("utf-8")


@lru_cache(maxsize=1)
def _canonical() -> Callable[[Any], str]:
    """The canonical encoder's ``encode``, without its per-call set-up (``one_shot``)."""
    return one_shot(_canonical_encoder())


@lru_cache(maxsize=1)
def _ordered() -> Callable[[Any], str]:
    return one_shot(_ordered_encoder())


@lru_cache(maxsize=1)
def _ordered_encoder() -> json.JSONEncoder:
    """The canonical encoder's options, the keys left in their order (``_as_sent``)."""
    return json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
    )


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


def _unencodable(
    fields: Mapping[str, Any], body: Mapping[str, Any], exc: BaseException
) -> list[Problem]:
    """Why ``body`` has no canonical JSON, naming the field where it can be found.

    Rows reach here with what their format let through: text with a lone surrogate (from a
    JSON text cell, or a caller's own dict), NaN in a Parquet struct, bytes, objects nested
    too deep. Each is a reason to refuse the row, not to stop the run. A surrogate is named
    by the row's own column (``prompt``, a template's column) where it came from one.
    """
    if not isinstance(exc, UnicodeEncodeError):
        return [_unencodable_value(body, exc)]
    in_row = surrogate_problems(fields)
    if in_row:
        return in_row
    found = surrogate_at(body)
    if found is not None:
        where, code = found  # "messages[0].content": the body's key, then the path in it
        cut = min((i for i in (where.find("."), where.find("[")) if i >= 0), default=len(where))
        return [Problem(where[:cut] or None, surrogate_reason(where[cut:].lstrip("."), code))]
    return [_unencodable_value(body, exc)]


def _unencodable_value(body: Mapping[str, Any], exc: BaseException) -> Problem:
    """The body's first field JSON cannot carry, for a reason other than a surrogate."""
    if isinstance(exc, RecursionError):
        reason = "lists and objects nested too deeply to be sent"
    elif isinstance(exc, ValueError):
        reason = f"holds a number JSON cannot carry, such as NaN or infinity ({failure(exc)})"
    else:
        reason = f"holds a value JSON cannot carry ({failure(exc)})"
    for name, value in body.items():
        try:
            _canonical_encoder().encode(value)
        except (ValueError, TypeError, RecursionError):
            return Problem(name, reason)
    return Problem(None, reason)


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
        close = _field_like(name)
        if close is not None:
            problems.append(Problem(name, f"unknown field (did you mean `{close}`?)"))
    return problems


@lru_cache(maxsize=4096)
def _field_like(name: str) -> str | None:
    """The field ``name`` is a likely typo of, or None: asked once a column, not once a row
    (every row of a file has the same columns, and difflib costs tens of microseconds)."""
    close = difflib.get_close_matches(name, ROW_FIELDS, n=1, cutoff=_TYPO_CUTOFF)
    return close[0] if close else None


def template_fields(template: str) -> frozenset[str]:
    """The ``{column}`` names ``template`` uses; ValueError if the template is not acceptable.

    Only plain names are allowed: no positional ``{}``/``{0}``, no attribute or index access
    (``{a.b}``, ``{a[0]}``), no conversions or format specs. Rows come from files users may not
    control, and a template that could reach into objects has no business in a prompt.
    """
    return frozenset(name for _, name in parse_template(template) if name is not None)


# --- settings and the conversation -------------------------------------------------------------


def setting_value(name: str, fields: Mapping[str, Any], defaults: RequestDefaults) -> Any:
    """The row's value for a parameter, else the job's default, else None (as given: a
    Parquet or CSV cell may hold JSON text, which the parameter's check decodes)."""
    value = fields.get(name)
    return getattr(defaults, name) if value is None else value


def merge_output_config(body: dict[str, Any], key: str, value: Any) -> None:
    """Set one key of the body's ``output_config``, keeping the others: effort and the
    structured-output format share the object (docs/api-facts.md §1.1)."""
    config = body.get("output_config")
    body["output_config"] = {**(config if isinstance(config, Mapping) else {}), key: value}


def _conversation(
    fields: Mapping[str, Any],
    template: str | None,
    base_dir: Path | MediaSource | None,
    files: FileCache | None,
) -> tuple[list[dict[str, Any]] | None, list[Problem]]:
    """The conversation with attachments added and local files read (see ``_with_files``)."""
    messages, problems = _bare_conversation(fields, template)
    if messages is None:
        return None, problems
    attached = _attachments(fields, template)
    if attached and fields.get("messages") is not None:
        names = ", ".join(name for name, _ in attached)
        return None, [Problem(names, "attachment columns go with prompt or template, not messages")]
    files_problems = _with_files(messages, attached, base_dir, files)
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
    messages: list[dict[str, Any]],
    attached: list[tuple[str, Any]],
    base_dir: Path | MediaSource | None,
    files: FileCache | None,
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
            shown = describe(value)
            problems.append(Problem(name, f"must be a path, a URL or a list of them, not {shown}"))
            continue
        for ref in refs:
            try:
                source = _source(block_type, ref, base_dir, files)
                blocks.append({"type": block_type, "source": source})
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
                block["source"] = _source(block["type"], source.get("path"), base_dir, files)
            except FileProblem as exc:
                problems.append(Problem("messages", f"[{i}].content[{j}]: {exc}"))
    return problems


def _refs(value: Any) -> list[str] | None:
    """An attachment cell as a list of references: one string, a list, or a list's JSON text."""
    if isinstance(value, str):
        value = json_list_or_text(value)
    refs = list(value) if is_list(value) else [value]
    return refs if refs and all(is_nonblank(ref) for ref in refs) else None


def _source(
    block_type: str, ref: Any, base_dir: Path | MediaSource | None, files: FileCache | None
) -> dict[str, Any]:
    """A URL source for ``http(s)://`` references, else the local file's encoded source.

    Whatever goes wrong with a file is the row's :class:`FileProblem`: a path the OS refuses
    outright (a NUL byte, text it cannot encode) raises a bare ValueError from deep in
    ``pathlib``, and must not stop the run.
    """
    if isinstance(ref, str) and ref.startswith(("https://", "http://")):
        return {"type": "url", "url": ref}
    if base_dir is None:
        raise FileProblem(f"local file {ref!r} needs an input file (paths are relative to it)")
    try:
        source: dict[str, Any] = source_for(block_type, ref, base_dir, files)
    except FileProblem:
        raise
    except (ValueError, OSError) as exc:
        raise FileProblem(f"cannot use file {ref!r}: {failure(exc)}") from exc
    return source


def _bare_conversation(
    fields: Mapping[str, Any], template: str | None
) -> tuple[list[dict[str, Any]] | None, list[Problem]]:
    """The ``messages`` list, from exactly one of: the job's template, prompt, messages.

    A template given is always applied: it builds the user message, and a row's ``prompt``
    is one of its columns (``{prompt}``). What it would leave unsent is refused, never
    dropped without a word: a row's ``messages`` (a conversation of its own), or a
    ``prompt`` the template does not use (``template_conflicts``).
    """
    prompt = fields.get("prompt")
    messages = fields.get("messages")
    if template is not None:
        conflicts = [
            Problem(name, reason)
            for name, reason in template_conflicts(template, fields.keys())
            if fields.get(name) is not None
        ]
        if conflicts:
            return None, conflicts
        text, problems = fill_template(template, fields)
        return (None, problems) if text is None else ([{"role": "user", "content": text}], [])
    if prompt is not None and messages is not None:
        return None, [Problem("prompt", "a row gives either prompt or messages, not both")]
    if prompt is not None:
        return _from_prompt(prompt)
    if messages is not None:
        try:
            return check_messages(messages), []
        except Invalid as exc:
            return None, [Problem("messages", reason) for reason in exc.reasons]
    return None, [Problem(None, "missing prompt or messages (and the job has no template)")]


def template_conflicts(template: str, columns: Iterable[str]) -> list[tuple[str, str]]:
    """(column, why) for each of ``columns`` that the job's ``template`` would leave unsent.

    The template builds the user message, so a row's ``messages`` has no place beside it,
    and a ``prompt`` it does not use would be dropped. One rule for a row (``build_request``)
    and for a whole input's columns (``runs.preflight``), so both say the same.
    """
    try:
        used = template_fields(template)
    except ValueError:
        return []  # the template's own problem is reported on its own
    conflicts = []
    for name in columns:
        if name == "messages":
            conflicts.append((name, _messages_conflict()))
        elif name == "prompt" and name not in used:
            conflicts.append((name, _PROMPT_CONFLICT))
    return conflicts


def _messages_conflict() -> str:
    return (
        "the job's template builds each row's user message, so a row cannot also give its own "
        f"messages: {said('drop the template (--template)', 'drop the template')} to send the "
        "rows' messages, or drop messages"
    )


_PROMPT_CONFLICT = (
    "the job's template builds each row's user message and does not use prompt, which would "
    "not be sent: put {prompt} in the template where it belongs (e.g. 'Classify: {prompt}'), "
    "or rename the column"
)


def _from_prompt(prompt: Any) -> tuple[list[dict[str, Any]] | None, list[Problem]]:
    """A single user turn holding ``prompt``."""
    if not isinstance(prompt, str) or not prompt.strip():
        return None, [Problem("prompt", f"must be a non-empty string, not {describe(prompt)}")]
    return [{"role": "user", "content": prompt}], []


def _too_many_marks(body: Mapping[str, Any]) -> list[Problem]:
    """The request's own ``cache_control`` marks (the row's, the job's tools or system
    blocks), if there are more than the API takes in one request. batchrun adds its own
    marks only below that limit, so these are the user's to cut."""
    parts = breakpoints_by_part(body)
    total = sum(parts.values())
    if total <= MAX_BREAKPOINTS:
        return []
    where = ", ".join(f"{n} in {part}" for part, n in parts.items())
    return [
        Problem(
            "cache_control",
            f"the request carries {total} cache_control marks ({where}), and the API takes "
            f"at most {MAX_BREAKPOINTS} in one request: remove {total - MAX_BREAKPOINTS} "
            "(a mark caches everything before it, so the last ones are usually the ones to keep)",
        )
    ]


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


def _json_default(value: Any) -> Any:
    """Let request_hash accept read-only mappings (e.g. MappingProxyType) as objects."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
