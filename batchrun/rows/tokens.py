"""A local, fast estimate of a request's input tokens; pure.

Rate-limit admission needs a request's input tokens before it is sent (the API charges its
ITPM bucket at the start of a request, docs/api-facts.md §7.1), and cost estimates need them for
every row of a job. Counting them exactly takes a ``count_tokens`` round trip per row, so this
estimates from the body alone, in one pass over its strings (about 2 microseconds per row).

Method
    * text (system prompt, string contents, text blocks, text documents, tool results):
      its UTF-8 length / ``CHARS_PER_TOKEN``. UTF-8 bytes rather than characters, so that
      scripts which tokenise densely (CJK, emoji) are not under-counted three times over;
    * structured JSON (tool definitions, ``tool_use`` inputs, the schema of
      ``output_config.format``, which the API turns into a prompt of its own and bills as
      input: docs/api-facts.md §13.1): the length of its JSON text / ``JSON_CHARS_PER_TOKEN``,
      since braces, quotes and colons each cost a token;
    * every message adds ``MESSAGE_OVERHEAD_TOKENS`` (role markers);
    * an image block counts ``IMAGE_TOKENS``, a PDF or URL document ``DOCUMENT_TOKENS``
      (their real cost depends on pixels and pages, which the body does not show cheaply);
    * thinking blocks of earlier turns count nothing (the API drops them).

Calibration
    Against the simulator's own counter (``batchrun.simulator.count_input_tokens``) over every
    row of the three sample jobs (``jobs/*.toml`` over ``sample_data/``: 300 bodies, short
    reviews with a system prompt and long templated documents), ``CHARS_PER_TOKEN`` is the
    value that minimises the median relative error ``|estimate - count| / count``. Measured:

    ==========================  ======  =====
    bodies                      median  p90
    ==========================  ======  =====
    all 300                     2.3 %   8.1 %
    label_sentiment (200)       2.5 %   8.1 %
    summarize / estimate (100)  1.6 %   8.2 %
    ==========================  ======  =====

    ``tests/test_tokens.py`` re-measures this on every run, so the table cannot drift from
    the code. ``JSON_CHARS_PER_TOKEN`` was fitted the same way on tool definitions and
    ``tool_use`` turns (median 5 %, worst 17 % over the six in the test).

    The simulator counts a word or a punctuation mark as one token (about 5 characters per
    token of English prose); Claude's own tokenizer packs English tighter (about 3.5-4), so
    against the real API this estimate runs low by roughly a quarter. Claude 4.7 and later
    count about 30% more tokens for the same text (docs/api-facts.md §12.3): the estimate is
    scaled by the model's ``factor``, and the simulator counts their tokens the same way.
    The rate limiter does not rely on it being right: it learns the ratio of counted to
    estimated tokens from every response (``batchrun.limits``) and reserves corrected
    amounts.

    >>> estimate_input_tokens({"model": "claude-haiku-4-5", "max_tokens": 5,
    ...                        "messages": [{"role": "user", "content": "Hello there"}]})
    6
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

CHARS_PER_TOKEN = 5.05
"""UTF-8 bytes of prose per token (calibrated, see the module docstring)."""

JSON_CHARS_PER_TOKEN = 2.3
"""Characters of compact JSON per token: punctuation-heavy text tokenises densely."""

MESSAGE_OVERHEAD_TOKENS = 3
IMAGE_TOKENS = 1600
"""An image of about 1.15 megapixels, the size the API scales larger images down to."""

DOCUMENT_TOKENS = 1500
"""A PDF or URL document whose pages the body does not show."""


def estimate_input_tokens(body: Mapping[str, Any], factor: float = 1.0) -> int:
    """Estimated input tokens of a Messages request body (see the module docstring); >= 1.

    ``factor``: the body's model's tokens per token of the older tokenizer this estimate is
    calibrated for (1.3 for Claude 4.7 and later: docs/api-facts.md §12.3), from the model
    table (``cost.models.tokenizer_factor``, which this layer cannot import)."""
    prose = _text_size(body.get("system"))
    structured = 0
    fixed = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            fixed += MESSAGE_OVERHEAD_TOKENS
            if isinstance(message, Mapping):
                p, s, f = _content_size(message.get("content"))
                prose, structured, fixed = prose + p, structured + s, fixed + f
    tools = body.get("tools")
    if tools:
        structured += _json_size(tools)
    schema = _format_schema(body)
    if schema is not None:
        structured += _json_size(schema)
    tokens = prose / CHARS_PER_TOKEN + structured / JSON_CHARS_PER_TOKEN + fixed
    return max(math.ceil(tokens * factor), 1)


def _format_schema(body: Mapping[str, Any]) -> Any:
    """The schema ``output_config.format`` asks the answer to fit, or None."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, Mapping) else None
    return fmt.get("schema") if isinstance(fmt, Mapping) else None


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _json_size(value: Any) -> int:
    try:
        return _utf8_len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
    except (TypeError, ValueError):
        return _utf8_len(str(value))


def _text_size(value: object) -> int:
    """Prose bytes of a system prompt: a string, or a list of text blocks."""
    if isinstance(value, str):
        return _utf8_len(value)
    if isinstance(value, list):
        return sum(_content_size(value)[:2])
    return 0


def _content_size(content: object) -> tuple[int, int, int]:
    """(prose bytes, JSON bytes, fixed tokens) of a message's content."""
    if isinstance(content, str):
        return _utf8_len(content), 0, 0
    prose = structured = fixed = 0
    if isinstance(content, list):
        for block in content:
            if isinstance(block, Mapping):
                p, s, f = _block_size(block)
                prose, structured, fixed = prose + p, structured + s, fixed + f
    return prose, structured, fixed


def _block_size(block: Mapping[str, Any]) -> tuple[int, int, int]:
    kind = block.get("type")
    if kind == "text":
        return _utf8_len(str(block.get("text", ""))), 0, 0
    if kind == "image":
        return 0, 0, IMAGE_TOKENS
    if kind == "document":
        return _document_size(block)
    if kind == "tool_use":
        return _utf8_len(str(block.get("name", ""))), _json_size(block.get("input", {})), 0
    if kind == "tool_result":
        return _content_size(block.get("content"))
    if kind in ("thinking", "redacted_thinking"):
        return 0, 0, 0
    if kind == "search_result":
        prose, structured, fixed = _content_size(block.get("content"))
        return prose + _utf8_len(str(block.get("title", ""))), structured, fixed
    return 0, _json_size(dict(block)), 0


def _document_size(block: Mapping[str, Any]) -> tuple[int, int, int]:
    source = block.get("source")
    label = _utf8_len(f"{block.get('title') or ''} {block.get('context') or ''}")
    if isinstance(source, Mapping) and source.get("type") == "text":
        return label + _utf8_len(str(source.get("data", ""))), 0, 0
    if isinstance(source, Mapping) and source.get("type") == "content":
        prose, structured, fixed = _content_size(source.get("content"))
        return label + prose, structured, fixed
    return label, 0, DOCUMENT_TOKENS
