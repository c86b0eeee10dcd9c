"""Where a request's cache breakpoints go: the end of the part the rows of a job share; pure.

A bulk job sends the same instruction (system prompt, tools, the head of a template) with
every row. Marking the end of that shared part with ``cache_control`` makes the first request
write it to the API's prompt cache (1.25x the input price for a 5 m entry) and every later one
read it (0.1x). Marking anything later, such as the row's own text (which is what a top-level
``cache_control`` does), writes an entry per row that is never read: 25% more, not 90% less.

Rows are read lazily, so what the rows share is decided per request, from what the request
takes from the job rather than from the row (``SharedParts``):

* *sure* parts, the same in every row by construction: the job's ``tools``, the job's
  ``system``, and the static head of the job's ``template`` (its text before the first
  ``{field}``; the whole text when it has none);
* a *guessed* part, for rows that give their own ``messages``: every turn before the last
  user turn (few-shot examples, a shared document turn). A row whose earlier turns differ from
  every other row's pays the write on them, 1.25x on those turns.

A breakpoint goes at the end of the deepest sure part that reaches the model's minimum
cacheable length (estimated with ``rows.tokens``, which runs low against the real tokenizer:
the safe side), and one more at the end of the guessed part when it reaches it too. Nothing
is placed below the minimum (the API would ignore it), and nothing at all in a request that
carries a ``cache_control`` of the user's own anywhere: the user's breakpoints win. At most
two are added, so a request never exceeds the API's four. No mark goes on a blank block (a
text block of whitespace, a tool result with nothing in it: the API refuses those): a turn's
mark moves back to its last block with content, or is left off.

Rows that attach files (``image`` / ``document`` columns) put the files before their text.
Most jobs attach a different file per row, and a mark after a file no other row sends would
make the row pay a write on it; but a job that attaches the same reference document or image
to every row shares it. So the files are a candidate only once the same leading files were
seen in an earlier row of the run (``SeenFiles``, which the caller keeps for the run): the
first row with them pays plain input, the second writes the entry, the rest read it.

Example::

    >>> body = {"model": "m", "max_tokens": 5, "system": "x " * 3000,
    ...         "messages": [{"role": "user", "content": "Hi"}]}
    >>> key = place_breakpoints(body, SharedParts(system=True), CachePolicy({"m": 1024}))
    >>> body["system"][0]["cache_control"], key is not None
    ({'type': 'ephemeral'}, True)
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from batchrun.rows.template import parse_template
from batchrun.rows.tokens import estimate_input_tokens

MAX_BREAKPOINTS = 4
"""The API's limit of ``cache_control`` marks per request."""

SAFE_MINIMUM_TOKENS = 4096
"""The minimum assumed when the job gives none: the highest any model has (cost.prices)."""

# Block types that may carry cache_control (docs/api-facts.md §10); thinking blocks may not.
_MARKABLE = frozenset({"text", "image", "document", "search_result", "tool_use", "tool_result"})


@dataclass(frozen=True)
class CachePolicy:
    """``--cache auto``: the mark to place, and the minimum prefix in tokens per model.

    ``minimums`` maps model ids to their minimum; configuration fills it from the price
    table (``cost.prices``, which this layer cannot import), under every id the table knows
    and under the job's model as written. A model it lacks gets ``fallback``, the highest
    minimum there is: too high only leaves a prefix uncached. Plain data, so the job's
    fingerprint (``store.resume``) can record it as JSON.
    """

    minimums: Mapping[str, int] = field(default_factory=dict)
    control: Mapping[str, Any] = field(default_factory=lambda: {"type": "ephemeral"})
    fallback: int = SAFE_MINIMUM_TOKENS
    # Each model's tokens per token of the local estimate (its tokenizer factor, from the
    # model table: docs/api-facts.md §12.3); 1 for a model it lacks.
    factors: Mapping[str, float] = field(default_factory=dict)

    def minimum_tokens(self, model: str) -> int:
        return self.minimums.get(model, self.fallback)

    def estimated_minimum(self, model: str) -> float:
        """The minimum in the local estimate's tokens (``rows.tokens``, calibrated on the
        older tokenizer): a prefix whose estimate reaches it reaches the model's minimum on
        the model's own tokenizer."""
        return self.minimum_tokens(model) / self.factors.get(model, 1.0)


