"""The answer cache across jobs (issue 28), whole runs on the simulator: a later job over a
slightly changed input sends only its new requests; a simulator's answers never serve a run
of another source; a cache on S3 (moto); the CLI's ``cache info|prune``; the key never lands
in the cache."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, job_config, prompts, write_jsonl
from support.s3_server import GcsEmulator, gcs_emulator_available

from batchrun import run
from batchrun.cli import cli
from batchrun.core.locations import StorageSettings
from batchrun.remote.answer_cache import AnswerCache
from batchrun.remote.objects import Storage
from batchrun.render.summary import format_summary, summary_dict


def _rows(path: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in pq.read_table(path).to_pylist()}


def test_a_second_job_sends_only_its_new_requests_and_names_who_paid(
    tmp_path: Path, sim: Any
) -> None:
    cache = tmp_path / "answers"
    first = prompts(50)
    inp1 = write_jsonl(tmp_path / "in1.jsonl", first)
    out1 = tmp_path / "out1.parquet"
    sim.stats.reset()
    one = run(job_config(inp1, out1, sim.base_url, answer_cache=str(cache)))
    assert one.exit_code == 0 and sim.stats.requests == 50
    assert one.answer_cache_stored == 50 and one.answer_cache_hits == 0
    # 45 rows the same (under other ids), 5 rows new
    second = [{**row, "id": f"b{i}"} for i, row in enumerate(first[:45])]
    second += [{"id": f"new{i}", "prompt": f"A new question {i}?"} for i in range(5)]
    inp2 = write_jsonl(tmp_path / "in2.jsonl", second)
    out2 = tmp_path / "out2.parquet"
    sim.stats.reset()
    config2 = job_config(inp2, out2, sim.base_url, answer_cache=str(cache))
    two = run(config2)
    assert two.exit_code == 0 and sim.stats.requests == 5
    said = format_summary(two, config2)
    assert "(45 rows answered by an earlier job, not sent)" in said
    assert summary_dict(two, config2)["saved"]["answer_cache_rows"] == 45
    assert two.answer_cache_hits == 45 and two.answer_cache_stored == 5
    paid, reused = _rows(out1), _rows(out2)
    for i in range(45):
        row, original = reused[f"b{i}"], paid[first[i]["id"]]
        assert row["status"] == "ok" and row["cached_from"] == f"{out1}#{first[i]['id']}"
        assert row["text"] == original["text"] and row["source"] == original["source"]
        assert row["cost_usd"] == 0.0 and row["input_tokens"] == 0 and row["output_tokens"] == 0
        assert row["duplicate_of"] is None and row["request_hash"] == original["request_hash"]
    for i in range(5):
        assert reused[f"new{i}"]["cached_from"] is None and reused[f"new{i}"]["cost_usd"] > 0
    assert all(row["cached_from"] is None for row in paid.values())
    assert two.cost_usd == pytest.approx(sum(r["cost_usd"] for r in reused.values()))
    assert two.answer_cache_saved_usd == pytest.approx(
        sum(paid[first[i]["id"]]["cost_usd"] for i in range(45))
    )
    # the API key is nowhere in the cache
    for path in cache.rglob("*"):
        if path.is_file():
            assert TEST_KEY.encode() not in path.read_bytes()
            assert TEST_KEY[:12].encode() not in path.read_bytes()


def test_a_cached_answer_takes_nothing_from_the_budget(tmp_path: Path, sim: Any) -> None:
    cache = tmp_path / "answers"
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    first = run(job_config(inp, tmp_path / "a.parquet", sim.base_url, answer_cache=str(cache)))
    assert first.exit_code == 0
    sim.stats.reset()
    summary = run(
        job_config(
            inp, tmp_path / "b.parquet", sim.base_url, answer_cache=str(cache), max_cost=0.000001
        )
    )
    assert summary.exit_code == 0 and summary.budget_stop is None
    assert sim.stats.requests == 0 and summary.answer_cache_hits == 20


def test_a_simulator_filled_cache_serves_no_run_of_another_source(tmp_path: Path, sim: Any) -> None:
    cache = tmp_path / "answers"
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(10))
    simulated = run(
        job_config(inp, tmp_path / "sim.parquet", "", simulate=True, answer_cache=str(cache))
    )
    assert simulated.exit_code == 0 and simulated.answer_cache_stored == 10
    assert {row["source"] for row in _rows(tmp_path / "sim.parquet").values()} == {"simulator"}
    sim.stats.reset()
    other = run(job_config(inp, tmp_path / "api.parquet", sim.base_url, answer_cache=str(cache)))
    assert other.exit_code == 0 and sim.stats.requests == 10 and other.answer_cache_hits == 0
    rows = _rows(tmp_path / "api.parquet").values()
    assert all(row["cached_from"] is None and row["source"] != "simulator" for row in rows)


def test_sampled_requests_are_sent_again_with_dedup_off_unless_asked(
    tmp_path: Path, sim: Any
) -> None:
    cache = str(tmp_path / "answers")
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(6))
    first = run(job_config(inp, tmp_path / "a.parquet", sim.base_url, answer_cache=cache))
    assert first.exit_code == 0
    sim.stats.reset()
    apart = run(
        job_config(inp, tmp_path / "b.parquet", sim.base_url, answer_cache=cache, dedup=False)
    )
    assert sim.stats.requests == 6 and apart.answer_cache_hits == 0
    sim.stats.reset()
    asked = run(
        job_config(
            inp, tmp_path / "c.parquet", sim.base_url, answer_cache=cache, dedup=False,
            answer_cache_samples=True,
        )
    )  # fmt: skip
    assert sim.stats.requests == 0 and asked.answer_cache_hits == 6


def test_a_cache_on_s3(tmp_path: Path, sim: Any, bucket: str, env: dict[str, str]) -> None:
    cache = f"s3://{bucket}/answers"
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(12))
    environ = {**env, "ANTHROPIC_API_KEY": TEST_KEY}
    sim.stats.reset()
    first = run(
        job_config(inp, tmp_path / "a.parquet", sim.base_url, environ=environ, answer_cache=cache)
    )
    assert first.exit_code == 0 and first.answer_cache_stored == 12
    listed = Storage().list(cache)
    assert len(listed) == 12 and all(info.url.endswith(".json") for info in listed)
    assert all(TEST_KEY.encode() not in Storage().read_bytes(info.url) for info in listed)
    sim.stats.reset()
    second = run(
        job_config(inp, tmp_path / "b.parquet", sim.base_url, environ=environ, answer_cache=cache)
    )
    assert second.exit_code == 0 and sim.stats.requests == 0 and second.answer_cache_hits == 12
    assert AnswerCache(cache).info().entries == 12
    result = CliRunner().invoke(cli, ["cache", "info", cache], env=env)
    assert result.exit_code == 0, result.output
    assert "entries  12" in result.output
    result = CliRunner().invoke(cli, ["cache", "prune", cache, "--max-size", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert "deleted 12 entries" in result.output and Storage().list(cache) == []


def test_the_cli_shows_and_prunes_a_cache(tmp_path: Path, sim: Any) -> None:
    cache = tmp_path / "answers"
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(8))
    args = ["run", str(inp), "-o", str(tmp_path / "out.jsonl"), "--base-url", sim.base_url]
    args += ["--model", "claude-haiku-4-5", "--max-tokens", "20", "-q"]
    runner = CliRunner()
    result = runner.invoke(
        cli, [*args, "--answer-cache", str(cache)], env={"ANTHROPIC_API_KEY": TEST_KEY}
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["cache", "info", str(cache)])
    assert result.exit_code == 0, result.output
    assert f"answer cache {cache}" in result.output and "entries  8" in result.output
    old = time.time() - 40 * 86_400
    for path in sorted(cache.rglob("*.json"))[:3]:
        os.utime(path, (old, old))
    result = runner.invoke(cli, ["cache", "prune", str(cache), "--older-than", "30d"])
    assert result.exit_code == 0, result.output
    assert "deleted 3 entries" in result.output and "5 entries" in result.output
    result = runner.invoke(cli, ["cache", "prune", str(cache), "--max-size", "1"])
    assert result.exit_code == 0 and "0 entries (0 bytes) left" in result.output
    result = runner.invoke(cli, ["cache", "prune", str(cache)])
    assert result.exit_code == 2 and "--older-than 30d" in result.output
    result = runner.invoke(cli, ["cache", "prune", str(cache), "--older-than", "soon"])
    assert result.exit_code == 2 and "not a duration" in result.output
    result = runner.invoke(cli, ["cache", "info", str(tmp_path / "typo")])
    assert result.exit_code == 1 and "no such folder" in result.output


def test_a_job_files_cache_folder_is_beside_the_job_file(tmp_path: Path) -> None:
    from batchrun import load_config

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    write_jsonl(jobs / "in.jsonl", prompts(1))
    job = jobs / "job.toml"
    job.write_text(
        'input = "in.jsonl"\nmodel = "claude-haiku-4-5"\nmax_tokens = 5\n'
        'answer_cache = "answers"\n',
        encoding="utf-8",
    )
    config = load_config(job, environ={"ANTHROPIC_API_KEY": TEST_KEY})
    assert config.engine.answer_cache == str(jobs / "answers")
    assert config.engine.answer_cache_samples is False
    flagged = load_config(
        job, {"answer_cache": "s3://b/a"}, environ={"ANTHROPIC_API_KEY": TEST_KEY}
    )
    assert flagged.engine.answer_cache == "s3://b/a"


@pytest.fixture
def bsim() -> Any:
    """A simulator whose batches end quickly, for online and batch jobs alike."""
    from batchrun.simulator import SimulatorConfig, SimulatorThread

    with SimulatorThread(SimulatorConfig(batch_processing_s=0.2)) as server:
        yield server


def test_a_batch_job_sends_only_what_an_online_job_did_not_buy(tmp_path: Path, bsim: Any) -> None:
    cache = str(tmp_path / "answers")
    rows = prompts(40)
    online = run(
        job_config(write_jsonl(tmp_path / "a.jsonl", rows[:25]), tmp_path / "a.parquet",
                   bsim.base_url, answer_cache=cache)
    )  # fmt: skip
    assert online.exit_code == 0 and online.answer_cache_stored == 25
    bsim.stats.reset()
    config = job_config(
        write_jsonl(tmp_path / "b.jsonl", rows), tmp_path / "b.parquet", bsim.base_url,
        answer_cache=cache, via="batches", poll_interval=0.05, batch_max_requests=8,
    )  # fmt: skip
    batch = run(config)
    stats = bsim.stats.snapshot()
    assert batch.exit_code == 0 and batch.ok == 40
    assert stats.batch_requests_submitted == 15 and stats.answered_ok == 0  # only the new rows
    assert batch.answer_cache_hits == 25 and batch.answer_cache_stored == 15
    assert "(25 rows answered by an earlier job, not sent)" in format_summary(batch, config)
    paid, reused = _rows(tmp_path / "a.parquet"), _rows(tmp_path / "b.parquet")
    for row in rows[:25]:
        filled = reused[row["id"]]
        assert filled["cached_from"] == f"{tmp_path / 'a.parquet'}#{row['id']}"
        assert filled["text"] == paid[row["id"]]["text"] and filled["cost_usd"] == 0.0
        assert filled["batch_id"] is None  # submitted in no batch
    for row in rows[25:]:
        new = reused[row["id"]]
        assert new["cached_from"] is None and new["via"] == "batches" and new["cost_usd"] > 0
    assert batch.cost_usd == pytest.approx(sum(r["cost_usd"] for r in reused.values()))


def test_a_batch_jobs_answers_serve_a_later_online_job(tmp_path: Path, bsim: Any) -> None:
    cache = str(tmp_path / "answers")
    rows = prompts(30)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    batch = run(
        job_config(inp, tmp_path / "a.parquet", bsim.base_url, answer_cache=cache,
                   via="batches", poll_interval=0.05, batch_max_requests=8)
    )  # fmt: skip
    assert batch.exit_code == 0 and batch.answer_cache_stored == 30
    bsim.stats.reset()
    later = write_jsonl(tmp_path / "later.jsonl", [*rows, *prompts(35)[30:]])
    online = run(job_config(later, tmp_path / "b.parquet", bsim.base_url, answer_cache=cache))
    stats = bsim.stats.snapshot()
    assert online.exit_code == 0 and stats.requests == 5 and stats.batch_requests_submitted == 0
    assert online.answer_cache_hits == 30
    paid, reused = _rows(tmp_path / "a.parquet"), _rows(tmp_path / "b.parquet")
    for row in rows:
        assert reused[row["id"]]["text"] == paid[row["id"]]["text"]
        assert reused[row["id"]]["via"] == "batches"  # where the answer really came from
        assert reused[row["id"]]["cached_from"] == f"{tmp_path / 'a.parquet'}#{row['id']}"


def test_a_batch_job_keeps_no_answer_it_did_not_pay_for(tmp_path: Path, bsim: Any) -> None:
    """Twins, cached rows and requests that may not be reused (a file by URL) leave the
    cache as it was: only the answers the batches bought are stored."""
    cache = str(tmp_path / "answers")
    rows = [{"id": f"r{i}", "prompt": f"Question {i % 4}?"} for i in range(12)]
    rows.append({"id": "url", "prompt": "Describe it.", "image": "https://example.com/a.png"})
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    flags = {"answer_cache": cache, "via": "batches", "poll_interval": 0.05}
    first = run(job_config(inp, tmp_path / "a.parquet", bsim.base_url, **flags))
    assert first.exit_code == 0 and first.answer_cache_stored == 4 and first.deduplicated == 8
    assert AnswerCache(cache).info().entries == 4
    bsim.stats.reset()
    again = run(job_config(inp, tmp_path / "b.parquet", bsim.base_url, **flags))
    assert again.exit_code == 0 and bsim.stats.snapshot().batch_requests_submitted == 1  # url
    assert again.answer_cache_hits == 12 and again.answer_cache_stored == 0


def test_the_estimate_counts_the_rows_the_cache_would_fill_and_prices_them_at_zero(
    tmp_path: Path, sim: Any
) -> None:
    from batchrun.estimation.passes import estimate
    from batchrun.render.estimate_text import format_estimate

    cache = str(tmp_path / "answers")
    rows = prompts(30)
    first = run(
        job_config(write_jsonl(tmp_path / "a.jsonl", rows[:20]), tmp_path / "a.parquet",
                   sim.base_url, answer_cache=cache)
    )  # fmt: skip
    assert first.exit_code == 0
    inp = write_jsonl(tmp_path / "b.jsonl", rows)
    without = estimate(job_config(inp, tmp_path / "b0.parquet", sim.base_url))
    cached = estimate(job_config(inp, tmp_path / "b.parquet", sim.base_url, answer_cache=cache))
    assert without.answer_cached == 0 and without.pending == 30
    assert cached.answer_cached == 20 and cached.pending == 10
    assert cached.to_dict()["total"]["answer_cached"] == 20
    assert cached.total_ceiling() < without.total_ceiling()  # 10 rows priced, not 30
    assert "answer cache: 20 rows to send were answered by an earlier job" in format_estimate(
        cached
    )
    # the same through Message Batches: the cached rows at $0, the rest at the batch price
    batch_flags = {"answer_cache": cache, "via": "batches"}
    by_batch = estimate(job_config(inp, tmp_path / "c.parquet", sim.base_url, **batch_flags))
    without_batch = estimate(job_config(inp, tmp_path / "c0.parquet", sim.base_url, via="batches"))
    assert by_batch.answer_cached == 20 and by_batch.pending == 10
    assert by_batch.total_ceiling() < without_batch.total_ceiling() / 2  # 10 rows, not 30
    assert by_batch.total_ceiling(batch=True) == pytest.approx(cached.total_ceiling() / 2)


def test_a_pilot_measures_real_costs_whatever_the_cache_holds(tmp_path: Path, sim: Any) -> None:
    from batchrun.estimation.passes import estimate

    cache = str(tmp_path / "answers")
    inp = write_jsonl(tmp_path / "a.jsonl", prompts(20))
    assert run(job_config(inp, tmp_path / "a.parquet", sim.base_url, answer_cache=cache)).ok == 20
    sim.stats.reset()
    est = estimate(
        job_config(inp, tmp_path / "b.parquet", sim.base_url, answer_cache=cache), pilot="5"
    )
    assert sim.stats.requests == 5  # sent, not filled from the cache: their cost is measured
    assert est.pilot is not None and est.paid_usd > 0


def test_an_edited_attached_file_is_a_new_request_and_a_url_file_is_never_reused(
    tmp_path: Path, sim: Any
) -> None:
    cache = str(tmp_path / "answers")
    (tmp_path / "notes.txt").write_text("The parcel came late.", encoding="utf-8")
    rows = [
        {"id": "local", "prompt": "Summarise the note.", "document": "notes.txt"},
        {"id": "url", "prompt": "Describe it.", "image": "https://example.com/a.png"},
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    sim.stats.reset()
    first = run(job_config(inp, tmp_path / "a.parquet", sim.base_url, answer_cache=cache))
    assert first.exit_code == 0 and sim.stats.requests == 2
    assert first.answer_cache_stored == 1  # the URL's answer is not kept
    sim.stats.reset()
    again = run(job_config(inp, tmp_path / "b.parquet", sim.base_url, answer_cache=cache))
    assert again.answer_cache_hits == 1 and sim.stats.requests == 1  # the URL row is sent
    (tmp_path / "notes.txt").write_text("The parcel came early.", encoding="utf-8")
    sim.stats.reset()
    edited = run(job_config(inp, tmp_path / "c.parquet", sim.base_url, answer_cache=cache))
    assert edited.answer_cache_hits == 0 and sim.stats.requests == 2


def test_samples_are_cached_one_entry_each_and_reused_sample_for_sample(
    tmp_path: Path, sim: Any
) -> None:
    # --samples K: each sample is its own entry (its request hash carries its index), so a
    # later identical job is filled sample for sample, never with one answer K times over.
    cache = str(tmp_path / "answers")
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(5))
    sampled = {"answer_cache": cache, "samples": 3, "temperature": 1.0}
    first = run(job_config(inp, tmp_path / "a.parquet", sim.base_url, **sampled))
    assert first.exit_code == 0 and sim.stats.requests == 15
    assert first.answer_cache_stored == 15
    sim.stats.reset()
    again = run(job_config(inp, tmp_path / "b.parquet", sim.base_url, **sampled))
    assert again.exit_code == 0 and sim.stats.requests == 0
    assert again.answer_cache_hits == 15
    a, b = _rows(tmp_path / "a.parquet"), _rows(tmp_path / "b.parquet")
    for row_id, row in a.items():
        paid, filled = json.loads(row["samples_json"]), json.loads(b[row_id]["samples_json"])
        assert [s["text"] for s in filled] == [s["text"] for s in paid]
        assert all(s["cost_usd"] == 0 for s in filled)  # paid for by the first job
        assert b[row_id]["agreement"] == row["agreement"] and b[row_id]["cost_usd"] == 0
    sim.stats.reset()
    once = run(job_config(inp, tmp_path / "c.parquet", sim.base_url, answer_cache=cache))
    assert once.exit_code == 0 and sim.stats.requests == 5  # a sample never answers a plain ask


@pytest.mark.skipif(not gcs_emulator_available(), reason="gcp-storage-emulator is not installed")
def test_a_cache_on_gcs_serves_online_and_batch_jobs(tmp_path: Path, bsim: Any) -> None:
    """A ``gs://`` cache on a real GCS emulator: an online job fills it, a Message Batches
    job over the same rows submits nothing, and ``cache info|prune`` work on it."""
    with GcsEmulator("answers-bucket") as emulator:
        cache = "gs://answers-bucket/cache"
        environ = {"ANTHROPIC_API_KEY": TEST_KEY, "STORAGE_EMULATOR_HOST": emulator.endpoint}
        inp = write_jsonl(tmp_path / "in.jsonl", prompts(10))
        first = run(
            job_config(inp, tmp_path / "a.parquet", bsim.base_url, environ=environ,
                       answer_cache=cache)
        )  # fmt: skip
        assert first.exit_code == 0 and first.answer_cache_stored == 10
        settings = StorageSettings.from_environ(environ)
        listed = Storage(settings).list(cache)
        assert len(listed) == 10 and all(
            TEST_KEY.encode() not in Storage(settings).read_bytes(i.url) for i in listed
        )
        bsim.stats.reset()
        batch = run(
            job_config(inp, tmp_path / "b.parquet", bsim.base_url, environ=environ,
                       answer_cache=cache, via="batches", poll_interval=0.05)
        )  # fmt: skip
        assert batch.exit_code == 0 and batch.answer_cache_hits == 10
        assert bsim.stats.snapshot().batch_requests_submitted == 0
        assert AnswerCache(cache, settings).info().entries == 10
        result = CliRunner().invoke(cli, ["cache", "info", cache], env=environ)
        assert result.exit_code == 0, result.output
        assert "entries  10" in result.output
        result = CliRunner().invoke(cli, ["cache", "prune", cache, "--max-size", "1"], env=environ)
        assert result.exit_code == 0, result.output
        assert "deleted 10 entries" in result.output and Storage(settings).list(cache) == []
