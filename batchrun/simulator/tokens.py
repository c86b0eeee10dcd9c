"""The simulator's token counts: one method for reply usage, ``count_tokens`` and rate limits.

Its own module because three parts of the simulator must count alike: the ``usage`` of every
reply (``replies``), the ``/v1/messages/count_tokens`` answer, and the ITPM bucket
(``ratelimits``); an estimate checked against the simulator is then exact. The method:

* text is split by the regex ``\\w+|[^\\w\\s]`` (a word or one punctuation mark = 1 token);
* counted text: the system prompt, every text block (or string content) of every message,
  tool_use names and inputs, tool_result contents, text documents, the JSON of the
  tool definitions and of the schema ``output_config.format`` asks for (the API makes a
  prompt of it, billed as input);
* every message adds ``MESSAGE_OVERHEAD`` tokens (role markers in the real prompt format);
* an image block counts ``IMAGE_TOKENS``, a PDF or URL document ``DOCUMENT_TOKENS``;
* thinking blocks of earlier turns count nothing (the API drops them too);
* the total is scaled by the model's ``tokenizer_factor`` from the model table (1.3 for Claude
  4.7 and later, whose tokenizer counts about 30% more tokens for the same text:
  docs/api-facts.md §12.3), rounded up; a body without a model, or a model the table gives
  no factor, is counted as is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from batchrun.simulator.models import packaged_models

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
MESSAGE_OVERHEAD = 3
IMAGE_TOKENS = 1500
DOCUMENT_TOKENS = 1500


def count_text_tokens(text: str) -> int:
    """Tokens in plain text: words and single punctuation marks."""
    return len(TOKEN_RE.findall(text))


def count_input_tokens(body: Mapping[str, Any]) -> int:
    """Input tokens of a checked request body (see the module docstring for the method)."""
    total = _system_tokens(body.get("system"))
    for message in body.get("messages", ()):
        total += MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
    tools = body.get("tools")
    if tools:
        total += count_text_tokens(json.dumps(tools, sort_keys=True))
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, Mapping) else None
    if isinstance(fmt, Mapping) and fmt.get("schema") is not None:
        total += count_text_tokens(json.dumps(fmt["schema"], sort_keys=True))
    model = body.get("model")
    if isinstance(model, str):
        total = math.ceil(total * packaged_models().facts_for(model).tokenizer_factor)
    return max(total, 1)


def _system_tokens(system: object) -> int:
    if isinstance(system, str):
        return count_text_tokens(system)
    if isinstance(system, list):
        return _content_tokens(system)
    return 0


def _content_tokens(content: object) -> int:
    if isinstance(content, str):
        return count_text_tokens(content)
    if isinstance(content, list):
        return sum(_block_tokens(block) for block in content if isinstance(block, dict))
    return 0


def _block_tokens(block: Mapping[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return count_text_tokens(str(block.get("text", "")))
    if kind == "image":
        return IMAGE_TOKENS
    if kind == "document":
        return _document_tokens(block)
    if kind == "tool_use":
        payload = json.dumps(block.get("input", {}), sort_keys=True)
        return count_text_tokens(str(block.get("name", ""))) + count_text_tokens(payload)
    if kind == "tool_result":
        return _content_tokens(block.get("content"))
    if kind in ("thinking", "redacted_thinking"):
        return 0
    if kind == "search_result":
        return count_text_tokens(str(block.get("title", ""))) + _content_tokens(
            block.get("content")
        )
    return count_text_tokens(json.dumps(block, sort_keys=True))


def _document_tokens(block: Mapping[str, Any]) -> int:
    source = block.get("source")
    extra = count_text_tokens(f"{block.get('title') or ''} {block.get('context') or ''}")
    if isinstance(source, dict) and source.get("type") == "text":
        return extra + count_text_tokens(str(source.get("data", "")))
    if isinstance(source, dict) and source.get("type") == "content":
        return extra + _content_tokens(source.get("content"))
    return extra + DOCUMENT_TOKENS
