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

from batchrun.core.errors import InvalidRowError, Problem
from batchrun.core.wording import option
from batchrun.cost.prices import (
    ModelPrice,
    PriceTable,
    canonical_model,
    is_claude_id,
    packaged_path,
)
from batchrun.cost.rules import EFFORT_LEVELS, ModelRules

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


def check_row_model(body: dict[str, object], prices: PriceTable) -> None:
    """InvalidRowError (field ``model``) when the request's model must not be sent."""
    model = body.get("model")
    refusal = model_refusal(model, prices) if isinstance(model, str) else None
    if refusal is not None:
        raise InvalidRowError([Problem("model", refusal)])


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
