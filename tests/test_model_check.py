"""A model name the API would refuse is caught before anything is sent (issue 23, item 15).

A name that reads as a Claude id but matches no model batchrun knows (a typo such as
``claude-haiku-4.6``), or a retired model by its Claude API id, stops ``run``, ``estimate`` and
``validate`` once with exit 2 when it is the job's model, and is that row's error row when a
row asks for it. A name that is not a Claude id (a gateway's alias) runs, with one warning.
A ``--prices FILE`` entry makes a model known. The estimate names the real price table.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, prompts, write_jsonl

from batchrun import load_config, run
from batchrun.cli import cli
from batchrun.cost.models import known_model, model_refusal, sendable_models
from batchrun.cost.prices import (
    default_prices,
    load_prices,
    packaged_path,
    unknown_model_warning,
)
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.sink import journal_path

TYPO = "claude-haiku-4.6"
TYPO_REFUSAL = (
    "`claude-haiku-4.6` is not a Claude model batchrun knows (did you mean `claude-haiku-4-5` "
    "or `claude-haiku-5-5`?); if it is new, add it with --prices FILE (the layout of "
    f"{packaged_path()})"
)
# From Python the same refusal names the keyword (core.wording).
TYPO_REFUSAL_FROM_PYTHON = TYPO_REFUSAL.replace("--prices FILE", "prices=FILE")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"ANTHROPIC_API_KEY": TEST_KEY})
    return result.exit_code, result.stdout, result.stderr


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


# --- the job's model: refused once, exit 2, nothing sent ---------------------------------


def test_run_with_an_unknown_claude_id_stops_before_sending_with_exit_2(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(5))
    out = tmp_path / "out.parquet"
    code, _, err = invoke(
        "run", str(inp), "-o", str(out), "--model", TYPO, "--max-tokens", "5",
        "--max-cost", "1", "--base-url", sim.base_url,
    )  # fmt: skip
    assert code == 2  # was 4 ("no price for model"), and only with --max-cost
    assert err == (
        f"batchrun: error: {inp}: the job's model {TYPO_REFUSAL}. Nothing was sent or written.\n"
    )
    assert sim.stats.requests == 0
    assert not out.exists() and not journal_path(out).exists()


@pytest.mark.parametrize("command", ["estimate", "validate"])
def test_estimate_and_validate_refuse_an_unknown_claude_id_with_exit_2(
    tmp_path: Path, command: str
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    code, out, err = invoke(command, str(inp), "--model", TYPO, "--max-tokens", "5")
    assert code == 2, out + err
    assert f"the job's model {TYPO_REFUSAL}. Nothing was sent or written." in err


def test_a_retired_job_model_is_refused_with_exit_2(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    code, _, err = invoke("validate", str(inp), "--model", "claude-opus-4-1", "--max-tokens", "5")
    assert code == 2
    assert "was retired on 2026-08-05" in err and "use `claude-opus-5-5` instead" in err


def test_a_model_a_price_file_adds_runs_on_the_built_in_simulator(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.parquet"
    prices = tmp_path / "p.toml"
    prices.write_text("[models.claude-haiku-4-6]\ninput = 1\noutput = 5\n", encoding="utf-8")
    code, _, err = invoke(
        "run", str(inp), "-o", str(out), "--model", "claude-haiku-4-6", "--max-tokens", "5",
        "--prices", str(prices), "--simulate", "-q",
    )  # fmt: skip
    assert code == 0, err
    rows = pq.read_table(out).to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert all(r["cost_usd"] is not None and r["cost_usd"] > 0 for r in rows)


# --- a row's model: that row's error, the job goes on ----------------------------------------


def test_a_row_asking_for_an_unknown_claude_id_is_its_error_row_and_is_not_sent(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = prompts(4)
    rows[1] = {**rows[1], "model": TYPO}
    rows[2] = {**rows[2], "model": "claude-opus-4-1"}  # retired
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    config = load_config(
        inp,
        {"output": str(out), "model": "claude-haiku-4-5", "max_tokens": 20, "quiet": True},
        environ={"ANTHROPIC_API_KEY": TEST_KEY, "ANTHROPIC_BASE_URL": sim.base_url},
    )
    summary = run(config)
    assert (summary.ok, summary.invalid, summary.exit_code) == (2, 2, 3)
    assert sim.stats.requests == 2  # the two refused rows were never sent
    got = pq.read_table(out).to_pylist()
    assert [r["status"] for r in got] == ["ok", "error", "error", "ok"]
    assert got[1]["error_type"] == "invalid_request"
    assert got[1]["error_message"] == f"{inp}:2: model: {TYPO_REFUSAL_FROM_PYTHON}"
    assert "was retired on 2026-08-05" in got[2]["error_message"]
    # validate lists the same rows, with file, line and field.
    code, text, _ = invoke("validate", str(inp), "--model", "claude-haiku-4-5", "--max-tokens", "5")
    assert code == 3 and f"{inp}:2: model: {TYPO_REFUSAL}" in text, text


# --- a gateway's alias: runs, one warning ----------------------------------------------------


def test_a_gateway_alias_runs_with_one_warning_for_the_whole_run(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(12))
    out = tmp_path / "out.parquet"
    gateway = SimulatorConfig(gateway_models=frozenset({"my-gateway-fast"}))
    with SimulatorThread(gateway) as sim:
        code, _, err = invoke(
            "run", str(inp), "-o", str(out), "--model", "my-gateway-fast", "--max-tokens", "20",
            "--base-url", sim.base_url,
        )  # fmt: skip
    assert code == 0, err
    warning = (
        "batchrun: warning: model 'my-gateway-fast' is not a model batchrun knows (not a Claude "
        "id; a gateway's own name?): its prices and request rules are unknown, so its rows get "
        "cost_usd = null and --max-cost cannot bound it. Give its prices with --prices FILE "
        f"(the layout of {packaged_path()})."
    )
    assert err.count(warning) == 1
    assert err.count("my-gateway-fast") == 1  # no other line repeats it
    rows = pq.read_table(out).to_pylist()
    assert {r["status"] for r in rows} == {"ok"} and {r["cost_usd"] for r in rows} == {None}


def test_the_alias_warning_offers_a_claude_id_when_the_name_is_close_to_one() -> None:
    # Not a Claude id, so it is sent; but "haiku-4.5" is most likely claude-haiku-4-5.
    warning = unknown_model_warning("haiku-4.5")
    assert "(not a Claude id; a gateway's own name? Or did you mean 'claude-haiku-4-5'" in warning
    assert "did you mean" not in unknown_model_warning("my-gateway-fast")


def test_the_run_warning_is_given_once_per_run_in_the_library_too(tmp_path: Path) -> None:
    rows = [{**row, "model": "my-gateway-fast"} for row in prompts(6)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    stream = io.StringIO()
    gateway = SimulatorConfig(gateway_models=frozenset({"my-gateway-fast"}))
    with SimulatorThread(gateway) as sim:
        config = load_config(
            inp,
            {"output": str(tmp_path / "o.parquet"), "max_tokens": 20, "base_url": sim.base_url},
            environ={"ANTHROPIC_API_KEY": TEST_KEY},
        )
        summary = run(config, runtime=Runtime(progress_stream=stream))
    assert summary.ok == 6 and summary.unpriced == 6
    assert stream.getvalue().count("model 'my-gateway-fast' is not a model batchrun knows") == 1


def test_a_rehearsal_with_simulate_answers_a_gateway_alias_and_warns_once(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(4))
    out = tmp_path / "out.parquet"
    code, _, err = invoke(
        "run", str(inp), "-o", str(out), "--model", "my-gateway-fast", "--max-tokens", "5",
        "--simulate",
    )  # fmt: skip
    assert code == 0, err
    assert err.count("model 'my-gateway-fast' is not a model batchrun knows") == 1
    assert [r["status"] for r in pq.read_table(out).to_pylist()] == ["ok"] * 4


# --- where the price table is (item 16) -------------------------------------------------


def test_messages_name_the_price_table_where_it_is(tmp_path: Path) -> None:
    where = Path(packaged_path())
    assert where.is_file() and where.parts[-3:] == ("batchrun", "cost", "prices.toml")
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    code, text, err = invoke(
        "estimate", str(inp), "--model", "claude-haiku-4-5", "--max-tokens", "5"
    )
    assert code == 0, err
    assert f"prices: {where}" in text and "batchrun/prices.toml" not in text
    assert default_prices().sources == (str(where),)
