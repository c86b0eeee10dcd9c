"""In-run dedup (issue 17, item 3): identical requests are sent once, each duplicate row gets
the answer with ``duplicate_of`` and cost 0, and a resumed run fills duplicates of rows an
earlier run answered without sending. Layers: the table alone, the engine through a
MockTransport, whole runs against the simulator, the CLI flag."""

from __future__ import annotations

import asyncio
import errno
import json
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, canned_message, job_config, no_wait, write_jsonl

from batchrun import run
from batchrun.cli import cli
from batchrun.engine.dedup import UNKNOWN, Dedup, Member, twin_row
from batchrun.engine.outcome import RowSettings, prepare
from batchrun.engine.tally import RowTally
from batchrun.formats.inputs import read_rows
from batchrun.runs.compose import job_client, job_engine
from batchrun.runs.online import run_async as run_online
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.columns import COLUMN_NAMES, blank_row
from batchrun.store.lock import lock_path


def ok(row_id: str, text: str, cost: float = 0.25) -> dict[str, Any]:
    row = blank_row(row_id)
    row.update(status="ok", text=text, cost_usd=cost, input_tokens=100, output_tokens=7)
    return row


# --- the table -------------------------------------------------------------------------------


def test_a_twin_copies_the_answer_pays_nothing_and_names_its_original() -> None:
    own = blank_row("b")
    own["finished_at"] = "own time"
    twin = twin_row(own, ok("a", "hello"))
    assert twin["id"] == "b" and twin["duplicate_of"] == "a" and twin["text"] == "hello"
    assert twin["status"] == "ok" and twin["finished_at"] == "own time"
    assert twin["cost_usd"] == 0.0 and twin["input_tokens"] == 0 and twin["output_tokens"] == 0
    assert set(twin) == set(COLUMN_NAMES)


def test_only_answered_rows_are_kept_and_the_table_is_bounded_in_bytes() -> None:
    dedup = Dedup(table_bytes=2_000)
    error = blank_row("e")
    error.update(status="error", error_type="overloaded_error")
    dedup.remember("h-error", error)
    assert dedup.answer("h-error") is None
    for i in range(40):
        dedup.remember(f"h{i}", ok(f"r{i}", "x" * 100))
    assert 0 < len(dedup) < 40 and dedup.full
    assert dedup.answer("h0") is None  # the oldest were pushed out
    answer = dedup.answer("h39")
    assert answer is not None and answer["id"] == "r39"
    assert dedup.filled == 1 and dedup.saved_usd == 0.25


def test_a_twin_waits_aside_for_its_original_and_a_failed_original_hands_over() -> None:
    async def scenario() -> list[Any]:
        dedup = Dedup()
        asides: list[str] = []

        class Aside:
            def __init__(self, who: str) -> None:
                self.who = who

            async def __aenter__(self) -> None:
                asides.append(self.who)

            async def __aexit__(self, *exc: object) -> None:
                return None

        def never() -> bool:
            return False

        h = Member("h", UNKNOWN)
        assert await dedup.claim(h, "h", lambda: Aside("first"), never) is None  # sends
        second = asyncio.ensure_future(dedup.claim(h, "h", lambda: Aside("second"), never))
        third = asyncio.ensure_future(dedup.claim(h, "h", lambda: Aside("third"), never))
        await asyncio.sleep(0)
        failed = blank_row("a")
        failed.update(status="error", error_type="overloaded_error")
        dedup.settle(h, failed)  # the original failed: one twin is sent, the other waits
        await asyncio.sleep(0)
        assert second.done() and second.result() is None
        assert not third.done()
        dedup.settle(h, ok("b", "answer"))
        return [asides, await third]

    asides, third = asyncio.run(scenario())
    assert asides == ["second", "third", "third"]
    assert third["id"] == "b" and third["text"] == "answer"


# --- the engine, no sockets ------------------------------------------------------------------


class Counting:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompt = body["messages"][0]["content"]
        self.sent.append(prompt)
        return httpx.Response(200, json=canned_message(body["model"], f"echo {prompt}"))


