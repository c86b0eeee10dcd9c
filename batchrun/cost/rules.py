"""What one model takes in a request, how its tokenizer counts and how it thinks: its rules.

The model table (``prices.toml``) gives each model a ``[models.<id>.rules]`` table beside its
prices, with a source and the date it was read, and a user's ``--prices FILE`` may give one
too: key by key over a model the table knows, or whole for a gateway's own alias. The facts
are in docs/api-facts.md §12.2 (request rules), §12.3 (tokenizer), §12.4 (output limits) and
§12.6 (the table's rules, model by model). Under ``anthropic-version: 2023-06-01``; the newer
version refuses sampling on every model (docs/api-facts.md §3.3), which the client does not
send by default.

This module is the data and its parsing; ``cost.models`` checks a request against it.

    rules = parse_rules({"temperature": [1, 1], "top_k": False}, "p.toml", "[models.x.rules]",
                        model="x")
    rules.top_k       # False: the model refuses any top_k
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Any

from batchrun.core.errors import ConfigError
from batchrun.rows.checks import EFFORT_LEVELS, THINKING_TYPES

__all__ = ["EFFORT_LEVELS", "THINKING_TYPES", "ModelRules", "parse_rules"]


@dataclass(frozen=True)
class ModelRules:
    """One model's request rules (docs/api-facts.md §12.6). The defaults take everything: a
    user's rules table for a gateway's alias says only what the gateway refuses.

    ``structured_outputs``: takes ``output_config.format``. ``forced_tool_choice``: takes a
    ``tool_choice`` of ``any`` or ``tool``. ``effort``: the ``output_config.effort`` levels it
    takes (empty: none; the parameter is refused). ``temperature`` and ``top_p``: the lowest
    and highest values taken. ``thinking``: the ``thinking.type`` values taken;
    ``thinks_by_default``: a request without ``thinking`` thinks (adaptive), and its thinking
    counts toward ``max_tokens``. ``tokenizer_factor``: tokens it counts for a text, per token
    the older tokenizer (Haiku 4.5, Sonnet 4.6) counts, for the local estimate.
    ``batch_max_output_tokens``: the Message Batches limit with the 300K output beta (None:
    the beta does not apply to it).
    """

    model: str = ""  # the table's key (its alias)
    structured_outputs: bool = True
    forced_tool_choice: bool = True
    effort: frozenset[str] = frozenset(EFFORT_LEVELS)
    effort_default: str | None = None
    temperature: tuple[float, float] = (0.0, 1.0)
    top_p: tuple[float, float] = (0.0, 1.0)
    top_k: bool = True
    temperature_with_top_p: bool = True
    thinking: frozenset[str] = frozenset({"enabled", "adaptive", "disabled"})
    thinks_by_default: bool = False
    prefill: bool = True
    tokenizer_factor: float = 1.0
    max_output_tokens: int | None = None
    batch_max_output_tokens: int | None = None
    source: str = field(default="", compare=False)

    @property
    def always_thinks(self) -> bool:
        """It thinks whatever the request says: no ``thinking`` type turns it off."""
        return self.thinks_by_default and not self.thinking & {"disabled", "between_tools"}


# --- reading a [models.<id>.rules] table -------------------------------------------------------

_BOOLS = (
    "structured_outputs",
    "forced_tool_choice",
    "top_k",
    "temperature_with_top_p",
    "thinks_by_default",
    "prefill",
)
_RANGES = ("temperature", "top_p")
_COUNTS = ("max_output_tokens", "batch_max_output_tokens")
RULE_KEYS = frozenset(f.name for f in fields(ModelRules)) - {"model"}
"""The keys a rules table may hold."""


def parse_rules(
    raw: Any, origin: str, where: str, *, model: str, base: ModelRules | None = None
) -> ModelRules:
    """The rules a TOML table gives, laid key by key over ``base`` (a model the table
    knows) or over rules that take everything (a new model). ConfigError names the file,
    the table and the key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{origin}: {where} must be a table")
    extra = sorted(set(raw) - RULE_KEYS)
    if extra:
        raise ConfigError(f"{origin}: {where}: unknown key(s) {', '.join(extra)}")
    given: dict[str, Any] = {}
    for key, value in raw.items():
        what = f"{origin}: {where} {key}"
        if key in _BOOLS:
            given[key] = _bool(value, what)
        elif key in _RANGES:
            given[key] = _range(value, what)
        elif key in _COUNTS:
            given[key] = _count(value, what)
        elif key == "effort":
            given[key] = _names(value, EFFORT_LEVELS, what)
        elif key == "thinking":
            given[key] = _names(value, THINKING_TYPES, what)
        elif key == "effort_default":
            given[key] = _one_of(value, EFFORT_LEVELS, what)
        elif key == "tokenizer_factor":
            given[key] = _factor(value, what)
        else:  # source
            given[key] = str(value)
    start = base if base is not None else ModelRules()
    rules = replace(start, model=model, **given)
    if rules.effort_default is not None and rules.effort_default not in rules.effort:
        raise ConfigError(
            f"{origin}: {where} effort_default {rules.effort_default!r} is not one of its "
            "effort levels"
        )
    return rules


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{what} must be true or false, not {value!r}")
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    return float(value)


def _range(value: Any, what: str) -> tuple[float, float]:
    pair = [_number(v) for v in value] if isinstance(value, list) else []
    if len(pair) != 2 or None in pair:
        raise ConfigError(f"{what} must be [lowest, highest], e.g. [0, 1], not {value!r}")
    low, high = float(pair[0] or 0), float(pair[1] or 0)
    if not 0 <= low <= high <= 1:
        raise ConfigError(f"{what} must be [lowest, highest] within 0 to 1, not {value!r}")
    return low, high


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a count >= 1, not {value!r}")
    return value


def _factor(value: Any, what: str) -> float:
    number = _number(value)
    if number is None or not 0 < number <= 10:
        raise ConfigError(f"{what} must be a number above 0 (1.3: 30% more tokens), not {value!r}")
    return number


def _names(value: Any, allowed: tuple[str, ...], what: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what} must be a list of {', '.join(allowed)}")
    wrong = [v for v in value if v not in allowed]
    if wrong:
        raise ConfigError(
            f"{what}: {', '.join(map(repr, wrong))} is not one of {', '.join(allowed)}"
        )
    return frozenset(value)


def _one_of(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    text: str = value
    return text
