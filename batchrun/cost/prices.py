"""The price table and the cost of a usage record.

Prices are data: ``prices.toml`` in this package, optionally overridden or extended by a user
file (``--prices FILE``, same layout). Amounts are ``Decimal`` from the TOML text onwards, so
a cost is exact (``1000 × $3 / 1M`` is ``0.003``, not ``0.0030000000000000001``); callers
convert to float only where a column needs it.

A model the table does not know has no price: ``cost`` returns None and the caller shows
"unknown", never a number we made up. A dated id the table does not list (a new snapshot) is
priced as its alias when the alias is listed, because snapshots of one model share a price.

Gateways spell the same model in other ways (``anthropic/claude-haiku-4.5``,
``us.anthropic.claude-haiku-4-5-20251001-v1:0``, ``claude-haiku-4-5@20251001``); ``lookup``
reads them all as the table's id (``canonical_model``). That is for pricing and grouping only:
the model string sent to the API is never changed. A name nothing matches gets the closest
known models as a did-you-mean (``suggest``). Which names are refused before sending (a Claude
id the table does not know, a ``retired`` one) is ``cost.models``'s to say.

    table = load_prices()
    usage = Usage.from_api({"input_tokens": 1000, "output_tokens": 200})
    table.cost("claude-haiku-4-5", usage)     # Decimal('0.002')
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal, getcontext
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from batchrun.core.errors import ConfigError
from batchrun.core.wording import option
from batchrun.cost.rules import ModelRules, parse_rules

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

PER_MILLION = Decimal(1_000_000)

# Cache prices relative to the input price (docs/api-facts.md §11.2). Used only to complete a user's
# entry that gives input and output alone; the packaged table states every price.
CACHE_WRITE_5M_FACTOR = Decimal("1.25")
CACHE_WRITE_1H_FACTOR = Decimal(2)
CACHE_READ_FACTOR = Decimal("0.1")

RATE_NAMES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_ENTRY_KEYS = frozenset(
    {
        *RATE_NAMES,
        "name",
        "ids",
        "effective_from",
        "source",
        "note",
        "long_context",
        "min_cacheable_tokens",
        "min_cacheable_source",
        "retired",
        "successor",
        "rules",
    }
)

SAFE_MIN_CACHEABLE_TOKENS = 4096
"""The cache minimum assumed for a model the table does not know: the highest any model has.

Too high a guess only leaves a prefix uncached (full price, as without caching); too low a
guess places a breakpoint the API silently ignores, which costs nothing either, but for a
prefix just above a wrong minimum it makes a write that is never read (1.25x).
"""
_LONG_KEYS = frozenset({*RATE_NAMES, "above_input_tokens"})
_TABLE_KEYS = frozenset(
    {"currency", "unit", "compiled", "batch_price_factor", "web_search_per_1000", "sources"}
)
_DATED_ID = re.compile(r"^(?P<alias>.+)-\d{8}$")

# How gateways decorate an Anthropic model id (each is stripped or rewritten by
# ``canonical_model``): a Bedrock vendor prefix with an optional inference-profile region
# (``us.``, ``eu.``, ``apac.``, ``global.``, ``us-gov.``) and a version tail (``-v1:0``); a
# tag after a colon (OpenRouter ``:beta``, ``:thinking``); a Vertex ``@`` before the date;
# dots in the version (``4.5``); ``-latest``; and the Claude 3 word order (``claude-3-5-haiku``)
# that some gateways still use for newer models (``claude-4-sonnet``).
_BEDROCK_VENDOR = re.compile(r"^(?:[a-z]{2,6}(?:-[a-z]+)?\.)?anthropic\.")
_BEDROCK_VERSION = re.compile(r"-v\d+(?::\d+)?$")
_COLON_TAG = re.compile(r":[\w.-]*$")
_VERTEX_AT = re.compile(r"@(?P<tail>[\w.-]*)$")
_DOTTED_VERSION = re.compile(r"(?<=\d)\.(?=\d)")
_LATEST = re.compile(r"-latest$")
_OLD_WORD_ORDER = re.compile(
    r"^claude-(?P<version>\d+(?:-\d+)?)-(?P<family>haiku|sonnet|opus)(?P<rest>-.*)?$"
)
_MAJOR_ONLY = re.compile(r"^claude-[a-z]+-\d+$")  # claude-sonnet-4: the table says -4-0
_FAMILIES = ("haiku", "sonnet", "opus", "fable", "mythos")
SUGGESTIONS = 3
_LOOKUP_MEMO = 4096  # distinct names remembered per table (a run sees a handful)


def canonical_model(model: str) -> str:
    """``model`` as the price table spells Anthropic ids: gateway decorations removed.

    ``anthropic/claude-haiku-4.5`` and ``us.anthropic.claude-haiku-4-5-20251001-v1:0`` give
    ``claude-haiku-4-5`` and ``claude-haiku-4-5-20251001``; ``claude-3-5-haiku`` gives
    ``claude-haiku-3-5``. A name that is not a Claude id comes back trimmed and lower-cased.
    """
    name = _undecorated(model)
    old = _OLD_WORD_ORDER.match(name)
    if old is not None:
        name = f"claude-{old.group('family')}-{old.group('version')}{old.group('rest') or ''}"
    return name


def is_claude_id(model: str | None) -> bool:
    """True when ``model`` reads as an Anthropic model id, in any spelling ``canonical_model``
    undoes (``claude-haiku-4.6``, ``anthropic/claude-…``, ``us.anthropic.claude-…-v1:0``,
    ``claude-…@20250929``); False for other names, such as a gateway's own alias."""
    if not model:
        return False
    name = canonical_model(model)
    return name.startswith("claude-") and len(name) > len("claude-")


