"""The simulator's batch queue limit (``batch_queue_limit``): requests queued over every batch
not yet ended; a create past it is refused with a 429 rate_limit_error and stores nothing."""

from __future__ import annotations

import pytest

from batchrun.simulator import BatchSettings, BatchStore
from batchrun.simulator.batch_store import BatchItem, QueueFull, check_create_body


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def items(count: int, prefix: str) -> list[BatchItem]:
    params = {
        "model": "claude-haiku-4-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return check_create_body(
        {"requests": [{"custom_id": f"{prefix}-{i}", "params": params} for i in range(count)]}
    )


def test_a_create_past_the_queue_limit_is_a_429_and_stores_nothing() -> None:
    clock = Clock()
    store = BatchStore(BatchSettings(processing_s=10.0, queue_limit=30), clock=clock)
    store.create(items(20, "a"), "2023-06-01")
    with pytest.raises(QueueFull) as refused:
        store.create(items(20, "b"), "2023-06-01")
    assert refused.value.status == 429
    assert refused.value.error_type == "rate_limit_error"
    assert "limit of 30" in refused.value.message and "20 queued now" in refused.value.message
    assert len(store.list_batches()["data"]) == 1  # nothing stored

    store.create(items(10, "c"), "2023-06-01")  # exactly up to the limit is allowed
    assert store.queued_peak == 30

    clock.now += 10.0  # both batches end: the queue is empty again
    later = store.create(items(20, "b"), "2023-06-01")
    assert later["request_counts"]["processing"] == 20
    assert store.queued_peak == 30


def test_no_queue_limit_by_default() -> None:
    store = BatchStore(BatchSettings(processing_s=10.0), clock=Clock())
    for n in range(3):
        store.create(items(100, f"x{n}"), "2023-06-01")
    assert store.queued_peak == 300


def test_the_queue_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_queue_limit"):
        BatchSettings(queue_limit=0)
