"""The simulator and structured outputs: what it takes in ``output_config.format`` (its own
reading of the API's rules), and the answers it makes from a schema."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from batchrun.simulator.checks import InvalidRequest, check_messages_body
from batchrun.simulator.models import models_from_table
from batchrun.simulator.replies import REFUSAL_TRIGGER, answer_for_schema, make_reply

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["pos", "neg"]},
        "score": {"type": "number"},
        "n": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "ok": {"type": "boolean"},
        "when": {"type": "string", "format": "date"},
        "who": {"$ref": "#/$defs/Person"},
        "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
    },
    "required": ["label"],
    "additionalProperties": False,
    "$defs": {
        "Person": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": False,
        }
    },
}


def body(schema: dict[str, Any] = SCHEMA, model: str = "claude-sonnet-5-5", **more: Any) -> Any:
    return {
        "model": model,
        "max_tokens": 400,
        "messages": [{"role": "user", "content": "Label: a fine mug"}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}, **more},
    }


def test_a_format_reply_is_json_that_fits_the_schema_every_field_filled() -> None:
    message = make_reply(body()).message
    assert message["stop_reason"] == "end_turn"
    (block,) = message["content"]
    answer = json.loads(block["text"])
    assert not list(Draft202012Validator(SCHEMA).iter_errors(answer))
    assert set(answer) == set(SCHEMA["properties"]) and answer["when"] == "2026-12-07"
    assert make_reply(body()).message["content"] == message["content"]  # deterministic
    other = {**body(), "messages": [{"role": "user", "content": "Label: a cracked mug"}]}
    answers = [json.loads(make_reply(other).message["content"][0]["text"]), answer]
    assert answers[0] != answers[1]  # drawn from the prompt


def test_a_format_reply_past_max_tokens_is_cut_off() -> None:
    message = make_reply({**body(), "max_tokens": 4}).message
    assert message["stop_reason"] == "max_tokens" and message["usage"]["output_tokens"] == 4
    with pytest.raises(ValueError):
        json.loads(message["content"][0]["text"])


def test_a_prompt_holding_the_trigger_is_refused() -> None:
    refused = {**body(), "messages": [{"role": "user", "content": f"x {REFUSAL_TRIGGER}"}]}
    message = make_reply(refused).message
    assert message["stop_reason"] == "refusal" and message["content"] == []
    assert message["stop_details"]["type"] == "refusal"


def test_answers_fit_their_schema_whatever_the_prompt() -> None:
    for digest in ("0" * 64, "f" * 64, "1234abcd" * 8):
        answer = answer_for_schema(SCHEMA, digest)
        assert not list(Draft202012Validator(SCHEMA).iter_errors(answer))


def test_the_format_is_taken_where_the_table_says() -> None:
    check_messages_body(body(), "2023-06-01")
    models = models_from_table(
        {"models": {"claude-old-1": {"ids": ["claude-old-1-20250101"],
                                     "rules": {"structured_outputs": False}}}}
    )  # fmt: skip
    for model in ("claude-old-1", "claude-old-1-20250101", "claude-old-1-20991231"):
        with pytest.raises(InvalidRequest) as caught:
            check_messages_body(body(model=model), "2023-06-01", models)
        assert caught.value.status == 400 and caught.value.error_type == "invalid_request_error"
        assert "does not support output_config.format" in caught.value.message


@pytest.mark.parametrize(
    ("schema", "said"),
    [
        ({"type": "object", "properties": {"a": {"type": "string"}}},
         "For 'object' type, 'additionalProperties' must be explicitly set to false"),
        ({**SCHEMA, "properties": {"n": {"type": "integer", "minimum": 0}}},
         "'minimum' is not supported"),
        ({**SCHEMA, "$defs": {"P": {"type": "object", "properties": {}}}},
         "output_config.format.schema.$defs.P: For 'object' type"),
    ],
)  # fmt: skip
def test_a_schema_structured_outputs_cannot_decode_is_refused(
    schema: dict[str, Any], said: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_messages_body(body(schema), "2023-06-01")
    assert caught.value.status == 400 and said in caught.value.message


def test_output_config_must_name_a_json_schema() -> None:
    bad = body()
    bad["output_config"]["format"] = {"type": "regex", "schema": {}}
    with pytest.raises(InvalidRequest, match="Input should be 'json_schema'"):
        check_messages_body(bad, "2023-06-01")
