"""Which models batchrun knows, what each takes in a request, and why a request is refused
before anything is sent.

The model table (``prices.toml``, with a user's ``--prices FILE`` laid over it) is the list of
known models: ``known_model`` is the one test of "is this a model batchrun knows", and
``model_rules`` gives what a known model takes (``cost.rules.ModelRules``: sampling, thinking,
prefill, forced tools, effort, structured outputs, output limits, tokenizer), or None for a
model whose rules nobody gave (a gateway's alias: nothing is enforced).

``model_refusal`` says why a name must not be sent:

* a name that reads as a Claude id (``claude-…``, ``anthropic/claude-…``,
  ``us.anthropic.claude-…``, ``claude-…@date``) and matches no entry: a typo or a model
  batchrun has not heard of, which the API would answer with 404 on every row;
* an entry marked ``retired``, asked for by its Claude API id: the API answers 404.
  A gateway's spelling of it (Bedrock, Vertex, OpenRouter) is let through, as gateways
  retire models on their own schedules.

A name that is not a Claude id (a gateway's own alias such as ``my-gateway-fast``) is never
refused: it runs, and the run warns once that its prices are unknown (``UnknownModels``).

    refusal = model_refusal("claude-haiku-4.6", load_prices())
    # "`claude-haiku-4.6` is not a Claude model batchrun knows (did you mean ...?); ..."
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchrun.core.errors import InvalidRowError, Problem
from batchrun.core.wording import option, said
from batchrun.cost.prices import (
    ModelPrice,
    PriceTable,
    canonical_model,
    is_claude_id,
    packaged_path,
)
from batchrun.cost.rules import EFFORT_LEVELS, THINKING_TYPES, ModelRules
from batchrun.rows.request import RequestDefaults
from batchrun.rows.tokens import estimate_input_tokens

__all__ = [
    "EFFORT_LEVELS",
    "ModelRules",
    "check_row_model",
    "known_model",
    "model_refusal",
    "model_rules",
    "sendable_models",
]


def known_model(model: str | None, prices: PriceTable) -> ModelPrice | None:
    """The entry for ``model`` when batchrun knows it (in any spelling), else None."""
    return prices.lookup(model)


def model_rules(model: str | None, prices: PriceTable) -> ModelRules | None:
    """What ``model`` (in any spelling the table reads) takes in a request; None when the
    table does not know it or gives it no rules (a gateway's alias: nothing is enforced)."""
    known = prices.lookup(model)
    return None if known is None else known.rules


def tokenizer_factor(model: str | None, prices: PriceTable) -> float:
    """Tokens ``model`` counts for a text per token the older tokenizer counts (1 for a model
    without rules): the local estimate's scale (docs/api-facts.md §12.3)."""
    rules = model_rules(model, prices)
    return 1.0 if rules is None else rules.tokenizer_factor


def local_input_tokens(body: Mapping[str, Any], prices: PriceTable) -> int:
    """The local estimate of a request's input tokens, on its model's tokenizer."""
    model = body.get("model")
    factor = tokenizer_factor(model if isinstance(model, str) else None, prices)
    return estimate_input_tokens(body, factor)


def sendable_models(prices: PriceTable) -> frozenset[str]:
    """Every id of every model batchrun knows and would send (retired ones left out)."""
    return frozenset(
        name
        for price in prices.models()
        if price.retired is None
        for name in (price.model, *price.ids)
    )


def model_refusal(model: str | None, prices: PriceTable) -> str | None:
    """Why ``model`` must not be sent (a sentence starting with the name), or None."""
    if not model:
        return None  # no model at all is the row checks' and preflight's to report
    known = known_model(model, prices)
    if known is None:
        return _unknown(model, prices) if is_claude_id(model) else None
    if known.retired is not None and model.strip() == canonical_model(model):
        return _retired(model, known)
    return None


def check_row_model(
    body: Mapping[str, Any], prices: PriceTable, *, batch_beta: bool = False
) -> None:
    """InvalidRowError when the request must not be sent: its model (field ``model``), or
    each setting its model refuses (``rule_breaks``). ``batch_beta``: as ``rule_breaks``'s."""
    model = body.get("model")
    refusal = model_refusal(model, prices) if isinstance(model, str) else None
    if refusal is not None:
        raise InvalidRowError([Problem("model", refusal)])
    rules = model_rules(model if isinstance(model, str) else None, prices)
    if rules is None:
        return  # not a model the table gives rules for (a gateway's alias): none enforced
    breaks = rule_breaks(body, rules, batch_beta=batch_beta)
    if breaks:
        raise InvalidRowError([b.for_row() for b in breaks])


def unsupported_sampling(settings: Mapping[str, Any], prices: PriceTable) -> tuple[str, ...]:
    """The sampling settings (``DROPPABLE``) among ``settings`` (a row's resolved model,
    temperature, top_p, top_k and thinking) that its model would refuse: what
    ``--drop-unsupported`` leaves out of the request. Empty for a model without rules."""
    model = settings.get("model")
    rules = model_rules(model if isinstance(model, str) else None, prices)
    if rules is None:
        return ()
    return tuple(dict.fromkeys(b.field for b in rule_breaks(settings, rules) if b.droppable))


def _unknown(model: str, prices: PriceTable) -> str:
    close = [f"`{name}`" for name in prices.suggest(model)]
    hint = ""
    if close:
        names = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
        hint = f" (did you mean {names}?)"
    return (
        f"`{model}` is not a Claude model batchrun knows{hint}; if it is new, add it with "
        f"{option('prices', 'FILE')} (the layout of {packaged_path()})"
    )


def _retired(model: str, known: ModelPrice) -> str:
    instead = f": use `{known.successor}` instead" if known.successor else ""
    return (
        f"`{model}` ({known.name}) was retired on {known.retired:%Y-%m-%d} and the Claude API "
        f"answers 404 for it{instead}. If your gateway still serves it, add "
        f"[models.{known.model}] with retired = false to a price file and pass "
        f"{option('prices', 'FILE')}"
    )


# --- a request against its model's rules -------------------------------------------------------

DROPPABLE = ("temperature", "top_p", "top_k")
"""The settings ``--drop-unsupported`` may leave out of a request its model would refuse."""

OUTPUT_300K_BETA = "output-300k-2026-03-24"
"""The beta that lets a Message Batches request ask for up to 300K tokens (docs/api-facts.md
§12.4)."""

# Thinking on, whatever the model: these are refused (docs/api-facts.md §12.6).
_THINKING_TOP_P = (0.95, 1.0)

_ADAPTIVE = '{"type": "adaptive"}'
_DISABLED = '{"type": "disabled"}'
_AUTO = '{"type": "auto"}'
_ENABLED = '{"type": "enabled", "budget_tokens": 1024}'


@dataclass(frozen=True)
class RuleBreak:
    """One setting of a request that its model refuses: the setting, why (``reason`` names
    the model), how a job fixes it, and whether ``--drop-unsupported`` may drop it."""

    field: str
    reason: str
    fix: str
    droppable: bool = False

    def for_job(self) -> str:
        """``temperature: only 1 on claude-haiku-5-5; remove --temperature or pass ...``"""
        return f"{self.field}: {self.reason}; {self.fix}"

    def for_row(self) -> Problem:
        """The row's problem: a droppable setting may be the row's own or the job's."""
        if not self.droppable:
            return Problem(self.field, f"{self.reason}; {self.fix}")
        drop = option("drop_unsupported", True)
        return Problem(
            self.field, f"{self.reason}; leave it out, or pass {drop} to send without it"
        )


def rule_breaks(
    body: Mapping[str, Any], rules: ModelRules, *, batch_beta: bool = False
) -> list[RuleBreak]:
    """Every setting of ``body`` (a request, or a job's settings in its shape) that its model,
    whose ``rules`` these are, would refuse with 400 (docs/api-facts.md §12.6). Pure.

    ``batch_beta``: sent as a Message Batch with the 300K output beta (``OUTPUT_300K_BETA``).
    """
    model = str(body.get("model") or rules.model)
    get = body.get
    if (  # spelled out, not a loop over the names: this runs once a row
        get("temperature") is None
        and get("top_p") is None
        and get("top_k") is None
        and get("thinking") is None
        and get("tool_choice") is None
        and get("output_config") is None
    ):
        # The usual row sets none of the settings models differ on: only its conversation
        # and its max_tokens can break a rule (what the checks below find for such a row).
        breaks = []
        if not rules.prefill and _ends_with_assistant(get("messages")):
            breaks.append(_prefill_break(model))
        breaks.extend(_output_breaks(get("max_tokens"), model, rules, batch_beta))
        return breaks
    breaks = _sampling_breaks(body, model, rules)
    breaks.extend(_thinking_breaks(body, model, rules))
    choice = body.get("tool_choice")
    forced = choice.get("type") if isinstance(choice, Mapping) else None
    if forced in ("any", "tool") and not rules.forced_tool_choice:
        fix = f"use {option('tool_choice', _AUTO)} and ask for the tool in the prompt"
        breaks.append(
            RuleBreak("tool_choice", f"{forced!r} forces a tool, which {model} refuses", fix)
        )
    if _ends_with_assistant(body.get("messages")) and not rules.prefill:
        breaks.append(_prefill_break(model))
    config = body.get("output_config")
    config = config if isinstance(config, Mapping) else {}
    breaks.extend(_effort_breaks(config.get("effort"), model, rules))
    if config.get("format") is not None and not rules.structured_outputs:
        reason = f"{model} takes no structured outputs (output_config.format)"
        breaks.append(RuleBreak("output_config", reason, "leave the format out"))
    breaks.extend(_output_breaks(body.get("max_tokens"), model, rules, batch_beta))
    return breaks


def _prefill_break(model: str) -> RuleBreak:
    reason = f"the conversation ends with an assistant turn (a prefill), which {model} refuses"
    return RuleBreak("messages", reason, "end it with the user's turn")


def _drop_fix(name: str) -> str:
    return f"remove {option(name)} or pass {option('drop_unsupported', True)} to send without it"


def _sampling_breaks(body: Mapping[str, Any], model: str, rules: ModelRules) -> list[RuleBreak]:
    breaks: list[RuleBreak] = []
    on = f"on {model}"
    for name, allowed in (("temperature", rules.temperature), ("top_p", rules.top_p)):
        value = _number(body.get(name))
        if value is not None and not allowed[0] <= value <= allowed[1]:
            breaks.append(RuleBreak(name, f"only {_span(allowed)} {on}", _drop_fix(name), True))
    if body.get("top_k") is not None and not rules.top_k:
        breaks.append(RuleBreak("top_k", f"not taken by {model}", _drop_fix("top_k"), True))
    both = body.get("temperature") is not None and body.get("top_p") is not None
    if both and not rules.temperature_with_top_p and not any(b.field == "top_p" for b in breaks):
        reason = f"{model} takes temperature or top_p, not both"
        breaks.append(RuleBreak("top_p", reason, _drop_fix("top_p"), True))
    if _thinking_type(body) in ("enabled", "adaptive"):  # thinking on: for every model
        taken = {b.field for b in breaks}
        why = "when thinking is on"
        temperature = _number(body.get("temperature"))
        if "temperature" not in taken and temperature is not None and temperature != 1:
            breaks.append(RuleBreak("temperature", f"only 1 {why}", _drop_fix("temperature"), True))
        top_p = _number(body.get("top_p"))
        low, high = _THINKING_TOP_P
        if "top_p" not in taken and top_p is not None and not low <= top_p <= high:
            reason = f"only {_span(_THINKING_TOP_P)} {why}"
            breaks.append(RuleBreak("top_p", reason, _drop_fix("top_p"), True))
        if "top_k" not in taken and body.get("top_k") is not None:
            breaks.append(RuleBreak("top_k", f"not taken {why}", _drop_fix("top_k"), True))
    return breaks


def _thinking_breaks(body: Mapping[str, Any], model: str, rules: ModelRules) -> list[RuleBreak]:
    kind = _thinking_type(body)
    breaks: list[RuleBreak] = []
    if kind is not None and kind not in rules.thinking:
        breaks.append(_thinking_refused(kind, model, rules))
    if kind in ("enabled", "adaptive") and _ends_with_assistant(body.get("messages")):
        reason = "a conversation that ends with an assistant turn (a prefill) with thinking on"
        breaks.append(RuleBreak("messages", reason, "end it with the user's turn"))
    return breaks


def _thinking_refused(kind: str, model: str, rules: ModelRules) -> RuleBreak:
    effort = option("effort", "LEVEL")
    if kind == "disabled" and rules.always_thinks:
        reason = f"{model} always thinks: thinking cannot be turned off"
        fix = f"remove {option('thinking')}, and pass {option('effort', 'low')} to think least"
    elif kind == "enabled" and "adaptive" in rules.thinking:
        reason = f"budgeted thinking (type 'enabled') is refused by {model}"
        fix = f"use {option('thinking', _ADAPTIVE)} with {effort} to set how much it thinks"
    elif kind == "adaptive" and "enabled" in rules.thinking:
        reason = f"adaptive thinking is refused by {model}"
        fix = f"use {option('thinking', _ENABLED)} (a budget below max_tokens)"
    else:
        taken = ", ".join(t for t in THINKING_TYPES if t in rules.thinking)
        reason = f"type {kind!r} is refused by {model}, which takes {taken}"
        fix = f"use one of those in {option('thinking')}, or remove it"
    return RuleBreak("thinking", reason, fix)


def _effort_breaks(effort: Any, model: str, rules: ModelRules) -> list[RuleBreak]:
    if effort is None:
        return []
    if not rules.effort:
        return [
            RuleBreak("effort", f"{model} takes no effort setting", f"remove {option('effort')}")
        ]
    if effort in rules.effort:
        return []
    levels = [level for level in EFFORT_LEVELS if level in rules.effort]
    reason = f"{effort!r} is not one of {model}'s levels ({', '.join(levels)})"
    return [RuleBreak("effort", reason, f"pass {option('effort', levels[-1])} or lower")]


def _output_breaks(
    max_tokens: Any, model: str, rules: ModelRules, batch_beta: bool
) -> list[RuleBreak]:
    limit = rules.max_output_tokens
    batch = rules.batch_max_output_tokens
    if batch_beta and batch is not None:
        limit = batch
    if limit is None or not isinstance(max_tokens, int) or max_tokens <= limit:
        return []
    where = " in a Message Batch with the output-300k beta" if limit == batch else ""
    reason = f"{max_tokens:,} is more than {model} writes in one answer ({limit:,} tokens{where})"
    fix = f"lower {option('max_tokens', 'N')}"
    if batch is not None and limit != batch:
        beta = said(f"{option('betas')} {OUTPUT_300K_BETA}", f"betas=[{OUTPUT_300K_BETA!r}]")
        fix += (
            f", or send it as a Message Batch ({option('via', 'batches')} {beta}: up to {batch:,})"
        )
    return [RuleBreak("max_tokens", reason, fix)]


def _thinking_type(body: Mapping[str, Any]) -> str | None:
    thinking = body.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, Mapping) else None
    return kind if isinstance(kind, str) else None


