"""The models users pick today, against the simulator that enforces the model table's rules
(issue 25): a job whose settings break its model's rules stops before anything is sent (exit 2,
naming the setting, the model and the fix); a row that breaks them is its own error row;
``--drop-unsupported`` leaves unsupported sampling settings out, and says so; ``--effort`` is
checked and sent; thinking that eats a small max_tokens is warned of before sending, and an
answer it left empty is an error row; ``estimate`` prices every current model on its own
tokenizer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, RecordingTransport, batch_config, write_jsonl

from batchrun import load_config, run
from batchrun.cli import cli
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.resume import STATE_SUFFIX
from batchrun.store.sink import journal_path

REVIEWS = [
    "The mug arrived chipped, but the seller replaced it within a week.",
    "Battery life is half of what the box promised.",
    "Exactly as pictured; my daughter loves it.",
    "Stopped working after two days and support never answered.",
    "Good value for the price, though the strap feels cheap.",
    "Fast delivery and the fit is perfect.",
]


def reviews(count: int = len(REVIEWS), start: int = 0) -> list[dict[str, object]]:
    """Rows of distinct prompts (none deduplicated), ids from ``start``."""
    return [
        {"id": i, "prompt": f"Label review {i} positive or negative: {REVIEWS[i % len(REVIEWS)]}"}
        for i in range(start, start + count)
    ]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"ANTHROPIC_API_KEY": TEST_KEY})
    return result.exit_code, result.stdout, result.stderr


# --- the job's settings: exit 2, nothing sent -----------------------------------------------


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (
            ["--model", "claude-haiku-5-5", "--temperature", "0"],
            "temperature: only 1 on claude-haiku-5-5; remove --temperature or pass "
            "--drop-unsupported to send without it",
        ),
        (
            [
                "--model",
                "claude-haiku-5-5",
                "--thinking",
                '{"type": "enabled", "budget_tokens": 1024}',
            ],
            "thinking: budgeted thinking (type 'enabled') is refused by claude-haiku-5-5; use "
            '--thinking \'{"type": "adaptive"}\' with --effort LEVEL to set how much it thinks',
        ),
        (
            ["--model", "claude-haiku-5-7"],
            "the job's model `claude-haiku-5-7` is not a Claude model batchrun knows (did you "
            "mean `claude-haiku-5-5`",
        ),
        (
            ["--model", "claude-haiku-4-5", "--effort", "low"],
            "effort: claude-haiku-4-5 takes no effort setting; remove --effort",
        ),
        (
            [
                "--model",
                "claude-sonnet-5-5",
                "--tools",
                '[{"name": "label", "input_schema": {"type": "object"}}]',
                "--tool-choice",
                '{"type": "any"}',
            ],
            "tool_choice: 'any' forces a tool, which claude-sonnet-5-5 refuses",
        ),
    ],
)
def test_a_job_that_breaks_its_model_s_rules_exits_2_with_nothing_sent(
    tmp_path: Path, sim: SimulatorThread, flags: list[str], said: str
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", reviews(14))
    out = tmp_path / "out.parquet"
    code, _, err = invoke(
        "run", str(inp), "-o", str(out), "--max-tokens", "2048", "--base-url", sim.base_url,
        *flags,
    )  # fmt: skip
    assert code == 2, err
    assert said in err
    assert "Nothing was sent or written" in err or "nothing was sent or written" in err
    assert sim.stats.requests == 0
    assert not out.exists() and not journal_path(out).exists()


def test_the_rule_check_runs_before_a_batch_is_created(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", reviews())
    code, _, err = invoke(
        "run", str(inp), "-o", str(tmp_path / "out.parquet"), "--via", "batches",
        "--model", "claude-haiku-5-5", "--top-k", "5", "--max-tokens", "2048",
        "--base-url", sim.base_url,
    )  # fmt: skip
    assert code == 2 and "top_k: not taken by claude-haiku-5-5" in err
    assert sim.stats.requests == 0 and sim.stats.batches_created == 0


# --- a plain job on the newest models -------------------------------------------------------


def test_a_plain_haiku_5_5_job_answers_every_row(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", reviews(12))
    out = tmp_path / "out.parquet"
    code, _, err = invoke(
        "run", str(inp), "-o", str(out), "--model", "claude-haiku-5-5", "--max-tokens", "2048",
        "--base-url", sim.base_url,
    )  # fmt: skip
    assert code == 0, err
    assert "warning" not in err
    rows = pq.read_table(out).to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 12
    assert all(r["text"].startswith("re:") and r["thinking"] for r in rows)  # thought first
    # Priced at Haiku 5.5's own rates: $0.10 / $0.50 per million.
    for r in rows:
        expected = (r["input_tokens"] * 0.10 + r["output_tokens"] * 0.50) / 1e6
        assert r["cost_usd"] == pytest.approx(expected)
    assert sim.stats.requests == 12


def test_effort_is_sent_in_output_config_and_thinks_less(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", reviews())
    recorder = RecordingTransport()
    spent = {}
    for effort in ("low", "high"):
        out = tmp_path / f"{effort}.parquet"
        settings = {"output": str(out), "model": "claude-haiku-5-5", "max_tokens": 2048,
                    "effort": effort, "base_url": sim.base_url, "quiet": True}  # fmt: skip
        config = load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY})
        assert run(config, runtime=Runtime(transport=recorder)).exit_code == 0
        spent[effort] = sum(r["output_tokens"] for r in pq.read_table(out).to_pylist())
    assert {b["output_config"]["effort"] for b in recorder.bodies} == {"low", "high"}
    assert spent["low"] < spent["high"]


# --- thinking that eats a small max_tokens --------------------------------------------------


def test_a_small_max_tokens_is_warned_of_and_an_empty_answer_is_an_error_row(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", reviews())
    out = tmp_path / "out.parquet"
    code, _, err = invoke(
        "run", str(inp), "-o", str(out), "--model", "claude-haiku-5-5", "--max-tokens", "5",
        "--base-url", sim.base_url,
    )  # fmt: skip
    assert code == 3
    assert (
        "batchrun: warning: claude-haiku-5-5 thinks before it answers (adaptive thinking is on "
        "by default, at effort medium, its default), and its thinking counts toward max_tokens: "
        "5 may leave no room for the answer"
    ) in err
    assert "pass --effort low and --max-tokens 1280" in err
    assert err.index("warning") < err.index("errors      empty_answer")  # before any row
    rows = pq.read_table(out).to_pylist()
    for r in rows:
        assert (r["status"], r["error_type"], r["text"]) == ("error", "empty_answer", "")
        assert r["error_message"] == (
            "the answer is empty: thinking used all 5 max_tokens (5 output tokens, paid) before "
            "any text; raise --max-tokens N, or pass --effort low where the model takes it"
        )
        assert r["cost_usd"] > 0  # paid for, and said so
    # With the room the warning suggests, every row answers, and nothing is warned of.
    code, _, err = invoke(
        "run", str(inp), "-o", str(tmp_path / "roomy.parquet"), "--model", "claude-haiku-5-5",
        "--max-tokens", "1280", "--effort", "low", "--base-url", sim.base_url,
    )  # fmt: skip
    assert code == 0 and "warning" not in err


# --- a row's own settings: that row's error --------------------------------------------------


def test_a_row_that_breaks_its_model_s_rules_is_its_error_row_and_is_not_sent(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = reviews(4)
    rows[1] = {**rows[1], "temperature": 0.2}
    rows[2] = {**rows[2], "model": "claude-opus-5-5", "thinking": {"type": "disabled"}}
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    settings = {"output": str(out), "model": "claude-haiku-5-5", "max_tokens": 2048,
                "base_url": sim.base_url, "quiet": True}  # fmt: skip
    summary = run(load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY}))
    assert (summary.ok, summary.invalid, summary.exit_code) == (2, 2, 3)
    assert sim.stats.requests == 2
    got = pq.read_table(out).to_pylist()
    assert [r["status"] for r in got] == ["ok", "error", "error", "ok"]
    assert got[1]["error_message"] == (
        f"{inp}:2: temperature: only 1 on claude-haiku-5-5; leave it out, or pass "
        "drop_unsupported=True to send without it"
    )
    assert got[2]["error_message"].startswith(
        f"{inp}:3: thinking: claude-opus-5-5 always thinks: thinking cannot be turned off"
    )


# --- --drop-unsupported: explicit, recorded ---------------------------------------------------


def test_drop_unsupported_sends_without_the_setting_and_says_so(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = reviews(5)
    rows[0] = {**rows[0], "model": "claude-sonnet-4-6"}  # takes temperature 0: sent with it
    rows[1] = {**rows[1], "top_k": 5}
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    recorder = RecordingTransport()
    settings = {"output": str(out), "model": "claude-haiku-5-5", "max_tokens": 2048,
                "temperature": 0, "drop_unsupported": True, "base_url": sim.base_url,
                "quiet": True}  # fmt: skip
    config = load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY})
    result = run(config, runtime=Runtime(transport=recorder))
    assert result.exit_code == 0 and result.ok == 5
    sent = {b["messages"][0]["content"]: b for b in recorder.bodies}
    assert sent[rows[0]["prompt"]]["temperature"] == 0
    others = [b for b in recorder.bodies if b["model"] == "claude-haiku-5-5"]
    assert len(others) == 4 and not any("temperature" in b or "top_k" in b for b in others)
    assert dict(result.dropped) == {"temperature": 4, "top_k": 1}
    state = json.loads(Path(f"{out}{STATE_SUFFIX}").read_text(encoding="utf-8"))
    assert state["request_defaults"]["drop_unsupported"] is True
    code, _, err = invoke(
        "run", str(inp), "-o", str(tmp_path / "cli.jsonl"), "--model", "claude-haiku-5-5",
        "--max-tokens", "2048", "--temperature", "0", "--drop-unsupported",
        "--base-url", sim.base_url,
    )  # fmt: skip
    assert code == 0
    assert (
        "dropped     temperature from 4 rows, top_k from 1 rows: sent without it, as their "
        "model does not take it (--drop-unsupported)"
    ) in err


# --- estimate: every current model priced, on its own tokenizer ----------------------------


def test_estimate_prices_the_current_models_on_their_own_tokenizer(tmp_path: Path) -> None:
    rows = reviews(20)
    models = ["claude-haiku-4-5", "claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5",
              "claude-fable-5-1", "claude-fable-5-2"]  # fmt: skip
    inp = write_jsonl(
        tmp_path / "in.jsonl",
        [{**r, "id": f"{m}/{r['id']}", "model": m} for m in models for r in rows],
    )
    code, out, err = invoke(
        "estimate", str(inp), "--model", "claude-haiku-5-5", "--max-tokens", "2048", "--json"
    )
    assert code == 0, err
    estimate = json.loads(out)
    lines = estimate["models"]
    scaled = [n for n in estimate["notes"] if "the local estimate is scaled" in n]
    assert scaled == [
        "input: claude-fable-5-1 ×1.3, claude-fable-5-2 ×1.3, claude-haiku-5-5 ×1.3, "
        "claude-opus-5-5 ×1.3, claude-sonnet-5-5 ×1.3: the newer tokenizer (Claude 4.7 on) counts "
        "about 30% more tokens for the same text, so the local estimate is scaled by the model "
        "table's factor"
    ]
    thinking = [n for n in estimate["notes"] if n.startswith("thinking:")]
    assert len(thinking) == 1 and "its assumption, not the API's" in thinking[0]
    assert set(lines) == set(models) and all(lines[m]["priced"] for m in models)
    old, new = lines["claude-haiku-4-5"]["input_tokens"], lines["claude-haiku-5-5"]["input_tokens"]
    assert new / old == pytest.approx(1.3, abs=0.02)  # the newer tokenizer's ~30% more
    haiku = lines["claude-haiku-5-5"]
    # It thinks by default, at effort medium: 1,024 tokens assumed per answer.
    assert haiku["thinking_tokens_assumed"] == 20 * 1024 and haiku["thinking_effort"] == "medium"
    # The floor: input at $0.10 / MTok, the assumed thinking at $0.50 / MTok.
    assert haiku["cost_usd_floor_online"] == pytest.approx(
        (new * 0.10 + 20 * 1024 * 0.50) / 1e6, abs=1e-6
    )
    assert haiku["cost_usd_ceiling_online"] == pytest.approx(
        (new * 0.10 + 20 * 2048 * 0.50) / 1e6, abs=1e-6
    )
    for model, output_price in (
        ("claude-sonnet-5-5", 10), ("claude-opus-5-5", 20),
        ("claude-fable-5-1", 50), ("claude-fable-5-2", 40),
    ):  # fmt: skip
        assert lines[model]["input_tokens"] == new, model
        assert lines[model]["cost_usd_ceiling_online"] > new * output_price / 1e6, model


# --- through the Message Batches API ------------------------------------------------------------


def test_a_batch_run_drops_counts_and_warns_like_an_online_one(tmp_path: Path) -> None:
    """--drop-unsupported and the thinking warning work the same through Message Batches; the
    simulator checks each batch request against its model's rules too."""
    inp = write_jsonl(tmp_path / "in.jsonl", reviews(4))
    shown = io.StringIO()
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.2)) as bsim:
        config = batch_config(
            inp,
            tmp_path / "out.jsonl",
            bsim.base_url,
            model="claude-haiku-5-5",
            max_tokens=2048,
            temperature=0,
            drop_unsupported=True,
        )
        result = run(config)
        assert (result.exit_code, result.ok) == (0, 4)
        assert dict(result.dropped) == {"temperature": 4}
        assert bsim.stats.batch_requests_submitted == 4
        small = batch_config(
            inp,
            tmp_path / "small.parquet",
            bsim.base_url,
            model="claude-haiku-5-5",
            max_tokens=5,
            quiet=False,  # --quiet keeps warnings back
        )
        result = run(small, runtime=Runtime(progress_stream=shown))
    assert result.exit_code == 3
    assert {r["error_type"] for r in pq.read_table(tmp_path / "small.parquet").to_pylist()} == {
        "empty_answer"
    }
    assert "batchrun: warning: claude-haiku-5-5 thinks before it answers" in shown.getvalue()
