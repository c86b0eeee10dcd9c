"""One ``--max-cost`` budget for many workers (``--rate-limit-store``), against a real Redis.

In layers: the Lua reserve / settle driven through ``SharedBudget`` (two workers on one job);
a ``Budget`` over a store that goes away (its fallback share); four ``python -m batchrun run
--shard I/4`` processes of one job against one simulator, which together stop at the cap
where alone each would have spent it whole.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import redis
from support import job_config, start_run, write_jsonl
from support.redis_server import RedisServer

from batchrun import run
from batchrun.config.load import RunConfig
from batchrun.cost.budget import Budget
from batchrun.cost.prices import load_prices
from batchrun.limits.shared import RedisBuckets, SharedBudget, to_nano
from batchrun.rows.tokens import estimate_input_tokens
from batchrun.runs.plan import in_shard
from batchrun.shards.layout import shard_output
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.sink import journal_path

JOB = "f" * 64
CAP = Decimal("1.00")


def budget_of(server: RedisServer, worker: str, job: str = JOB) -> SharedBudget:
    return RedisBuckets(server.url, worker=worker).budget(job)


def taken(budget: SharedBudget, amount: str) -> bool:
    """Whether ``budget`` reserved ``amount`` under the $1 cap (Redis must answer)."""
    answer = budget.reserve(Decimal(amount), CAP)
    assert answer is not None
    return answer[0]


# --------------------------------------------------------------------------- the scripts


def test_workers_of_one_job_reserve_against_what_all_of_them_hold(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    one, other = budget_of(redis_server, "a"), budget_of(redis_server, "b")
    assert one.reserve(Decimal("0.60"), CAP) == (True, Decimal(0), Decimal("0.60"))
    # Alone, b would reserve 0.60 of its own dollar; the job has only 0.40 left.
    assert other.reserve(Decimal("0.60"), CAP) == (False, Decimal(0), Decimal("0.60"))
    assert one.settle(Decimal("0.60"), Decimal("0.10"), CAP)  # it cost far less
    assert other.reserve(Decimal("0.60"), CAP) == (True, Decimal("0.10"), Decimal("0.60"))
    assert not taken(one, "0.31")
    assert taken(one, "0.30")
    assert one.left == Decimal(0)


def test_another_job_has_a_budget_of_its_own(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    assert budget_of(redis_server, "a").reserve(CAP, CAP) == (True, Decimal(0), CAP)
    assert budget_of(redis_server, "b", job="e" * 64).reserve(CAP, CAP) == (True, Decimal(0), CAP)


def test_amounts_are_kept_in_whole_nano_dollars_rounded_up(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    budget = budget_of(redis_server, "a")
    tiny = Decimal("0.0000000001")  # a tenth of a nano-dollar: reserved as a whole one
    assert to_nano(tiny) == 1
    budget.reserve(tiny, CAP)
    assert redis_client.hget(budget.key, "r:a") == b"1"


def test_a_crashed_workers_reservations_stop_holding_the_budget(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    crashed, alive = budget_of(redis_server, "crashed"), budget_of(redis_server, "alive")
    assert taken(crashed, "1.00")
    assert not taken(alive, "0.01")
    # Not heard from since long before the heartbeat: as if it had crashed then.
    redis_client.zadd(f"{crashed.key}:workers", {"crashed": 0})
    assert taken(alive, "0.01")


def test_a_worker_that_starts_after_the_others_left_still_counts_what_they_spent(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    early = budget_of(redis_server, "a")
    assert taken(early, "0.90")
    assert early.settle(Decimal("0.90"), Decimal("0.90"), CAP)
    early.leave()
    # A shard that started late, or a re-run: either way the job has 0.10 left.
    late = budget_of(redis_server, "b")
    assert not taken(late, "0.11")
    assert taken(late, "0.10")


# ----------------------------------------------------------------------- the Budget over a store


class Ledger:
    """A SpendingStore in memory: every worker's spent and reserved, as Redis would hold them."""

    def __init__(self, spent: str = "0", reserved_by_others: str = "0") -> None:
        self.spent = Decimal(spent)
        self.reserved = Decimal(reserved_by_others)

    def reserve(self, amount: Decimal, limit: Decimal) -> tuple[bool, Decimal, Decimal] | None:
        taken = self.spent + self.reserved + amount <= limit
        if taken:
            self.reserved += amount
        return taken, self.spent, self.reserved

    def settle(self, reserved: Decimal, actual: Decimal, limit: Decimal) -> bool:
        self.reserved -= reserved
        self.spent += actual
        return True

    def share(self, limit: Decimal) -> Decimal:
        raise AssertionError("the store never went away")


