"""Message Batches pieces without a server: custom ids, splitting, the journal, result rows,
and the endpoint wrapper through httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
from array import array
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import TEST_KEY

from batchrun.batches.plan import (
    CUSTOM_ID,
    SPLIT_FLOOR,
    BatchItem,
    batch_size,
    chunks,
    custom_id_for,
    request_part,
)
from batchrun.batches.results import result_row
from batchrun.batches.sent import SentRows
from batchrun.client.batch_endpoints import BatchesApi, BatchStatus, Upload, is_ambiguous
from batchrun.client.credentials import Credentials
from batchrun.client.messages import MessagesClient
from batchrun.config.load import load_config
from batchrun.core.errors import (
    ApiConnectionError,
    ApiResponseError,
    ApiStatusError,
    ApiTimeoutError,
)
from batchrun.core.secret import Secret
from batchrun.engine.outcome import RowSettings, Work, base_row, kept_texts
from batchrun.rows.reader import InputRow
from batchrun.store.batch_journal import BatchJournal, IntentRows

# -- custom ids and splitting ------------------------------------------------------------------


@pytest.mark.parametrize("row_id", ["q1", "a_b-C9", "x" * 64])
def test_ids_the_api_accepts_are_kept(row_id: str) -> None:
    assert custom_id_for(row_id) == row_id


@pytest.mark.parametrize("row_id", ["doc 1.txt", "x" * 65, "é", "a/b", ""])
def test_other_ids_are_hashed_into_valid_stable_custom_ids(row_id: str) -> None:
    cid = custom_id_for(row_id)
    assert CUSTOM_ID.fullmatch(cid) and cid != row_id
    assert cid == custom_id_for(row_id)
    assert cid != custom_id_for(row_id + "!")


def items(n: int, prompt: str = "hello") -> list[BatchItem]:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": prompt}]}
    return [BatchItem(i, f"r{i}", f"{i:064x}", body) for i in range(n)]


def test_chunks_respect_the_request_count() -> None:
    got = list(chunks(items(10), max_requests=4, max_bytes=10**6))
    assert [c.indexes for c in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    body = json.loads(got[0].content())
    assert [r["custom_id"] for r in body["requests"]] == ["r0", "r1", "r2", "r3"]
    assert body["requests"][0]["params"]["max_tokens"] == 5


def test_chunks_respect_the_byte_size_exactly() -> None:
    one = len(next(iter(chunks(items(1), 10, 10**6))).content())
    got = list(chunks(items(7), max_requests=100, max_bytes=3 * one))
    for chunk in got:
        assert len(chunk.content()) == chunk.size <= 3 * one
    assert sum(len(c) for c in got) == 7 and len(got) >= 3


def test_bodies_written_to_files_are_the_bodies_built_in_memory(tmp_path: Path) -> None:
    """Each chunk's body goes to its own file as it grows, within the same limits, and is
    read back the same whole or a slice at a time (``UPLOAD_SLICE``), as an upload reads it."""
    one = len(next(iter(chunks(items(1), 10, 10**6))).content())
    in_memory = list(chunks(items(7), max_requests=100, max_bytes=3 * one))
    paths = iter(tmp_path / f"body{k}" for k in range(10))
    on_disk = list(chunks(items(7), 100, 3 * one, body_path=lambda: next(paths)))
    assert [c.indexes for c in on_disk] == [c.indexes for c in in_memory]

    async def uploaded(chunk: Any) -> bytes:
        return b"".join([piece async for piece in chunk.body.slices()])

    for disk, memory in zip(on_disk, in_memory, strict=True):
        assert disk.body.path is not None and disk.body.path.exists()
        assert disk.content() == memory.content() == asyncio.run(uploaded(disk))
        assert disk.size == memory.size == len(memory.content())
        disk.body.remove()
        assert not disk.body.path.exists()


def test_a_request_already_encoded_is_not_encoded_again() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "é"}]}
    encoded = json.dumps(body, sort_keys=True, ensure_ascii=False).encode()
    item = BatchItem(0, "r0", "0" * 64, body, content=encoded)
    part = request_part("r0", item)
    assert encoded in part
    assert json.loads(part) == json.loads(request_part("r0", BatchItem(0, "r0", "0" * 64, body)))
    assert json.loads(part) == {"custom_id": "r0", "params": body}


def test_a_request_bigger_than_the_limit_gets_a_batch_of_its_own() -> None:
    got = list(chunks(items(3, prompt="x" * 500), max_requests=100, max_bytes=100))
    assert [len(c) for c in got] == [1, 1, 1]


def test_a_literal_id_equal_to_a_hashed_one_is_kept_unique() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    clash = custom_id_for("doc 1")
    got = list(
        chunks(
            [BatchItem(0, clash, "a" * 64, body), BatchItem(1, "doc 1", "b" * 64, body)], 10, 10**6
        )
    )
    assert len(set(got[0].custom_ids)) == 2


def test_the_content_hash_follows_every_request() -> None:
    base = next(iter(chunks(items(3), 10, 10**6))).content_hash()
    changed = items(3)
    changed[1] = BatchItem(1, "r1", "f" * 64, changed[1].body)
    assert next(iter(chunks(changed, 10, 10**6))).content_hash() != base


# -- the journal -------------------------------------------------------------------------------


def intent_rows(indexes: list[int]) -> IntentRows:
    return IntentRows(array("q", indexes), [f"c{i}" for i in indexes], ["h"] * len(indexes))


def test_the_journal_replays_every_step(tmp_path: Path) -> None:
    journal = BatchJournal(tmp_path / "out.parquet.batches")
    now = datetime.now(timezone.utc)
    a = journal.intend(now, 100, "hash-a", intent_rows([0, 1, 2]))
    journal.created(a, "msgbatch_a")
    b = journal.intend(now, 50, "hash-b", intent_rows([5, 7]))
    c = journal.intend(now, 50, "hash-c", intent_rows([9]))
    journal.abandoned(c)
    journal.collected(a)

    again = BatchJournal.load(journal.path)
    assert [e.key for e in again.open_entries()] == ["b2"]
    assert again.entries["b1"].collected and again.entries["b1"].batch_id == "msgbatch_a"
    assert again.entries["b3"].abandoned
    assert again.entries["b2"].batch_id is None and again.entries["b2"].at == now
    rows = again.rows(again.entries["b2"])
    assert list(rows.indexes) == [5, 7] and rows.positions() == {"c5": 0, "c7": 1}
    assert list(again.pending_flags(3)) == [0, 0, 0, 0, 0, 1, 0, 1]
    assert again.known_ids() == {"msgbatch_a"} and again.next_key() == "b4"
    assert b.key == "b2"


def test_a_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    journal = BatchJournal(tmp_path / "j.batches")
    entry = journal.intend(datetime.now(timezone.utc), 1, "h", intent_rows([0]))
    size = journal.path.stat().st_size
    with journal.path.open("ab") as fh:
        fh.write(b'{"event":"created","key":"b1","batch_id":"msgb')  # killed mid-append
    again = BatchJournal.load(journal.path)
    assert again.entries[entry.key].batch_id is None
    assert journal.path.stat().st_size == size


def test_a_missing_journal_is_empty(tmp_path: Path) -> None:
    assert BatchJournal.load(tmp_path / "none.batches").entries == {}


# -- result rows -------------------------------------------------------------------------------


def config(tmp_path: Path) -> Any:
    (tmp_path / "in.jsonl").write_text('{"prompt": "hi"}\n')
    return load_config(
        tmp_path / "in.jsonl",
        {"model": "claude-haiku-4-5", "max_tokens": 10, "output": str(tmp_path / "o.parquet")},
        environ={"ANTHROPIC_API_KEY": TEST_KEY},
    )


def work() -> Work:
    body = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": []}
    return Work(InputRow(0, 1, "row-0", {"prompt": "hi"}), body, "a" * 64, None)


MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": "positive"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1_000_000, "output_tokens": 0},
}


def test_a_succeeded_result_is_an_ok_row_at_the_batch_price(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    record = {"custom_id": "row-0", "result": {"type": "succeeded", "message": MESSAGE}}
    row = result_row(work(), RowSettings.of(cfg), record, "msgbatch_1", 1500.0)
    online = cfg.cost.prices.reply_cost(("claude-haiku-4-5",), MESSAGE["usage"])
    assert row["status"] == "ok" and row["text"] == "positive"
    assert row["cost_usd"] == pytest.approx(online / 2)
    assert (row["via"], row["batch_id"], row["attempts"], row["elapsed_ms"]) == (
        "batches",
        "msgbatch_1",
        1,
        1500.0,
    )


def test_an_errored_result_keeps_the_apis_own_error_type(tmp_path: Path) -> None:
    record = {
        "custom_id": "row-0",
        "result": {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "max_tokens: too big"},
                "request_id": "req_9",
            },
        },
    }
    row = result_row(work(), RowSettings.of(config(tmp_path)), record, "msgbatch_1", None)
    assert (row["status"], row["error_type"], row["error_message"], row["request_id"]) == (
        "error",
        "invalid_request_error",
        "max_tokens: too big",
        "req_9",
    )


@pytest.mark.parametrize("kind", ["expired", "canceled"])
def test_lapsed_results_say_why(tmp_path: Path, kind: str) -> None:
    record = {"custom_id": "row-0", "result": {"type": kind}}
    row = result_row(work(), RowSettings.of(config(tmp_path)), record, "msgbatch_1", None)
    assert row["error_type"] == kind and row["status"] == "error" and row["cost_usd"] is None


def test_an_unknown_result_type_is_an_error_row(tmp_path: Path) -> None:
    row = result_row(
        work(), RowSettings.of(config(tmp_path)), {"result": {"type": "new"}}, "b", None
    )
    assert row["error_type"] == "unknown_result" and "'new'" in row["error_message"]


def test_a_batch_keeps_what_its_output_rows_need_of_its_rows(tmp_path: Path) -> None:
    """The rows a batch was built from give the same output columns after a spill to disk
    and back as the rows themselves: id, model asked, request hash and kept columns."""
    settings = RowSettings.of(config(tmp_path))
    settings = RowSettings(**{**settings.__dict__, "keep_columns": ("topic", "n")})
    fields = {"prompt": "hi", "topic": "rivers", "n": 3}
    works = [
        Work(InputRow(i, i + 1, f"row-{i}", fields), {"model": model}, f"{i:064x}", None)
        for i, model in enumerate(["claude-haiku-4-5", None])
    ]
    batch = next(
        chunks(
            (
                BatchItem(
                    w.row.index,
                    w.row.id,
                    w.request_hash or "",
                    w.body or {},
                    kept_texts(w, settings),
                )
                for w in works
            ),
            max_requests=10,
            max_bytes=10**6,
            keep_columns=settings.keep_columns,
        )
    )
    batch.sent.save(tmp_path / "sent")
    sent = SentRows.load(tmp_path / "sent")
    for position, original in enumerate(works):
        again = base_row(sent.work(position, original.row.index), settings)
        expected = base_row(original, settings)
        for row in (again, expected):
            del row["finished_at"]
        assert again == expected
    assert expected["n"] == "3" and expected["model"] == settings.defaults.model


# -- the endpoint wrapper ----------------------------------------------------------------------


def batch(i: int, created: datetime, status: str = "in_progress") -> dict[str, Any]:
    return {
        "id": f"msgbatch_{i}",
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {"processing": 3, "succeeded": 0, "errored": 0},
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "expires_at": (created + timedelta(hours=24)).isoformat(),
        "ended_at": None,
    }


def api_over(handler: Any) -> tuple[BatchesApi, MessagesClient]:
    client = MessagesClient(
        "http://api.test",
        Credentials(api_key=Secret(TEST_KEY)),
        transport=httpx.MockTransport(handler),
    )

    async def no_wait(_: float) -> None:
        return None

    return BatchesApi(client, max_retries=2, sleep=no_wait), client


def test_listing_pages_until_batches_are_older_than_asked() -> None:
    now = datetime.now(timezone.utc)
    pages = {
        None: [batch(9, now), batch(8, now - timedelta(minutes=1))],
        "msgbatch_8": [batch(7, now - timedelta(minutes=2)), batch(6, now - timedelta(hours=2))],
    }
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after_id")
        seen.append(after)
        data = pages[after]
        return httpx.Response(200, json={"data": data, "has_more": True, "last_id": data[-1]["id"]})

    api, client = api_over(handler)

    async def go() -> list[BatchStatus]:
        async with client:
            return await api.created_since(now - timedelta(minutes=30))

    found = asyncio.run(go())
    assert [b.id for b in found] == ["msgbatch_9", "msgbatch_8", "msgbatch_7"]
    assert seen == [None, "msgbatch_8"]  # stopped at a batch older than asked
    assert found[0].total == 3 and not found[0].ended


def test_results_lines_split_across_chunks_are_joined() -> None:
    lines = [{"custom_id": f"c{i}", "result": {"type": "expired"}} for i in range(50)]
    raw = "\n".join(json.dumps(x) for x in lines).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/messages/batches/msgbatch_1/results"
        chunks_ = [raw[i : i + 7] for i in range(0, len(raw), 7)]
        return httpx.Response(200, stream=httpx.ByteStream(b"".join(chunks_)))

    api, client = api_over(handler)

    async def go() -> list[dict[str, Any]]:
        async with client:
            return [x async for x in api.results("msgbatch_1")]

    assert asyncio.run(go()) == lines


def test_reads_are_retried_but_create_is_not() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(503, json={"type": "error", "error": {"type": "api_error"}})

    api, client = api_over(handler)

    async def go() -> None:
        async with client:
            with pytest.raises(ApiStatusError):
                await api.retrieve("msgbatch_1")
            assert calls == ["GET"] * 3
            with pytest.raises(ApiStatusError) as info:
                await api.create(b'{"requests":[]}')
            assert calls[3:] == ["POST"] and is_ambiguous(info.value)

    asyncio.run(go())


def test_a_body_read_as_it_uploads_is_sent_whole_with_its_length() -> None:
    body = b'{"requests":[' + b",".join(b'{"custom_id":"r%d"}' % i for i in range(50)) + b"]}"
    seen: list[tuple[str | None, str | None, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers = request.headers
        seen.append(
            (headers.get("content-length"), headers.get("transfer-encoding"), request.content)
        )
        return httpx.Response(
            200, json=batch(1, datetime.now(timezone.utc)) if len(seen) > 1 else {"type": "x"}
        )

    async def slices() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    api, client = api_over(handler)

    async def go() -> None:
        async with client:
            with pytest.raises(ApiResponseError):  # an unusable reply: the body was sent, though
                await api.create(Upload(len(body), slices))
            status = await api.create(Upload(len(body), slices))  # a fresh read per attempt
            assert status.id == "msgbatch_1"

    asyncio.run(go())
    assert seen == [(str(len(body)), None, body)] * 2


@pytest.mark.parametrize(
    ("error", "ambiguous"),
    [
        (ApiConnectionError("reset"), True),
        (ApiTimeoutError("slow", error_type="timeout"), True),
        (ApiStatusError("boom", status=500), True),
        (ApiStatusError("overloaded", status=529), False),
        (ApiStatusError("slow down", status=429), False),
        (ApiStatusError("bad", status=400), False),
    ],
)
def test_which_create_failures_may_hide_a_batch(error: Any, ambiguous: bool) -> None:
    assert is_ambiguous(error) is ambiguous


@pytest.mark.parametrize(
    ("rows", "cap", "size"),
    [
        (100_000, 100_000, 25_000),  # four batches: the first ended while the others run
        (100_001, 100_000, 25_001),  # four, never a fifth of one row
        (30_000, 100_000, SPLIT_FLOOR),  # three of the floor, not four of 7,500
        (8_000, 100_000, SPLIT_FLOOR),  # a small job: one batch
        (10_000_000, 100_000, 100_000),  # a large one: the API's limit
        (100_000, 5_000, 5_000),  # --batch-max-requests is a cap
        (None, 100_000, 100_000),  # rows unknown: the cap
    ],
)
def test_a_round_goes_out_in_a_quarter_of_its_rows_within_floor_and_cap(
    rows: int | None, cap: int, size: int
) -> None:
    assert batch_size(rows, cap) == size
    if rows is not None and rows > SPLIT_FLOOR and size < cap:
        assert -(-rows // size) in range(2, 5)  # two to four batches, each at least the floor
