"""A model name that reads as a Claude id but matches no model batchrun knows, or a retired one,
is refused with a did-you-mean; a ``--prices FILE`` entry makes a model known; the alias
warning offers a close Claude id (the commands' exits: tests/integration/test_model_check.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.cost.models import known_model, model_refusal, sendable_models
from batchrun.cost.prices import (
    default_prices,
    load_prices,
    unknown_model_warning,
)

# --- which names are refused (pure) ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "claude-haiku-4.6",
        "claude-haiku-4-6",
        "anthropic/claude-haiku-4.6",
        "us.anthropic.claude-haiku-4-6-20260101-v1:0",
        "claude-haiku-4-6@20260101",
        "claude-3-5-haiku-20241022",  # a real id once, not in the table: the API 404s it
    ],
)
def test_an_unknown_claude_id_in_any_spelling_is_refused_with_a_did_you_mean(name: str) -> None:
    refusal = model_refusal(name, default_prices())
    assert refusal is not None
    assert refusal.startswith(f"`{name}` is not a Claude model batchrun knows (did you mean `")
    assert "if it is new, add it with prices=FILE" in refusal


@pytest.mark.parametrize(
    "name",
    [
        "claude-haiku-4-5",
        "claude-haiku-4.5",
        "anthropic/claude-haiku-4-5",
        "claude-haiku-4-5-20991231",  # a new snapshot of a listed alias
        "claude-haiku-5-5",
        "claude-fable-5-2",
        "my-gateway-fast",  # not a Claude id: a gateway's own alias runs (with a warning)
        "gpt-4o",
    ],
)
def test_known_models_and_names_that_are_not_claude_ids_are_not_refused(name: str) -> None:
    assert model_refusal(name, default_prices()) is None


def test_a_retired_model_is_refused_by_its_api_id_and_names_its_successor() -> None:
    table = default_prices()
    for name in ("claude-opus-4-1", "claude-opus-4-1-20250805"):
        assert known_model(name, table) is not None  # still priced, for older outputs
        assert model_refusal(name, table) == (
            f"`{name}` (Claude Opus 4.1) was retired on 2026-08-05 and the Claude API answers "
            "404 for it: use `claude-opus-5-5` instead. If your gateway still serves it, add "
            "[models.claude-opus-4-1] with retired = false to a price file and pass "
            "prices=FILE"
        )
    sonnet4 = model_refusal("claude-sonnet-4-20250514", table)
    assert sonnet4 is not None and "use `claude-sonnet-5-5` instead" in sonnet4
    # Gateways retire models on their own schedules: their spellings are let through.
    assert model_refusal("us.anthropic.claude-opus-4-1-20250805-v1:0", table) is None
    assert model_refusal("claude-opus-4-1@20250805", table) is None
    assert "claude-opus-4-1" not in sendable_models(table)


def test_a_price_file_makes_a_model_known_or_a_retired_one_served(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        "[models.claude-haiku-4-6]\ninput = 1\noutput = 5\n"
        "[models.claude-opus-4-1]\nretired = false\n",
        encoding="utf-8",
    )
    table = load_prices(path)
    assert model_refusal("claude-haiku-4-6", table) is None
    assert model_refusal("claude-opus-4-1", table) is None
    assert {"claude-haiku-4-6", "claude-opus-4-1"} <= sendable_models(table)
    bad = tmp_path / "bad.toml"
    bad.write_text('[models.claude-opus-4-1]\nretired = "soon"\n', encoding="utf-8")
    with pytest.raises(Exception, match="retired must be a date like 2026-06-15, or false"):
        load_prices(bad)


def test_the_alias_warning_offers_a_claude_id_when_the_name_is_close_to_one() -> None:
    # Not a Claude id, so it is sent; but "haiku-4.5" is most likely claude-haiku-4-5.
    warning = unknown_model_warning("haiku-4.5")
    assert "(not a Claude id; a gateway's own name? Or did you mean 'claude-haiku-4-5'" in warning
    assert "did you mean" not in unknown_model_warning("my-gateway-fast")