def _undecorated(model: str) -> str:
    """``model`` without what gateways add around an id, in the id's own word order."""
    name = model.strip().lower()
    name = name.rsplit("/", 1)[-1]  # anthropic/, openrouter/anthropic/, bedrock/, an ARN's path
    name = _BEDROCK_VENDOR.sub("", name)
    name = _BEDROCK_VERSION.sub("", name)
    name = _COLON_TAG.sub("", name)
    at = _VERTEX_AT.search(name)
    if at is not None:
        tail = at.group("tail")
        name = name[: at.start()] + (f"-{tail}" if tail.isdigit() and len(tail) == 8 else "")
    name = _DOTTED_VERSION.sub("-", name)
    return _LATEST.sub("", name)


def _without_date(name: str) -> str:
    dated = _DATED_ID.match(name)
    return dated.group("alias") if dated is not None else name


def undated_model(model: str | None) -> str:
    """The name a model without a price is grouped under: undecorated, without its date
    (``anthropic.claude-3-5-haiku-20241022-v1:0`` -> ``claude-3-5-haiku``)."""
    return _without_date(_undecorated(model)) if model else "(none)"


def _candidates(model: str) -> list[str]:
    """Ids to try for ``model`` in order: as given, undecorated, undated, with ``-0`` added
    or dropped (the table lists ``claude-sonnet-4-0`` and ``claude-opus-5``)."""
    name = canonical_model(model)
    alias = _without_date(name)
    out = [model, name, alias]
    if _MAJOR_ONLY.match(alias):
        out.append(f"{alias}-0")
    elif alias.endswith("-0"):
        out.append(alias[:-2])
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Rates:
    """USD per million tokens for each kind of token."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal

    @cached_property
    def scaled(self) -> tuple[tuple[int, ...], int] | None:
        """The rates as integers over one power of ten, (input, cache_write_5m,
        cache_write_1h, cache_read, output) and the exponent: the same amounts, exactly,
        for ``PriceTable.reply_cost``'s integer path; None when a rate is not a finite
        amount >= 0 (then the Decimal path prices)."""
        return _scaled(
            self.input, self.cache_write_5m, self.cache_write_1h, self.cache_read, self.output
        )


@dataclass(frozen=True)
class LongContext:
    """Prices for every token of a request whose total input exceeds ``above_input_tokens``."""

    above_input_tokens: int
    rates: Rates


@dataclass(frozen=True)
class ModelPrice:
    """One model's prices and where they come from."""

    model: str  # the table's key for it (its alias)
    name: str
    ids: tuple[str, ...]
    rates: Rates
    long_context: LongContext | None = None
    effective_from: date | None = None
    source: str = ""
    note: str = ""
    min_cacheable_tokens: int | None = None  # the shortest prefix the API caches for it
    min_cacheable_source: str = ""
    retired: date | None = None  # when the Claude API stopped serving it (it answers 404)
    successor: str = ""  # the model to use in its place
    rules: ModelRules | None = None  # what it takes in a request (None: not known)

    def rates_for(self, total_input_tokens: int) -> Rates:
        """The rates that apply to a request with this much input (long-context pricing)."""
        lc = self.long_context
        if lc is not None and total_input_tokens > lc.above_input_tokens:
            return lc.rates
        return self.rates