@dataclass(frozen=True)
class SharedParts:
    """Which parts of one request come from the job (shared by every row) and not the row."""

    tools: bool = False  # the body's tools are the job's
    system: bool = False  # the body's system prompt is the job's
    template_head: str | None = None  # the static text the row's prompt starts with
    leading_turns: bool = False  # the row gave messages: its turns before the last user turn
    leading_files: bool = False  # the row attached files: they lead its first turn


class SeenFiles:
    """Digests of the leading files of the rows prepared so far in a run (the most recent
    ``capacity``), to tell a file every row attaches from one a single row does."""

    def __init__(self, capacity: int = 65_536) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def again(self, digest: str) -> bool:
        """Whether ``digest`` was seen before; it is remembered either way."""
        if digest in self._seen:
            self._seen.move_to_end(digest)
            return True
        self._seen[digest] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return False


@dataclass
class _Candidate:
    tokens: int
    prefix: dict[str, Any]
    mark: Callable[[Mapping[str, Any]], None]


def template_head(template: str) -> str:
    """The template's text before its first ``{field}``: the whole text if it has none."""
    head: list[str] = []
    for literal, name in parse_template(template):
        head.append(literal)
        if name is not None:
            break
    return "".join(head)


def has_cache_marks(body: Mapping[str, Any]) -> bool:
    """True if the body carries any ``cache_control`` (top level, a tool, a block)."""
    return count_breakpoints(body) > 0


def count_breakpoints(body: Mapping[str, Any]) -> int:
    """How many ``cache_control`` marks the body carries (the API allows ``MAX_BREAKPOINTS``)."""
    return sum(breakpoints_by_part(body).values())


def breakpoints_by_part(body: Mapping[str, Any]) -> dict[str, int]:
    """The body's ``cache_control`` marks counted by where they are: the top level, ``tools``,
    ``system``, ``messages`` (blocks, and blocks inside them: a tool result's content, a
    search result's, a document's content source). Parts without a mark are left out.

    Walked over the places a mark can be, never over the text of the JSON: a prompt that
    mentions ``"cache_control"`` or a tool's input schema with such a property is no mark.
    """
    counts: dict[str, int] = {}
    if body.get("cache_control") is not None:
        counts["cache_control"] = 1
    tools = _marked(body.get("tools"))
    if tools:
        counts["tools"] = tools
    system = _marked(body.get("system"))
    if system:
        counts["system"] = system
    messages = 0
    for turn in body.get("messages") or ():
        if type(turn) is dict or isinstance(turn, Mapping):
            messages += _marked(turn.get("content"))
    if messages:
        counts["messages"] = messages
    return counts


def _marked(blocks: Any) -> int:
    """The marks on ``blocks`` (a list of blocks or tools; anything else holds none) and on
    the blocks nested in them."""
    if blocks is None or type(blocks) is str:  # a turn's text, no system: at once
        return 0
    if not isinstance(blocks, (list, tuple)):
        return 0
    count = 0
    for block in blocks:
        if not isinstance(block, Mapping):
            continue
        count += block.get("cache_control") is not None
        count += _marked(block.get("content"))
        source = block.get("source")
        if isinstance(source, Mapping):
            count += _marked(source.get("content"))
    return count


def _is_blank(block: Any) -> bool:
    """A block the API takes no mark on: a text block with no text but whitespace, or a tool
    result with nothing in it (no content, blank text, or only such blocks)."""
    if not isinstance(block, Mapping):
        return False
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return not (isinstance(text, str) and text.strip())
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return not content.strip()
        if isinstance(content, (list, tuple)):
            return all(_is_blank(inner) for inner in content)
        return True
    return False


