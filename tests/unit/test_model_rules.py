"""The model table's request rules (``[models.<id>.rules]`` in prices.toml): what each model
takes, read for any spelling of its name; a user's price file overrides them key by key or
gives a gateway's alias its own; a model nobody gave rules to has none (``model_rules`` None)."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import pytest

from batchrun.core.errors import ConfigError
from batchrun.cost.models import EFFORT_LEVELS, ModelRules, model_rules
from batchrun.cost.prices import default_prices, load_prices
from batchrun.cost.rules import RULE_KEYS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ALL_EFFORT = frozenset(EFFORT_LEVELS)


def test_what_the_newest_models_take() -> None:
    table = default_prices()
    haiku = model_rules("claude-haiku-5-5", table)
    assert haiku is not None
    assert (haiku.structured_outputs, haiku.forced_tool_choice) == (True, True)
    assert (haiku.effort, haiku.effort_default) == (ALL_EFFORT, "medium")
    assert (haiku.temperature, haiku.top_p, haiku.top_k) == ((1, 1), (0.99, 0.99), False)
    assert not haiku.temperature_with_top_p and not haiku.prefill
    assert haiku.thinks_by_default and not haiku.always_thinks  # it takes thinking disabled
    assert haiku.tokenizer_factor == pytest.approx(1.3)
    assert (haiku.max_output_tokens, haiku.batch_max_output_tokens) == (128_000, 300_000)
    for model in ("claude-opus-5-5", "claude-sonnet-5-5", "claude-fable-5-1", "claude-fable-5-2"):
        rules = model_rules(model, table)
        assert rules is not None and not rules.forced_tool_choice, model
    opus = model_rules("claude-opus-5-5", table)
    assert opus is not None and opus.always_thinks and opus.effort_default == "medium"
    fable = model_rules("claude-fable-5-1", table)
    assert fable is not None and fable.always_thinks and fable.batch_max_output_tokens is None


def test_older_models_take_sampling_and_budgeted_thinking() -> None:
    table = default_prices()
    haiku = model_rules("claude-haiku-4-5", table)
    assert haiku is not None
    assert haiku.effort == frozenset() and haiku.effort_default is None
    assert haiku.temperature == (0, 1) and haiku.top_k and not haiku.temperature_with_top_p
    assert "enabled" in haiku.thinking and not haiku.thinks_by_default and haiku.prefill
    assert haiku.tokenizer_factor == 1.0 and haiku.max_output_tokens == 64_000
    opus45 = model_rules("claude-opus-4-5", table)
    assert opus45 is not None and opus45.effort == {"low", "medium", "high"}
    assert "adaptive" not in opus45.thinking


@pytest.mark.parametrize(
    "name", ["claude-haiku-5.5", "anthropic/claude-haiku-5-5", "claude-haiku-5-5@20261007"]
)
def test_rules_are_found_for_every_spelling_the_table_reads(name: str) -> None:
    assert model_rules(name, default_prices()) == model_rules("claude-haiku-5-5", default_prices())


def test_a_model_the_table_does_not_know_has_no_rules() -> None:
    for name in ("my-gateway-fast", "claude-haiku-9-9", None, ""):
        assert model_rules(name, default_prices()) is None


def test_every_model_the_api_serves_states_every_rule() -> None:
    """The packaged table leaves nothing to a default: a rule left out would take everything."""
    text = resources.files("batchrun.cost").joinpath("prices.toml").read_text(encoding="utf-8")
    for key, entry in tomllib.loads(text)["models"].items():
        if "retired" in entry:
            continue
        stated = set(entry["rules"])
        optional = {"effort_default", "max_output_tokens", "batch_max_output_tokens"}
        assert RULE_KEYS - optional <= stated, (key, sorted(RULE_KEYS - optional - stated))
        assert "read 20" in entry["rules"]["source"], key  # with the date it was read


def test_a_price_file_overrides_rules_key_by_key_and_gives_an_alias_rules(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        "[models.claude-haiku-5-5.rules]\nforced_tool_choice = false\n"
        "[models.my-gateway-fast]\ninput = 1\noutput = 5\n"
        '[models.my-gateway-fast.rules]\ntop_k = false\neffort = ["low"]\n'
        "[models.my-gateway-plain]\ninput = 1\noutput = 5\n",
        encoding="utf-8",
    )
    table = load_prices(path)
    haiku = model_rules("claude-haiku-5-5", table)
    packaged = model_rules("claude-haiku-5-5", default_prices())
    assert haiku is not None and packaged is not None
    assert not haiku.forced_tool_choice and haiku.effort == packaged.effort  # the rest is kept
    alias = model_rules("my-gateway-fast", table)
    assert alias == ModelRules(model="my-gateway-fast", top_k=False, effort=frozenset({"low"}))
    assert model_rules("my-gateway-plain", table) is None  # no rules given: none enforced
    price, before = table.lookup("claude-haiku-5-5"), default_prices().lookup("claude-haiku-5-5")
    assert price is not None and before is not None and price.rates == before.rates


@pytest.mark.parametrize(
    ("rules", "wrong"),
    [
        ("temperature = [1]", "temperature must be [lowest, highest]"),
        ("top_p = [0.5, 2]", "within 0 to 1"),
        ('effort = ["huge"]', "'huge' is not one of low, medium, high, xhigh, max"),
        ('thinking = ["on"]', "'on' is not one of enabled, adaptive"),
        ("prefill = 1", "prefill must be true or false"),
        ("tokenizer_factor = 0", "tokenizer_factor must be a number above 0"),
        ("max_output_tokens = 0", "max_output_tokens must be a count >= 1"),
        ("colour = 1", "unknown key(s) colour"),
        ('effort = ["low"]\neffort_default = "high"', "effort_default 'high' is not one of its"),
    ],
)
def test_a_bad_rules_table_is_refused_naming_the_file_table_and_key(
    tmp_path: Path, rules: str, wrong: str
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(f"[models.claude-haiku-5-5.rules]\n{rules}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_prices(path)
    assert str(caught.value).startswith(f"{path}: [models.claude-haiku-5-5.rules]")
    assert wrong in str(caught.value)