@dataclass(frozen=True)
class Usage:
    """The billable parts of one response's ``usage``, cache writes split by TTL."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    web_search_requests: int = 0
    batch: bool = False

    @property
    def total_input(self) -> int:
        """Uncached input + cache writes + cache reads (docs/api-facts.md §2.2)."""
        return self.input_tokens + self.cache_write_5m + self.cache_write_1h + self.cache_read

    @classmethod
    def from_api(cls, usage: Mapping[str, Any]) -> Usage:
        """From a Messages API ``usage`` object.

        ``cache_creation`` gives the 5 m / 1 h split; without it (older responses, gateways)
        every cache write is taken as 5 m, the default TTL. Any part of
        ``cache_creation_input_tokens`` the split does not account for is also 5 m.
        """
        return cls(*_usage_parts(usage))


_UsageParts = tuple[int, int, int, int, int, int, bool]


def _usage_parts(usage: Mapping[str, Any]) -> _UsageParts:
    """``Usage.from_api``'s fields, in their order, without making a ``Usage``."""
    get = usage.get
    written = _count(get("cache_creation_input_tokens"))
    split = get("cache_creation")
    if split is not None and (type(split) is dict or isinstance(split, Mapping)):
        w1h = _count(split.get("ephemeral_1h_input_tokens"))
        w5m = max(_count(split.get("ephemeral_5m_input_tokens")), written - w1h)
    else:
        w1h = 0
        w5m = max(0, written)
    tools = get("server_tool_use")
    searches = (
        _count(tools.get("web_search_requests"))
        if tools is not None and (type(tools) is dict or isinstance(tools, Mapping))
        else 0
    )
    return (
        _count(get("input_tokens")),
        _count(get("output_tokens")),
        w5m,
        w1h,
        _count(get("cache_read_input_tokens")),
        searches,
        get("service_tier") == "batch",
    )


def _count(value: Any) -> int:
    if type(value) is int:  # the usual case, decided at once
        return value if value > 0 else 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# Under this, every step of ``cost_at``'s Decimal arithmetic is exact (28 digits, the
# default context's precision), so an integer numerator over a power of ten is the same
# amount, and int / int, correctly rounded as float(Decimal) is, the same float.
_EXACT_BELOW = 10**27
_EXACT_PRECISION = 28


def _scaled(*amounts: Decimal) -> tuple[tuple[int, ...], int] | None:
    """``amounts`` as integers over ``10**exponent`` (the same values), or None when one
    is not a finite amount >= 0."""
    exponents = []
    for amount in amounts:
        sign, _, exponent = amount.as_tuple()
        if sign or not isinstance(exponent, int):
            return None  # negative, NaN or infinite: the Decimal path says what it costs
        exponents.append(exponent)
    exponent = -min(0, *exponents)
    return tuple(int(amount.scaleb(exponent)) for amount in amounts), exponent