def place_breakpoints(
    body: dict[str, Any],
    shared: SharedParts,
    policy: CachePolicy,
    seen_files: SeenFiles | None = None,
) -> str | None:
    """Mark the end of the shared prefix in ``body`` (in place); its group key, or None.

    ``seen_files`` makes the row's leading files a candidate when an earlier row of the run
    led with the same ones (without it, files are never marked).

    The key is a digest of the model and the prefix through the deepest breakpoint placed,
    marks left out: requests with equal keys read the same cache entry, so a scheduler can
    send one of them first and the rest once its answer has begun (issue 17, item 2).
    """
    files = shared.leading_files and seen_files is not None
    from_job = shared.tools or shared.system or shared.template_head or shared.leading_turns
    if not (from_job or files):
        return None  # nothing comes from the job and no files: nothing may be shared
    if has_cache_marks(body):
        return None
    model = str(body.get("model"))
    minimum = policy.estimated_minimum(model)
    sure, guessed = _candidates(body, shared)
    if files and seen_files is not None:
        guessed.extend(_file_candidates(body, shared, seen_files))
    chosen = [
        deepest
        for deepest in (_deepest(sure, minimum), _deepest(guessed, minimum))
        if deepest is not None
    ]
    if not chosen:
        return None
    # tool_choice and thinking are in the key too: the prompt-caching docs list them among
    # what invalidates cached messages (not re-checked here). A key too fine only splits a
    # group; one too coarse would make a scheduler wait for an entry it cannot read.
    settings = {name: body.get(name) for name in ("tool_choice", "thinking")}
    key = _group_key(model, {**chosen[-1].prefix, **settings})
    for candidate in chosen:
        candidate.mark(policy.control)
    return key


def _deepest(candidates: list[_Candidate], minimum: float) -> _Candidate | None:
    reaching = [c for c in candidates if c.tokens >= minimum]
    return reaching[-1] if reaching else None


def _group_key(model: str, prefix: Mapping[str, Any]) -> str:
    """A digest of the model and the prefix, built from its strings' digests, which are
    remembered: the job's system prompt and template head come back with every row, and
    encoding a long shared prefix as JSON again for each would cost more than the rest."""
    return _digest([model, prefix])


def _digest(value: Any) -> str:
    if isinstance(value, str):
        return _text_digest(value)
    if isinstance(value, Mapping):
        inner = ",".join(f"{_text_digest(str(k))}:{_digest(value[k])}" for k in sorted(value))
        return _text_digest("{" + inner + "}")
    if isinstance(value, (list, tuple)):
        return _text_digest("[" + ",".join(_digest(item) for item in value) + "]")
    return _text_digest(json.dumps(value, default=str))  # numbers, booleans, None


@lru_cache(maxsize=1024)
def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _tokens(prefix: Mapping[str, Any]) -> int:
    return estimate_input_tokens({"messages": [], **prefix})


def _candidates(
    body: dict[str, Any], shared: SharedParts
) -> tuple[list[_Candidate], list[_Candidate]]:
    """(sure, guessed) breakpoint candidates, shallow to deep, in the prefix's order.

    The cached prefix runs tools, then system, then messages; a part the row sets itself ends
    what is sure to be shared.
    """
    sure: list[_Candidate] = []
    tools = body.get("tools")
    system = body.get("system")
    if tools and not shared.tools:
        return sure, []
    prefix: dict[str, Any] = {}
    if tools:
        prefix = {"tools": tools}
        sure.append(_Candidate(_tokens(prefix), prefix, _on_last_tool(body)))
    if system is not None:
        if not shared.system:
            return sure, []
        prefix = {**prefix, "system": system}
        if not (isinstance(system, str) and not system.strip()):  # no mark on a blank one
            sure.append(_Candidate(_tokens(prefix), prefix, _on_system(body)))
    messages = body.get("messages") or []
    if not messages:
        return sure, []
    first = messages[0]
    head = shared.template_head
    content = first.get("content")
    if head and head.strip() and isinstance(content, str) and content.startswith(head):
        head_turn = {"role": first["role"], "content": [{"type": "text", "text": head}]}
        head_prefix = {**prefix, "messages": [head_turn]}
        sure.append(_Candidate(_tokens(head_prefix), head_prefix, _on_head(body, head)))
    guessed: list[_Candidate] = []
    if shared.leading_turns:
        users = [i for i, turn in enumerate(messages) if turn.get("role") == "user"]
        last_user = users[-1] if users else 0
        block = _markable_block(messages[last_user - 1]) if last_user >= 1 else None
        if block is not None:
            turns_prefix = {**prefix, "messages": messages[:last_user]}
            mark = _on_turn(body, last_user - 1, block)
            guessed.append(_Candidate(_tokens(turns_prefix), turns_prefix, mark))
    return sure, guessed