def _ends_with_assistant(messages: Any) -> bool:
    last = messages[-1] if isinstance(messages, list) and messages else None
    return isinstance(last, Mapping) and last.get("role") == "assistant"


def _number(value: Any) -> float | None:
    """``value`` as a number, or None when it is none (a bad value is the row checks')."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an int too large for a float: the row checks refuse it
        return None


def _span(pair: tuple[float, float]) -> str:
    low, high = (f"{value:g}" for value in pair)
    return low if low == high else f"{low} to {high}"


# --- the job's own settings ---------------------------------------------------------------------


def job_rule_breaks(
    defaults: RequestDefaults, prices: PriceTable, *, batch_beta: bool = False
) -> list[RuleBreak]:
    """What the job's own settings break of its model's rules: every row that keeps them
    would be refused alike, so the job is stopped before sending (``runs.preflight``). The
    sampling settings ``--drop-unsupported`` drops are left out when it is given."""
    rules = model_rules(defaults.model, prices)
    if rules is None:
        return []
    breaks = rule_breaks(_job_body(defaults), rules, batch_beta=batch_beta)
    return [b for b in breaks if not (b.droppable and defaults.drop_unsupported)]


def dropped_for_job(defaults: RequestDefaults, prices: PriceTable) -> list[RuleBreak]:
    """The job's sampling settings that ``--drop-unsupported`` leaves out for its model
    (none without it): what the summary and the estimate say was not sent."""
    rules = model_rules(defaults.model, prices)
    if rules is None or not defaults.drop_unsupported:
        return []
    return [b for b in rule_breaks(_job_body(defaults), rules) if b.droppable]


def _job_body(defaults: RequestDefaults) -> dict[str, Any]:
    """The job's settings in the shape of a request body (what every row starts from)."""
    body: dict[str, Any] = {
        name: getattr(defaults, name)
        for name in ("model", "max_tokens", "temperature", "top_p", "top_k", "thinking")
    }
    body["tool_choice"] = defaults.tool_choice
    if defaults.effort is not None:
        body["output_config"] = {"effort": defaults.effort}
    return {name: value for name, value in body.items() if value is not None}


