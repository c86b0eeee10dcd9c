"""The command line through click's runner (as a real subprocess:
tests/system/test_cli_process.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, prompts, write_jsonl

from batchrun.cli import cli
from batchrun.simulator import SimulatorConfig, SimulatorThread


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(cli, list(args), env={"ANTHROPIC_API_KEY": TEST_KEY, **(env or {})})
    return result.exit_code, result.stdout, result.stderr


def test_help_lists_the_commands_and_states_precedence() -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    for command in ("run", "validate", "simulate"):
        assert command in out
    code, out, _ = invoke("run", "--help")
    assert code == 0 and "highest first" in out and "--concurrency" in out


def test_run_writes_the_output_and_prints_a_summary(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    out = tmp_path / "out.parquet"
    code, _, err = invoke(
        "run",
        str(inp),
        "-o",
        str(out),
        "--model",
        "claude-haiku-4-5",
        "--max-tokens",
        "10",
        "--base-url",
        sim.base_url,
        "-c",
        "4",
    )
    assert code == 0, err
    assert "30 ok, 0 error" in err and "rows/s" in err and "stop" in err
    assert pq.read_table(out).num_rows == 30


def test_rows_in_error_give_exit_code_3(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [*prompts(3), {"id": "x", "prompt": ""}])
    code, _, err = invoke(
        "run",
        str(inp),
        "-o",
        str(tmp_path / "o.jsonl"),
        "--model",
        "claude-haiku-4-5",
        "--max-tokens",
        "10",
        "--base-url",
        sim.base_url,
    )
    assert code == 3, err
    assert "1 invalid, not sent" in err


def test_the_summary_says_how_to_send_rows_in_error_again(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [*prompts(3), {"id": "x", "prompt": ""}])
    out = str(tmp_path / "o.jsonl")
    flags = ["--model", "claude-haiku-4-5", "--max-tokens", "10", "--base-url", sim.base_url]
    sim.script(["500"])
    code, _, err = invoke(
        "run", str(inp), "-o", out, "--max-retries", "0", "--concurrency", "1", *flags
    )
    assert code == 3, err
    assert "--retry-errors sends the 1 that were sent again" in err  # not the invalid row
    code, _, err = invoke("run", str(inp), "-o", out, "--retry-errors", *flags)
    assert code == 3 and "this run    2 rows: 1 ok, 1 error (1 invalid, not sent)" in err
    assert "--retry-errors sends" not in err


@pytest.mark.parametrize("via", ["online", "batches"])
def test_a_missing_input_is_named_and_nothing_is_created(tmp_path: Path, via: str) -> None:
    job = tmp_path / "job.toml"
    job.write_text('input = "gone.jsonl"\nmodel = "claude-haiku-4-5"\nmax_tokens = 5\n')
    code, _, err = invoke("run", str(job), "--simulate", "--via", via)
    assert code == 1
    assert f"{tmp_path / 'gone.jsonl'}: no such file" in err and "journal" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.toml"]


def test_a_refused_key_stops_the_run_and_says_nothing_of_kept_rows(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    out = tmp_path / "o.parquet"
    with SimulatorThread(SimulatorConfig(api_key="sk-the-right-one")) as sim:
        code, _, err = invoke(
            "run", str(inp), "-o", str(out), "--model", "m", "--max-tokens", "5",
            "--base-url", sim.base_url,
        )  # fmt: skip
    assert code == 1
    assert "HTTP 401 authentication_error" in err
    assert "kept" not in err  # no row was answered: there is nothing to resume from


def test_validate_lists_each_problem_with_file_line_and_field(tmp_path: Path) -> None:
    inp = write_jsonl(
        tmp_path / "in.jsonl", [*prompts(2), {"id": "b", "prompt": "x", "top_p": 7}, {"id": "c"}]
    )
    code, out, _ = invoke("validate", str(inp), "--model", "claude-haiku-4-5", "--max-tokens", "5")
    assert code == 3
    assert f"{inp}:3: top_p:" in out
    assert f"{inp}:4:" in out and "prompt" in out
    assert "4 rows, 2 valid, 2 invalid" in out


def test_validate_lists_a_problem_every_row_shares_a_few_times_then_counts_it(
    tmp_path: Path,
) -> None:
    # No model anywhere is refused once before any row (runs.preflight); a value every
    # row repeats is each row's own problem.
    rows = [{"prompt": f"p{i}", "top_k": -1} for i in range(40)]
    rows.append({"prompt": "x", "top_p": 7, "top_k": -1})
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    code, out, _ = invoke("validate", str(inp), "--model", "m", "--max-tokens", "5")
    assert code == 3
    lines = out.splitlines()
    # Five rows listed, the count of the rest, and row 41, whose problems include it too.
    shared = "top_k: must be an integer of at least 0, not -1"
    assert sum(shared in line for line in lines) == 5 + 1 + 1
    assert f"{inp}: 35 more row(s) with the same problem: {shared}" in out
    assert f"{inp}:41: " in out  # a different problem is still listed
    assert "41 rows, 0 valid, 41 invalid" in out


def test_validate_keeps_no_more_problems_than_it_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from batchrun import load_config

    # (batchrun.validate is also the name of the function batchrun exports.)
    validate_module = importlib.import_module("batchrun.runs.validate")
    monkeypatch.setattr(validate_module, "MAX_LISTED", 3)
    # Each duplicate names its id: a problem text of its own on every one of them.
    rows = [{"id": f"a{i // 2}", "prompt": "p"} for i in range(40)]
    config = load_config(write_jsonl(tmp_path / "in.jsonl", rows), {"model": "m", "max_tokens": 5})
    report = validate_module.validate(config)
    assert (report.rows, report.invalid, len(report.problems)) == (40, 20, 3)
    assert len(report.counts) == 3 and report.unlisted() == []


def test_validate_of_a_clean_file_exits_0(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    code, out, _ = invoke("validate", str(inp), "--model", "m", "--max-tokens", "5")
    assert code == 0 and "3 valid, 0 invalid" in out


def test_missing_key_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["run", str(inp), "--model", "m", "--max-tokens", "5", "-o", str(tmp_path / "o.parquet")],
        env={"ANTHROPIC_API_KEY": ""},
    )
    assert result.exit_code == 1
    assert "ANTHROPIC_API_KEY" in result.stderr and "Traceback" not in result.stderr


def test_configuration_errors_exit_1_usage_errors_exit_2(tmp_path: Path) -> None:
    code, _, err = invoke("run", str(tmp_path / "missing.toml"))
    assert code == 1 and "job file not found" in err
    code, _, _ = invoke("run", "x.jsonl", "--concurrency", "zero")
    assert code == 2
    code, _, _ = invoke("frobnicate")
    assert code == 2


def _run_json(tmp_path: Path, url: str, *extra: str) -> tuple[int, dict[str, object], str]:
    """``run --json`` of 12 prompts; the exit code, the JSON on stdout, and stderr."""
    import json

    inp = write_jsonl(tmp_path / "in.jsonl", prompts(12))
    code, out, err = invoke(
        "run", str(inp), "-o", str(tmp_path / "out.parquet"), "--model", "claude-haiku-4-5",
        "--max-tokens", "10", "--base-url", url, "-c", "4", "--json", *extra,
    )  # fmt: skip
    lines = out.splitlines()
    assert len(lines) == 1, out  # one JSON object, one line: nothing else on stdout
    return code, json.loads(lines[0]), err


def test_run_json_prints_the_summary_on_stdout_and_the_person_s_on_stderr(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    code, summary, err = _run_json(tmp_path, sim.base_url)
    assert code == 0 and summary["exit_code"] == 0, err
    assert summary["outcome"] == "complete" and summary["via"] == "online"
    assert summary["output_rows"] == {"rows": 12, "ok": 12, "error": 0, "of": None}
    rows = summary["rows"]
    assert isinstance(rows, dict) and rows["finished"] == rows["ok"] == 12
    tokens = summary["tokens"]
    assert isinstance(tokens, dict) and tokens["input"] > 0 and tokens["output"] > 0
    cost = summary["cost_usd"]
    assert isinstance(cost, float) and cost > 0
    assert f"${cost:,.4f}" in err and "12 ok, 0 error" in err  # the same run, told to a person


def test_run_json_quiet_leaves_stderr_to_errors(tmp_path: Path, sim: SimulatorThread) -> None:
    code, summary, err = _run_json(tmp_path, sim.base_url, "-q")
    assert code == 0 and summary["outcome"] == "complete"
    assert err == ""


def test_run_json_of_a_run_stopped_by_the_budget_is_partial(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    code, summary, err = _run_json(
        tmp_path, sim.base_url, "--model", "claude-sonnet-4-6", "--max-tokens", "400",
        "--max-cost", "0.008", "-c", "1",
    )  # fmt: skip
    assert code == 4 and summary["exit_code"] == 4, err
    assert summary["outcome"] == "partial" and summary["budget_stop"]
    written = summary["output_rows"]
    assert isinstance(written, dict) and written["of"] == 12 and 0 < written["rows"] < 12
    assert summary["max_cost"] == 0.008


def test_run_json_of_a_failed_run_says_why(tmp_path: Path) -> None:
    code, summary, err = _run_json(tmp_path, "http://127.0.0.1:9", "--max-retries", "0")
    assert code == 1 and summary["exit_code"] == 1
    assert summary["outcome"] == "failed"
    error = summary["error"]
    assert isinstance(error, str) and error and error in err
