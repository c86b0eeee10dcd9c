"""The per-row shortcuts of preparing a request give what the full walk gives: the same
bodies (so the same request_hash), the same rule breaks, the same cache-mark counts."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from typing import Any

import pytest

from batchrun.core.errors import InvalidRowError, Problem
from batchrun.cost.models import rule_breaks
from batchrun.cost.prices import default_prices
from batchrun.rows import request as request_module
from batchrun.rows.checks import CHECKS, Invalid
from batchrun.rows.prefix import SharedParts, breakpoints_by_part
from batchrun.rows.request import (
    RequestDefaults,
    build_request,
    prepare_request,
    request_hash,
    shared_parts,
)

_ORDER = request_module._BODY_ORDER


def _settings_as_before(
    fields: Mapping[str, Any], defaults: RequestDefaults, leave_out: Collection[str]
) -> tuple[dict[str, Any], list[Problem]]:
    """build_request's walk over every parameter, as it was before the job's plan."""
    body: dict[str, Any] = {}
    problems: list[Problem] = []
    for name in _ORDER:
        if name == "messages":
            continue
        value = None if name in leave_out else fields.get(name)
        if value is None and name not in leave_out:
            value = getattr(defaults, name)
        if value is None:
            if name in ("model", "max_tokens"):
                problems.append(Problem(name, "required; set it in the job or the row"))
            continue
        try:
            checked = CHECKS[name](value)
        except Invalid as exc:
            problems.extend(Problem(name, reason) for reason in exc.reasons)
            continue
        if name == "system" and isinstance(checked, str) and not checked.strip():
            continue
        body[name] = checked
    return body, problems


JOBS = [
    RequestDefaults(model="claude-haiku-4-5", max_tokens=16),
    RequestDefaults(model="claude-sonnet-4-5", max_tokens=64, temperature=0.5, system="Be brief."),
    RequestDefaults(max_tokens=8, top_k=5, stop_sequences=("END",), metadata={"user_id": "u"}),
    RequestDefaults(),
]
ROWS: list[dict[str, Any]] = [
    {"prompt": "Hi"},
    {"prompt": "Hi", "model": "claude-opus-4-1"},
    {"prompt": "Hi", "max_tokens": None, "temperature": 0.2},
    {"prompt": "Hi", "top_p": 0.9, "top_k": "3", "system": "   "},
    {"prompt": "Hi", "temperature": 7, "max_tokens": 0, "service_tier": "auto"},
    {"prompt": "Hi", "title": "a template column", "model": ""},
    {"messages": [{"role": "user", "content": "Hi"}], "metadata": {"user_id": "x"}},
]


@pytest.mark.parametrize("leave_out", [(), ("temperature", "top_p"), ("model",)])
def test_bodies_are_the_full_walk_s_whichever_job_came_before(leave_out: tuple[str, ...]) -> None:
    # Jobs alternate, so the remembered plan is another job's as often as its own.
    for defaults, fields in itertools.product(JOBS * 2, ROWS):
        expected, expected_problems = _settings_as_before(fields, defaults, leave_out)
        try:
            body = build_request(fields, defaults, leave_out=leave_out)
        except InvalidRowError as exc:
            settings = [p for p in exc.problems if p.field in request_module.PARAM_NAMES]
            assert settings == expected_problems, (defaults, fields)
            continue
        assert not expected_problems, (defaults, fields)
        assert {k: v for k, v in body.items() if k != "messages"} == expected
        assert [k for k in body if k != "messages"] == list(expected)  # body order too
        assert prepare_request(fields, defaults, leave_out=leave_out).hash == request_hash(body)


def _rules() -> list[Any]:
    return [p.rules for p in default_prices().models() if p.rules is not None]


BODIES: list[dict[str, Any]] = [
    {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]},
    {"max_tokens": 10**9, "messages": [{"role": "user", "content": "Hi"}]},
    {"model": "m", "max_tokens": 300_000, "messages": []},
    {"model": "m", "max_tokens": "16", "messages": "not a list"},
    {
        "model": "m",
        "max_tokens": 64_001,
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "{"}],
    },
    {"model": "m", "max_tokens": True, "messages": [{"role": "assistant", "content": "x"}]},
]


@pytest.mark.parametrize("batch_beta", [False, True])
def test_rule_breaks_of_a_row_without_ruled_settings_are_the_full_check_s(
    batch_beta: bool,
) -> None:
    for rules, body in itertools.product(_rules(), BODIES):
        # An empty output_config is no setting, but takes the full path through the checks.
        full = rule_breaks({**body, "output_config": {}}, rules, batch_beta=batch_beta)
        assert rule_breaks(body, rules, batch_beta=batch_beta) == full


def _marks_as_before(body: Mapping[str, Any]) -> dict[str, int]:
    def marked(blocks: Any) -> int:
        if not isinstance(blocks, (list, tuple)):
            return 0
        count = 0
        for block in blocks:
            if not isinstance(block, Mapping):
                continue
            count += block.get("cache_control") is not None
            count += marked(block.get("content"))
            source = block.get("source")
            if isinstance(source, Mapping):
                count += marked(source.get("content"))
        return count

    counts = {
        "cache_control": int(body.get("cache_control") is not None),
        "tools": marked(body.get("tools")),
        "system": marked(body.get("system")),
        "messages": sum(
            marked(turn.get("content"))
            for turn in body.get("messages") or ()
            if isinstance(turn, Mapping)
        ),
    }
    return {part: n for part, n in counts.items() if n}


MARK = {"type": "ephemeral"}
MARKED: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "Hi"}]},
    {"cache_control": MARK, "system": "text", "messages": None},
    {
        "tools": [{"name": "t", "cache_control": MARK}, "odd", {"name": "u"}],
        "system": [{"type": "text", "text": "s", "cache_control": MARK}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a", "cache_control": MARK}]},
            "not a turn",
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "content": [{"type": "text", "cache_control": MARK}]},
                    {"type": "document", "source": {"content": [{"cache_control": MARK}]}},
                ],
            },
        ],
    },
    {"tools": ({"cache_control": MARK},), "system": 5, "messages": ({"content": None},)},
]


@pytest.mark.parametrize("body", MARKED)
def test_cache_marks_are_counted_as_before_and_in_the_same_order(body: dict[str, Any]) -> None:
    assert list(breakpoints_by_part(body).items()) == list(_marks_as_before(body).items())


def test_shared_parts_are_what_each_row_shares_with_the_job() -> None:
    template = RequestDefaults(model="m", max_tokens=1, template="Classify: {prompt}")
    tools = RequestDefaults(model="m", max_tokens=1, tools=({"name": "t"},), system="s")
    assert shared_parts({"prompt": "x"}, template) == SharedParts(template_head="Classify: ")
    assert shared_parts({"prompt": "x", "image": "a.png"}, template) == SharedParts(
        leading_files=True
    )
    assert shared_parts({"messages": []}, template) == SharedParts(leading_turns=True)
    assert shared_parts({"prompt": "x"}, tools) == SharedParts(tools=True, system=True)
    assert shared_parts({"prompt": "x", "tools": "[]", "system": "t"}, tools) == SharedParts()
    assert shared_parts({"prompt": "x"}, tools) is shared_parts({"prompt": "y"}, tools)
