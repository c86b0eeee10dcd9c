"""``--via auto --deadline D`` on the simulator: batches while the deadline allows, online for
the rest, every row answered once and paid once (the simulator's own counts say so)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support import job_config, prompts, reply_tag, rows_of, write_jsonl

from batchrun import run
from batchrun.batches.deadline import BatchHistory, history_path
from batchrun.cli import cli
from batchrun.core.errors import ConfigError
from batchrun.live.frames import Snapshot
from batchrun.live.progress import Status
from batchrun.render.summary import format_summary
from batchrun.runs.runtime import ProgressView, Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.simulator.batch_store import ListQuery

N = 60


def paid_answers(sim: SimulatorThread) -> Counter[str]:
    """Answers the simulator billed, by prompt tag: online 200s and succeeded batch items."""
    paid = Counter(sim.stats.snapshot().answers_by_tag)
    store = sim.simulator.batches
    for batch in store.list_batches(ListQuery(limit=1000))["data"]:
        assert batch["processing_status"] == "ended", "a batch was left running"
        for line in store.results(batch["id"]).decode().splitlines():
            result = json.loads(line)["result"]
            if result["type"] == "succeeded":
                paid[result["message"]["content"][0]["text"][: len(reply_tag(""))]] += 1
    return paid


def auto_config(tmp_path: Path, sim: SimulatorThread, deadline: str, **flags: Any) -> Any:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(N))
    return job_config(
        inp,
        tmp_path / "out.parquet",
        sim.base_url,
        via="auto",
        deadline=deadline,
        poll_interval=0.1,
        **flags,
    )


def check_each_row_once(sim: SimulatorThread, out: Path) -> list[dict[str, Any]]:
    """Every row ok with its own answer, and the simulator billed each answer once."""
    got: list[dict[str, Any]] = rows_of(out)
    assert [r["id"] for r in got] == [p["id"] for p in prompts(N)]
    for src, res in zip(prompts(N), got, strict=True):
        assert res["status"] == "ok" and res["text"].startswith(reply_tag(src["prompt"]))
    assert paid_answers(sim) == Counter({reply_tag(p["prompt"]): 1 for p in prompts(N)})
    return got


def sim_with(processing_s: float, **more: Any) -> SimulatorThread:
    return SimulatorThread(
        SimulatorConfig(latency_mean=0.02, batch_processing_s=processing_s, **more)
    )


def test_fast_batches_answer_all_but_the_pilot(tmp_path: Path) -> None:
    with sim_with(0.5) as sim:
        config = auto_config(tmp_path, sim, "60s")
        summary = run(config).summary
        got = check_each_row_once(sim, config.output.path)
    assert summary.exit_code == 0 and summary.via == "auto"
    pilot = 8  # the concurrency: the first rows measure the online pace
    assert Counter(r["via"] for r in got) == {"batches": N - pilot, "online": pilot}
    deadline = summary.deadline
    assert deadline is not None and deadline.met and deadline.plan is None
    assert deadline.lanes["batches"].rows == N - pilot
    assert deadline.lanes["online"].rows == pilot
    assert deadline.lanes["batches"].cost_usd > 0 and deadline.lanes["online"].cost_usd > 0
    text = format_summary(summary, config)
    assert "  deadline    met, " in text
    assert f"  lanes       batches {N - pilot:,} rows $" in text
    history = BatchHistory.load(history_path(config.output.path))
    assert history.known and history.request_s is not None
    assert [b["rows"] for b in history.batches] == [N - pilot]


class Seen:
    """A display that keeps every snapshot its lanes' drivers hand it when closed."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def show(self, total: int | None, status: Status, quiet: bool) -> ProgressView:
        seen = self

        class View:
            def advance(self, n: int = 1) -> None:
                pass

            def log(self, message: str) -> None:
                pass

            def close(self) -> None:
                snapshot = status()
                if isinstance(snapshot, Snapshot):
                    seen.snapshots.append(snapshot)

        return View()


def test_the_display_shows_the_time_left_and_the_lane(tmp_path: Path) -> None:
    seen = Seen()
    with sim_with(0.3) as sim:
        run(auto_config(tmp_path, sim, "60s"), runtime=Runtime(show_progress=seen.show))
    notes = [s.note for s in seen.snapshots]
    assert notes[0] == "via auto: online (pilot) lane"
    assert notes[1] is not None and notes[1].startswith("via auto: batches lane; before it")
    assert notes[2] is not None and notes[2].startswith("via auto: online lane; before it")
    assert all(
        s.deadline_left_s is not None and 0 < s.deadline_left_s <= 60 for s in seen.snapshots
    )


