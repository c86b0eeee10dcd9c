"""Warm before the herd (issue 17, item 2): per prefix group the first request goes alone and
the rest wait, aside from the pool, until it answered; other groups keep flowing. Layers: the
pool's stand-aside, the warmup alone on a fake clock, the engine through a MockTransport that
holds answers back (a whole run against the simulator: tests/integration/test_warmup_run.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from support import canned_message, job_config, no_wait, write_jsonl
from support.mock_api import STREAM_EVENTS, sse_bytes

from batchrun.engine.outcome import RowSettings, prepare
from batchrun.engine.pool import Pool, Stopped
from batchrun.engine.tally import RowTally
from batchrun.engine.warmup import Warmup, ttl_seconds
from batchrun.formats.inputs import read_rows
from batchrun.runs.compose import job_client, job_engine
from batchrun.runs.runtime import Runtime
from batchrun.store.columns import blank_row


def answered(cache_write: int = 0, cache_read: int = 0) -> dict[str, Any]:
    row = blank_row("x")
    row.update(
        status="ok",
        message_id="msg",
        cache_creation_input_tokens=cache_write,
        cache_read_input_tokens=cache_read,
    )
    return row


class FakeAside:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def never() -> bool:
    return False


# --- the pool --------------------------------------------------------------------------------


def test_an_item_standing_aside_frees_its_slot_and_comes_back_first() -> None:
    async def scenario() -> list[str]:
        pool: Pool[str] = Pool(1, aside=1)
        order: list[str] = []
        gate = asyncio.Event()

        async def work(item: str) -> None:
            if item == "waits":
                async with pool.stand_aside():
                    order.append("aside")
                    await gate.wait()
            order.append(item)
            if item == "next":
                gate.set()
                for _ in range(3):  # "waits" wakes and queues for a slot while this one runs
                    await asyncio.sleep(0)

        await pool.run(iter(["waits", "next", "last"]), work)
        return order

    # With one slot, "next" ran while "waits" stood aside; "waits", queued for the slot, went
    # back in before the worker that ran "next" read "last".
    assert asyncio.run(scenario()) == ["aside", "next", "waits", "last"]


# --- the warmup alone ------------------------------------------------------------------------


def test_the_first_of_a_group_goes_alone_and_the_rest_after_its_answer() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        warmup = Warmup(300.0)
        await warmup.admit("g", FakeAside, never)  # the first: at once
        other = asyncio.ensure_future(warmup.admit("other", FakeAside, never))
        second = asyncio.ensure_future(warmup.admit("g", FakeAside, never))
        await asyncio.sleep(0)
        other_went, second_waited = other.done(), not second.done()
        warmup.answered("g", answered(cache_write=5000))
        await asyncio.sleep(0)
        assert second.done()
        return other_went, second_waited, warmup.groups_warmed

    other_went, second_waited, warmed = asyncio.run(scenario())
    assert other_went and second_waited and warmed == 2


def test_a_failed_first_request_hands_the_warming_to_the_next() -> None:
    async def scenario() -> int:
        warmup = Warmup(300.0)
        await warmup.admit("g", FakeAside, never)
        second = asyncio.ensure_future(warmup.admit("g", FakeAside, never))
        third = asyncio.ensure_future(warmup.admit("g", FakeAside, never))
        await asyncio.sleep(0)
        failed = blank_row("x")
        failed.update(status="error", error_type="overloaded_error")
        warmup.answered("g", failed)
        await asyncio.sleep(0)
        assert second.done() and not third.done()  # the second warms now, the third waits
        warmup.answered("g", answered(cache_write=5000))
        await asyncio.sleep(0)
        assert third.done()
        return warmup.groups_warmed

    assert asyncio.run(scenario()) == 2


def test_a_group_idle_past_its_ttl_is_warmed_again_and_an_eviction_is_counted() -> None:
    now = [0.0]

    async def scenario() -> Warmup:
        warmup = Warmup(ttl_seconds({"type": "ephemeral"}), clock=lambda: now[0])
        await warmup.admit("g", FakeAside, never)
        warmup.answered("g", answered(cache_write=5000))
        await warmup.admit("g", FakeAside, never)  # warm: at once
        warmup.answered("g", answered(cache_read=5000))
        warmup.answered("g", answered(cache_write=5000))  # read before, written now: evicted
        now[0] = 299.0  # idle for almost the 5-minute ttl: cold again, one goes alone
        await warmup.admit("g", FakeAside, never)
        waiting = asyncio.ensure_future(warmup.admit("g", FakeAside, never))
        await asyncio.sleep(0)
        assert not waiting.done()
        warmup.answered("g", answered(cache_write=5000))
        await waiting
        return warmup

    warmup = asyncio.run(scenario())
    assert warmup.groups_warmed == 2 and warmup.rewarmed == 1
    assert ttl_seconds({"type": "ephemeral", "ttl": "1h"}) == 3600.0


def test_rows_waiting_for_a_group_are_released_when_admission_stops() -> None:
    async def scenario() -> None:
        warmup = Warmup(300.0)
        stopping = [False]
        await warmup.admit("g", FakeAside, lambda: stopping[0])
        waiting = asyncio.ensure_future(warmup.admit("g", FakeAside, lambda: stopping[0]))
        await asyncio.sleep(0)
        stopping[0] = True
        warmup.release()
        try:
            await waiting
        except Stopped:
            return
        raise AssertionError("a row waiting at a stop must not be sent")

    asyncio.run(scenario())


# --- the engine, answers held back -----------------------------------------------------------


class Held:
    """A MockTransport handler that records, per prefix group, requests sent before the
    group's first request had answered. A group's first answer is held back until
    ``hold_until_plain`` rows without a shared prefix have been sent (or 10 s pass), so a
    test sees those rows flow while the groups wait, whatever the machine's load."""

    def __init__(self, hold_until_plain: int = 0) -> None:
        self.sent: list[str] = []
        self.first_answered: set[str] = set()
        self.early: Counter[str] = Counter()
        self.hold_until_plain = hold_until_plain
        self._plain_enough = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        head = body["messages"][0]["content"]
        group = (head if isinstance(head, str) else head[0]["text"]).split()[0]
        first = group not in self.sent
        if not first and group not in self.first_answered and group != "none":
            self.early[group] += 1
        self.sent.append(group)
        if self.sent.count("none") >= self.hold_until_plain:
            self._plain_enough.set()
        await asyncio.sleep(0.01)
        if first and group != "none":
            # After 10 s the plain rows were held back too: the test's count says so.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._plain_enough.wait(), 10)
        if first:
            self.first_answered.add(group)
        return httpx.Response(200, json=canned_message(body["model"], "ok"))