def test_a_request_that_fits_once_another_workers_request_settles_waits_for_it() -> None:
    ledger = Ledger(spent="0.50", reserved_by_others="0.40")  # another worker's in flight
    budget = Budget(CAP, load_prices(), store=ledger)

    async def scenario() -> bool:
        waiting = asyncio.ensure_future(budget.admit(Decimal("0.30")))
        await asyncio.sleep(0)
        assert not waiting.done()  # 0.50 + 0.40 + 0.30 is over the cap: it waits
        ledger.settle(Decimal("0.40"), Decimal("0.05"), CAP)  # the other worker's answer
        return await waiting

    assert asyncio.run(scenario())
    assert ledger.reserved == Decimal("0.30") and not budget.stopped


def test_a_request_the_jobs_spending_alone_leaves_no_room_for_stops_the_run() -> None:
    ledger = Ledger(spent="0.80", reserved_by_others="0.10")
    reasons: list[str] = []
    budget = Budget(CAP, load_prices(), on_stop=reasons.append, store=ledger)
    # Even if the other worker's request cost nothing, 0.80 + 0.30 is over the cap.
    assert asyncio.run(budget.admit(Decimal("0.30"))) is False
    assert budget.stopped and len(reasons) == 1
    assert "only $0.2000 of the $1.00 budget shared by the job's workers" in reasons[0]


# --------------------------------------------------------------------------- Redis goes away


BODY = {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": [{"role": "user"}]}


def test_when_redis_dies_the_budget_keeps_to_its_share_of_what_was_left() -> None:
    warnings: list[str] = []
    with RedisServer() as doomed:
        owner = RedisBuckets(doomed.url, worker="a", warn=warnings.append)
        shared = owner.budget(JOB)
        budget = Budget(CAP, load_prices(), store=shared)
        peer = budget_of(doomed, "b")
        assert taken(peer, "0.20")

        async def before() -> bool:
            admitted = await budget.admit(Decimal("0.20"))
            await budget.settle(Decimal("0.20"), Decimal("0.10"))
            return admitted

        assert asyncio.run(before())
    # Last seen: 0.10 spent, b's 0.20 reserved, two workers: this one may spend 0.35 more.
    spent: list[bool] = []

    async def after() -> None:
        for _ in range(5):
            admitted = await budget.admit(Decimal("0.10"))
            spent.append(admitted)
            if admitted:
                await budget.settle(Decimal("0.10"), Decimal("0.10"))

    asyncio.run(after())
    assert spent == [True, True, True, False, False]
    assert budget.stopped and "$0.0500" in (budget.stop_reason or "")
    assert len(warnings) == 1 and "1/2 of the $0.7000 left" in warnings[0]


# --------------------------------------------------------------------------- whole runs


ROWS = 40
SHARDS = 4


def _rows() -> list[dict[str, Any]]:
    return [{"id": f"r{i:03d}", "prompt": f"Review {i}: works as described."} for i in range(ROWS)]


def _spent_by(out: Path) -> list[float]:
    """The cost of every row a shard answered: its output when it finished, else its journal."""
    if out.exists():
        return [row["cost_usd"] for row in pq.read_table(out).to_pylist()]
    lines = journal_path(out).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["cost_usd"] for line in lines]


def _body(prompt: str) -> dict[str, Any]:
    """The request ``start_run`` makes of a row (its --model and --max-tokens)."""
    content = [{"role": "user", "content": prompt}]
    return {"model": "claude-haiku-4-5", "max_tokens": 20, "messages": content}


def _worst_case(body: dict[str, Any]) -> Decimal:
    worst = Budget(CAP, load_prices()).worst_case(body, estimate_input_tokens(body))
    assert worst is not None
    return worst