def test_slow_batches_are_cancelled_what_they_answered_kept_the_rest_online(
    tmp_path: Path,
) -> None:
    # Batch items finish over 4 s: by the fallback (about 1.7 s in) some are answered.
    with sim_with(4.0) as sim:
        config = auto_config(tmp_path, sim, "6s")
        summary = run(config).summary
        got = check_each_row_once(sim, config.output.path)
        stats = sim.stats.snapshot()
    assert summary.exit_code == 0
    assert stats.batches_created == 1
    via = Counter(r["via"] for r in got)
    assert via["online"] > 8  # cancelled rows went online, not only the pilot
    deadline = summary.deadline
    assert deadline is not None and deadline.plan is not None
    assert "cancelled" in deadline.plan
    assert deadline.lanes["batches"].rows == via["batches"]
    assert deadline.lanes["online"].rows == via["online"]
    history = BatchHistory.load(history_path(config.output.path))
    assert history.batches[-1]["ended"] is False and history.cancels  # a lower bound, kept


def test_a_cancel_that_ends_late_is_waited_for_and_the_deadline_said_missed(
    tmp_path: Path,
) -> None:
    """The decision (``batches.auto``): never send a row a cancelling batch may still
    answer; the deadline is missed, and said so."""
    with sim_with(600.0, batch_cancel_s=5.0) as sim:
        config = auto_config(tmp_path, sim, "6s")
        summary = run(config).summary
        check_each_row_once(sim, config.output.path)
    deadline = summary.deadline
    assert deadline is not None
    assert deadline.met is False and deadline.late_cancels == 1
    assert "missed by" in format_summary(summary, config)


def test_expired_and_errored_batch_rows_are_answered_online(tmp_path: Path) -> None:
    with sim_with(0.3, batch_expire_rate=0.2, batch_error_rate=0.1, seed=5) as sim:
        config = auto_config(tmp_path, sim, "60s")
        summary = run(config).summary
        got = check_each_row_once(sim, config.output.path)
    assert summary.exit_code == 0 and summary.error == 0 and not summary.error_types
    via = Counter(r["via"] for r in got)
    assert via["online"] > 8 and via["batches"] > 0  # the lapsed and errored rows, online
    deadline = summary.deadline
    assert deadline is not None and deadline.met
    assert deadline.lanes["batches"].rows == via["batches"]
    assert deadline.lanes["online"].rows == via["online"]
    assert summary.ok == N


def test_the_budget_holds_across_both_lanes(tmp_path: Path) -> None:
    """Batches take rows while their worst cases at the batch price fit; the online lane
    admits the rest within what is left, and stops at the cap (exit 4)."""
    cap = 0.004
    with sim_with(0.3) as sim:
        config = auto_config(tmp_path, sim, "60s", max_cost=cap)
        summary = run(config).summary
        paid = paid_answers(sim)
    assert summary.exit_code == 4 and summary.budget_stop is not None
    assert summary.job_cost_usd is not None and summary.job_cost_usd <= cap
    assert set(paid.values()) == {1}  # every answer bought once
    deadline = summary.deadline
    assert deadline is not None
    assert deadline.lanes["batches"].rows > 0 and deadline.lanes["online"].rows >= 8
    assert deadline.lanes["batches"].rows + deadline.lanes["online"].rows == sum(paid.values())
    assert sum(paid.values()) < N  # the cap left rows to a re-run with a larger one


def test_history_of_slow_batches_sends_everything_online_from_the_start(
    tmp_path: Path,
) -> None:
    with sim_with(0.5) as sim:
        config = auto_config(tmp_path, sim, "60s")
        history = BatchHistory(request_s=0.05)
        history.batch_ended(100, 600.0, by_itself=True)
        history.save(history_path(config.output.path))
        summary = run(config).summary
        got = check_each_row_once(sim, config.output.path)
        assert sim.stats.snapshot().batches_created == 0
    assert {r["via"] for r in got} == {"online"}
    deadline = summary.deadline
    assert deadline is not None and deadline.plan is not None
    assert deadline.plan.startswith("every row went online from the start: earlier batches")
    assert "10 min" in deadline.plan
    assert "every row went online from the start" in format_summary(summary, config)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ({"deadline": "2020-01-01T00:00:00Z"}, "is already past"),
        ({"shard": "0/2"}, "not with shard"),
    ],
)
def test_what_auto_cannot_do_is_refused_before_sending(
    tmp_path: Path, flags: dict[str, Any], says: str
) -> None:
    with sim_with(0.5) as sim:
        config = auto_config(tmp_path, sim, **{"deadline": "60s", **flags})
        with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
            run(config)
        assert sim.stats.snapshot().requests == 0