def _turns(head: str, i: int) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": head},
        {"role": "assistant", "content": "Understood."},
        {"role": "user", "content": f"row {i}"},
    ]


def test_each_group_sends_one_request_first_while_rows_without_a_prefix_flow(
    tmp_path: Path,
) -> None:
    heads = {"groupA": "groupA " + "alpha " * 6000, "groupB": "groupB " + "beta " * 6000}
    rows: list[dict[str, Any]] = []
    for i in range(20):  # interleaved: A, B, a row with no shared prefix, ...
        rows.append({"id": f"a{i}", "messages": _turns(heads["groupA"], i)})
        rows.append({"id": f"b{i}", "messages": _turns(heads["groupB"], i)})
        rows.append({"id": f"n{i}", "messages": _turns(f"none {i} short", i)})
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    config = job_config(inp, tmp_path / "out.jsonl", "http://127.0.0.1:9", concurrency=16)
    handler, tally, out = Held(hold_until_plain=5), RowTally(), list[dict[str, Any]]()

    async def go() -> None:
        async with job_client(config, Runtime(transport=httpx.MockTransport(handler))) as client:
            engine = job_engine(config, client, tally, Runtime(sleep=no_wait))
            works = [prepare(row, RowSettings.of(config)) for row in read_rows(config.input.path)]
            keys = {w.row.id[0]: w.prefix_key for w in works}
            assert keys["a"] and keys["b"] and keys["a"] != keys["b"] and keys["n"] is None
            await engine.run(works, lambda work, row: out.append(row))

    asyncio.run(go())
    assert len(out) == 60 and tally.ok == 60
    assert handler.sent.count("groupA") == handler.sent.count("groupB") == 20
    assert handler.early == Counter()  # nothing of a group went before its first answered
    assert tally.cache_groups_warmed == 2
    # Rows with no shared prefix did not wait for the groups: several were sent before the
    # groups' first answers came back and let the rest of A and B go.
    second_a = handler.sent.index("groupA", handler.sent.index("groupA") + 1)
    assert handler.sent[:second_a].count("none") >= 5


class SlowStream:
    """A MockTransport handler whose streamed answers open at once and end 50 ms later."""

    def __init__(self) -> None:
        self.sent = 0
        self.sent_before_first_ended = 0
        self.first_ended = False

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body.get("stream") is True
        first = self.sent == 0
        self.sent += 1
        if not first and not self.first_ended:
            self.sent_before_first_ended += 1
        events = sse_bytes(STREAM_EVENTS)
        split = events.index(b"event: content_block_start")

        async def chunks() -> Any:
            yield events[:split]  # message_start: the answer has begun
            await asyncio.sleep(0.05)
            yield events[split:]
            if first:
                self.first_ended = True

        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, content=chunks())


def test_a_streamed_first_answer_lets_its_group_go_as_soon_as_it_begins(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "text": f"row {i}"} for i in range(10)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    template = "Shared instruction. " + "Be careful. " * 3000 + "{text}"
    config = job_config(
        inp, tmp_path / "out.jsonl", "http://127.0.0.1:9", template=template, stream=True
    )
    handler, tally, out = SlowStream(), RowTally(), list[dict[str, Any]]()

    async def go() -> None:
        async with job_client(config, Runtime(transport=httpx.MockTransport(handler))) as client:
            engine = job_engine(config, client, tally, Runtime(sleep=no_wait))
            works = [prepare(row, RowSettings.of(config)) for row in read_rows(config.input.path)]
            assert works[0].prefix_key is not None
            await engine.run(works, lambda work, row: out.append(row))

    asyncio.run(go())
    assert len(out) == 10 and tally.ok == 10 and tally.cache_groups_warmed == 1
    # The rest went while the first answer was still streaming, not after it ended.
    assert handler.sent_before_first_ended >= 1
