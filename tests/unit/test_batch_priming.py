"""Batch cache priming, pure (issue 28): which groups are primed, the 1-hour marks, the warming
row alone in a batch of its own before the batch it would have joined, and the journal's
record of what was warmed."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from batchrun.batches.plan import BatchItem, chunks
from batchrun.batches.priming import (
    MIN_SHARED,
    PRIME_TTL,
    WARM_FOR,
    GroupCounts,
    Priming,
    shared_groups,
    warm_groups,
)
from batchrun.core.timestamps import utc_now
from batchrun.engine.outcome import Work
from batchrun.rows.reader import InputRow
from batchrun.store.batch_journal import BatchJournal, IntentRows


def work(index: int, key: str | None, *, ttl: str | None = None) -> Work:
    control: dict[str, Any] = (
        {"type": "ephemeral"} if ttl is None else {"type": "ephemeral", "ttl": ttl}
    )
    body: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "max_tokens": 5,
        "system": [{"type": "text", "text": "rules", "cache_control": control}],
        "messages": [{"role": "user", "content": f"row {index}"}],
    }
    if key is None:
        del body["system"][0]["cache_control"]
    content = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    row = InputRow(index=index, id=f"r{index}", line=index + 1, fields={})
    return Work(row, body, f"{index:064x}", None, content=content, prefix_key=key)


def test_a_group_is_primed_only_when_a_round_sends_more_than_one_of_its_rows() -> None:
    counts = GroupCounts()
    works = [work(0, "a"), work(1, "a"), work(2, "b"), work(3, None), work(4, "a")]
    assert list(counts.counting(works)) == works  # passed on as they are
    assert counts.counts == {"a": 3, "b": 1}
    assert MIN_SHARED == 2 and shared_groups(counts.counts) == {"a"}


def test_counting_is_bounded_in_groups() -> None:
    counts = GroupCounts(limit=2)
    list(counts.counting([work(i, f"g{i % 3}") for i in range(9)]))
    assert counts.counts == {"g0": 3, "g1": 3}  # g2 was never counted: never primed


def test_the_first_row_of_a_shared_group_warms_it_and_no_other_does() -> None:
    priming = Priming({"a", "b"}, warm={"b"})
    assert [priming.warms(w) for w in (work(0, "a"), work(1, "a"), work(2, "b"))] == [
        True,
        False,
        False,  # warm already (a warming batch of an earlier run)
    ]
    assert not priming.warms(work(3, "c")) and not priming.warms(work(4, None))


def test_the_shared_groups_requests_carry_the_one_hour_ttl_and_nothing_else_changes() -> None:
    priming = Priming({"a"}, warm=set())
    shared = work(0, "a")
    before = shared.content
    assert before is not None
    primed = priming.primed(shared)
    assert primed is not None and PRIME_TTL == "1h"
    assert json.loads(primed) == {
        **json.loads(before),
        "system": [
            {"type": "text", "text": "rules", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
    }
    assert shared.body is not None
    assert shared.body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    canonical = json.dumps(shared.body, sort_keys=True, separators=(",", ":")).encode()
    assert canonical == primed  # the body and its encoding agree
    assert priming.primed(work(1, "lone")) is None  # a group sent once: its write unread
    assert priming.primed(work(2, None)) is None
    assert priming.primed(work(3, "a", ttl="5m")) is None  # the job's own ttl stands


def _item(index: int, warms: str | None = None) -> BatchItem:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": str(index)}]}
    return BatchItem(index, f"r{index}", f"{index:064x}", body, warms=warms)


def test_a_warming_row_gets_a_batch_of_its_own_before_the_batch_it_would_have_joined() -> None:
    items = [_item(0), _item(1, warms="a"), _item(2), _item(3), _item(4, warms="b"), _item(5)]
    built = list(chunks(items, max_requests=3, max_bytes=10**6))
    assert [(c.indexes, c.warms) for c in built] == [
        ([1], ["a"]),
        ([0, 2, 3], []),
        ([4], ["b"]),
        ([5], []),
    ]
    assert json.loads(built[0].content())["requests"][0]["custom_id"] == "r1"


def test_the_journal_remembers_what_a_warming_batch_warmed_for_a_while(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet.batches"
    journal = BatchJournal(path)
    at = utc_now()
    entry = journal.intend(at, 100, "h", IntentRows(_indexes([7]), ["r7"], ["x"]))
    journal.created(entry, "msgbatch_1")
    journal.warmed(entry, ["a", "b"])
    again = BatchJournal.load(path)
    assert again.entries[entry.key].warms == ("a", "b")
    assert warm_groups(again, at + timedelta(minutes=5)) == {"a", "b"}
    assert warm_groups(again, at + WARM_FOR + timedelta(seconds=1)) == set()
    abandoned = journal.intend(at, 100, "h2", IntentRows(_indexes([8]), ["r8"], ["y"]))
    journal.warmed(abandoned, ["c"])
    journal.abandoned(abandoned)
    assert "c" not in warm_groups(BatchJournal.load(path), at)  # never created: warmed nothing


def _indexes(values: list[int]) -> Any:
    from array import array

    return array("q", values)


def test_rows_of_running_batches_are_found_by_their_hash_prefix() -> None:
    from batchrun.runs.twins import RunningRows

    running = RunningRows([("00ff00ff00ff00ff", 9), ("00ff00ff00ff00ff", 4), ("x", 1), ("ab", 2)])
    assert len(running) == 3  # "x" is no request hash's prefix
    assert running.owner("00ff00ff00ff00ff") == 4  # the first row asked
    assert running.owner("00000000000000ab") == 2 and running.owner("00ff00ff00ff00fe") is None
    assert running.owner("not hex") is None and RunningRows([]).owner("ab") is None
