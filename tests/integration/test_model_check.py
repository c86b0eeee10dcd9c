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
from batchrun.cost.prices import (
    default_prices,
    packaged_path,
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