def test_the_command_line_refuses_a_deadline_without_auto_and_auto_without_one(
    tmp_path: Path,
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    base = [
        "run",
        str(inp),
        "-o",
        str(tmp_path / "out.parquet"),
        "--simulate",
        "--model",
        "claude-haiku-4-5",
    ]
    runner = CliRunner()
    alone = runner.invoke(cli, [*base, "--deadline", "90s"])
    assert alone.exit_code == 1  # a configuration error (docs/design.md §3.6)
    assert "--deadline D is for --via auto" in alone.output
    missing = runner.invoke(cli, [*base, "--via", "auto"])
    assert missing.exit_code == 1
    assert "give --deadline D" in missing.output
    garbled = runner.invoke(cli, [*base, "--via", "auto", "--deadline", "soon"])
    assert garbled.exit_code == 1
    assert "'soon' is not a deadline" in garbled.output


def test_estimate_gives_the_range_between_the_lanes(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(40))
    args = ["estimate", str(inp), "-o", str(tmp_path / "out.parquet")]
    args += ["--model", "claude-haiku-4-5", "--max-tokens", "20", "--via", "auto"]
    result = CliRunner().invoke(cli, [*args, "--deadline", "6h", "--json"])
    assert result.exit_code == 0, result.output
    auto = json.loads(result.output)["via_auto"]
    low, high = auto["cost_usd"]
    assert 0 < low < high  # batch price for most rows ... all online at the full price
    assert auto["online_share"] == [pytest.approx(16 / 40), 1.0]
    text = CliRunner().invoke(cli, [*args, "--deadline", "6h"]).output
    assert "  via auto    $" in text and "of the rows online at the full price" in text


def test_an_answer_cache_serves_both_lanes_and_learns_from_both(tmp_path: Path) -> None:
    """Job A online fills the cache; job B, --via auto over A's rows (other ids) and new ones,
    sends only the new ones (its pilot online, the rest in batches), and stores what it paid
    for; job C, --via auto over B's rows, sends nothing."""
    cache = str(tmp_path / "answers")
    old = prompts(N)[:30]
    new = [{"id": f"new{i}", "prompt": f"A question never asked {i}?"} for i in range(20)]
    with sim_with(0.3) as sim:
        a_in = write_jsonl(tmp_path / "a.jsonl", old)
        first = run(job_config(a_in, tmp_path / "a.parquet", sim.base_url, answer_cache=cache))
        assert first.exit_code == 0 and first.answer_cache_stored == 30
        b_rows = new + [{**row, "id": f"b{row['id']}"} for row in old]
        b_in = write_jsonl(tmp_path / "b.jsonl", b_rows)
        before = paid_answers(sim)
        b = job_config(
            b_in,
            tmp_path / "b.parquet",
            sim.base_url,
            via="auto",
            deadline="60s",
            poll_interval=0.1,
            answer_cache=cache,
        )
        second = run(b).summary
        paid = paid_answers(sim) - before
        got = rows_of(b.output.path)
        assert second.exit_code == 0 and [r["status"] for r in got] == ["ok"] * 50
        assert paid == Counter({reply_tag(row["prompt"]): 1 for row in new})  # only the new
        cached = [r for r in got if r["cached_from"] is not None]
        assert len(cached) == 30 and all(r["cost_usd"] == 0 for r in cached)
        lanes = Counter(r["via"] for r in got if r["cached_from"] is None)
        assert lanes["online"] > 0 and lanes["batches"] > 0  # both lanes paid and stored
        assert second.answer_cache_hits == 30 and second.answer_cache_stored == 20
        before = paid_answers(sim)
        c = job_config(
            b_in,
            tmp_path / "c.parquet",
            sim.base_url,
            via="auto",
            deadline="60s",
            poll_interval=0.1,
            answer_cache=cache,
        )
        third = run(c).summary
        assert third.exit_code == 0 and paid_answers(sim) - before == Counter()
        assert third.answer_cache_hits == 50