# --- thinking and max_tokens --------------------------------------------------------------------

THINKING_TOKENS_ASSUMED: dict[str, int] = {
    "low": 256,
    "medium": 1024,
    "high": 2048,
    "xhigh": 4096,
    "max": 8192,
}
"""Tokens batchrun assumes a model spends thinking, per answer, at each effort, when it thinks
adaptively (on by default on the 5.x models, or asked for). An assumption, not an API fact: the
API states none (docs/api-facts.md §12.7). It sets the estimate's lowest output (thinking is
paid as output whether or not an answer follows) and when a small max_tokens is warned of."""

ROOM_TO_SUGGEST = 1024
"""Tokens the warning suggests adding to max_tokens for thinking at effort low."""


def thinking_effort(body: Mapping[str, Any], rules: ModelRules | None) -> str | None:
    """The effort at which the request makes its model think adaptively (its own, else the
    model's default), or None when it does not: thinking off, budgeted (its budget is the
    request's own), or a model without rules."""
    if rules is None:
        return None
    kind = _thinking_type(body)
    thinks = kind == "adaptive" or (kind is None and rules.thinks_by_default)
    if not thinks:
        return None
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, Mapping) else None
    if not isinstance(effort, str):
        effort = rules.effort_default or "high"
    return effort


def assumed_thinking_tokens(body: Mapping[str, Any], rules: ModelRules | None) -> int:
    """The thinking tokens batchrun assumes one answer to the request spends (at most its
    max_tokens): ``THINKING_TOKENS_ASSUMED`` at its effort, 0 when it does not think."""
    effort = thinking_effort(body, rules)
    if effort is None:
        return 0
    assumed = THINKING_TOKENS_ASSUMED.get(effort, THINKING_TOKENS_ASSUMED["high"])
    max_tokens = body.get("max_tokens")
    return min(assumed, max_tokens) if isinstance(max_tokens, int) else assumed


