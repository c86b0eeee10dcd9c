"""The run's summary warns as ``report`` does when most answers stopped at max_tokens, and
says how many rows got a copy of another row's answer where each would have sampled its own."""

from __future__ import annotations

from pathlib import Path

from support import job_config, write_jsonl

from batchrun import run
from batchrun.render.summary import format_summary, summary_dict
from batchrun.reporting.totals import cut_off_warning
from batchrun.simulator import SimulatorThread


def _rows(n: int, distinct: int) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "prompt": f"Say something about {i % distinct}."} for i in range(n)]


def test_answers_cut_at_max_tokens_are_warned_about_as_report_does(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(8, 8))
    result = run(job_config(inp, tmp_path / "out.parquet", sim.base_url, max_tokens=2))
    text = format_summary(result.summary, result.config)
    warning = cut_off_warning({"max_tokens": 8})
    assert warning is not None and f"  warning     {warning}" in text
    assert "8 of 8 answers (100%) stopped at max_tokens" in text
    assert summary_dict(result.summary, result.config)["warnings"] == [warning]

    roomy = run(job_config(inp, tmp_path / "roomy.parquet", sim.base_url, max_tokens=400))
    assert "stopped at max_tokens" not in format_summary(roomy.summary, roomy.config)


def test_copies_of_a_sampled_answer_are_counted_and_the_way_out_named(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(12, 4))  # each request three times
    hot = run(job_config(inp, tmp_path / "hot.parquet", sim.base_url, temperature=1.0))
    assert hot.summary.deduplicated == 8 and hot.summary.dedup_sampled == 8
    text = format_summary(hot.summary, hot.config)
    assert "8 row(s) got a copy of another row's answer" in text and "--no-dedup" not in text
    assert "dedup=False asks each row, samples=K each row K times" in text  # the keywords
    assert summary_dict(hot.summary, hot.config)["saved"]["dedup_sampled_rows"] == 8

    # The API's default temperature is 1: no temperature samples too.
    default = run(job_config(inp, tmp_path / "default.parquet", sim.base_url))
    assert default.summary.dedup_sampled == 8

    # At temperature 0 a copy is what a second request would give: nothing to say.
    cold = run(job_config(inp, tmp_path / "cold.parquet", sim.base_url, temperature=0.0))
    assert cold.summary.deduplicated == 8 and cold.summary.dedup_sampled == 0
    assert "got a copy" not in format_summary(cold.summary, cold.config)