@dataclass(frozen=True)
class PriceTable:
    """Model prices by every id they answer to, and the rules shared by all models."""

    entries: Mapping[str, ModelPrice] = field(default_factory=dict)  # by table key
    batch_price_factor: Decimal = Decimal("0.5")
    web_search_per_1000: Decimal = Decimal(10)
    sources: tuple[str, ...] = ()  # the files read, first the packaged one
    compiled: date | None = None
    _by_id: Mapping[str, ModelPrice] = field(default_factory=dict, repr=False, compare=False)
    # lookup() answers by name: it runs for every row, and the rules above are regexes.
    _memo: dict[str, ModelPrice | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_id: dict[str, ModelPrice] = {}
        for price in self.entries.values():
            for model_id in (price.model, *price.ids):
                by_id[model_id] = price
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_memo", {})

    def lookup(self, model: str | None) -> ModelPrice | None:
        """The price of ``model``, or None when it is not known.

        ``model`` may be an alias, a dated id (listed or not), or either as a gateway spells
        it (``canonical_model``); an exact id in the table always wins.
        """
        if not model:
            return None
        if model in self._memo:
            return self._memo[model]
        found = next(
            (self._by_id[name] for name in _candidates(model) if name in self._by_id), None
        )
        if len(self._memo) < _LOOKUP_MEMO:
            self._memo[model] = found
        return found

    def listed(self, model: str) -> ModelPrice | None:
        """The entry ``model`` names as written: one of its ids, or a dated id of its alias.
        A user's price file overrides the entry it names this way; a gateway spelling there
        is a model of its own (a gateway's own price for it)."""
        found = self._by_id.get(model)
        dated = _DATED_ID.match(model)
        if found is None and dated is not None:
            found = self._by_id.get(dated.group("alias"))
        return found

    def resolve(self, model: str | None) -> str:
        """The name ``model`` is reported and grouped under: its table key when it has a
        price (``anthropic/claude-haiku-4.5`` -> ``claude-haiku-4-5``), else its undecorated
        name without a date."""
        price = self.lookup(model)
        return price.model if price is not None else undated_model(model)

    def suggest(self, model: str | None, count: int = SUGGESTIONS) -> list[str]:
        """The table keys closest to ``model`` (difflib), closest first: a did-you-mean."""
        if not model:
            return []
        # Compared without the "claude-" every id shares, which would make any name close.
        wanted = _without_date(canonical_model(model)).removeprefix("claude-")
        key_of = {
            model_id.removeprefix("claude-"): p.model
            for model_id, p in self._by_id.items()
            if p.retired is None  # never suggest a model the API no longer serves
        }
        # A name that says haiku, sonnet or opus means that family: suggest its models first.
        family = next((f for f in _FAMILIES if f in wanted), None)
        same = [name for name in key_of if family is not None and family in name]
        close: list[str] = []
        for pool in (same, list(key_of)):
            close = difflib.get_close_matches(wanted, pool, n=count * 3)
            if close:
                break
        return list(dict.fromkeys(key_of[name] for name in close))[:count]

    def cost(self, model: str | None, usage: Usage) -> Decimal | None:
        """USD for one response, or None when the model has no price."""
        price = self.lookup(model)
        return None if price is None else self.cost_at(price, usage)

    def cost_at(self, price: ModelPrice, usage: Usage) -> Decimal:
        """USD for one response at ``price``'s rates (long-context and batch rules applied)."""
        r = price.rates_for(usage.total_input)
        tokens = (
            usage.input_tokens * r.input
            + usage.cache_write_5m * r.cache_write_5m
            + usage.cache_write_1h * r.cache_write_1h
            + usage.cache_read * r.cache_read
            + usage.output_tokens * r.output
        ) / PER_MILLION
        if usage.batch:
            tokens *= self.batch_price_factor
        return tokens + usage.web_search_requests * self.web_search_per_1000 / 1000

    def reply_cost(self, models: Iterable[str | None], usage: Mapping[str, Any]) -> float | None:
        """``cost_usd`` of an output row: the first of ``models`` with a price (served model
        first, then the one asked for), priced from the response's own usage.

        Every answered row asks this, so it is priced in integers where that is exact:
        ``float(cost_at(...))`` to the bit (``_exact_cost``), in a fraction of the time."""
        for model in models:
            price = self.lookup(model)
            if price is not None:
                parts = _usage_parts(usage)
                cost = self._exact_cost(price, parts)
                if cost is None:
                    cost = float(self.cost_at(price, Usage(*parts)))
                return cost
        return None

    def _exact_cost(self, price: ModelPrice, parts: _UsageParts) -> float | None:
        """``float(self.cost_at(price, Usage(*parts)))``, from integers; None where the
        Decimal steps might round (amounts past ``_EXACT_BELOW``, a context of less
        precision) or a rate is odd (``Rates.scaled``), for the Decimal path to price."""
        inp, out, w5m, w1h, read, searches, batch = parts
        rates = price.rates_for(inp + w5m + w1h + read)
        scaled = rates.scaled
        extras = self._scaled_extras
        if scaled is None or extras is None or getcontext().prec < _EXACT_PRECISION:
            return None
        (r_in, r_5m, r_1h, r_read, r_out), exp = scaled
        (factor, search), (f_exp, s_exp) = extras
        tokens = inp * r_in + w5m * r_5m + w1h * r_1h + read * r_read + out * r_out
        exp += 6  # per million tokens
        if batch:
            tokens *= factor
            exp += f_exp
        web = searches * search
        web_exp = s_exp + 3  # per 1,000 searches
        top = max(exp, web_exp)
        total: int = tokens * 10 ** (top - exp) + web * 10 ** (top - web_exp)
        if total >= _EXACT_BELOW:
            return None
        divisor: int = 10**top
        return total / divisor

    @cached_property
    def _scaled_extras(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """(batch factor, search price) as integers, and each one's power of ten."""
        factor = _scaled(self.batch_price_factor)
        search = _scaled(self.web_search_per_1000)
        if factor is None or search is None:
            return None
        return (factor[0][0], search[0][0]), (factor[1], search[1])

    def models(self) -> list[ModelPrice]:
        """Each priced model once, in table order."""
        return list(self.entries.values())

    def merged(self, other: PriceTable) -> PriceTable:
        """This table with ``other``'s entries and rules laid over it (``--prices FILE``)."""
        entries = dict(self.entries)
        entries.update(other.entries)
        return PriceTable(
            entries=entries,
            batch_price_factor=other.batch_price_factor,
            web_search_per_1000=other.web_search_per_1000,
            sources=self.sources + other.sources,
            compiled=other.compiled or self.compiled,
        )


class UnknownModels:
    """Remembers which models had no price, so each is warned about once, not once a row.

    ``prices`` is the table the run prices with: its models are the did-you-mean.
    """

    def __init__(self, prices: PriceTable | None = None) -> None:
        self.seen: set[str] = set()
        self.prices = prices

    def first_time(self, model: str | None) -> bool:
        """True the first time ``model`` is reported."""
        key = model or "(none)"
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def check(self, row: Mapping[str, Any], log: Callable[[str], None]) -> None:
        """Log the warning if ``row`` is an answer with no price, once per model."""
        answered = row.get("status") == "ok" and row.get("cost_usd") is None
        if answered and self.first_time(row.get("model")):
            log(unknown_model_warning(row.get("model"), self.prices))


def suggestion(model: str | None, prices: PriceTable | None = None) -> str:
    """``did you mean 'a' or 'b'?`` naming the priced models closest to ``model``, or ""
    (``prices`` defaults to the packaged table)."""
    close = [repr(name) for name in (prices or default_prices()).suggest(model)]
    if not close:
        return ""
    names = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
    return f"did you mean {names}?"


def did_you_mean(model: str | None, prices: PriceTable | None = None) -> str:
    """`` (did you mean 'a' or 'b'?)``, to follow a model's name in a sentence, or ""."""
    text = suggestion(model, prices)
    return f" ({text})" if text else ""


def unknown_model_warning(model: str | None, prices: PriceTable | None = None) -> str:
    """The one warning line for a model without a price.

    A name that is not a Claude id is taken as a gateway's own alias: it was sent as asked,
    and the warning says what batchrun cannot know about it, not that it is a typo."""
    if model and not is_claude_id(model):
        hint = suggestion(model, prices)
        return (
            f"batchrun: warning: model {model!r} is not a model batchrun knows (not a Claude "
            f"id; a gateway's own name?{f' Or {hint}' if hint else ''}): its prices and request "
            f"rules are unknown, so its rows get cost_usd = null and {option('max_cost')} cannot "
            f"bound it. Give its prices with {option('prices', 'FILE')} (the layout of "
            f"{packaged_path()})."
        )
    return (
        f"batchrun: warning: no price for model {model!r}{did_you_mean(model, prices)}: its "
        f"rows get cost_usd = null. Fix the model name, or add a price with "
        f"{option('prices', 'FILE')} (the layout of {packaged_path()})."
    )


# --- loading -------------------------------------------------------------------------------


PACKAGED = "prices.toml"


@lru_cache(maxsize=1)
def packaged_path() -> str:
    """Where the packaged table is: the installed file's path, which messages name so a user
    can open it (``batchrun/cost/prices.toml`` when the package is not plain files)."""
    found = resources.files(__package__).joinpath(PACKAGED)
    return str(found) if isinstance(found, Path) else f"batchrun/cost/{PACKAGED}"


@lru_cache(maxsize=1)
def default_prices() -> PriceTable:
    """The packaged price table (read once)."""
    text = resources.files(__package__).joinpath(PACKAGED).read_text(encoding="utf-8")
    return parse_prices(_parse_toml(text, packaged_path()), packaged_path())


def load_prices(path: Path | None = None) -> PriceTable:
    """The packaged table, with the user's file at ``path`` laid over it when given.

    A user entry for a model the table knows may give only the prices that differ; the rest
    (and the ids) are kept. A new model needs ``input`` and ``output``; missing cache prices
    follow the standard multipliers (5 m write ×1.25, 1 h write ×2, read ×0.1).
    """
    if path is None:
        return default_prices()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read price file: {exc.strerror or exc}") from exc
    return load_prices_text(text, str(path))


def load_prices_text(text: str, origin: str) -> PriceTable:
    """``load_prices`` of a price file's text, read by the caller from ``origin`` (a path
    or an ``s3://`` / ``gs://`` URL, without secrets: it is shown in errors)."""
    base = default_prices()
    return base.merged(parse_prices(_parse_toml(text, origin), origin, base=base))


def _parse_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc
    return data


def parse_prices(
    data: Mapping[str, Any], origin: str, *, base: PriceTable | None = None
) -> PriceTable:
    """A table from parsed TOML; ``base`` supplies what a partial override leaves out."""
    unknown = set(data) - {"table", "models"}
    if unknown:
        raise ConfigError(f"{origin}: unknown section(s) {sorted(unknown)}: use [table], [models]")
    head = _table(data.get("table", {}), origin, "[table]")
    _reject_unknown(head, _TABLE_KEYS, origin, "[table]")
    defaults = base or PriceTable()
    models = _table(data.get("models", {}), origin, "[models]")
    entries = {
        key: _entry(key, _table(raw, origin, f"[models.{key}]"), origin, base)
        for key, raw in models.items()
    }
    compiled = head.get("compiled")
    return PriceTable(
        entries=entries,
        batch_price_factor=_amount(
            head.get("batch_price_factor", defaults.batch_price_factor),
            origin,
            "batch_price_factor",
        ),
        web_search_per_1000=_amount(
            head.get("web_search_per_1000", defaults.web_search_per_1000),
            origin,
            "web_search_per_1000",
        ),
        sources=(origin,),
        compiled=compiled if isinstance(compiled, date) else None,
    )


def _entry(key: str, raw: Mapping[str, Any], origin: str, base: PriceTable | None) -> ModelPrice:
    where = f"[models.{key}]"
    _reject_unknown(raw, _ENTRY_KEYS, origin, where)
    known = base.listed(key) if base is not None else None
    ids = _ids(raw.get("ids", []), origin, where)
    if known is not None:
        rates = _rates(raw, origin, where, known.rates)
        ids = tuple(dict.fromkeys((*known.ids, *ids)))
        long_context = known.long_context
    else:
        rates = _rates(raw, origin, where, None)
        long_context = None
    if "long_context" in raw:
        long_context = _long_context(raw["long_context"], origin, where)
    effective = raw.get("effective_from", known.effective_from if known else None)
    if effective is not None and not isinstance(effective, date):
        raise ConfigError(f"{origin}: {where} effective_from must be a date like 2026-01-31")
    retired = raw.get("retired", known.retired if known else None)
    if retired is False:
        retired = None  # a gateway that still serves it: the user's word
    elif retired is not None and (not isinstance(retired, date) or isinstance(retired, datetime)):
        raise ConfigError(
            f"{origin}: {where} retired must be a date like 2026-06-15, or false for a model "
            "your gateway still serves"
        )
    successor = raw.get("successor", known.successor if known else "")
    if not isinstance(successor, str):
        raise ConfigError(f"{origin}: {where} successor must be a model id")
    rules = known.rules if known is not None else None
    if "rules" in raw:
        model = known.model if known is not None else key
        rules = parse_rules(raw["rules"], origin, f"[models.{key}.rules]", model=model, base=rules)
    return ModelPrice(
        model=known.model if known is not None else key,
        name=str(raw.get("name", known.name if known else key)),
        ids=ids or (key,),
        rates=rates,
        long_context=long_context,
        effective_from=effective,
        source=str(raw.get("source", origin)),
        note=str(raw.get("note", "" if known is None or "source" in raw else known.note)),
        min_cacheable_tokens=_minimum(raw, origin, where, known),
        min_cacheable_source=str(
            raw.get("min_cacheable_source", known.min_cacheable_source if known else "")
        ),
        retired=retired,
        successor=successor,
        rules=rules,
    )


def _minimum(
    raw: Mapping[str, Any], origin: str, where: str, known: ModelPrice | None
) -> int | None:
    value = raw.get("min_cacheable_tokens", known.min_cacheable_tokens if known else None)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{origin}: {where} min_cacheable_tokens must be a count >= 1")
    return value


def min_cacheable_tokens(model: str | None, prices: PriceTable | None = None) -> int:
    """The shortest prefix ``model`` caches, in tokens; the safe highest for unknown models.

    A breakpoint placed before this many tokens is silently ignored by the API, so batchrun
    places one only past it (``rows.prefix``).
    """
    price = (prices or default_prices()).lookup(model)
    if price is None or price.min_cacheable_tokens is None:
        return SAFE_MIN_CACHEABLE_TOKENS
    return price.min_cacheable_tokens


def _rates(raw: Mapping[str, Any], origin: str, where: str, inherited: Rates | None) -> Rates:
    given = {
        name: _amount(raw[name], origin, f"{where} {name}") for name in RATE_NAMES if name in raw
    }
    if inherited is not None:
        return replace(inherited, **given)
    missing = [name for name in ("input", "output") if name not in given]
    if missing:
        raise ConfigError(f"{origin}: {where} needs {' and '.join(missing)} (USD per million)")
    base = given["input"]
    return Rates(
        input=base,
        output=given["output"],
        cache_write_5m=given.get("cache_write_5m", base * CACHE_WRITE_5M_FACTOR),
        cache_write_1h=given.get("cache_write_1h", base * CACHE_WRITE_1H_FACTOR),
        cache_read=given.get("cache_read", base * CACHE_READ_FACTOR),
    )


def _long_context(raw: Any, origin: str, where: str) -> LongContext:
    section = _table(raw, origin, f"{where}.long_context")
    _reject_unknown(section, _LONG_KEYS, origin, f"{where}.long_context")
    above = section.get("above_input_tokens")
    if not isinstance(above, int) or isinstance(above, bool) or above < 1:
        raise ConfigError(f"{origin}: {where}.long_context needs above_input_tokens (a count)")
    return LongContext(above, _rates(section, origin, f"{where}.long_context", None))


def _ids(value: Any, origin: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{origin}: {where} ids must be a list of model ids")
    return tuple(value)


def _amount(value: Any, origin: str, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise ConfigError(f"{origin}: {what} must be a number, not {value!r}")
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise ConfigError(f"{origin}: {what} must be a number >= 0, not {value!r}")
    return amount


def _table(value: Any, origin: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{origin}: {where} must be a table")
    return value


def _reject_unknown(
    raw: Mapping[str, Any], allowed: frozenset[str], origin: str, where: str
) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ConfigError(f"{origin}: {where}: unknown key(s) {', '.join(extra)}")


# --- what prompt caching saves (pure) ------------------------------------------------------


def uncached_cost(
    rates: Rates, cache_write_5m: int, cache_write_1h: int, cache_read: int
) -> Decimal:
    """USD the cached tokens (written or read) would have cost as plain input."""
    return (cache_write_5m + cache_write_1h + cache_read) * rates.input / PER_MILLION


def cached_cost(rates: Rates, cache_write_5m: int, cache_write_1h: int, cache_read: int) -> Decimal:
    """USD the cached tokens cost: writes at their ttl's price, reads at the read price."""
    return (
        cache_write_5m * rates.cache_write_5m
        + cache_write_1h * rates.cache_write_1h
        + cache_read * rates.cache_read
    ) / PER_MILLION


def cache_saving(
    rates: Rates,
    cache_write_5m: int,
    cache_write_1h: int,
    cache_read: int,
    factor: Decimal = Decimal(1),
) -> Decimal:
    """What caching saved: those tokens as plain input minus what they cost, times ``factor``
    (the batch price factor for rows sent as Message Batches). Negative when writes were paid
    that too few reads made up for (a write costs 1.25x or 2x, a read 0.1x)."""
    plain = uncached_cost(rates, cache_write_5m, cache_write_1h, cache_read)
    return (plain - cached_cost(rates, cache_write_5m, cache_write_1h, cache_read)) * factor
