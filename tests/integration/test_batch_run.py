"""Whole runs through the Message Batches API against the simulator over loopback.

The simulator keeps its batches across requests and across client processes, and counts how
often each custom_id was submitted: that count is what proves no row was paid for twice.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from support import (
    TEST_KEY,
    batch_config,
    job_config,
    no_wait,
    prompts,
    reply_tag,
    rows_of,
    submitted_once,
    write_jsonl,
)

from batchrun import run
from batchrun.batches.run import MAX_ROUNDS
from batchrun.cli import cli
from batchrun.core.errors import ConfigError
from batchrun.render.summary import format_summary
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.batch_journal import BatchJournal, IntentRows, batch_journal_path

# Columns that legitimately differ between an online and a batch answer to the same row.
TIMING_AND_COST = {
    "latency_ms",
    "elapsed_ms",
    "finished_at",
    "cost_usd",
    "request_id",
    "message_id",
    "http_status",
    "via",
    "batch_id",
}


@pytest.fixture
def bsim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.2)) as s:
        yield s


def journaled_batch(out: Path, n: int, batch_id: str | None) -> None:
    """A batch journal holding one intent for the first ``n`` rows (and its id, if given)."""
    journal = BatchJournal(batch_journal_path(out))
    ids = [p["id"] for p in prompts(n)]
    rows = IntentRows(array("q", range(n)), ids, ["x"] * n)
    entry = journal.intend(datetime.now(timezone.utc), 100 * n, "h", rows)
    if batch_id is not None:
        journal.created(entry, batch_id)


def test_a_batch_run_gives_the_online_rows_at_half_the_price(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    n = 60
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    online = run(job_config(inp, tmp_path / "online.parquet", bsim.base_url))
    batched = run(
        batch_config(inp, tmp_path / "batch.parquet", bsim.base_url, batch_max_requests=25)
    )
    assert online.exit_code == batched.exit_code == 0
    assert batched.batches_created == batched.batches_collected == 3  # 25 + 25 + 10
    assert batched.via == "batches"
    submitted_once(bsim, n)

    a, b = rows_of(tmp_path / "online.parquet"), rows_of(tmp_path / "batch.parquet")
    assert [r["id"] for r in b] == [p["id"] for p in prompts(n)]
    for x, y in zip(a, b, strict=True):
        assert {k: v for k, v in x.items() if k not in TIMING_AND_COST} == {
            k: v for k, v in y.items() if k not in TIMING_AND_COST
        }
        assert y["via"] == "batches" and x["via"] == "online"
        assert y["batch_id"].startswith("msgbatch_")
        assert y["cost_usd"] == pytest.approx(x["cost_usd"] / 2)
    assert batched.cost_usd == pytest.approx(online.cost_usd / 2)
    assert not batch_journal_path(tmp_path / "batch.parquet").with_suffix(".results").exists()


def test_a_job_goes_out_in_four_batches_of_a_quarter_of_its_rows(
    tmp_path: Path, bsim: SimulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The floor is 10,000 rows in a run; 5 here, so that 40 rows make four batches of 10.
    monkeypatch.setattr("batchrun.batches.plan.SPLIT_FLOOR", 5)
    n = 40
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    summary = run(batch_config(inp, out, bsim.base_url))
    assert summary.exit_code == 0
    assert summary.batches_created == summary.batches_collected == 4
    submitted_once(bsim, n)
    got = rows_of(out)
    assert [r["id"] for r in got] == [p["id"] for p in prompts(n)]
    assert all(r["status"] == "ok" for r in got)
    by_batch: dict[str, list[int]] = {}
    for k, r in enumerate(got):
        by_batch.setdefault(r["batch_id"], []).append(k)
    assert sorted(by_batch.values()) == [list(range(s, s + 10)) for s in range(0, n, 10)]


def test_batches_are_split_by_size_too(tmp_path: Path, bsim: SimulatorThread) -> None:
    n = 30
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    # Each request item is about 150 bytes: 0.001 MB (1,048 bytes) holds six of them.
    summary = run(batch_config(inp, tmp_path / "out.parquet", bsim.base_url, batch_max_mb=0.001))
    assert summary.exit_code == 0
    assert summary.batches_created == bsim.stats.snapshot().batches_created >= 5
    submitted_once(bsim, n)


def test_ids_that_cannot_be_custom_ids_come_back_to_their_rows(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    rows = [
        {"id": "doc 1.txt", "prompt": "first"},
        {"id": "x" * 80, "prompt": "second"},
        {"id": "ok_id-3", "prompt": "third"},
        {"id": "é/4", "prompt": "fourth"},
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    assert run(batch_config(inp, out, bsim.base_url)).exit_code == 0
    got = rows_of(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for src, res in zip(rows, got, strict=True):
        assert res["text"].startswith(reply_tag(src["prompt"]))
    sent = set(bsim.stats.snapshot().batch_custom_ids)
    assert "ok_id-3" in sent and not any(" " in c or len(c) > 64 for c in sent)


def test_rows_the_api_would_refuse_are_recorded_without_being_submitted(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    rows = prompts(5)
    rows[2]["max_tokens"] = 0
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    summary = run(batch_config(inp, out, bsim.base_url))
    assert summary.exit_code == 3 and summary.invalid == 1
    got = rows_of(out)
    assert got[2]["error_type"] == "invalid_request" and "max_tokens" in got[2]["error_message"]
    assert got[2]["via"] == "batches" and got[2]["batch_id"] is None
    assert rows[2]["id"] not in bsim.stats.snapshot().batch_custom_ids
    assert bsim.stats.snapshot().batch_requests_submitted == 4


def test_errored_and_expired_results_and_resubmitting_them(tmp_path: Path) -> None:
    n = 80
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    config = SimulatorConfig(batch_processing_s=0.1, batch_error_rate=0.1, batch_expire_rate=0.2)
    with SimulatorThread(config) as sim:
        first = run(batch_config(inp, out, sim.base_url))
        assert first.exit_code == 3
        got = rows_of(out)
        expired = [r for r in got if r["error_type"] == "expired"]
        errored = [r for r in got if r["status"] == "error" and r["error_type"] != "expired"]
        assert expired and errored
        assert all("expired" in r["error_message"] for r in expired)
        assert first.error_types["expired"] == len(expired)

        # --resubmit-expired sends exactly the expired rows again, in new batches.
        before = sim.stats.snapshot().batch_requests_submitted
        second = run(batch_config(inp, out, sim.base_url, resubmit_expired=True))
        resent = sim.stats.snapshot().batch_requests_submitted - before
        assert resent >= len(expired)
        assert second.skipped == n - len(expired)
        after = rows_of(out)
        assert [r["id"] for r in after] == [p["id"] for p in prompts(n)]
        # Rows not expired before are untouched; each resubmitted row is counted once.
        assert {r["id"] for r in after if r["error_type"] == "expired"} <= {
            r["id"] for r in expired
        }
        assert second.finished == len(expired)


def test_resubmitting_goes_on_for_rows_that_expire_again(tmp_path: Path) -> None:
    # Half the requests expire at every submission: --resubmit-expired needs several rounds.
    n = 40
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.05, batch_expire_rate=0.5)) as sim:
        config = batch_config(inp, out, sim.base_url)
        first = run(config)
        lapsed = first.error_types["expired"]
        hint = f"resubmit_expired=True only the {lapsed} a batch expired or cancelled"
        assert hint in format_summary(first, config)  # as Python names it
        second = run(batch_config(inp, out, sim.base_url, resubmit_expired=True))
        stats = sim.stats.snapshot()
    assert second.skipped == n - lapsed
    assert stats.batches_created == 1 + MAX_ROUNDS  # each round's expired rows, again
    assert stats.batch_requests_submitted > n + lapsed  # rounds after the second one ran
    after = rows_of(out)
    assert [r["id"] for r in after] == [p["id"] for p in prompts(n)]
    assert sum(r["status"] == "ok" for r in after) == n - second.error_types["expired"]


def test_finish_online_answers_expired_rows_online(tmp_path: Path) -> None:
    n = 40
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    config = SimulatorConfig(batch_processing_s=0.1, batch_expire_rate=0.3)
    with SimulatorThread(config) as sim:
        summary = run(
            batch_config(inp, out, sim.base_url, finish_online=True), runtime=Runtime(sleep=no_wait)
        )
        assert summary.exit_code == 0
        # Every row was done by this run, by a batch or online: none was done before.
        assert (summary.finished, summary.skipped, summary.ok) == (n, 0, n)
        got = rows_of(out)
        online = [r for r in got if r["via"] == "online"]
        assert online and all(r["status"] == "ok" for r in got)
        for src, res in zip(prompts(n), got, strict=True):
            assert res["text"].startswith(reply_tag(src["prompt"]))
        assert sim.stats.snapshot().answered_ok == len(online)


def test_an_intent_that_never_became_a_batch_is_submitted_once(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    """A crash after the intent was journaled but before create reached the API."""
    n = 10
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    journaled_batch(out, n, batch_id=None)
    assert run(batch_config(inp, out, bsim.base_url)).exit_code == 0
    submitted_once(bsim, n)
    entries = BatchJournal.load(batch_journal_path(out)).entries
    assert entries["b1"].abandoned and entries["b2"].collected


class DropFirstCreateReply(httpx.AsyncBaseTransport):
    """Forwards to the simulator, then loses the first create's reply, like a cut connection."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.dropped = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/batches") and not self.dropped:
            await response.aread()
            self.dropped += 1
            raise httpx.ReadError("connection reset by peer", request=request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_a_create_whose_reply_was_lost_is_found_not_sent_again(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    n = 12
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    transport = DropFirstCreateReply()
    summary = run(
        batch_config(inp, out, bsim.base_url),
        runtime=Runtime(transport=transport, sleep=no_wait),
    )
    assert transport.dropped == 1 and summary.exit_code == 0
    submitted_once(bsim, n)
    assert BatchJournal.load(batch_journal_path(out)).entries["b1"].reconciled


def test_overwrite_refuses_to_forget_running_batches(tmp_path: Path) -> None:
    n = 5
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.parquet"
    journaled_batch(out, 1, "msgbatch_running")
    with pytest.raises(ConfigError, match="msgbatch_running"):
        run(batch_config(inp, out, "http://127.0.0.1:9", overwrite=True))


def test_batch_mode_refuses_max_cost(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    with pytest.raises(ConfigError, match="estimate"):
        run(batch_config(inp, tmp_path / "o.parquet", "http://127.0.0.1:9", max_cost=1.0))


def test_the_job_file_key_selects_batches(tmp_path: Path, bsim: SimulatorThread) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(3))
    job = tmp_path / "job.toml"
    job.write_text(
        f'input = "in.jsonl"\noutput = "out.jsonl"\nmodel = "claude-haiku-4-5"\n'
        f'max_tokens = 10\nvia = "batches"\npoll_interval = 0.05\nbase_url = "{bsim.base_url}"\n'
    )
    result = CliRunner().invoke(cli, ["run", str(job), "-q"], env={"ANTHROPIC_API_KEY": TEST_KEY})
    assert result.exit_code == 0, result.output
    assert "batches     1 created, 1 collected" in result.output
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [x["via"] for x in lines] == ["batches"] * 3


def test_the_report_splits_rows_and_cost_by_how_they_were_sent(
    tmp_path: Path, bsim: SimulatorThread
) -> None:
    from batchrun.render.report_text import format_report
    from batchrun.reporting.totals import report

    inp = write_jsonl(tmp_path / "in.jsonl", prompts(8))
    run(job_config(inp, tmp_path / "online.parquet", bsim.base_url))
    run(batch_config(inp, tmp_path / "batch.parquet", bsim.base_url))
    rep = report([tmp_path / "online.parquet", tmp_path / "batch.parquet"])
    assert rep.vias["online"].rows == rep.vias["batches"].rows == 8
    assert rep.vias["batches"].cost_usd == pytest.approx(rep.vias["online"].cost_usd / 2)
    text = format_report(rep)
    assert "sent via    batches 8 rows" in text
    assert "rows/min" in text and "batch rows count when collected" in text
    assert rep.to_dict()["via"]["batches"]["ok"] == 8
    # Batch rows alone: no rate, which would only measure how fast results were downloaded.
    batch_only = format_report(report([tmp_path / "batch.parquet"]))
    assert "throughput  n/a for Message Batches (8 rows collected from" in batch_only


def test_a_batch_deleted_on_the_api_frees_its_rows(tmp_path: Path, bsim: SimulatorThread) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(4))
    out = tmp_path / "out.parquet"
    journaled_batch(out, 4, "msgbatch_deleted_by_hand")
    first = run(batch_config(inp, out, bsim.base_url))
    assert first.final is None
    assert BatchJournal.load(batch_journal_path(out)).entries["b1"].abandoned
    second = run(batch_config(inp, out, bsim.base_url))
    assert second.exit_code == 0 and second.ok == 4
    submitted_once(bsim, 4)


def test_an_online_run_refuses_rows_waiting_in_a_batch(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "out.parquet"
    journaled_batch(out, 1, "msgbatch_waiting")
    with pytest.raises(ConfigError, match="msgbatch_waiting"):
        run(job_config(inp, out, "http://127.0.0.1:9"))
