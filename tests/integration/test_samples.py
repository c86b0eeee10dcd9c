"""``--samples K``: K independent requests per row (dedup never folds a row's samples), one
output row per input row with the chosen answer, every sample, their agreement and the cost of
all K; refused where samples cannot vary; counted K times by the estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, rows_of, write_jsonl

from batchrun import run
from batchrun.cli import cli
from batchrun.estimation.passes import estimate
from batchrun.render.summary import format_summary, summary_dict
from batchrun.runs.preflight import UnbuildableJobError
from batchrun.simulator import SimulatorThread


def _rows(n: int) -> list[dict[str, str]]:
    return [{"id": f"r{i:03d}", "prompt": f"Label review {i}."} for i in range(n)]


def test_three_samples_a_row_send_three_requests_and_write_one_row(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(50))
    out = tmp_path / "out.parquet"
    result = run(job_config(inp, out, sim.base_url, samples=3, temperature=1.0))
    assert sim.stats.answered_ok == 150
    assert result.summary.finished == 50 and result.exit_code == 0
    rows = rows_of(out)
    assert [r["id"] for r in rows] == [r["id"] for r in _rows(50)]
    for row in rows:
        samples = json.loads(row["samples_json"])
        assert len(samples) == 3 and all(s["status"] == "ok" for s in samples)
        assert 1 / 3 <= row["agreement"] <= 1
        assert row["text"] in [s["text"] for s in samples]
        assert row["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in samples))
        assert "#sample" not in row["request_hash"]
    assert result.summary.cost_usd == pytest.approx(sum(r["cost_usd"] for r in rows))
    text = format_summary(result.summary, result.config)
    assert "  samples     3 a row: 150 answers; agreement 1.00 on average" in text
    assert summary_dict(result.summary, result.config)["samples"]["answers"] == 150
    # The output resumes as any: nothing is sent again.
    again = run(job_config(inp, out, sim.base_url, samples=3, temperature=1.0))
    assert again.summary.finished == 0 and sim.stats.answered_ok == 150


def test_dedup_folds_identical_rows_but_never_a_rows_samples(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = [{"id": "a", "prompt": "Same."}, {"id": "b", "prompt": "Same."}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    result = run(job_config(inp, tmp_path / "out.parquet", sim.base_url, samples=4))
    assert sim.stats.answered_ok == 4  # row a's four samples; row b gets copies of them
    assert result.summary.deduplicated == 1  # one row filled (with four copies)
    assert result.summary.dedup_sampled == 1  # one row got copies, told once
    text = format_summary(result.summary, result.config)
    assert "1 row(s) got a copy" in text and "dedup=False asks each row\n" in text
    out = {r["id"]: r for r in rows_of(tmp_path / "out.parquet")}
    assert len(json.loads(out["b"]["samples_json"])) == 4


def test_identical_rows_far_apart_share_their_samples_one_for_one(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    # The twin pass reads each row's K requests as the engine sends them: row b's i-th sample
    # is a twin of row a's i-th only, so each is filled however long after a it comes, and
    # no sample of a row is folded into another of its own.
    rows = [{"id": "a", "prompt": "Same."}, *_rows(30), {"id": "b", "prompt": "Same."}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    result = run(job_config(inp, out, sim.base_url, samples=3, concurrency=1))
    assert sim.stats.answered_ok == 3 * 31  # b's three samples are a's three, copied
    assert result.summary.deduplicated == 1 and result.summary.finished == 32
    by_id = {r["id"]: r for r in rows_of(out)}
    assert by_id["b"]["duplicate_of"] == "a" and by_id["b"]["cost_usd"] == 0
    assert json.loads(by_id["b"]["samples_json"])[0]["text"] == by_id["a"]["text"]


def test_a_row_that_cannot_be_sent_is_one_error_row_counted_once(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = [*_rows(2), {"id": "bad", "prompt": "x", "max_tokens": -1}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    result = run(job_config(inp, tmp_path / "out.parquet", sim.base_url, samples=3))
    assert sim.stats.answered_ok == 6
    summary = result.summary
    assert (summary.ok, summary.error, summary.invalid) == (2, 1, 1)
    assert summary.finished == 3 and summary.total_rows == 3


def test_samples_that_cannot_vary_are_refused_before_sending(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(3))
    with pytest.raises(UnbuildableJobError, match="temperature"):
        run(job_config(inp, tmp_path / "out.parquet", sim.base_url, samples=3, temperature=0.0))
    args = ["run", str(inp), "-o", str(tmp_path / "o.parquet"), "--model", "claude-haiku-4-5"]
    args += ["--max-tokens", "5", "--base-url", sim.base_url, "--samples", "3"]
    result = CliRunner().invoke(
        cli, [*args, "--via", "batches"], env={"ANTHROPIC_API_KEY": TEST_KEY}
    )
    assert result.exit_code == 2 and "--samples 3 gathers a row's samples online" in result.output
    assert sim.stats.requests == 0


def test_the_estimate_counts_k_requests_a_row(tmp_path: Path, sim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(10))
    once = estimate(job_config(inp, tmp_path / "a.parquet", sim.base_url))
    thrice = estimate(job_config(inp, tmp_path / "b.parquet", sim.base_url, samples=3))
    assert thrice.pending == 3 * once.pending == 30
    assert thrice.total_ceiling() == pytest.approx(3 * once.total_ceiling())
    assert any(
        note.startswith("samples: samples=3 asks each row 3 times") and "(10 rows × 3)" in note
        for note in thrice.notes
    )


def test_a_setting_left_out_is_counted_once_a_row_not_once_a_sample(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(4))
    config = job_config(
        inp, tmp_path / "out.parquet", sim.base_url, samples=3, temperature=0.5,
        model="claude-haiku-5-5", max_tokens=2048, drop_unsupported=True,
    )  # fmt: skip
    result = run(config)
    assert sim.stats.answered_ok == 12 and result.summary.finished == 4
    assert dict(result.summary.dropped) == {"temperature": 4}
