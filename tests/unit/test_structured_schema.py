"""--json-schema, the pure parts: the schema as output_config.format takes it (or why not),
the way each model is asked, the answer read from a reply, and the answer's types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchrun.config.load import RunConfig, load_config
from batchrun.core.errors import ConfigError, InvalidRowError
from batchrun.cost.prices import load_prices
from batchrun.engine.outcome import structured_mode_for
from batchrun.rows.request import RequestDefaults, build_request
from batchrun.rows.structured import (
    FORCED_CHOICE,
    FORMAT,
    TOOL,
    AnswerType,
    StructuredRequest,
    answer_fields,
    asked_mode,
    format_schema,
    structured_answer,
    structured_mode,
    with_format,
)
from batchrun.runs.preflight import UnbuildableJobError, check_structured

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["pos", "neg"]},
        "score": {"type": "number"},
        "n": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "ok": {"type": "boolean"},
    },
    "required": ["label", "score"],
}


# -- the decision -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("takes_format", "takes_forced_tool", "mode"),
    [(True, True, FORMAT), (True, False, FORMAT), (False, True, TOOL), (False, False, None)],
)
def test_one_function_decides_how_a_model_is_asked(
    takes_format: bool, takes_forced_tool: bool, mode: str | None
) -> None:
    assert structured_mode(takes_format, takes_forced_tool) == mode


def test_each_model_is_asked_as_its_rules_say(tmp_path: Any) -> None:
    prices = load_prices(None)
    # Sonnet 5.5, Opus 5.5 and Fable take no forced tool: the format, as every known model
    assert structured_mode_for("claude-sonnet-5-5", prices) == FORMAT
    assert structured_mode_for("claude-fable-5-1", prices) == FORMAT
    assert structured_mode_for("claude-haiku-4-5", prices) == FORMAT
    assert structured_mode_for("my-gateway-alias", prices) == FORMAT  # no rules: the API's way
    own = tmp_path / "p.toml"
    own.write_text(
        "[models.my-gateway-old]\ninput = 1\noutput = 1\ncache_write_5m = 1\n"
        'cache_write_1h = 1\ncache_read = 1\neffective_from = 2026-01-01\nsource = "mine"\n'
        "[models.my-gateway-old.rules]\nstructured_outputs = false\n"
        "[models.my-gateway-none]\ninput = 1\noutput = 1\ncache_write_5m = 1\n"
        'cache_write_1h = 1\ncache_read = 1\neffective_from = 2026-01-01\nsource = "mine"\n'
        "[models.my-gateway-none.rules]\nstructured_outputs = false\nforced_tool_choice = false\n",
        encoding="utf-8",
    )
    mine = load_prices(own)
    assert structured_mode_for("my-gateway-old", mine) == TOOL
    assert structured_mode_for("my-gateway-none", mine) is None


# -- what output_config.format takes ----------------------------------------------------------


def test_a_schema_listing_its_keys_is_sent_closed() -> None:
    sent = format_schema(SCHEMA, "s.json")
    assert sent.problem is None and sent.schema is not None
    assert sent.schema == {**SCHEMA, "additionalProperties": False}
    assert "additionalProperties" not in SCHEMA  # the user's schema is left as it is


def test_nested_objects_and_definitions_are_closed_too_and_notes_left_out() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "who": {"$ref": "#/$defs/Person"},
            "where": {"anyOf": [{"type": "object", "properties": {"city": {"type": "string"}}},
                                {"type": "null"}]},
        },
        "$defs": {"Person": {"type": "object", "title": "Person",
                             "properties": {"name": {"type": "string"}}}},
    }  # fmt: skip
    sent = format_schema(schema, "s.json").schema
    assert sent is not None and "$schema" not in sent
    assert sent["additionalProperties"] is False
    assert sent["$defs"]["Person"]["additionalProperties"] is False
    assert sent["properties"]["where"]["anyOf"][0]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"n": {"type": "integer", "minimum": 0}}, "`minimum` at /properties/n"),
        ({"n": {"type": "integer", "multipleOf": 2}}, "`multipleOf` at /properties/n"),
        ({"label": {"type": "string", "maxLength": 5}}, "`maxLength` at /properties/label"),
        ({"tags": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
         "`minItems: 2` at /properties/tags"),
        ({"tags": {"type": "array", "maxItems": 3}}, "`maxItems` at /properties/tags"),
        ({"label": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
         "`oneOf` at /properties/label is not taken by structured outputs: write `anyOf`"),
        ({"meta": {"type": "object", "additionalProperties": True}},
         "`additionalProperties` at /properties/meta must be false"),
        ({"meta": {"type": "object"}}, "an object with no `properties` at /properties/meta"),
        ({"label": {"type": "string", "format": "regex"}}, "`format: regex` at /properties/label"),
        ({"label": {"enum": [{"a": 1}]}}, "`enum` at /properties/label holds a list or an object"),
        ({"who": {"$ref": "https://example.com/person.json"}}, "points outside the schema"),
    ],
)  # fmt: skip
def test_what_the_api_would_refuse_is_named_with_its_file_and_place(
    change: dict[str, Any], said: str
) -> None:
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"], **change}}
    sent = format_schema(schema, "jobs/s.json")
    assert sent.schema is None and sent.problem is not None
    assert sent.problem.startswith("json_schema jobs/s.json: ")
    assert said in sent.problem


def test_a_recursive_schema_is_refused() -> None:
    schema = {
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/Node"}},
        "$defs": {"Node": {"type": "object", "properties": {"kids": {
            "type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
    }  # fmt: skip
    problem = format_schema(schema, "s.json").problem
    assert problem is not None and "recursive" in problem


# -- how the request asks ---------------------------------------------------------------------


def _body(mode: str | None, **defaults: Any) -> dict[str, Any]:
    structured = StructuredRequest.of(SCHEMA, "s.json")
    base = RequestDefaults(model="claude-sonnet-5-5", max_tokens=100, structured=structured)
    for key, value in defaults.items():
        base = RequestDefaults(**{**base.__dict__, key: value})
    return build_request({"prompt": "x"}, base, ask=lambda model: mode)  # type: ignore[arg-type, return-value]


def test_the_format_goes_in_output_config() -> None:
    body = _body(FORMAT)
    assert body["output_config"] == {
        "format": {"type": "json_schema", "schema": {**SCHEMA, "additionalProperties": False}}
    }
    assert "tools" not in body and "tool_choice" not in body
    assert asked_mode(body) == FORMAT


def test_the_format_joins_what_output_config_holds() -> None:
    body = {"output_config": {"effort": "low"}}
    with_format(body, {"type": "object"})
    assert body == {
        "output_config": {"effort": "low", "format": {"type": "json_schema",
                                                      "schema": {"type": "object"}}}
    }  # fmt: skip


def test_a_model_taking_only_a_forced_tool_gets_the_tool() -> None:
    body = _body(TOOL)
    assert body["tool_choice"] == FORCED_CHOICE and body["tools"][0]["input_schema"] == SCHEMA
    assert "output_config" not in body and asked_mode(body) == TOOL


def test_a_row_that_cannot_be_asked_says_why() -> None:
    with pytest.raises(InvalidRowError, match=r"takes neither output_config\.format nor a forced"):
        _body(None)
    with pytest.raises(InvalidRowError, match="cannot be used with tool_choice 'tool'"):
        _body(TOOL, thinking={"type": "enabled", "budget_tokens": 2048}, max_tokens=4000)
    refused = StructuredRequest.of(
        {**SCHEMA, "properties": {"n": {"type": "integer", "minimum": 1}}}, "s.json"
    )
    with pytest.raises(InvalidRowError, match="`minimum` at /properties/n"):
        build_request(
            {"prompt": "x"},
            RequestDefaults(model="m", max_tokens=5, structured=refused),
            ask=lambda model: FORMAT,
        )


# -- the answer ---------------------------------------------------------------------------------


def _text(text: str, stop: str = "end_turn", **more: Any) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "stop_reason": stop, **more}


def test_a_format_answer_is_the_reply_text() -> None:
    reply = {
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": '{"label": "pos", "score": 0.5}'},
        ],
        "stop_reason": "end_turn",
    }
    assert structured_answer(reply, SCHEMA, FORMAT) == ('{"label":"pos","score":0.5}', None, None)


@pytest.mark.parametrize(
    ("reply", "error_type", "said"),
    [
        (_text("", "refusal", stop_details={"type": "refusal", "explanation": "not this"}),
         "refusal", "the model refused to answer (stop_reason refusal): not this"),
        (_text('{"label": "po', "max_tokens"), "max_tokens", "cut off at max_tokens"),
        (_text('{"label": "pos", "score": 1}', "max_tokens"), "max_tokens", "raise max_tokens"),
        (_text("no json"), "schema_mismatch", "the reply's text is not JSON"),
        ({"content": [], "stop_reason": "end_turn"}, "schema_mismatch", "the reply has no text"),
        (_text('{"label": "maybe", "score": 1}'), "schema_mismatch", "'maybe' is not one of"),
    ],
)  # fmt: skip
def test_a_reply_with_no_answer_that_fits_is_an_error_saying_why(
    reply: dict[str, Any], error_type: str, said: str
) -> None:
    answer, got_type, why = structured_answer(reply, SCHEMA, FORMAT, answer_fields(SCHEMA))
    assert answer is None and got_type == error_type
    assert why is not None and said in why


def test_whole_numbers_fill_integer_columns_and_too_large_ones_are_errors() -> None:
    fields = answer_fields(SCHEMA)
    answer, _, _ = structured_answer(_text('{"label":"pos","score":1,"n":3.0}'), SCHEMA, FORMAT,
                                     fields)  # fmt: skip
    assert answer == '{"label":"pos","score":1,"n":3}'
    huge = _text(json.dumps({"label": "pos", "score": 1, "n": 2**70}))
    answer, error_type, why = structured_answer(huge, SCHEMA, FORMAT, fields)
    assert answer is None and error_type == "schema_mismatch"
    assert why is not None and "`n` is 1180591620717411303424, past what a 64-bit" in why


# -- the answer's types -------------------------------------------------------------------------


def test_the_answer_fields_follow_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["pos", "neg"]},
            "score": {"type": "number"},
            "count": {"type": ["integer", "null"]},
            "rank": {"enum": [1, 2, 3]},
            "ratio": {"anyOf": [{"type": "integer"}, {"type": "number"}]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "who": {"$ref": "#/$defs/Person"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "free": {"type": "array"},
        },
        "required": ["label"],
        "$defs": {"Person": {"type": "object", "properties": {"name": {"type": "string"},
                                                               "age": {"type": "integer"}},
                             "required": ["name"]}},
    }  # fmt: skip
    got = {f.name: (f.type, f.required) for f in answer_fields(schema)}
    assert got["label"] == (AnswerType("string"), True)
    assert got["score"] == (AnswerType("number"), False)
    assert got["count"][0] == AnswerType("integer")
    assert got["rank"][0] == AnswerType("integer")
    assert got["ratio"][0] == AnswerType("number")
    assert got["tags"][0] == AnswerType("list", items=AnswerType("string"))
    who = got["who"][0]
    assert who.kind == "object"
    assert [(f.name, f.type.kind, f.required) for f in who.fields] == [
        ("name", "string", True),
        ("age", "integer", False),
    ]
    assert got["note"][0] == AnswerType("string")
    assert got["either"][0] == AnswerType("json")  # no one type: its JSON text
    assert got["free"][0] == AnswerType("list", items=AnswerType("json"))


# -- the job, checked once --------------------------------------------------------------------

_PRICES = (
    "[models.{name}]\ninput = 1\noutput = 1\ncache_write_5m = 1\ncache_write_1h = 1\n"
    'cache_read = 1\neffective_from = 2026-01-01\nsource = "mine"\n'
    "[models.{name}.rules]\n{rules}\n"
)


def _job(tmp_path: Path, schema: dict[str, Any], **flags: Any) -> RunConfig:
    (tmp_path / "s.json").write_text(json.dumps(schema), encoding="utf-8")
    (tmp_path / "p.toml").write_text(
        _PRICES.format(name="gw-tool-only", rules="structured_outputs = false")
        + _PRICES.format(
            name="gw-neither", rules="structured_outputs = false\nforced_tool_choice = false"
        ),
        encoding="utf-8",
    )
    (tmp_path / "in.jsonl").write_text('{"prompt": "x"}\n', encoding="utf-8")
    settings = {"max_tokens": 4096, "json_schema": str(tmp_path / "s.json"),
                "prices": str(tmp_path / "p.toml"), **flags}  # fmt: skip
    return load_config(tmp_path / "in.jsonl", settings, environ={})


def test_a_job_whose_model_cannot_be_asked_stops_once_with_exit_2(tmp_path: Path) -> None:
    thinking = {"type": "enabled", "budget_tokens": 2048}
    for model, more, said in (
        ("gw-neither", {}, "takes neither output_config.format nor a forced tool_choice"),
        ("gw-tool-only", {"thinking": thinking}, "refuses with `thinking`"),
        ("claude-sonnet-5-5", {}, "`minimum` at /properties/n is not taken"),
    ):
        schema = SCHEMA
        if model == "claude-sonnet-5-5":
            schema = {**SCHEMA, "properties": {"n": {"type": "integer", "minimum": 0}}}
        config = _job(tmp_path, schema, model=model, **more)
        with pytest.raises(UnbuildableJobError) as caught:
            check_structured(config)
        assert caught.value.exit_code == 2 and said in str(caught.value)
    # A model that takes the format may think; one that takes only the tool, not thinking
    check_structured(_job(tmp_path, SCHEMA, model="claude-sonnet-5-5", thinking=thinking))
    check_structured(_job(tmp_path, SCHEMA, model="gw-tool-only"))
    # The tool takes any schema: the format's limits do not apply to it
    bounded = {**SCHEMA, "properties": {"n": {"type": "integer", "minimum": 0}}}
    check_structured(_job(tmp_path, bounded, model="gw-tool-only"))


def test_a_kept_column_named_as_an_answer_column_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="`answer_label` is the column of the answer's `label`"):
        _job(tmp_path, SCHEMA, model="claude-sonnet-5-5", keep_columns=["answer_label"])
