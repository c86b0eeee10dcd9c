"""Which model names the simulator serves: the API's, so a mistyped model fails a rehearsal.

The API answers a model it does not serve (a typo, a retired model, another vendor's name)
with 404 ``not_found_error`` (docs/api-facts.md §4.2). The simulator needs its own list of models
for that, and takes it from the client's price table, ``batchrun/cost/prices.toml``, read as a
data file: one list to keep current (a model added there is served here too), and no import
of the client's code, which the simulator may not use (the import-linter contract). The file
is found through the top package (``batchrun``), not ``batchrun.cost``, whose package
``__init__`` would be imported to find it.

The price of that choice: a wrong id in the table fools both sides alike. The table is
data with a source on every entry, and the API itself is the check of last resort.

Served: the table's ids and aliases, a new dated snapshot of a listed alias
(``claude-haiku-4-5-20991231``), and version dots for dashes (``claude-haiku-4.5``, which the
simulator has always taken). Not served (404): any other ``claude-…`` name, an entry marked
``retired``, and any name that is not a Claude id, unless it is one of ``gateway`` (names
served as asked, as a gateway serves its own aliases: ``SimulatorConfig.gateway_models``) or
the simulator stands in for a gateway (``SimulatorConfig.gateway``: every name that is not a
Claude id is served, as the in-process simulator of ``run --simulate`` does, since the client
sends such names too).

The same table gives what each model takes and how it answers (``ModelFacts``): its request
rules (``[models.<id>.rules]``, which ``rules`` enforces with the API's 400), whether it
thinks without being asked and at which effort (``replies``), its tokenizer (``tokens``) and
its minimum cacheable prefix (``cache``). The simulator reads the rules in its own way here,
with its own defaults; a name the table gives no rules (a gateway's) is checked for none.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TABLE = ("cost", "prices.toml")
"""The price table's place under the ``batchrun`` package."""

_DATED = re.compile(r"^(?P<alias>.+)-\d{8}$")
_DOTTED_VERSION = re.compile(r"(?<=\d)\.(?=\d)")


@dataclass(frozen=True)
class ModelFacts:
    """What the table says of one model beyond its name: its ``[rules]`` as written (empty:
    none given) and its minimum cacheable prefix (None: not given)."""

    rules: Mapping[str, Any] = field(default_factory=dict)
    min_cacheable_tokens: int | None = None

    @property
    def tokenizer_factor(self) -> float:
        """Tokens this model counts per token of the older tokenizer, for the same text."""
        return float(self.rules.get("tokenizer_factor", 1))

    @property
    def thinks_by_default(self) -> bool:
        return bool(self.rules.get("thinks_by_default", False))

    @property
    def effort_default(self) -> str:
        return str(self.rules.get("effort_default", "high"))


NO_FACTS = ModelFacts()


@dataclass(frozen=True)
class Models:
    """The model names a simulator serves, and what the table says of each."""

    live: frozenset[str]  # ids and aliases the API serves
    retired: frozenset[str] = frozenset()  # ids it answers 404 for
    gateway: frozenset[str] = frozenset()  # other names served as asked
    other_names: bool = False  # every name that is not a Claude id is served as asked
    facts: Mapping[str, ModelFacts] = field(default_factory=dict)  # by id and alias

    def facts_for(self, model: str) -> ModelFacts:
        """What the table says of ``model`` (a dated snapshot or dotted spelling of a listed
        id included); nothing for a name it does not list."""
        name = _DOTTED_VERSION.sub("-", model)
        found = self.facts.get(name)
        if found is None:
            dated = _DATED.match(name)
            found = self.facts.get(dated.group("alias")) if dated is not None else None
        return found or NO_FACTS

    def serves(self, model: str) -> bool:
        """True when a request for ``model`` is answered (else the API's 404)."""
        if model in self.gateway:
            return True
        if not model.startswith("claude-"):
            return self.other_names
        name = _DOTTED_VERSION.sub("-", model)
        if name in self.retired:
            return False
        if name in self.live:
            return True
        dated = _DATED.match(name)
        return dated is not None and dated.group("alias") in self.live

    def takes_format(self, model: str) -> bool:
        """Whether ``model`` takes ``output_config.format`` (structured outputs): unless its
        ``[models.<id>.rules]`` say ``structured_outputs = false``; a name the table gives
        no rules (a gateway's) takes it."""
        return self.facts_for(model).rules.get("structured_outputs", True) is not False

    def with_gateway(self, names: Iterable[str], other_names: bool = False) -> Models:
        """These models, and ``names`` served as asked (with ``other_names``, every name
        that is not a Claude id too)."""
        return replace(self, gateway=self.gateway | frozenset(names), other_names=other_names)


def models_from_table(data: Mapping[str, Any]) -> Models:
    """The models of a parsed price table (``[models.<id>]`` with ``ids``, ``retired``,
    ``min_cacheable_tokens`` and ``rules``)."""
    live: set[str] = set()
    retired: set[str] = set()
    facts: dict[str, ModelFacts] = {}
    for key, entry in data.get("models", {}).items():
        ids = {key, *entry.get("ids", ())}
        gone = entry.get("retired", False) is not False
        (retired if gone else live).update(ids)
        said = ModelFacts(dict(entry.get("rules", {})), entry.get("min_cacheable_tokens"))
        facts.update(dict.fromkeys(ids, said))
    return Models(frozenset(live), frozenset(retired - live), facts=facts)


@lru_cache(maxsize=1)
def packaged_models() -> Models:
    """The models of the packaged price table (read once)."""
    place = resources.files("batchrun")
    for part in TABLE:
        place = place.joinpath(part)
    return models_from_table(tomllib.loads(place.read_text(encoding="utf-8")))
