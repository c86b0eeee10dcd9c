"""``core.frozen``: the per-row classes compare, hash, copy and show as frozen dataclasses."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest

from batchrun.batches.plan import BatchItem
from batchrun.client.messages import Reply
from batchrun.core.frozen import frozen
from batchrun.engine.outcome import Work
from batchrun.rows.reader import InputRow
from batchrun.rows.request import PreparedRequest
from batchrun.simulator import batch_store, cache, replies


@frozen
class Quick:
    a: int
    b: str = "x"
    c: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Slow:
    a: int
    b: str = "x"
    c: list[int] = field(default_factory=list)


def test_it_compares_hashes_copies_and_shows_as_a_frozen_dataclass_does() -> None:
    quick, slow = Quick(1, "y"), Slow(1, "y")
    assert quick == Quick(1, "y") and quick != Quick(2, "y")
    assert repr(quick).removeprefix("Quick") == repr(slow).removeprefix("Slow")
    assert [f.name for f in dataclasses.fields(quick)] == ["a", "b", "c"]
    assert Quick(1).c == [] and Quick(1).c is not Quick(1).c  # a fresh default each time
    assert dataclasses.replace(quick, b="z") == Quick(1, "z")
    assert pickle.loads(pickle.dumps(quick)) == quick
    hashable = Quick(1, "y", None)  # type: ignore[arg-type]
    assert hash(hashable) == hash(Quick(1, "y", None))  # type: ignore[arg-type]
    assert {hashable: 1}[Quick(1, "y", None)] == 1  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # a list field cannot be hashed, as with frozen=True
        hash(quick)
    with pytest.raises(TypeError):
        hash(slow)


PER_ROW = [
    InputRow,
    PreparedRequest,
    Work,
    BatchItem,
    Reply,
    replies.Reply,
    cache.CacheLookup,
    cache.CacheUsage,
    batch_store.BatchItem,
    batch_store._Request,
]


@pytest.mark.parametrize("cls", PER_ROW)
def test_the_classes_made_for_every_row_are_quick_to_make(cls: type) -> None:
    # A frozen dataclass's __init__ goes through object.__setattr__; these do not (the type
    # checker still refuses an assignment to their fields).
    assert dataclasses.is_dataclass(cls)
    assert not cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert cls.__hash__ is not None
