"""Each model's request rules, enforced as the API enforces them: 400 before any reply.

The rules are the model table's ``[models.<id>.rules]`` (``batchrun/cost/prices.toml``, read as
data by ``models``; docs/api-facts.md §12.2 and §12.6), under ``anthropic-version:
2023-06-01``: sampling values, ``top_k``, ``temperature`` with ``top_p``, the ``thinking``
types, a prefill, a forced ``tool_choice``, ``output_config.effort`` and the largest
``max_tokens``. A name the table gives no rules (a gateway's alias) is checked for none. The
simulator reads the table its own way, with its own defaults (take everything), and imports
nothing of the client's: a client that sends what a model refuses fails here as it would
against the API. ``output_config.format`` is ``checks``'s (structured outputs).

Pure: each check gives the API's message for what it refuses, or None, and ``checks`` answers
it as a 400 ``invalid_request_error``. Messages follow the API's where one was seen
(``temperature`` on a model that takes only 1: docs/api-facts.md §12.6), its style elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchrun.simulator.models import ModelFacts

EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
"""``output_config.effort``'s values (docs/api-facts.md §12.2)."""


def effort_value_refusal(data: Mapping[str, Any]) -> str | None:
    """``output_config.effort``, whatever the model: one of ``EFFORT_LEVELS``."""
    config = data.get("output_config")
    if not isinstance(config, Mapping) or "effort" not in config:
        return None
    if config["effort"] in EFFORT_LEVELS:
        return None
    levels = ", ".join(f"'{level}'" for level in EFFORT_LEVELS)
    return f"output_config.effort: Input should be {levels}"


def model_rules_refusal(
    data: Mapping[str, Any], facts: ModelFacts, *, batch: bool = False
) -> str | None:
    """The API's message for the first setting of a checked body its model refuses, or None.

    ``batch``: a Message Batches request, whose output may reach the model's
    ``batch_max_output_tokens`` (the output-300k beta; the header is not checked)."""
    rules = facts.rules
    if not rules:
        return None
    model = str(data["model"])
    found = (
        _sampling(data, rules)
        or _thinking(data, rules, model)
        or _prefill(data, rules)
        or _forced_tool(data, rules, model)
        or _effort(data, rules, model)
    )
    if found is None and "max_tokens" in data:
        found = _max_tokens(int(data["max_tokens"]), rules, model, batch)
    return found


def _taken(rules: Mapping[str, Any], key: str) -> bool:
    return bool(rules.get(key, True))


def _thinking_on(data: Mapping[str, Any]) -> bool:
    thinking = data.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")


def _sampling(data: Mapping[str, Any], rules: Mapping[str, Any]) -> str | None:
    for name in ("temperature", "top_p"):
        if name not in data:
            continue
        low, high = (float(v) for v in rules.get(name, (0, 1)))
        if not low <= float(data[name]) <= high:
            return f"`{name}` is deprecated for this model."
    if "top_k" in data and not _taken(rules, "top_k"):
        return "`top_k` is deprecated for this model."
    if "temperature" in data and "top_p" in data and not _taken(rules, "temperature_with_top_p"):
        return (
            "`temperature` and `top_p` cannot both be specified for this model. Please use "
            "only one."
        )
    if _thinking_on(data):  # whatever the model (docs/api-facts.md §12.6)
        if float(data.get("temperature", 1)) != 1:
            return "temperature may only be set to 1 when thinking is enabled."
        if not 0.95 <= float(data.get("top_p", 1)) <= 1:
            return "top_p must be between 0.95 and 1 when thinking is enabled."
        if "top_k" in data:
            return "top_k is not supported when thinking is enabled."
    return None


def _thinking(data: Mapping[str, Any], rules: Mapping[str, Any], model: str) -> str | None:
    thinking = data.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, Mapping) else None
    taken = rules.get("thinking", ("enabled", "adaptive", "disabled"))
    if kind is None or kind in taken:
        return None
    if kind == "enabled" and "adaptive" in taken:
        return (
            f'"thinking.type.enabled" is not supported for {model}. Use '
            '"thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
        )
    return f'thinking.type: "{kind}" is not supported for {model}'


def _prefill(data: Mapping[str, Any], rules: Mapping[str, Any]) -> str | None:
    messages = data.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if not isinstance(last, Mapping) or last.get("role") != "assistant":
        return None
    if _thinking_on(data):
        return "Prefilling the assistant message is not supported when thinking is enabled."
    if _taken(rules, "prefill"):
        return None
    return (
        "This model does not support assistant message prefill. The conversation must end "
        "with a user message."
    )


def _forced_tool(data: Mapping[str, Any], rules: Mapping[str, Any], model: str) -> str | None:
    choice = data.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if kind not in ("any", "tool") or _taken(rules, "forced_tool_choice"):
        return None
    return f"tool_choice: type '{kind}' is not supported for {model}"


def _effort(data: Mapping[str, Any], rules: Mapping[str, Any], model: str) -> str | None:
    config = data.get("output_config")
    effort = config.get("effort") if isinstance(config, Mapping) else None
    if effort is None or effort in rules.get("effort", EFFORT_LEVELS):
        return None
    return f"output_config.effort: '{effort}' is not supported for {model}"


def _max_tokens(max_tokens: int, rules: Mapping[str, Any], model: str, batch: bool) -> str | None:
    limit = rules.get("max_output_tokens")
    if batch and rules.get("batch_max_output_tokens") is not None:
        limit = rules["batch_max_output_tokens"]
    if not isinstance(limit, int) or max_tokens <= limit:
        return None
    return (
        f"max_tokens: {max_tokens} > {limit}, which is the maximum allowed number of output "
        f"tokens for {model}"
    )
