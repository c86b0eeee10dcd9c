"""A request against its model's rules, before sending (``cost.models``): what each model
refuses, named with its fix; the job's settings and ``--drop-unsupported``; ``--effort`` in
the request; the thinking a model does by default, its warning and the estimate's assumption;
the newer tokenizer in the local estimate; an answer thinking left empty is an error row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchrun.config.settings import BY_KEY
from batchrun.core.errors import InvalidRowError
from batchrun.core.wording import command_line
from batchrun.cost.models import (
    THINKING_TOKENS_ASSUMED,
    assumed_thinking_tokens,
    check_row_model,
    dropped_for_job,
    job_rule_breaks,
    local_input_tokens,
    model_rules,
    rule_breaks,
    thinking_room_warning,
    unsupported_sampling,
)
from batchrun.cost.prices import default_prices, load_prices
from batchrun.engine.outcome import EMPTY_ANSWER, RowSettings, Work, ok_row
from batchrun.rows.reader import InputRow
from batchrun.rows.request import RequestDefaults, build_request, check_defaults
from batchrun.rows.tokens import estimate_input_tokens
from batchrun.store.resume import job_settings

PRICES = default_prices()
FLAGS = {key: f"--{key.replace('_', '-')}" for key in BY_KEY}
TOOL = {"name": "label", "input_schema": {"type": "object"}}


def request(model: str = "claude-haiku-5-5", **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": "Label: great mug"}],
        **extra,
    }


def breaks(body: dict[str, Any], *, batch_beta: bool = False) -> list[str]:
    rules = model_rules(body["model"], PRICES)
    assert rules is not None
    with command_line(FLAGS):
        return [b.for_job() for b in rule_breaks(body, rules, batch_beta=batch_beta)]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            request(temperature=0),
            "temperature: only 1 on claude-haiku-5-5; remove --temperature or pass "
            "--drop-unsupported to send without it",
        ),
        (request(top_p=1.0), "top_p: only 0.99 on claude-haiku-5-5; remove --top-p or pass"),
        (request(top_k=5), "top_k: not taken by claude-haiku-5-5; remove --top-k or pass"),
        (
            request(temperature=1, top_p=0.99),
            "top_p: claude-haiku-5-5 takes temperature or top_p, not both; remove --top-p",
        ),
        (
            request("claude-haiku-4-5", temperature=0.5, top_p=0.9),
            "top_p: claude-haiku-4-5 takes temperature or top_p, not both",
        ),
        (
            request(thinking={"type": "enabled", "budget_tokens": 1024}),
            "thinking: budgeted thinking (type 'enabled') is refused by claude-haiku-5-5; use "
            '--thinking \'{"type": "adaptive"}\' with --effort LEVEL',
        ),
        (
            request("claude-opus-4-5", thinking={"type": "adaptive"}),
            "thinking: adaptive thinking is refused by claude-opus-4-5; use --thinking",
        ),
        (
            request("claude-fable-5-1", thinking={"type": "disabled"}),
            "thinking: claude-fable-5-1 always thinks: thinking cannot be turned off; remove "
            "--thinking, and pass --effort low to think least",
        ),
        (
            request(
                "claude-sonnet-4-6",
                messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "{"}],
            ),
            "messages: the conversation ends with an assistant turn (a prefill), which "
            "claude-sonnet-4-6 refuses; end it with the user's turn",
        ),
        (
            request("claude-opus-5-5", tools=[TOOL], tool_choice={"type": "tool", "name": "label"}),
            "tool_choice: 'tool' forces a tool, which claude-opus-5-5 refuses; use "
            '--tool-choice \'{"type": "auto"}\' and ask for the tool in the prompt',
        ),
        (
            request("claude-opus-4-5", output_config={"effort": "max"}),
            "effort: 'max' is not one of claude-opus-4-5's levels (low, medium, high); pass "
            "--effort high or lower",
        ),
        (
            request(max_tokens=200_000),
            "max_tokens: 200,000 is more than claude-haiku-5-5 writes in one answer (128,000 "
            "tokens); lower --max-tokens N, or send it as a Message Batch (--via batches "
            "--betas output-300k-2026-03-24: up to 300,000)",
        ),
        (
            request("claude-sonnet-4-6", temperature=0.3, thinking={"type": "adaptive"}),
            "temperature: only 1 when thinking is on",
        ),
    ],
)
def test_what_a_model_refuses_is_named_with_its_fix(body: dict[str, Any], said: str) -> None:
    found = breaks(body)
    assert len(found) == 1, found
    assert found[0].startswith(said), found[0]


def test_what_a_model_takes_breaks_nothing() -> None:
    for body in (
        request(),
        request(temperature=1),
        request(top_p=0.99),
        request(thinking={"type": "adaptive"}, output_config={"effort": "xhigh"}),
        request(tools=[TOOL], tool_choice={"type": "any"}),  # Haiku 5.5 takes a forced tool
        request("claude-sonnet-5-5", thinking={"type": "between_tools"}),
        request("claude-sonnet-4-6", temperature=0.2, top_p=0.9, top_k=5),
        request(
            "claude-haiku-4-5",
            messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "{"}],
        ),
    ):
        assert breaks(body) == [], body
    assert breaks(request(max_tokens=200_000), batch_beta=True) == []


def test_a_row_is_refused_naming_each_field_and_a_gateway_alias_is_checked_for_none(
    tmp_path: Path,
) -> None:
    with pytest.raises(InvalidRowError) as caught:
        check_row_model(request(temperature=0, top_k=3), PRICES)
    assert [p.field for p in caught.value.problems] == ["temperature", "top_k"]
    check_row_model(request("my-gateway-fast", temperature=0), PRICES)  # no rules: none broken
    path = tmp_path / "p.toml"
    path.write_text(
        "[models.my-gateway-fast]\ninput = 1\noutput = 5\n"
        "[models.my-gateway-fast.rules]\ntemperature = [1, 1]\n"
        '[models.claude-haiku-5-5]\nids = ["gw-haiku"]\n',  # a gateway's name for a known one
        encoding="utf-8",
    )
    table = load_prices(path)
    with pytest.raises(InvalidRowError, match="only 1 on my-gateway-fast"):
        check_row_model(request("my-gateway-fast", temperature=0), table)
    with pytest.raises(InvalidRowError, match="only 1 on gw-haiku"):  # Haiku 5.5's rules
        check_row_model(request("gw-haiku", temperature=0), table)


def test_drop_unsupported_leaves_out_sampling_only() -> None:
    job = RequestDefaults(model="claude-haiku-5-5", max_tokens=2048, temperature=0, top_k=4)
    assert [b.field for b in job_rule_breaks(job, PRICES)] == ["temperature", "top_k"]
    assert dropped_for_job(job, PRICES) == []  # not asked for: nothing dropped
    dropping = RequestDefaults(
        model="claude-haiku-5-5",
        max_tokens=2048,
        temperature=0,
        top_k=4,
        thinking={"type": "enabled", "budget_tokens": 1024},
        drop_unsupported=True,
    )
    # Sampling is dropped; budgeted thinking is not a sampling setting: still refused.
    assert [b.field for b in job_rule_breaks(dropping, PRICES)] == ["thinking"]
    assert [b.field for b in dropped_for_job(dropping, PRICES)] == ["temperature", "top_k"]
    row = {"model": "claude-opus-5-5", "temperature": 0.5, "top_p": 0.5, "top_k": None}
    assert unsupported_sampling(row, PRICES) == ("temperature", "top_p")
    assert unsupported_sampling({**row, "model": "claude-sonnet-4-6"}, PRICES) == ()
    body = build_request(
        {"prompt": "x"}, RequestDefaults(model="claude-haiku-5-5", max_tokens=9, temperature=0),
        leave_out=("temperature",),
    )  # fmt: skip
    assert "temperature" not in body


def test_effort_goes_in_output_config_and_is_checked() -> None:
    defaults = RequestDefaults(model="claude-haiku-5-5", max_tokens=64, effort="low")
    assert build_request({"prompt": "x"}, defaults)["output_config"] == {"effort": "low"}
    assert "output_config" not in build_request({"prompt": "x"}, RequestDefaults("m", 9))
    (problem,) = check_defaults(RequestDefaults(max_tokens=9, effort="huge"))
    assert str(problem) == "effort: must be one of low, medium, high, xhigh, max, not 'huge'"


def test_settings_added_later_keep_an_older_output_s_fingerprint() -> None:
    plain = RequestDefaults(model="claude-haiku-4-5", max_tokens=9)
    assert "effort" not in job_settings(plain) and "drop_unsupported" not in job_settings(plain)
    changed = job_settings(RequestDefaults(model="claude-haiku-4-5", max_tokens=9, effort="low"))
    assert changed["effort"] == "low"


# --- thinking and max_tokens ---------------------------------------------------------------


def test_the_thinking_a_request_is_assumed_to_do() -> None:
    haiku5 = model_rules("claude-haiku-5-5", PRICES)
    assert assumed_thinking_tokens(request(), haiku5) == THINKING_TOKENS_ASSUMED["medium"]
    low = request(output_config={"effort": "low"})
    assert assumed_thinking_tokens(low, haiku5) == THINKING_TOKENS_ASSUMED["low"]
    assert assumed_thinking_tokens(request(max_tokens=5), haiku5) == 5  # at most max_tokens
    assert assumed_thinking_tokens(request(thinking={"type": "disabled"}), haiku5) == 0
    older = model_rules("claude-sonnet-4-6", PRICES)
    assert assumed_thinking_tokens(request("claude-sonnet-4-6"), older) == 0  # off by default
    adaptive = request("claude-sonnet-4-6", thinking={"type": "adaptive"})
    assert assumed_thinking_tokens(adaptive, older) == THINKING_TOKENS_ASSUMED["high"]
    budgeted = request("claude-sonnet-4-6", thinking={"type": "enabled", "budget_tokens": 1024})
    assert assumed_thinking_tokens(budgeted, older) == 0  # its budget is its own
    assert assumed_thinking_tokens(request("my-gateway-fast"), None) == 0


def test_a_max_tokens_thinking_would_use_up_is_warned_of() -> None:
    with command_line(FLAGS):
        haiku = thinking_room_warning(RequestDefaults("claude-haiku-5-5", 5), PRICES)
        opus = thinking_room_warning(RequestDefaults("claude-opus-5-5", 500), PRICES)
        assert thinking_room_warning(
            RequestDefaults("claude-haiku-5-5", 1280, effort="low"), PRICES
        ) is None  # fmt: skip
        assert thinking_room_warning(RequestDefaults("claude-haiku-4-5", 5), PRICES) is None
        assert thinking_room_warning(RequestDefaults("my-gateway-fast", 5), PRICES) is None
    assert haiku == (
        "batchrun: warning: claude-haiku-5-5 thinks before it answers (adaptive thinking is on "
        "by default, at effort medium, its default), and its thinking counts toward "
        "max_tokens: 5 may leave no room for the answer, which then comes back empty (an error "
        "row, paid for). To leave room, pass --effort low and --max-tokens 1280, or turn "
        'thinking off with --thinking \'{"type": "disabled"}\'.'
    )
    assert opus is not None and "(it always thinks, at effort medium)" in opus
    assert "turn thinking off" not in opus  # Opus 5.5 cannot


def test_the_local_estimate_counts_on_the_model_s_tokenizer() -> None:
    text = "The mug arrived chipped, but the seller replaced it within a week. " * 30
    old = request("claude-haiku-4-5", messages=[{"role": "user", "content": text}])
    new = {**old, "model": "claude-haiku-5-5"}
    assert local_input_tokens(old, PRICES) == estimate_input_tokens(old)
    assert local_input_tokens(new, PRICES) == estimate_input_tokens(new, 1.3)
    assert local_input_tokens(new, PRICES) / local_input_tokens(old, PRICES) == pytest.approx(
        1.3, abs=0.01
    )
    assert local_input_tokens({**old, "model": "my-gateway-fast"}, PRICES) == local_input_tokens(
        old, PRICES
    )


# --- an answer left empty --------------------------------------------------------------------


def _row_for(message: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    settings = RowSettings(
        file="in.jsonl", defaults=RequestDefaults(), media=Path("."), prices=PRICES
    )
    work = Work(InputRow(0, 1, "r0", {}), body, "hash", None)
    return ok_row(work, settings, message)


def _message(content: list[dict[str, Any]], stop_reason: str, output: int) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-5-5",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": output},
    }


def test_an_answer_thinking_left_empty_is_an_error_row_saying_so() -> None:
    thought = {"type": "thinking", "thinking": "", "signature": "sig"}
    with command_line(FLAGS):
        row = _row_for(_message([thought], "max_tokens", 5), request(max_tokens=5))
        budget = request("claude-sonnet-4-6", thinking={"type": "enabled", "budget_tokens": 1024})
        budgeted = _row_for(_message([thought], "max_tokens", 2048), budget)
        bare = _row_for(_message([], "max_tokens", 1), request(max_tokens=1))
    assert (row["status"], row["error_type"]) == ("error", EMPTY_ANSWER)
    assert row["error_message"] == (
        "the answer is empty: thinking used all 5 max_tokens (5 output tokens, paid) before any "
        "text; raise --max-tokens N, or pass --effort low where the model takes it"
    )
    assert row["cost_usd"] == pytest.approx((10 * 0.10 + 5 * 0.50) / 1e6)  # paid, and said
    assert "lower thinking's budget_tokens" in budgeted["error_message"]
    assert bare["error_message"] == (
        "the answer is empty: it reached max_tokens (1) before any text; raise --max-tokens N"
    )
    # Thinking first, then the text: an answer, read from its text block.
    text = {"type": "text", "text": "positive"}
    answered = _row_for(_message([thought, text], "end_turn", 40), request())
    assert (answered["status"], answered["text"]) == ("ok", "positive")
    cut = _row_for(_message([thought, {"type": "text", "text": "pos"}], "max_tokens", 5), request())
    assert cut["status"] == "ok"  # cut, but not empty: the stop reason tells