def _file_candidates(
    body: dict[str, Any], shared: SharedParts, seen_files: SeenFiles
) -> list[_Candidate]:
    """The leading file blocks of the first turn, if an earlier row led with the same files.

    Their digest is taken over the blocks' JSON with a plain hash (not ``_text_digest``,
    whose cache would keep megabytes of file data alive); the group key then sees the digest,
    not the data.
    """
    messages = body.get("messages") or []
    content = messages[0].get("content") if messages else None
    if not isinstance(content, list):
        return []
    count = 0
    while count < len(content) and _is_file(content[count]):
        count += 1
    if count == 0 or (shared.tools is False and body.get("tools")):
        return []
    if body.get("system") is not None and not shared.system:
        return []  # the row's own system prompt comes first: the files' prefix is its own
    files = content[:count]
    digest = hashlib.sha256(
        json.dumps(files, sort_keys=True, default=str).encode("utf-8", "surrogatepass")
    ).hexdigest()
    if not seen_files.again(digest):
        return []
    prefix = {name: body[name] for name in ("tools", "system") if body.get(name) is not None}
    measured = {**prefix, "messages": [{"role": messages[0]["role"], "content": files}]}
    keyed = {**prefix, "files": digest}
    return [_Candidate(_tokens(measured), keyed, _on_block(body, count - 1))]


def _is_file(block: object) -> bool:
    return isinstance(block, Mapping) and block.get("type") in ("image", "document")


def _markable_block(turn: Mapping[str, Any]) -> int | None:
    """Which block of ``turn`` ends what can be cached: its last, past any blank ones (the
    API refuses a mark on an empty text block); None when that block takes no mark.

    A string content counts as one text block.
    """
    content = turn.get("content")
    if isinstance(content, str):
        return 0 if content.strip() else None
    if not isinstance(content, list):
        return None
    index = len(content) - 1
    while index >= 0 and _is_blank(content[index]):
        index -= 1
    if index < 0:
        return None
    block = content[index]
    return index if isinstance(block, Mapping) and block.get("type") in _MARKABLE else None


# Each marker edits the body when called, after every candidate was measured unmarked.


def _on_last_tool(body: dict[str, Any]) -> Callable[[Mapping[str, Any]], None]:
    def mark(control: Mapping[str, Any]) -> None:
        tools = list(body["tools"])
        tools[-1] = {**tools[-1], "cache_control": dict(control)}
        body["tools"] = tools

    return mark


def _on_system(body: dict[str, Any]) -> Callable[[Mapping[str, Any]], None]:
    def mark(control: Mapping[str, Any]) -> None:
        system = body["system"]
        blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
        blocks[-1] = {**blocks[-1], "cache_control": dict(control)}
        body["system"] = blocks

    return mark


def _on_head(body: dict[str, Any], head: str) -> Callable[[Mapping[str, Any]], None]:
    """Split the first turn's text into the head (marked) and the row's rest.

    The two text blocks read as the one text they were: the model sees them joined.
    """

    def mark(control: Mapping[str, Any]) -> None:
        first = body["messages"][0]
        text = first["content"]
        blocks: list[dict[str, Any]] = [
            {"type": "text", "text": head, "cache_control": dict(control)}
        ]
        if text[len(head) :]:
            blocks.append({"type": "text", "text": text[len(head) :]})
        body["messages"][0] = {**first, "content": blocks}

    return mark


def _on_block(body: dict[str, Any], index: int) -> Callable[[Mapping[str, Any]], None]:
    """Mark block ``index`` of the first turn (the last of its leading files)."""

    def mark(control: Mapping[str, Any]) -> None:
        first = body["messages"][0]
        blocks = list(first["content"])
        blocks[index] = {**blocks[index], "cache_control": dict(control)}
        body["messages"][0] = {**first, "content": blocks}

    return mark


def _on_turn(body: dict[str, Any], index: int, block: int) -> Callable[[Mapping[str, Any]], None]:
    """Mark block ``block`` of turn ``index`` (a string content becomes one text block)."""

    def mark(control: Mapping[str, Any]) -> None:
        turn = body["messages"][index]
        content = turn["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        blocks[block] = {**blocks[block], "cache_control": dict(control)}
        body["messages"][index] = {**turn, "content": blocks}

    return mark