def _engine_rows(tmp_path: Path, rows: list[dict[str, Any]], **flags: Any) -> tuple[Any, ...]:
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    config = job_config(inp, tmp_path / "out.jsonl", "http://127.0.0.1:9", **flags)
    handler, tally, out = Counting(), RowTally(), list[dict[str, Any]]()

    async def go() -> None:
        async with job_client(config, Runtime(transport=httpx.MockTransport(handler))) as client:
            engine = job_engine(config, client, tally, Runtime(sleep=no_wait))
            works = (prepare(row, RowSettings.of(config)) for row in read_rows(config.input.path))
            await engine.run(works, lambda work, row: out.append(row))

    asyncio.run(go())
    return handler, tally, {row["id"]: row for row in out}


def test_the_engine_sends_each_distinct_request_once(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "prompt": f"p{i % 10}"} for i in range(50)]
    handler, tally, out = _engine_rows(tmp_path, rows, concurrency=8)
    assert sorted(handler.sent) == sorted(f"p{i}" for i in range(10))
    assert len(out) == 50 and tally.ok == 50 and tally.deduplicated == 40
    originals = {row["text"]: row["id"] for row in out.values() if row["duplicate_of"] is None}
    for row in out.values():
        assert row["text"] == f"echo p{int(row['id'][1:]) % 10}"  # the right answer on each
        if row["duplicate_of"] is not None:
            assert row["duplicate_of"] == originals[row["text"]]
            assert (
                row["cost_usd"] == 0.0
                and row["request_hash"] == out[row["duplicate_of"]]["request_hash"]
            )
    assert tally.dedup_saved_usd == pytest.approx(40 * out["r0"]["cost_usd"])


def test_no_dedup_sends_every_row_and_sampling_does_not_change_the_rule(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "prompt": "same", "temperature": 1.0} for i in range(6)]
    handler, tally, _ = _engine_rows(tmp_path, rows)
    assert len(handler.sent) == 1 and tally.deduplicated == 5
    handler, tally, out = _engine_rows(tmp_path, rows, dedup=False)
    assert len(handler.sent) == 6 and tally.deduplicated == 0
    assert all(row["duplicate_of"] is None for row in out.values())


# --- whole runs against the simulator --------------------------------------------------------


def _thirty_percent_duplicates(n: int) -> list[dict[str, Any]]:
    distinct = int(n * 0.7)
    return [
        {"id": f"r{i}", "prompt": f"Question {i if i < distinct else i % 97}?"} for i in range(n)
    ]


def test_a_run_with_30_percent_duplicates_sends_only_the_distinct_requests(
    tmp_path: Path, sim: Any
) -> None:
    rows = _thirty_percent_duplicates(1_000)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    sim.stats.reset()
    summary = run(job_config(inp, out, sim.base_url, concurrency=32))
    assert summary.exit_code == 0
    assert sim.stats.requests == 700 and summary.deduplicated == 300
    table = pq.read_table(out).to_pylist()
    by_id = {row["id"]: row for row in table}
    assert [row["id"] for row in table] == [row["id"] for row in rows]
    for row, given in zip(table, rows, strict=True):
        if row["duplicate_of"] is not None:
            original = by_id[row["duplicate_of"]]
            assert original["duplicate_of"] is None
            assert row["text"] == original["text"] and row["cost_usd"] == 0.0
            assert given["prompt"] == rows[int(original["id"][1:])]["prompt"]
    assert summary.cost_usd == pytest.approx(sum(r["cost_usd"] for r in table))


