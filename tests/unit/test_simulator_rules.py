"""The simulator knows the model table: each model's request rules answered with the API's 400
(``simulator.rules``), unknown names with 404, the newer tokenizer's counts, and thinking that
a model does by default spending a small max_tokens before any text."""

from __future__ import annotations

from typing import Any

import pytest

from batchrun.simulator.checks import InvalidRequest, check_count_tokens_body, check_messages_body
from batchrun.simulator.models import packaged_models
from batchrun.simulator.replies import make_reply
from batchrun.simulator.tokens import count_input_tokens

VERSION = "2023-06-01"
TOOL = {"name": "label", "input_schema": {"type": "object"}}


def body(model: str = "claude-haiku-5-5", **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Label: great mug"}],
        **extra,
    }


def refusal(request: dict[str, Any], *, batch: bool = False) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        check_messages_body(request, VERSION, batch=batch)
    return caught.value


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        (body(temperature=0), "`temperature` is deprecated for this model."),
        (body(top_p=1.0), "`top_p` is deprecated for this model."),
        (body(top_k=5), "`top_k` is deprecated for this model."),
        (body(temperature=1, top_p=0.99), "`temperature` and `top_p` cannot both be specified"),
        (
            body(thinking={"type": "enabled", "budget_tokens": 1024}, max_tokens=2048),
            '"thinking.type.enabled" is not supported for claude-haiku-5-5. Use '
            '"thinking.type.adaptive"',
        ),
        (
            body(
                messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "{"}]
            ),
            "This model does not support assistant message prefill.",
        ),
        (
            body("claude-sonnet-5-5", tools=[TOOL], tool_choice={"type": "any"}),
            "tool_choice: type 'any' is not supported for claude-sonnet-5-5",
        ),
        (
            body("claude-opus-5-5", thinking={"type": "disabled"}),
            'thinking.type: "disabled" is not supported for claude-opus-5-5',
        ),
        (
            body("claude-opus-4-5", output_config={"effort": "xhigh"}),
            "output_config.effort: 'xhigh' is not supported for claude-opus-4-5",
        ),
        (
            body("claude-haiku-4-5", output_config={"effort": "low"}),
            "output_config.effort: 'low' is not supported for claude-haiku-4-5",
        ),
        (body(output_config={"effort": "huge"}), "output_config.effort: Input should be 'low'"),
        (
            body(max_tokens=200_000),
            "max_tokens: 200000 > 128000, which is the maximum allowed number of output tokens "
            "for claude-haiku-5-5",
        ),
        (  # thinking on, whatever the model
            body("claude-sonnet-4-6", temperature=0.2, thinking={"type": "adaptive"}),
            "temperature may only be set to 1 when thinking is enabled.",
        ),
    ],
)
def test_what_a_model_refuses_is_answered_400(request_body: dict[str, Any], message: str) -> None:
    refused = refusal(request_body)
    assert (refused.status, refused.error_type) == (400, "invalid_request_error")
    assert refused.message.startswith(message)


def test_what_a_model_takes_is_accepted() -> None:
    for request in (
        body(),
        body(temperature=1),
        body(top_p=0.99),
        body(thinking={"type": "adaptive"}, output_config={"effort": "max"}),
        body(thinking={"type": "disabled"}),
        body(tools=[TOOL], tool_choice={"type": "any"}),  # Haiku 5.5 takes a forced tool
        body("claude-sonnet-5-5", thinking={"type": "between_tools"}),
        body("claude-sonnet-4-6", temperature=0.2, top_p=0.9, top_k=5),
        body(
            "claude-haiku-4-5", thinking={"type": "enabled", "budget_tokens": 1024}, max_tokens=2048
        ),
    ):
        assert check_messages_body(request, VERSION) == request


def test_a_gateway_s_own_name_is_checked_for_no_rules() -> None:
    served = packaged_models().with_gateway(["my-gateway-fast"])
    request = body("my-gateway-fast", temperature=0, top_k=3)
    assert check_messages_body(request, VERSION, served) == request


def test_a_batch_request_may_use_the_300k_output_limit() -> None:
    request = body(max_tokens=200_000)
    assert check_messages_body(request, VERSION, batch=True) == request
    assert refusal(body(max_tokens=300_001), batch=True).message.startswith("max_tokens: 300001 >")
    fable = body("claude-fable-5-1", max_tokens=200_000)  # no 300K beta on Fable
    assert refusal(fable, batch=True).message.startswith("max_tokens: 200000 > 128000")


def test_count_tokens_checks_the_rules_too() -> None:
    request = body("claude-opus-5-5", tools=[TOOL], tool_choice={"type": "tool", "name": "label"})
    del request["max_tokens"]
    with pytest.raises(InvalidRequest, match="tool_choice: type 'tool' is not supported"):
        check_count_tokens_body(request, VERSION)


@pytest.mark.parametrize("model", ["claude-haiku-9-9", "claude-sonnet-4-5"])
def test_an_unknown_or_retired_model_is_not_found(model: str) -> None:
    refused = refusal(body(model))
    assert (refused.status, refused.error_type) == (404, "not_found_error")


def test_the_newer_tokenizer_counts_about_30_percent_more() -> None:
    text = "The mug arrived chipped, but the seller replaced it within a week. " * 20
    old = count_input_tokens(body("claude-haiku-4-5", messages=[{"role": "user", "content": text}]))
    new = count_input_tokens(body("claude-haiku-5-5", messages=[{"role": "user", "content": text}]))
    assert new == -(-old * 13 // 10)  # 1.3x, rounded up


def test_a_model_that_thinks_by_default_spends_a_small_max_tokens_thinking() -> None:
    """Haiku 5.5 thinks without being asked (effort medium by default): with max_tokens 5 the
    reply is a thinking block and no text, cut at max_tokens."""
    message = make_reply(body(max_tokens=5)).message
    assert [b["type"] for b in message["content"]] == ["thinking"]
    assert message["stop_reason"] == "max_tokens"
    assert message["usage"]["output_tokens"] == 5
    roomy = make_reply(body(max_tokens=1024)).message
    assert [b["type"] for b in roomy["content"]] == ["thinking", "text"]
    assert roomy["content"][1]["text"].startswith("re:") and roomy["stop_reason"] == "end_turn"
    off = make_reply(body(max_tokens=5, thinking={"type": "disabled"})).message
    assert [b["type"] for b in off["content"]] == ["text"]
    low = make_reply(body(max_tokens=64, output_config={"effort": "low"})).message
    medium = make_reply(body(max_tokens=64)).message
    assert len(low["content"][0]["thinking"].split()) < len(
        medium["content"][0]["thinking"].split()
    )
    older = make_reply(body("claude-haiku-4-5", max_tokens=5)).message  # thinks only when asked
    assert [b["type"] for b in older["content"]] == ["text"]
