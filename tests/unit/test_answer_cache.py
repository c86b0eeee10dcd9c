"""The answer cache's store and the engine's lane (issue 28): entries by source and request,
whole or missing, info and prune; which rows may be reused; a cached row pays nothing.
Local folders only (an S3 cache on moto is tests/integration/test_answer_cache_runs.py's)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from batchrun.engine.answer_cache import AnswerLane, cached_row
from batchrun.engine.outcome import Work
from batchrun.remote.answer_cache import AnswerCache, Entry, entry_name
from batchrun.remote.errors import StorageError
from batchrun.rows.reader import InputRow
from batchrun.store.columns import COLUMN_NAMES, blank_row

HASH = "a" * 64


def answer(text: str = "hello", cost: float = 0.25) -> dict[str, Any]:
    return {
        "status": "ok",
        "text": text,
        "model": "claude-haiku-4-5",
        "source": "https://api.anthropic.com",
        "cost_usd": cost,
        "input_tokens": 100,
        "output_tokens": 7,
    }


def entry(request_hash: str = HASH, source: str = "https://api.anthropic.com") -> Entry:
    return Entry(request_hash, source, answer(), "out.parquet#r1", "2026-01-01T00:00:00.000+00:00")


def test_an_entry_is_found_by_its_request_and_source_only(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path / "cache")
    assert cache.get("https://api.anthropic.com", HASH) is None  # no folder yet: a miss
    cache.put(entry())
    found = cache.get("https://api.anthropic.com", HASH)
    assert found is not None and found.answer["text"] == "hello"
    assert found.paid_by == "out.parquet#r1"
    assert cache.get("simulator", HASH) is None  # another source's answer is not this one
    assert cache.get("https://api.anthropic.com", "b" * 64) is None
    name = entry_name("https://api.anthropic.com", HASH)
    assert (tmp_path / "cache" / name).is_file() and name.count("/") == 1


def test_what_is_not_a_whole_entry_of_the_request_is_a_miss(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path)
    path = tmp_path / entry_name("simulator", HASH)
    path.parent.mkdir(parents=True)
    good = entry(source="simulator").encode()
    for data in (good[: len(good) // 2], b"", b"[]", good.replace(HASH.encode(), b"b" * 64)):
        path.write_bytes(data)
        assert cache.get("simulator", HASH) is None, data[:40]
    path.write_bytes(good)
    assert cache.get("simulator", HASH) is not None


def test_a_write_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path)
    for i in range(5):
        cache.put(entry(f"{i:064x}"))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 5 and all(p.suffix == ".json" for p in files)


def test_info_counts_entries_and_bytes_and_prune_deletes_by_age_then_size(
    tmp_path: Path,
) -> None:
    cache = AnswerCache(tmp_path)
    now = time.time()
    for i in range(6):
        cache.put(entry(f"{i:064x}"))
        path = tmp_path / entry_name("https://api.anthropic.com", f"{i:064x}")
        days_old = 10 * (6 - i)  # 60, 50, ..., 10 days old
        os.utime(path, (now - days_old * 86_400, now - days_old * 86_400))
    info = cache.info()
    assert info.entries == 6 and info.bytes == sum(
        p.stat().st_size for p in tmp_path.rglob("*.json")
    )
    assert info.oldest is not None and info.newest is not None
    assert (info.newest - info.oldest).days == 50
    one = info.bytes // 6
    deleted, freed = cache.prune(older_than=35 * 86_400)  # the 60, 50 and 40 days old
    assert deleted == 3 and freed > 0
    assert cache.info().entries == 3
    deleted, _ = cache.prune(max_bytes=one + 1)  # the oldest go until one is left
    assert deleted == 2
    left = cache.info()
    assert left.entries == 1 and left.newest == info.newest
    assert cache.prune(older_than=86_400 * 365, max_bytes=10**9) == (0, 0)


def test_info_of_a_folder_that_is_not_there_says_so(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no such folder"):
        AnswerCache(tmp_path / "typo").info()


# --- the engine's lane ---------------------------------------------------------------------


def work(body: dict[str, Any] | None, content: bytes = b"{}") -> Work:
    row = InputRow(index=0, line=1, id="r9", fields={})
    return Work(row, body, HASH if body is not None else None, None, content=content)


def lane(tmp_path: Path, *, dedup: bool = True, samples: bool = False) -> AnswerLane:
    return AnswerLane(
        AnswerCache(tmp_path), "https://api.anthropic.com", "out2.parquet", dedup=dedup,
        samples=samples,
    )  # fmt: skip


def test_sampled_requests_are_reused_with_dedup_on_or_when_asked(tmp_path: Path) -> None:
    sampled, greedy = work({"model": "m"}), work({"model": "m", "temperature": 0})
    hot = work({"model": "m", "temperature": 0.7})
    assert lane(tmp_path).reusable(sampled) and lane(tmp_path).reusable(hot)
    apart = lane(tmp_path, dedup=False)
    assert not apart.reusable(sampled) and not apart.reusable(hot)  # the default temperature is 1
    assert apart.reusable(greedy)
    assert lane(tmp_path, dedup=False, samples=True).reusable(hot)


def test_a_request_naming_a_file_by_url_is_never_reused(tmp_path: Path) -> None:
    url_file = work({"model": "m"}, content=b'{"source":{"type":"url","url":"https://x/y.png"}}')
    assert not lane(tmp_path).reusable(url_file)
    by_hand = Work(
        url_file.row, {"messages": [{"source": {"type": "url", "url": "x"}}]}, HASH, None
    )
    assert not lane(tmp_path).reusable(by_hand)
    assert not lane(tmp_path).reusable(work(None))  # an invalid row


def test_only_answers_this_run_paid_for_are_kept_and_a_hit_pays_nothing(tmp_path: Path) -> None:
    answers = lane(tmp_path)
    own = blank_row("r9")
    paid = {**own, **answer(), "id": "r9", "request_hash": HASH}

    async def scenario() -> dict[str, Any] | None:
        await answers.keep(work({"model": "m"}), {**paid, "status": "error"})
        await answers.keep(work({"model": "m"}), {**paid, "duplicate_of": "r1"})
        await answers.keep(work({"model": "m"}), {**paid, "cached_from": "o#r1"})
        assert answers.stored == 0 and not list(tmp_path.rglob("*.json"))
        await answers.keep(work({"model": "m"}), paid)
        return await answers.lookup(work({"model": "m"}), lambda: blank_row("r10"))

    row = asyncio.run(scenario())
    assert answers.stored == 1 and answers.hits == 1 and answers.saved_usd == 0.25
    assert row is not None and set(row) == set(COLUMN_NAMES)
    assert row["id"] == "r10" and row["cached_from"] == "out2.parquet#r9"
    assert row["text"] == "hello" and row["source"] == "https://api.anthropic.com"
    assert row["cost_usd"] == 0.0 and row["input_tokens"] == 0 and row["attempts"] == 0
    assert row["duplicate_of"] is None


def test_a_cache_that_cannot_be_written_is_told_once_and_fails_no_row(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    told: list[str] = []
    answers = AnswerLane(AnswerCache(blocked), "simulator", "o", dedup=True, notify=told.append)
    paid = {**blank_row("r9"), **answer(), "source": "simulator"}

    async def scenario() -> dict[str, Any] | None:
        await answers.keep(work({"model": "m"}), paid)
        await answers.keep(work({"model": "m"}), paid)
        return await answers.lookup(work({"model": "m"}), lambda: blank_row("r9"))

    assert asyncio.run(scenario()) is None
    assert answers.failures == 2 and answers.stored == 0  # the read is a plain miss
    assert len(told) == 1 and "answer cache" in told[0]


def test_a_cached_row_names_its_payer(tmp_path: Path) -> None:
    row = cached_row(blank_row("x"), entry())
    assert row["cached_from"] == "out.parquet#r1" and row["elapsed_ms"] == 0.0
    assert row["cost_usd"] == 0.0 and row["text"] == "hello"