def test_four_shard_processes_sharing_a_store_stop_together_at_the_cap(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    rows = _rows()
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    worst = {row["id"]: _worst_case(_body(row["prompt"])) for row in rows}
    by_shard = [
        sum(worst[row["id"]] for row in rows if in_shard(row["id"], (i, SHARDS)))
        for i in range(SHARDS)
    ]
    # Room for the worst cases of the largest shard: alone, each shard would finish inside it.
    cap = float(max(by_shard))
    with SimulatorThread(SimulatorConfig(latency_mean=0.01)) as sim:
        procs = [
            start_run(
                inp,
                out,
                sim.base_url,
                "--shard",
                f"{i}/{SHARDS}",
                "--max-cost",
                repr(cap),
                "--rate-limit-store",
                redis_server.url,
                concurrency=4,
            )
            for i in range(SHARDS)
        ]
        codes = []
        for proc in procs:
            _, stderr = proc.communicate(timeout=300)
            codes.append((proc.returncode, stderr))
    spent = [_spent_by(shard_output(out, i, SHARDS)) for i in range(SHARDS)]
    total = sum(sum(costs) for costs in spent)
    answered = sum(len(costs) for costs in spent)
    # Together they stop at the cap: spent + reserved never passes it, and every reservation
    # is a worst case, so no overshoot (the billed input stays under its 1.5x margin here).
    assert 0 < total <= cap
    assert answered < ROWS
    assert any(code == 4 for code, _ in codes), codes
    assert all(code in (0, 4) for code, _ in codes), codes
    assert sim.stats.answered_ok == answered  # none sent but those answered


# --------------------------------------------------------------------------- across runs


def test_a_worker_adds_what_its_outputs_earlier_runs_spent_and_redis_keeps_the_larger(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    one = RedisBuckets(redis_server.url, worker="a").budget(JOB, output="/data/out-1.parquet")
    one.seed(Decimal("0.70"))
    other = budget_of(redis_server, "b")
    assert other.reserve(Decimal("0.31"), CAP) == (False, Decimal("0.70"), Decimal(0))
    assert taken(one, "0.20")
    assert one.settle(Decimal("0.20"), Decimal("0.10"), CAP)  # kept under its output
    assert [k for k in redis_client.hkeys(one.key) if k.startswith(b"o:")] != []
    # A re-run of the same output whose ledger says less (an answer it never recorded): the
    # larger stays. A new job on that output (--overwrite) starts it at what it says.
    again = RedisBuckets(redis_server.url, worker="c").budget(JOB, output="/data/out-1.parquet")
    again.seed(Decimal("0.70"))
    assert not taken(again, "0.21")
    again.seed(Decimal(0), reset=True)
    assert taken(again, "1.00")


def _job(inp: Path, out: Path, url: str, store: str, cap: float) -> RunConfig:
    return job_config(
        inp,
        out,
        url,
        model="claude-sonnet-4-6",
        max_tokens=400,
        concurrency=6,
        max_cost=cap,
        rate_limit_store=store,
    )


def test_the_shared_budget_is_the_jobs_across_runs_even_after_redis_forgot_it(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    rows = [
        {"id": f"d{i:03d}", "prompt": f"Document {i}: " + "words and figures " * (20 + i % 30)}
        for i in range(50)
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    cap = 0.04
    worst = max(
        _worst_case({"model": "claude-sonnet-4-6", "max_tokens": 400, "messages": [m]})
        for m in ({"role": "user", "content": r["prompt"]} for r in rows)
    )
    with SimulatorThread(SimulatorConfig()) as sim:
        first = run(_job(inp, out, sim.base_url, redis_server.url, cap))
        assert first.exit_code == 4
        second = run(_job(inp, out, sim.base_url, redis_server.url, cap))
        redis_client.flushdb()  # Redis forgot the budget (it expired, or was restarted)
        third = run(_job(inp, out, sim.base_url, redis_server.url, cap))
        assert second.exit_code == 4 and third.exit_code == 4
        assert third.job_cost_before is not None and third.job_cost_before > 0
        paid = sum(_spent_by(out))
        assert 0 < paid <= cap + float(worst)
        assert sim.stats.answered_ok == len(_spent_by(out))

        raised = run(_job(inp, out, sim.base_url, redis_server.url, 1.0))
        assert raised.exit_code == 0 and raised.final is not None
        assert raised.final.ok == len(rows) and sim.stats.answered_ok == len(rows)