@pytest.fixture
def tiny_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twin finding spills past 16 digests, and dedup holds about two answers in memory: a
    run of a few hundred rows takes the paths a run of millions takes."""
    monkeypatch.setattr("batchrun.engine.twin_plan.CHUNK_ENTRIES", 16)
    monkeypatch.setattr("batchrun.engine.dedup.KEPT_BYTES", 2_000)


def test_twins_far_from_their_original_are_filled_and_none_is_paid_twice(
    tmp_path: Path, sim: Any, tiny_bounds: None
) -> None:
    # 300 rows: the last 120 repeat the first 120, 180 rows further on; rows answered long
    # before their twins come wait on disk, not in memory, and no twin is sent again.
    rows = [{"id": f"r{i}", "prompt": f"Question {i if i < 180 else i - 180}?"} for i in range(300)]
    rows += [{"id": "late", "prompt": "Question 7?"}]  # a third row of one group
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    sim.stats.reset()
    summary = run(job_config(inp, out, sim.base_url, concurrency=16))
    assert summary.exit_code == 0
    assert sim.stats.requests == 180 and summary.deduplicated == 121
    table = pq.read_table(out).to_pylist()
    assert [row["id"] for row in table] == [row["id"] for row in rows]
    for row, given in zip(table[180:], rows[180:], strict=True):
        original = table[int(str(row["duplicate_of"])[1:])]
        assert given["prompt"] == rows[int(original["id"][1:])]["prompt"]
        assert row["text"] == original["text"] and row["cost_usd"] == 0.0
    assert not [p for p in tmp_path.iterdir() if "scratch" in p.name]  # removed at the end


def test_a_full_disk_while_twins_are_found_stops_before_anything_is_sent(
    tmp_path: Path, sim: Any, tiny_bounds: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(self: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("batchrun.engine.twin_plan.TwinFinder._spill_chunk", disk_full)
    rows = [{"id": f"r{i}", "prompt": f"Question {i % 30}?"} for i in range(60)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    args = ["run", str(inp), "-o", str(tmp_path / "out.parquet"), "--base-url", sim.base_url]
    args += ["--model", "claude-haiku-4-5", "--max-tokens", "20", "-q"]
    sim.stats.reset()
    result = CliRunner().invoke(cli, args, env={"ANTHROPIC_API_KEY": TEST_KEY})
    assert result.exit_code == 1, result.output
    assert (
        "cannot find identical requests before sending: No space left on device (in "
        f"{tmp_path}); nothing was sent. Free some space and run again, or --no-dedup sends "
        "every row"
    ) in result.output
    assert sim.stats.requests == 0
    assert not [p for p in tmp_path.iterdir() if "scratch" in p.name]


def test_a_scratch_folder_a_killed_run_left_is_removed_by_the_next(
    tmp_path: Path, sim: Any
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "Hi?"}])
    out = tmp_path / "out.parquet"
    stale = tmp_path / ".out.parquet.4242.0123456789ab.scratch.tmp"
    stale.mkdir()
    (stale / "answers.bin").write_bytes(b"x" * 100)
    lock_path(out).write_text("{}")  # a killed run leaves its lock file behind
    assert run(job_config(inp, out, sim.base_url)).exit_code == 0
    assert not stale.exists()


@pytest.mark.parametrize("bounds", ["default", "tiny"])
def test_a_resumed_run_fills_duplicates_of_earlier_answers_without_sending(
    tmp_path: Path, sim: Any, bounds: str, request: pytest.FixtureRequest
) -> None:
    if bounds == "tiny":
        request.getfixturevalue("tiny_bounds")
    first = [{"id": f"a{i}", "prompt": f"Question {i}?"} for i in range(40)]
    inp = write_jsonl(tmp_path / "in.jsonl", first)
    out = tmp_path / "out.parquet"
    assert run(job_config(inp, out, sim.base_url)).exit_code == 0
    later = [{"id": f"b{i}", "prompt": f"Question {i}?"} for i in range(20)]
    later += [{"id": "new", "prompt": "Something else?"}]
    write_jsonl(inp, first + later)
    sim.stats.reset()
    summary = run(job_config(inp, out, sim.base_url))
    assert sim.stats.requests == 1 and summary.deduplicated == 20
    table = {row["id"]: row for row in pq.read_table(out).to_pylist()}
    assert all(table[f"b{i}"]["duplicate_of"] == f"a{i}" for i in range(20))
    assert all(table[f"b{i}"]["text"] == table[f"a{i}"]["text"] for i in range(20))
    sim.stats.reset()
    assert run(job_config(inp, out, sim.base_url)).exit_code == 0  # and nothing after that
    assert sim.stats.requests == 0


@pytest.mark.parametrize("bounds", ["default", "tiny"])
def test_twins_of_rows_answered_in_the_journal_are_filled_from_it(
    tmp_path: Path, sim: Any, bounds: str, request: pytest.FixtureRequest
) -> None:
    """A pilot's sample leaves its answers in the journal, with no final file: the run that
    answers the rest fills their twins from the journal's records, sending none of them."""
    if bounds == "tiny":
        request.getfixturevalue("tiny_bounds")
    rows = [{"id": f"r{i}", "prompt": f"Question {i % 40}?"} for i in range(100)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    config = job_config(inp, out, sim.base_url, concurrency=8)
    sim.stats.reset()
    asyncio.run(run_online(config, only=range(0, 40, 2)))  # 20 rows, none a twin of another
    assert sim.stats.requests == 20 and not out.exists()
    summary = run(config)
    assert summary.exit_code == 0
    assert sim.stats.requests == 40 and summary.deduplicated == 60  # each prompt paid once
    table = pq.read_table(out).to_pylist()
    for row in table[40:]:
        original = table[int(str(row["duplicate_of"])[1:])]
        assert original["duplicate_of"] is None and row["text"] == original["text"]
        assert int(original["id"][1:]) % 40 == int(row["id"][1:]) % 40


def test_a_large_job_is_told_why_nothing_is_sent_while_twins_are_found(
    tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"id": f"r{i}", "prompt": f"p{i % 3}"} for i in range(6)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    args = ["run", str(inp), "-o", str(tmp_path / "out.jsonl"), "--base-url", sim.base_url]
    args += ["--model", "claude-haiku-4-5", "--max-tokens", "20"]
    env = {"ANTHROPIC_API_KEY": TEST_KEY}
    notice = "finding identical requests among the rows to send, before sending any"
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert notice not in result.output  # six rows: over before anyone could wonder
    monkeypatch.setattr("batchrun.runs.twins.TELL_TWIN_PASS_ROWS", 5)
    result = CliRunner().invoke(cli, [*args, "--overwrite"], env=env)
    assert result.exit_code == 0, result.output
    assert f"batchrun: {notice} (--no-dedup skips this)" in result.output


def test_the_cli_flag_turns_dedup_off(tmp_path: Path, sim: Any) -> None:
    rows = [{"id": f"r{i}", "prompt": "same"} for i in range(5)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    args = ["run", str(inp), "-o", str(tmp_path / "out.jsonl"), "--base-url", sim.base_url]
    args += ["--model", "claude-haiku-4-5", "--max-tokens", "20", "-q"]
    sim.stats.reset()
    runner = CliRunner()
    result = runner.invoke(cli, [*args, "--no-dedup"], env={"ANTHROPIC_API_KEY": TEST_KEY})
    assert result.exit_code == 0, result.output
    assert sim.stats.requests == 5
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(row["duplicate_of"] is None for row in out)


# --- Message Batches -------------------------------------------------------------------------


def test_a_batch_run_submits_each_distinct_request_once_and_fills_the_rest(
    tmp_path: Path,
) -> None:
    rows = [{"id": f"r{i}", "prompt": f"Question {i % 7}?"} for i in range(30)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.2)) as bsim:
        config = job_config(
            inp, out, bsim.base_url, via="batches", poll_interval=0.05, batch_max_requests=4
        )
        summary = run(config)
        stats = bsim.stats.snapshot()
    assert summary.exit_code == 0 and summary.deduplicated == 23
    assert stats.batch_requests_submitted == 7  # one request per distinct prompt
    table = pq.read_table(out).to_pylist()
    assert [r["id"] for r in table] == [r["id"] for r in rows]
    by_id = {r["id"]: r for r in table}
    for row in table:
        assert row["status"] == "ok" and row["via"] == "batches"
        if row["duplicate_of"] is not None:
            original = by_id[row["duplicate_of"]]
            assert original["duplicate_of"] is None and row["text"] == original["text"]
            assert row["cost_usd"] == 0.0 and int(row["id"][1:]) % 7 == int(original["id"][1:]) % 7