def thinking_room_warning(defaults: RequestDefaults, prices: PriceTable) -> str | None:
    """A warning when the job's model thinks before answering and its max_tokens would be
    spent on thinking, leaving the answer empty; None when there is room (or no rules)."""
    rules = model_rules(defaults.model, prices)
    body = _job_body(defaults)
    effort = thinking_effort(body, rules)
    max_tokens = defaults.max_tokens
    if rules is None or effort is None or max_tokens is None:
        return None
    if max_tokens > THINKING_TOKENS_ASSUMED.get(effort, 0):
        return None
    asked = defaults.effort is not None
    how = (
        f"it always thinks, at effort {effort}"
        if rules.always_thinks
        else f"adaptive thinking{'' if _thinking_type(body) else ' is on by default'}, "
        f"at effort {effort}{'' if asked else ', its default'}"
    )
    room = -(-(max_tokens + ROOM_TO_SUGGEST) // 256) * 256
    advice = f"pass {option('effort', 'low')} and {option('max_tokens', room)}"
    if "disabled" in rules.thinking:
        advice += f", or turn thinking off with {option('thinking', _DISABLED)}"
    return (
        f"batchrun: warning: {defaults.model} thinks before it answers ({how}), and its "
        f"thinking counts toward max_tokens: {max_tokens:,} may leave no room for the answer, "
        f"which then comes back empty (an error row, paid for). To leave room, {advice}."
    )
