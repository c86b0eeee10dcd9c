"""Twins found before sending (issue 26): ``TwinFinder`` groups request digests, in memory or
spilled to a scratch folder, into each row's role (its group and how many of the group's rows
come after it); ``Answers`` keeps an answer in bounded memory and the rest on disk, read back
by group; ``Dedup`` with a plan keeps an answer exactly while a twin of it is to come."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from batchrun.core.errors import OutputError
from batchrun.engine.dedup import Answers, Dedup
from batchrun.engine.twin_plan import IN_FINAL, IN_JOURNAL, TwinFinder, TwinPlan
from batchrun.store.columns import blank_row
from batchrun.store.scratch import Scratch


def request_hash(n: int) -> str:
    return hashlib.sha256(f"request {n}".encode()).hexdigest()


def plan_of(
    scratch: Scratch,
    to_send: list[tuple[int, int]],
    answered: Sequence[tuple[int, int, bool]] = (),
    chunk: int = 1 << 17,
) -> TwinPlan:
    finder = TwinFinder(scratch, chunk=chunk)
    for index, request, in_final in answered:
        finder.answered(index, request_hash(request), in_final=in_final)
    for index, request in to_send:
        finder.to_send(index, request_hash(request))
    return finder.finish()


def expected_roles(to_send: list[tuple[int, int]], answered_requests: set[int]) -> dict[int, Any]:
    """Brute force: for each row with a twin (or an earlier answer), its request and how many
    rows of its request come after it."""
    later: dict[int, int] = {}
    roles: dict[int, Any] = {}
    for index, request in reversed(to_send):
        roles[index] = (request, later.get(request, 0))
        later[request] = later.get(request, 0) + 1
    return {
        index: role
        for index, role in roles.items()
        if later[role[0]] > 1 or role[0] in answered_requests
    }


def check_plan(plan: TwinPlan, to_send: list[tuple[int, int]], answered: set[int]) -> None:
    expected = expected_roles(to_send, answered)
    slot_of: dict[int, int] = {}  # request -> its group's slot, the same for every row
    for index, request in to_send:
        role = plan.role(index)
        if index not in expected:
            assert role is None, (index, request)
            continue
        assert role is not None, (index, request)
        slot, after = role
        assert after == expected[index][1]
        assert slot_of.setdefault(request, slot) == slot
    assert sorted(slot_of.values()) == list(range(plan.groups))  # one slot a group
    assert plan.rows == len(expected)


def test_rows_with_no_twin_have_no_role_and_a_group_counts_down(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path / "out.parquet")
    to_send = [(0, 1), (1, 2), (2, 1), (4, 3), (7, 1), (9, 2)]
    plan = plan_of(scratch, to_send)
    roles = {index: plan.role(index) for index, _ in to_send}  # asked in input order
    one, two = roles[0], roles[1]
    assert one is not None and two is not None and one[0] != two[0]
    assert roles == {
        0: (one[0], 2),  # request 1: three rows, two after the first
        1: (two[0], 1),
        2: (one[0], 1),
        4: None,  # request 3: alone
        7: (one[0], 0),
        9: (two[0], 0),
    }
    assert plan.groups == 2 and plan.rows == 5
    assert not scratch.used  # a small plan never touches the disk


def test_a_spilled_plan_gives_the_same_roles_as_one_held_in_memory(tmp_path: Path) -> None:
    rng = random.Random(26)
    # 3,000 rows to send over 1,200 requests (many alone, some in groups up to a dozen), with
    # gaps in the input (rows answered before are not sent), and chunks of 64 entries: the
    # entries are spilled and regrouped part by part, the roles read back bucket by bucket.
    to_send = [(i * 2 + rng.randrange(2), rng.randrange(1_200)) for i in range(3_000)]
    to_send = sorted(dict(to_send).items())
    answered = {rng.randrange(1_200) for _ in range(100)}
    answered_entries = [(5_000 + n, request, n % 2 == 0) for n, request in enumerate(answered)]
    scratch = Scratch(tmp_path / "out.parquet")
    plan = plan_of(scratch, to_send, answered_entries, chunk=64)
    assert scratch.used
    check_plan(plan, to_send, answered & {request for _, request in to_send})
    held = plan_of(Scratch(tmp_path / "held.parquet"), to_send, answered_entries)
    check_plan(held, to_send, answered & {request for _, request in to_send})
    assert held.groups == plan.groups
    scratch.close()
    assert not list(tmp_path.iterdir())  # the scratch folder leaves with what it held


@pytest.mark.parametrize("chunk", [1 << 17, 4])
def test_an_earlier_answer_is_named_once_for_a_group_with_rows_to_send(
    tmp_path: Path, chunk: int
) -> None:
    to_send = [(10, 1), (11, 2), (12, 3), (13, 3)]
    answered = [(0, 1, False), (3, 1, True), (1, 4, False), (2, 3, True)]
    plan = plan_of(Scratch(tmp_path / "out.parquet"), to_send, answered, chunk=chunk)
    roles = {index: plan.role(index) for index, _ in to_send}
    assert roles[11] is None  # alone, nothing answered before
    assert roles[10] is not None and roles[10][1] == 0  # one row to send, and an answer
    assert roles[12] is not None and roles[12][1] == 1
    loaded = [row for table in plan.answered() for row in table.to_pylist()]
    # request 1: the journal's answer (kind 0) sorts first; request 4 has no row to send
    by_slot = {row["slot"]: (row["kind"], row["index"]) for row in loaded}
    assert by_slot == {roles[10][0]: (IN_JOURNAL, 0), roles[12][0]: (IN_FINAL, 2)}


def test_rows_to_send_come_in_input_order(tmp_path: Path) -> None:
    finder = TwinFinder(Scratch(tmp_path / "out.parquet"))
    finder.to_send(5, request_hash(1))
    with pytest.raises(ValueError, match="input order"):
        finder.to_send(5, request_hash(1))


def answer(row_id: str, text: str) -> dict[str, Any]:
    row = blank_row(row_id)
    row.update(status="ok", text=text, cost_usd=0.5, request_hash=request_hash(0))
    return row


def test_answers_past_the_memory_bound_wait_on_disk_and_are_read_back(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path / "out.parquet")
    answers = Answers(2_000, scratch)
    for slot in range(100):
        answers.put(slot, f"answer {slot} ".encode() * 10)
    assert answers.spilled > 0 and answers.pushed_out == 0 and len(answers) < 100
    for slot in range(100):
        assert answers.get(slot) == f"answer {slot} ".encode() * 10
    answers.drop(0)
    answers.drop(99)
    assert answers.get(0) is None and answers.get(99) is None
    answers.close()
    scratch.close()


@asynccontextmanager
async def aside() -> AsyncIterator[None]:
    yield


def never() -> bool:
    return False


def test_with_a_plan_an_answer_is_kept_exactly_until_its_last_twin(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path / "out.parquet")
    # rows 0, 2, 5 share request 0; rows 1, 3 are alone; row 4 shares request 9 with row 6
    to_send = [(0, 0), (1, 1), (2, 0), (3, 3), (4, 9), (5, 0), (6, 9)]
    plan = plan_of(scratch, to_send)
    dedup = Dedup()
    dedup.follow(plan, scratch)

    async def scenario() -> list[Any]:
        seen: list[Any] = []
        h = request_hash(0)
        first = dedup.member(0, h)
        assert first is not None and dedup.member(1, request_hash(1)) is None
        assert await dedup.claim(first, h, aside, never) is None  # sent
        dedup.settle(first, answer("r0", "hello"))
        second = dedup.member(2, h)
        assert second is not None
        seen.append(await dedup.claim(second, h, aside, never))
        assert len(dedup) == 1  # one twin still to come
        last = dedup.member(5, h)
        assert last is not None
        seen.append(await dedup.claim(last, h, aside, never))
        return seen

    copies = asyncio.run(scenario())
    assert [c["id"] for c in copies] == ["r0", "r0"] and copies[0]["text"] == "hello"
    assert len(dedup) == 0  # the last twin took it: nothing kept for nobody
    assert dedup.filled == 2 and dedup.saved_usd == 1.0
    dedup.close()
    scratch.close()


def test_a_spilled_plan_that_cannot_be_read_back_says_so(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path / "out.parquet")
    plan = plan_of(scratch, [(i, i % 5) for i in range(40)], chunk=4)
    (scratch.path / "roles.arrow").unlink()  # the scratch folder's file went away
    with pytest.raises(OutputError, match="cannot read back which rows have an identical"):
        plan.role(0)
