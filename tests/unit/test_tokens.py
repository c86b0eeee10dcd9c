"""The local input-token estimate: its shape rules, and its error against the simulator's count.

The error bounds below are the ones the module docstring states; if a change to the estimate
or to the sample data moves them, the docstring's table must be re-measured too.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from batchrun import load_config
from batchrun.formats.inputs import read_rows
from batchrun.rows.request import build_request
from batchrun.rows.tokens import (
    DOCUMENT_TOKENS,
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    estimate_input_tokens,
)
from batchrun.simulator import count_input_tokens

JOBS = Path(__file__).resolve().parents[2] / "jobs"
MODEL = "claude-haiku-4-5"


def body(content: Any, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def relative_errors(bodies: list[dict[str, Any]]) -> list[float]:
    errors = []
    for b in bodies:
        counted = count_input_tokens(b)
        errors.append(abs(estimate_input_tokens(b) - counted) / counted)
    return sorted(errors)


def p90(errors: list[float]) -> float:
    return errors[math.ceil(0.9 * len(errors)) - 1]


def sample_bodies(job: str) -> list[dict[str, Any]]:
    config = load_config(JOBS / f"{job}.toml", {"simulate": True})
    return [build_request(row.fields, config.defaults) for row in read_rows(config.input.path)]


@pytest.fixture(scope="module")
def samples() -> dict[str, list[dict[str, Any]]]:
    return {
        job: sample_bodies(job) for job in ("label_sentiment", "summarize_docs", "estimate_costs")
    }


def test_error_against_the_simulators_count_is_what_the_docstring_says(
    samples: dict[str, list[dict[str, Any]]],
) -> None:
    everything = [b for bodies in samples.values() for b in bodies]
    assert len(everything) == 300
    errors = relative_errors(everything)
    assert statistics.median(errors) <= 0.025
    assert p90(errors) <= 0.085
    labels = relative_errors(samples["label_sentiment"])
    assert statistics.median(labels) <= 0.027 and p90(labels) <= 0.085
    docs = relative_errors(samples["summarize_docs"] + samples["estimate_costs"])
    assert statistics.median(docs) <= 0.02 and p90(docs) <= 0.085


def test_tool_definitions_and_tool_use_are_estimated_as_json() -> None:
    tools = [
        {
            "name": "record_label",
            "description": "Record the sentiment label of a review.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
                    "confidence": {"type": "number"},
                },
                "required": ["label", "confidence"],
            },
        }
    ]
    with_tools = body("Great product.", tools=tools)
    plain = body("Great product.")
    added = estimate_input_tokens(with_tools) - estimate_input_tokens(plain)
    counted = count_input_tokens(with_tools) - count_input_tokens(plain)
    assert abs(added - counted) / counted < 0.2
    turn = {"type": "tool_use", "id": "t1", "name": "record_label", "input": {"label": "x"}}
    multi = body("Hi")
    multi["messages"] += [
        {"role": "assistant", "content": [turn]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
        },
    ]
    assert abs(estimate_input_tokens(multi) - count_input_tokens(multi)) <= 4


def test_the_schema_output_config_format_asks_for_is_input_too() -> None:
    # The API makes a prompt of the format's schema and bills it as input: the estimate and
    # the simulator's count both take it, as JSON, as they take a forced tool's definition.
    schema = {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string"},
            "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "score": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["reasoning", "label", "score", "tags"],
        "additionalProperties": False,
    }
    asked = body(
        "Great product.", output_config={"format": {"type": "json_schema", "schema": schema}}
    )
    plain = body("Great product.")
    added = estimate_input_tokens(asked) - estimate_input_tokens(plain)
    counted = count_input_tokens(asked) - count_input_tokens(plain)
    assert counted > 30 and abs(added - counted) / counted < 0.2
    # effort alone adds nothing
    effort = body("Great product.", output_config={"effort": "low"})
    assert estimate_input_tokens(effort) == estimate_input_tokens(plain)
    assert count_input_tokens(effort) == count_input_tokens(plain)


def test_every_message_adds_its_overhead() -> None:
    one = body("same words here")
    two = body("same words here")
    two["messages"] += [
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "same words here"},
    ]
    assert estimate_input_tokens(one) >= MESSAGE_OVERHEAD_TOKENS + 3
    assert estimate_input_tokens(two) - estimate_input_tokens(one) >= 2 * MESSAGE_OVERHEAD_TOKENS


def test_images_and_pdfs_count_fixed_amounts_and_text_documents_their_text() -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "x" * 10_000},
    }
    pdf = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    text_doc = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "word " * 500},
    }
    base = estimate_input_tokens(body([{"type": "text", "text": "Describe."}]))
    assert (
        estimate_input_tokens(body([image, {"type": "text", "text": "Describe."}])) - base
        == IMAGE_TOKENS
    )
    assert (
        estimate_input_tokens(body([pdf, {"type": "text", "text": "Describe."}])) - base
        == DOCUMENT_TOKENS
    )
    assert 450 < estimate_input_tokens(body([text_doc])) < 550


def test_earlier_thinking_counts_nothing() -> None:
    thought = {"type": "thinking", "thinking": "long reasoning " * 1000, "signature": "s"}
    with_thinking = body("Hi")
    with_thinking["messages"] += [
        {"role": "assistant", "content": [thought, {"type": "text", "text": "Hello"}]},
        {"role": "user", "content": "And?"},
    ]
    assert estimate_input_tokens(with_thinking) < 20


def test_system_prompt_as_blocks_and_dense_scripts() -> None:
    as_text = body("Hi", system="Answer in one word please.")
    as_blocks = body("Hi", system=[{"type": "text", "text": "Answer in one word please."}])
    assert estimate_input_tokens(as_text) == estimate_input_tokens(as_blocks)
    # Three UTF-8 bytes per character: CJK text is not under-counted threefold.
    cjk = estimate_input_tokens(body("日本語のテキスト" * 50))
    assert cjk > estimate_input_tokens(body("abcdefgh" * 50)) * 2


def test_odd_bodies_never_break_the_estimate() -> None:
    assert estimate_input_tokens({}) == 1
    assert estimate_input_tokens({"messages": "not a list"}) == 1
    assert estimate_input_tokens({"messages": [None, {"content": None}]}) >= 1
    assert estimate_input_tokens(body([{"type": "mystery", "x": [1, 2]}, "stray"])) >= 1
