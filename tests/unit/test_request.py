"""request.py: row + job defaults -> request body; every rule, all problems at once, the hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from batchrun.config.load import load_config
from batchrun.core.errors import ConfigError, InvalidRowError, Problem
from batchrun.rows.request import (
    PARAM_NAMES,
    ROW_FIELDS,
    RequestDefaults,
    build_request,
    check_defaults,
    prepare_request,
    request_hash,
    template_fields,
)
from batchrun.rows.structured import StructuredRequest

DEFAULTS = RequestDefaults(model="claude-haiku-4-5", max_tokens=100)
USER_HI = [{"role": "user", "content": "hi"}]


def build(fields: dict[str, Any], defaults: RequestDefaults = DEFAULTS) -> dict[str, Any]:
    return build_request(fields, defaults)


def problems(fields: dict[str, Any], defaults: RequestDefaults = DEFAULTS) -> list[Problem]:
    with pytest.raises(InvalidRowError) as info:
        build_request(fields, defaults)
    assert info.value.file is None and info.value.row is None  # the caller locates it
    return info.value.problems


def only(fields: dict[str, Any], defaults: RequestDefaults = DEFAULTS) -> Problem:
    found = problems(fields, defaults)
    assert len(found) == 1, found
    return found[0]


# --- names ---------------------------------------------------------------------------------------


def test_param_and_row_field_names() -> None:
    params = sorted(PARAM_NAMES)
    assert params == [
        "max_tokens",
        "metadata",
        "model",
        "service_tier",
        "stop_sequences",
        "system",
        "temperature",
        "thinking",
        "tool_choice",
        "tools",
        "top_k",
        "top_p",
    ]
    extra = ROW_FIELDS - PARAM_NAMES
    assert extra == {"prompt", "messages", "image", "images", "document"}


# --- the body ------------------------------------------------------------------------------------


def test_prompt_becomes_one_user_message() -> None:
    assert build({"prompt": "hi"}) == {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "messages": USER_HI,
    }


def test_body_keys_come_in_a_stable_order_and_unset_params_are_left_out() -> None:
    defaults = RequestDefaults(
        service_tier="auto",
        thinking={"type": "disabled"},
        top_k=3,
        temperature=0.5,
        system="be brief",
        max_tokens=10,
        model="m",
        stop_sequences=("END",),
    )
    body = build({"prompt": "hi"}, defaults)
    assert list(body) == [
        "model",
        "max_tokens",
        "system",
        "messages",
        "temperature",
        "top_k",
        "stop_sequences",
        "thinking",
        "service_tier",
    ]
    assert "stream" not in body


def test_row_values_override_defaults_and_none_means_not_set() -> None:
    defaults = RequestDefaults(model="a", max_tokens=10, temperature=0.3, system="default")
    body = build(
        {"prompt": "hi", "model": "b", "max_tokens": 20, "temperature": None, "system": "own"},
        defaults,
    )
    assert (body["model"], body["max_tokens"], body["temperature"], body["system"]) == (
        "b",
        20,
        0.3,
        "own",
    )


def test_defaults_are_copied_into_plain_json_values() -> None:
    tool = MappingProxyType({"name": "get_weather", "input_schema": {"type": "object"}})
    defaults = RequestDefaults(
        model="m",
        max_tokens=5,
        stop_sequences=("A", "B"),
        metadata=MappingProxyType({"user_id": "u1"}),
        tools=(tool,),
        tool_choice=MappingProxyType({"type": "auto"}),
    )
    body = build({"prompt": "hi"}, defaults)
    assert body["stop_sequences"] == ["A", "B"]
    assert body["metadata"] == {"user_id": "u1"} and type(body["metadata"]) is dict
    assert body["tools"] == [{"name": "get_weather", "input_schema": {"type": "object"}}]
    assert type(body["tools"][0]) is dict
    json.dumps(body)  # serializable as is


def test_bodies_do_not_share_mutable_state_with_the_row() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    body = build({"messages": messages})
    body["messages"][0]["content"][0]["text"] = "changed"
    assert messages[0]["content"][0]["text"] == "hi"


def test_columns_that_are_not_params_are_ignored_without_a_template() -> None:
    assert build({"prompt": "hi", "title": "x", "word_count": 3}) == build({"prompt": "hi"})


# --- prompt / messages / template: exactly one ---------------------------------------------------


def test_both_prompt_and_messages_is_a_problem() -> None:
    problem = only({"prompt": "hi", "messages": USER_HI})
    assert problem.field == "prompt" and "not both" in problem.message


def test_none_of_prompt_messages_template() -> None:
    assert str(only({"title": "x"})) == "missing prompt or messages (and the job has no template)"


@pytest.mark.parametrize("prompt", ["", "   \n", 5, ["hi"]])
def test_prompt_must_be_a_non_empty_string(prompt: Any) -> None:
    problem = only({"prompt": prompt})
    assert problem.field == "prompt" and "non-empty string" in problem.message


def test_template_fills_columns() -> None:
    defaults = RequestDefaults(model="m", max_tokens=5, template="Summarize {title}:\n\n{body}")
    body = build({"title": "Q3", "body": "Revenue rose."}, defaults)
    assert body["messages"] == [{"role": "user", "content": "Summarize Q3:\n\nRevenue rose."}]


def test_template_escapes_and_value_rendering() -> None:
    template = "{{literal}} {n} {x} {flag} {obj} {items} {{{name}}}"
    defaults = RequestDefaults(model="m", max_tokens=5, template=template)
    fields = {
        "n": 3,
        "x": 1.5,
        "flag": True,
        "obj": {"k": "é"},
        "items": [1, "a"],
        "name": "N",
    }
    content = build(fields, defaults)["messages"][0]["content"]
    assert content == '{literal} 3 1.5 True {"k": "é"} [1, "a"] {N}'


def test_a_template_builds_the_message_of_a_row_with_a_prompt_too() -> None:
    """Issue 23 (2): the template was ignored for rows with a prompt; {prompt} is a column."""
    defaults = RequestDefaults(model="m", max_tokens=5, template="Classify: {prompt}")
    body = build({"prompt": "Loved it", "other": 1}, defaults)
    assert body["messages"] == [{"role": "user", "content": "Classify: Loved it"}]


def test_what_a_template_would_leave_unsent_is_the_rows_problem() -> None:
    """The template builds the user message: a row's messages, or a prompt the template does
    not use, would not be sent; each is refused, never dropped."""
    defaults = RequestDefaults(model="m", max_tokens=5, template="Label: {review}")
    unused = only({"prompt": "own", "review": "ok"}, defaults)
    assert unused.field == "prompt"
    assert "does not use prompt, which would not be sent: put {prompt} in the template" in str(
        unused
    )
    own = only({"messages": USER_HI, "review": "ok"}, defaults)
    assert own.field == "messages" and "cannot also give its own messages" in own.message
    assert "drop the template to send" in own.message  # from Python: no flag named
    both = RequestDefaults(model="m", max_tokens=5, template="{prompt}")
    assert only({"prompt": "x", "messages": USER_HI}, both).field == "messages"


def test_an_empty_template_is_refused_with_the_job() -> None:
    found = check_defaults(RequestDefaults(model="m", max_tokens=5, template=" \n"))
    assert [str(p) for p in found] == [
        "template: is empty: every row's user message would be empty"
    ]


def test_template_missing_columns_are_problems_naming_each_column() -> None:
    defaults = RequestDefaults(model="m", max_tokens=5, template="{title} {body} {title}")
    found = problems({"body": None, "other": 1}, defaults)
    assert [p.field for p in found] == ["body", "title"]
    assert all("the template uses this column" in p.message for p in found)


def test_template_that_fills_to_nothing() -> None:
    defaults = RequestDefaults(model="m", max_tokens=5, template="{body}")
    problem = only({"body": "  "}, defaults)
    assert problem.field == "template" and "empty" in problem.message


def test_invalid_template_is_a_problem_on_every_row() -> None:
    defaults = RequestDefaults(model="m", max_tokens=5, template="{a.b}")
    problem = only({"a": "x"}, defaults)
    assert problem.field == "template" and "plain column names" in problem.message


def test_template_may_use_param_columns() -> None:
    defaults = RequestDefaults(model="m", max_tokens=5, template="Model {model} says hi")
    body = build({"model": "other"}, defaults)
    assert body["model"] == "other"
    assert body["messages"][0]["content"] == "Model other says hi"


# --- template_fields -----------------------------------------------------------------------------


def test_template_fields() -> None:
    assert template_fields("Summarize {title} ({category}):\n\n{body} {title}") == {
        "title",
        "category",
        "body",
    }
    assert template_fields("no fields, {{escaped}}") == frozenset()
    assert template_fields("{product name} {word-count}") == {"product name", "word-count"}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{}", "has no name"),
        ("{0}", "has no name"),
        ("{a.__class__}", "only plain column names"),
        ("{a[0]}", "only plain column names"),
        ("{ a }", "only plain column names"),
        ("{a!r}", "conversions and format specs are not allowed"),
        ("{a:>10}", "conversions and format specs are not allowed"),
        ("{a:{b}}", "conversions and format specs are not allowed"),
        ("{a", "invalid template"),
        ("a}", "invalid template"),
    ],
)
def test_bad_templates(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        template_fields(template)


@pytest.mark.parametrize(
    "template",
    ['Answer as {"label": "positive"}', 'Return {"a": 1}', "Fill {}", 'Use {"a"}', "{a:>10}", "{a"],
)
def test_a_refused_template_says_how_to_write_literal_braces(template: str) -> None:
    with pytest.raises(ValueError, match=r"literal braces.*write \{\{ and \}\}"):
        template_fields(template)


def test_literal_json_written_with_doubled_braces_is_plain_text() -> None:
    defaults = RequestDefaults(model="m", max_tokens=5, template='Return {{"label": "x"}} for {t}')
    body = build_request({"t": "this"}, defaults)
    assert body["messages"][0]["content"] == 'Return {"label": "x"} for this'


def test_a_job_file_template_holding_json_is_refused_with_the_escape_hint(
    tmp_path: Path,
) -> None:
    job = tmp_path / "job.toml"
    job.write_text('input = "x.jsonl"\ntemplate = \'Reply {"a": 1}\'\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"template field \{\"a\": 1\}.*\{\{ and \}\}"):
        load_config(job, environ={})


# --- messages ------------------------------------------------------------------------------------


def test_multi_turn_messages_with_blocks_pass_through() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe", "cache_control": {"type": "ephemeral"}}
            ],
        },
        {"role": "assistant", "content": "It is"},
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]},
        {"role": "assistant", "content": "A"},
    ]
    assert build({"messages": messages})["messages"] == messages


def test_messages_as_json_text_are_decoded() -> None:
    assert build({"messages": json.dumps(USER_HI)})["messages"] == USER_HI


def test_messages_bad_json() -> None:
    problem = only({"messages": "[{'role': 'user'}]"})
    assert problem.field == "messages" and problem.message.startswith("not valid JSON")


@pytest.mark.parametrize("messages", [[], {}, "[]", 5, '{"role": "user"}'])
def test_messages_must_be_a_non_empty_list(messages: Any) -> None:
    problem = only({"messages": messages})
    assert problem.field == "messages" and "non-empty list" in problem.message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"role": "bot", "content": "x"}, "[0].role must be 'user' or 'assistant', not 'bot'"),
        ({"content": "x"}, "[0].role must be 'user' or 'assistant', not null"),
        (
            {"role": "assistant", "content": "x"},
            "[0].role: the first message must come from the user",
        ),
        ({"role": "user", "content": "x", "name": "n"}, "[0] has unknown keys 'name'"),
        ({"role": "user", "content": ""}, "[0].content must not be empty"),
        ({"role": "user", "content": " "}, "[0].content must not be empty"),
        ({"role": "user"}, "[0].content must be a non-empty string or list of content blocks"),
        ({"role": "user", "content": []}, "[0].content must be a non-empty string or list"),
        (
            {"role": "user", "content": [{"text": "x"}]},
            "[0].content[0] must be an object with a 'type'",
        ),
        ({"role": "user", "content": ["x"]}, "[0].content[0] must be an object with a 'type'"),
        ("hello", "[0] must be an object with role and content"),
    ],
)
def test_message_rules(message: Any, expected: str) -> None:
    problem = only({"messages": [message]})
    assert problem.field == "messages"
    assert problem.message.startswith(expected), problem.message


def test_every_message_problem_is_reported() -> None:
    found = problems(
        {"messages": [{"role": "user", "content": ""}, {"role": "x", "content": "y"}, 3]}
    )
    assert [p.message.split(" ")[0] for p in found] == ["[0].content", "[1].role", "[2]"]
    assert {p.field for p in found} == {"messages"}


# --- parameters ----------------------------------------------------------------------------------


def test_model_and_max_tokens_are_required() -> None:
    found = problems({"prompt": "hi"}, RequestDefaults())
    assert [(p.field, p.message) for p in found] == [
        ("model", "required; set it in the job or the row"),
        ("max_tokens", "required; set it in the job or the row"),
    ]


@pytest.mark.parametrize("model", ["", "  ", 3])
def test_model_must_be_a_non_empty_string(model: Any) -> None:
    assert only({"prompt": "hi", "model": model}).field == "model"


@pytest.mark.parametrize("value", [0, -1, True, "5", 5.0, 2.5])
def test_max_tokens_must_be_a_positive_int(value: Any) -> None:
    problem = only({"prompt": "hi", "max_tokens": value})
    assert problem.field == "max_tokens" and "integer of at least 1" in problem.message


@pytest.mark.parametrize("name", ["temperature", "top_p"])
@pytest.mark.parametrize("good", [0, 0.0, 0.7, 1])
def test_unit_interval_params_accept(name: str, good: float) -> None:
    assert build({"prompt": "hi", name: good})[name] == good


@pytest.mark.parametrize("name", ["temperature", "top_p"])
@pytest.mark.parametrize("bad", [-0.1, 1.01, True, "0.5", float("nan"), float("inf")])
def test_unit_interval_params_reject(name: str, bad: Any) -> None:
    problem = only({"prompt": "hi", name: bad})
    assert problem.field == name and "number from 0 to 1" in problem.message


def test_top_k() -> None:
    assert build({"prompt": "hi", "top_k": 0})["top_k"] == 0
    for bad in (-1, 1.5, False, "3"):
        assert only({"prompt": "hi", "top_k": bad}).field == "top_k"


def test_stop_sequences() -> None:
    assert build({"prompt": "hi", "stop_sequences": ["END", "\n\n"]})["stop_sequences"] == [
        "END",
        "\n\n",
    ]
    assert build({"prompt": "hi", "stop_sequences": '["END"]'})["stop_sequences"] == ["END"]
    for bad in ([""], [1], "END", '{"a": 1}', 5):
        assert only({"prompt": "hi", "stop_sequences": bad}).field == "stop_sequences", bad


def test_metadata() -> None:
    assert build({"prompt": "hi", "metadata": {"user_id": "u"}})["metadata"] == {"user_id": "u"}
    assert build({"prompt": "hi", "metadata": '{"user_id": null}'})["metadata"] == {"user_id": None}
    assert build({"prompt": "hi", "metadata": {}})["metadata"] == {}
    assert "unknown keys 'email'" in only({"prompt": "hi", "metadata": {"email": "e"}}).message
    assert "user_id must be a string" in only({"prompt": "hi", "metadata": {"user_id": 3}}).message
    assert only({"prompt": "hi", "metadata": "[1]"}).field == "metadata"


def test_system_string_or_text_blocks() -> None:
    blocks = [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]
    assert build({"prompt": "hi", "system": "be brief"})["system"] == "be brief"
    assert build({"prompt": "hi", "system": blocks})["system"] == blocks
    assert build({"prompt": "hi", "system": json.dumps(blocks)})["system"] == blocks


def test_system_text_starting_with_a_bracket_that_is_not_json_stays_text() -> None:
    assert build({"prompt": "hi", "system": "[Draft] be brief"})["system"] == "[Draft] be brief"


@pytest.mark.parametrize(
    "system",
    [[], [{"type": "image"}], [{"type": "text", "text": ""}], ["text"], 3, '[{"type": "text"}]'],
)
def test_system_bad_values(system: Any) -> None:
    assert only({"prompt": "hi", "system": system}).field == "system"


def test_tools() -> None:
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    assert build({"prompt": "hi", "tools": tools})["tools"] == tools
    assert build({"prompt": "hi", "tools": json.dumps(tools)})["tools"] == tools
    found = problems({"prompt": "hi", "tools": [{"name": ""}, {"description": "x"}, "t"]})
    assert [p.message for p in found] == [
        "[0] must be an object with a non-empty 'name'",
        "[1] must be an object with a non-empty 'name'",
        "[2] must be an object with a non-empty 'name'",
    ]
    assert only({"prompt": "hi", "tools": {"name": "x"}}).field == "tools"


@pytest.mark.parametrize(
    "choice",
    [
        {"type": "auto"},
        {"type": "any", "disable_parallel_tool_use": True},
        {"type": "tool", "name": "get_weather"},
        {"type": "none"},
    ],
)
def test_tool_choice_accepts(choice: dict[str, Any]) -> None:
    assert build({"prompt": "hi", "tool_choice": choice})["tool_choice"] == choice
    assert build({"prompt": "hi", "tool_choice": json.dumps(choice)})["tool_choice"] == choice


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "tool"}, "type 'tool' needs the tool's 'name'"),
        ({"type": "required"}, "type must be one of 'auto', 'any', 'tool', 'none'"),
        ({}, "type must be one of"),
        ("auto", "not valid JSON"),
        (["auto"], "must be an object"),
    ],
)
def test_tool_choice_rejects(choice: Any, expected: str) -> None:
    problem = only({"prompt": "hi", "tool_choice": choice})
    assert problem.field == "tool_choice" and problem.message.startswith(expected), problem


def test_thinking() -> None:
    enabled = {"type": "enabled", "budget_tokens": 1024}
    assert build({"prompt": "hi", "thinking": enabled, "max_tokens": 2000})["thinking"] == enabled
    for other in ({"type": "adaptive"}, {"type": "disabled"}, '{"type": "adaptive"}'):
        assert build({"prompt": "hi", "thinking": other})["thinking"]["type"] in (
            "adaptive",
            "disabled",
        )


@pytest.mark.parametrize(
    ("thinking", "expected"),
    [
        ({"type": "enabled"}, "type 'enabled' needs an integer budget_tokens of at least 1024"),
        ({"type": "enabled", "budget_tokens": 1023}, "type 'enabled' needs an integer"),
        ({"type": "enabled", "budget_tokens": 2048.0}, "type 'enabled' needs an integer"),
        ({"type": "on"}, "type must be one of 'enabled', 'adaptive', 'disabled'"),
        ("enabled", "not valid JSON"),
    ],
)
def test_thinking_rejects(thinking: Any, expected: str) -> None:
    problem = only({"prompt": "hi", "thinking": thinking, "max_tokens": 4096})
    assert problem.field == "thinking" and problem.message.startswith(expected), problem


def test_thinking_budget_must_be_below_max_tokens() -> None:
    problem = only(
        {"prompt": "hi", "thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 2048}
    )
    assert problem == Problem(
        "thinking", "budget_tokens (2048) must be less than max_tokens (2048)"
    )


def test_thinking_budget_against_the_default_max_tokens() -> None:
    defaults = RequestDefaults(
        model="m", max_tokens=1000, thinking={"type": "enabled", "budget_tokens": 1024}
    )
    assert only({"prompt": "hi"}, defaults).field == "thinking"
    assert build({"prompt": "hi", "max_tokens": 5000}, defaults)["max_tokens"] == 5000


def test_service_tier() -> None:
    assert (
        build({"prompt": "hi", "service_tier": "standard_only"})["service_tier"] == "standard_only"
    )
    assert only({"prompt": "hi", "service_tier": "priority"}).field == "service_tier"


# --- all problems in one error -------------------------------------------------------------------


def test_every_problem_is_collected_in_one_error() -> None:
    fields = {
        "prompt": "",
        "max_tokens": 0,
        "temperature": 3,
        "top_k": -1,
        "metadata": {"x": 1},
        "service_tier": "fast",
    }
    with pytest.raises(InvalidRowError) as info:
        build_request(fields, RequestDefaults())
    error = info.value
    assert [p.field for p in error.problems] == [
        "model",
        "max_tokens",
        "prompt",
        "temperature",
        "top_k",
        "metadata",
        "service_tier",
    ]
    located = error.located("in.jsonl", 12)
    text = str(located)
    assert text.startswith("in.jsonl:12: model: required")
    for name in ("max_tokens:", "prompt:", "temperature:", "top_k:", "metadata:", "service_tier:"):
        assert name in text


# --- check_defaults ------------------------------------------------------------------------------


def test_check_defaults() -> None:
    assert check_defaults(RequestDefaults(model="m", max_tokens=5, template="{a}")) == []
    found = check_defaults(RequestDefaults(model="", temperature=2.0, template="{a.b}"))
    assert [p.field for p in found] == ["model", "temperature", "template"]


# --- request_hash --------------------------------------------------------------------------------


def test_request_hash_is_sha256_of_canonical_json() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "héllo"}]}
    canonical = '{"max_tokens":5,"messages":[{"content":"héllo","role":"user"}],"model":"m"}'
    assert request_hash(body) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_request_hash_ignores_key_order_at_every_level_and_stream() -> None:
    a = {"model": "m", "max_tokens": 5, "metadata": {"user_id": "u"}, "messages": USER_HI}
    b = {
        "stream": True,
        "messages": [{"content": "hi", "role": "user"}],
        "metadata": {"user_id": "u"},
        "max_tokens": 5,
        "model": "m",
    }
    assert request_hash(a) == request_hash(b)
    assert len(request_hash(a)) == 64


def test_request_hash_differs_when_the_request_differs() -> None:
    a = build({"prompt": "hi"})
    assert request_hash(a) != request_hash(build({"prompt": "hi", "max_tokens": 101}))
    assert request_hash(a) != request_hash(build({"prompt": "hi "}))


def test_request_hash_of_built_bodies_is_stable() -> None:
    fields = {"prompt": "hi", "tools": '[{"name": "t", "input_schema": {"type": "object"}}]'}
    assert request_hash(build(fields)) == request_hash(build(dict(reversed(fields.items()))))


def test_a_body_holding_a_schema_is_sent_in_its_own_key_order() -> None:
    # The model writes a structured answer's fields in the schema's order: "reasoning"
    # first must reach the API first, not sorted after "label".
    schema = {
        "type": "object",
        "properties": {"reasoning": {"type": "string"}, "label": {"type": "string"}},
        "required": ["reasoning", "label"],
        "additionalProperties": False,
    }
    structured = StructuredRequest.of(schema, "schema.json")
    asked = prepare_request({"prompt": "hi"}, replace(DEFAULTS, structured=structured))
    sent = json.loads(asked.content)
    assert list(sent["output_config"]["format"]["schema"]["properties"]) == ["reasoning", "label"]
    assert sent == asked.body and asked.size == len(asked.content)
    tool = {"name": "t", "input_schema": schema}
    with_tool = prepare_request({"prompt": "hi", "tools": [tool]}, DEFAULTS)
    assert list(json.loads(with_tool.content)["tools"][0]["input_schema"]["properties"]) == [
        "reasoning",
        "label",
    ]
    # The identity stays the canonical JSON's, whatever the order
    assert asked.hash == request_hash(asked.body)
    # A body with no schema is sent as its canonical JSON, encoded once
    plain = prepare_request({"prompt": "hi", "metadata": {"user_id": "u"}}, DEFAULTS)
    assert plain.content == json.dumps(
        plain.body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


# --- typos and the size limit (added with the reliability work) -----------------------------


def test_a_misspelt_parameter_is_named_with_a_suggestion() -> None:
    defaults = RequestDefaults(model="claude-haiku-4-5", max_tokens=5)
    with pytest.raises(InvalidRowError) as caught:
        build_request({"prompt": "hi", "max_token": 9, "topp": 0.5}, defaults)
    text = str(caught.value)
    assert "max_token: unknown field (did you mean `max_tokens`?)" in text
    assert "topp: unknown field (did you mean `top_p`?)" in text


def test_columns_unlike_any_field_or_used_by_the_template_are_fine() -> None:
    defaults = RequestDefaults(model="m", max_tokens=5, template="Rate {prompts}")
    body = build_request({"prompts": "x", "product": "mug", "category": "home"}, defaults)
    assert body["messages"][0]["content"] == "Rate x"


def test_a_request_over_32_mb_is_never_sent() -> None:
    from batchrun.rows.request import MAX_REQUEST_BYTES, prepare_request

    defaults = RequestDefaults(model="m", max_tokens=5)
    small = prepare_request({"prompt": "hi"}, defaults)
    assert small.hash == request_hash(small.body) and small.size < 200
    with pytest.raises(InvalidRowError, match="over the API's 32 MB limit"):
        prepare_request({"prompt": "x" * (MAX_REQUEST_BYTES + 1)}, defaults)


# --- rows that cannot be sent, whatever they hold ----------------------------------------------


def prepared_problems(fields: dict[str, Any], **kwargs: Any) -> list[Problem]:
    from batchrun.rows.request import prepare_request

    with pytest.raises(InvalidRowError) as info:
        prepare_request(fields, DEFAULTS, **kwargs)
    return info.value.problems


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": "x \ud83d"}, "prompt"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\udc80"}]}]},
            "messages",
        ),
        ({"prompt": "hi", "system": "be \ud83d brief"}, "system"),
    ],
)
def test_text_utf8_cannot_encode_is_a_problem_naming_its_field(
    fields: dict[str, Any], field: str
) -> None:
    [problem] = prepared_problems(fields)
    assert problem.field == field
    assert "lone surrogate \\ud" in problem.message and "UTF-8" in problem.message


def test_a_surrogate_from_a_template_column_names_the_column() -> None:
    from batchrun.rows.request import prepare_request

    defaults = RequestDefaults(model="m", max_tokens=5, template="About {title}")
    with pytest.raises(InvalidRowError) as info:
        prepare_request({"title": "cut \ud83d"}, defaults)
    assert [p.field for p in info.value.problems] == ["title"]


def test_a_nul_byte_in_a_file_path_is_a_problem_not_a_crash(tmp_path: Any) -> None:
    source = {"type": "path", "path": "a\x00.png"}
    content = [{"type": "image", "source": source}, {"type": "text", "text": "what?"}]
    [problem] = prepared_problems(
        {"messages": [{"role": "user", "content": content}]}, base_dir=tmp_path
    )
    assert problem.field == "messages"
    assert problem.message.startswith("[0].content[0]: ") and "null" in problem.message
    [problem] = prepared_problems({"prompt": "what?", "image": "b\x00.png"}, base_dir=tmp_path)
    assert problem.field == "image" and "null" in problem.message


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": "hi", "temperature": 10**400}, "temperature"),
        ({"prompt": "hi", "top_p": -(10**400)}, "top_p"),
        ({"prompt": "hi", "max_tokens": 2**63}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 10**5000}, "max_tokens"),
        ({"prompt": "hi", "top_k": 10**30}, "top_k"),
        ({"prompt": "hi", "thinking": {"type": "enabled", "budget_tokens": 10**30}}, "thinking"),
    ],
)
def test_numbers_too_large_are_problems(fields: dict[str, Any], field: str) -> None:
    assert field in [p.field for p in prepared_problems(fields)]


@pytest.mark.parametrize(
    ("fields", "field", "expected"),
    [
        ({"prompt": "hi", "messages": None, "tools": "[" * 100_000}, "tools", "nested deeper"),
        ({"messages": "[" * 100_000 + "]" * 100_000}, "messages", "nested deeper than 128"),
        ({"messages": "[" * 200 + "]" * 200}, "messages", "nested deeper than 128"),
        ({"prompt": "hi", "tools": '[{"name": "t", "x": 1e400}]'}, "tools", "out of range"),
        ({"prompt": "hi", "metadata": '{"user_id": NaN}'}, "metadata", "NaN"),
    ],
)
def test_json_text_too_deep_or_out_of_range_is_a_problem(
    fields: dict[str, Any], field: str, expected: str
) -> None:
    found = [p for p in prepared_problems(fields) if p.field == field]
    assert found and expected in found[0].message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("nan"), "NaN"),
        (b"raw bytes", "bytes"),
    ],
)
def test_values_json_cannot_carry_are_problems_naming_the_field(value: Any, expected: str) -> None:
    tools = [{"name": "t", "input_schema": {"type": "object", "x": value}}]
    [problem] = prepared_problems({"prompt": "hi", "tools": tools})
    assert problem.field == "tools" and expected in problem.message


def test_a_template_column_with_no_json_text_is_a_problem() -> None:
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]
    defaults = RequestDefaults(model="m", max_tokens=5, template="About {title}")
    [problem] = problems({"title": deep}, defaults)
    assert problem.field == "title" and "RecursionError" in problem.message
