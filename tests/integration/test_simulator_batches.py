"""The simulator's Message Batches: the store on a fake clock, then the endpoints over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from support import TEST_KEY

from batchrun.cli import cli
from batchrun.simulator import (
    BatchSettings,
    BatchStore,
    Simulator,
    SimulatorConfig,
    SimulatorThread,
    make_reply,
)
from batchrun.simulator.batch_store import (
    BatchItem,
    ListQuery,
    check_create_body,
    parse_list_query,
    shuffled_order,
)
from batchrun.simulator.checks import InvalidRequest

HEADERS = {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"}
BATCHES = "/v1/messages/batches"


def params(prompt: str = "Name three rivers.", **extra: Any) -> dict[str, Any]:
    """A valid Messages body, as a batch request's params."""
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def requests_for(count: int, prefix: str = "row") -> list[dict[str, Any]]:
    return [
        {"custom_id": f"{prefix}-{i}", "params": params(f"{prefix} question {i}")}
        for i in range(count)
    ]


def items(count: int, prefix: str = "row") -> list[BatchItem]:
    return check_create_body({"requests": requests_for(count, prefix)})


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


WALL = 1_750_000_000.0


def store_at(clock: Clock, **settings: Any) -> BatchStore:
    return BatchStore(
        BatchSettings(**{"processing_s": 10.0, **settings}),
        clock=clock,
        wall=lambda: WALL + clock.now,
        id_prefix="test",
    )


def lines(jsonl: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in jsonl.decode().splitlines()]


def by_id(jsonl: bytes) -> dict[str, dict[str, Any]]:
    return {line["custom_id"]: line["result"] for line in lines(jsonl)}


def invalid(call: Callable[[], object]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        call()
    return caught.value


# ------------------------------------------------------------------------------ store (pure)


def test_counts_stay_processing_until_the_batch_ends_then_all_land() -> None:
    clock = Clock()
    store = store_at(clock)
    created = store.create(items(4), "2023-06-01")
    batch_id = created["id"]

    assert batch_id.startswith("msgbatch_")
    assert created["type"] == "message_batch"
    assert created["processing_status"] == "in_progress"
    assert created["request_counts"] == {
        "processing": 4,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert created["results_url"] is None
    assert created["ended_at"] is None
    clock.now += 9.99
    assert store.retrieve(batch_id)["request_counts"]["processing"] == 4
    clock.now += 0.01
    ended = store.retrieve(batch_id)
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"] == {
        "processing": 0,
        "succeeded": 4,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert ended["results_url"] == f"/v1/messages/batches/{batch_id}/results"
    assert {line["result"]["type"] for line in lines(store.results(batch_id))} == {"succeeded"}


def test_timestamps_are_rfc3339_and_follow_the_clock() -> None:
    clock = Clock()
    store = store_at(clock)
    batch_id = store.create(items(2), "2023-06-01")["id"]
    clock.now += 3.0
    canceling = store.cancel(batch_id)
    clock.now += 5.0
    ended = store.retrieve(batch_id)

    def at(field: str) -> float:
        return datetime.fromisoformat(ended[field].replace("Z", "+00:00")).timestamp()

    created = WALL + 100.0
    assert ended["created_at"].endswith("Z")
    assert at("created_at") == pytest.approx(created)
    assert at("expires_at") == pytest.approx(created + 24 * 3600)
    assert at("cancel_initiated_at") == pytest.approx(created + 3.0)
    assert at("ended_at") == pytest.approx(created + 3.0 + 1.0)  # the default batch_cancel_s
    assert canceling["cancel_initiated_at"] == ended["cancel_initiated_at"]
    assert ended["archived_at"] is None


def test_cancel_midway_keeps_what_was_processed_and_cancels_the_rest() -> None:
    clock = Clock()
    store = store_at(clock)
    batch_id = store.create(items(10), "2023-06-01")["id"]
    clock.now += 4.5  # requests 0..3 are processed at 1, 2, 3 and 4 seconds
    canceling = store.cancel(batch_id)

    assert canceling["processing_status"] == "canceling"
    assert canceling["request_counts"]["processing"] == 10
    assert store.cancel(batch_id) == canceling  # canceling again changes nothing
    assert invalid(lambda: store.results(batch_id)).status == 400
    clock.now += 0.99
    assert store.retrieve(batch_id)["processing_status"] == "canceling"
    clock.now += 0.01
    ended = store.retrieve(batch_id)
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"]["succeeded"] == 4
    assert ended["request_counts"]["canceled"] == 6
    results = by_id(store.results(batch_id))
    assert [results[f"row-{i}"]["type"] for i in range(10)] == ["succeeded"] * 4 + ["canceled"] * 6
    assert results["row-9"] == {"type": "canceled"}


def test_a_cancel_ends_after_the_cancel_delay_however_long_the_batch() -> None:
    """The API ends a cancel once the requests in progress are done (docs/api-facts.md
    §8.3): about one request's time, not a share of the batch's (10 minutes here)."""
    clock = Clock()
    store = store_at(clock, processing_s=600.0, cancel_s=2.5)
    batch_id = store.create(items(10), "2023-06-01")["id"]
    clock.now += 61.0  # request 0 was processed at 60 s
    store.cancel(batch_id)
    clock.now += 2.49
    assert store.retrieve(batch_id)["processing_status"] == "canceling"
    clock.now += 0.01
    ended = store.retrieve(batch_id)
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"]["succeeded"] == 1
    assert ended["request_counts"]["canceled"] == 9


def test_an_ended_batch_cannot_be_canceled() -> None:
    clock = Clock()
    store = store_at(clock)
    batch_id = store.create(items(1), "2023-06-01")["id"]
    clock.now += 10
    refused = invalid(lambda: store.cancel(batch_id))
    assert (refused.status, refused.error_type) == (400, "invalid_request_error")
    assert "already ended" in refused.message


def test_error_and_expire_rates_are_deterministic_and_roughly_proportional() -> None:
    def outcome(seed: int) -> dict[str, str]:
        clock = Clock()
        store = store_at(clock, error_rate=0.1, expire_rate=0.2, seed=seed)
        batch_id = store.create(items(2000), "2023-06-01")["id"]
        clock.now += 10
        return {cid: result["type"] for cid, result in by_id(store.results(batch_id)).items()}

    first, again, other = outcome(7), outcome(7), outcome(8)
    tally = Counter(first.values())

    assert first == again
    assert first != other
    assert 150 <= tally["errored"] <= 250
    assert 320 <= tally["expired"] <= 480
    assert tally["succeeded"] == 2000 - tally["errored"] - tally["expired"]


def test_injected_errors_are_retryable_server_errors() -> None:
    clock = Clock()
    store = store_at(clock, error_rate=1.0)
    batch_id = store.create(items(40), "2023-06-01")["id"]
    clock.now += 10
    results = by_id(store.results(batch_id)).values()

    assert {r["type"] for r in results} == {"errored"}
    assert {r["error"]["type"] for r in results} == {"error"}
    assert {r["error"]["error"]["type"] for r in results} == {"api_error", "overloaded_error"}


def test_a_resubmitted_custom_id_gets_a_fresh_draw() -> None:
    """Else an errored request resubmitted in a new batch would fail forever."""
    clock = Clock()
    store = store_at(clock, error_rate=0.5, seed=3)
    fates = []
    for _ in range(12):
        batch_id = store.create(items(1), "2023-06-01")["id"]
        clock.now += 10
        fates.append(by_id(store.results(batch_id))["row-0"]["type"])
    assert set(fates) == {"succeeded", "errored"}


def test_invalid_params_and_stream_become_errored_results() -> None:
    clock = Clock()
    store = store_at(clock)
    no_max = params()
    del no_max["max_tokens"]
    body = {
        "requests": [
            {"custom_id": "fine", "params": params()},
            {"custom_id": "no-max", "params": no_max},
            {"custom_id": "streams", "params": params(stream=True)},
            {"custom_id": "extra", "params": params(bogus=1)},
            {"custom_id": "sampling", "params": params(temperature=0.5)},
        ]
    }
    batch_id = store.create(check_create_body(body), "2026-10-21")["id"]
    clock.now += 10
    results = by_id(store.results(batch_id))

    assert results["fine"]["type"] == "succeeded"
    for custom_id, words in [
        ("no-max", "max_tokens: Field required"),
        ("streams", "stream"),
        ("extra", "bogus: Extra inputs are not permitted"),
        ("sampling", "temperature: not supported"),  # params are checked under the version
    ]:
        result = results[custom_id]
        assert result["type"] == "errored"
        assert result["error"]["type"] == "error"
        assert result["error"]["error"]["type"] == "invalid_request_error"
        assert words in result["error"]["error"]["message"]
        assert "request_id" in result["error"]
    assert store.retrieve(batch_id)["request_counts"]["errored"] == 4


def test_succeeded_results_are_the_online_message_in_the_batch_tier() -> None:
    clock = Clock()
    store = store_at(clock)
    batch_id = store.create(items(3), "2023-06-01")["id"]
    clock.now += 10
    results = by_id(store.results(batch_id))
    for i in range(3):
        online = make_reply(params(f"row question {i}")).message
        message = results[f"row-{i}"]["message"]
        assert message["usage"]["service_tier"] == "batch"
        assert message == {**online, "usage": {**online["usage"], "service_tier": "batch"}}


def test_results_are_shuffled_deterministically_never_in_input_order() -> None:
    def order(count: int) -> list[str]:
        clock = Clock()
        store = store_at(clock)
        batch_id = store.create(items(count), "2023-06-01")["id"]
        clock.now += 10
        return [line["custom_id"] for line in lines(store.results(batch_id))]

    for count in (2, 3, 50):
        got = order(count)
        assert got != [f"row-{i}" for i in range(count)]
        assert sorted(got) == sorted(f"row-{i}" for i in range(count))
        assert got == order(count)
    assert shuffled_order(1, "x") == [0]
    assert shuffled_order(0, "x") == []


def test_results_and_delete_wait_for_the_end_and_unknown_ids_are_404() -> None:
    clock = Clock()
    store = store_at(clock)
    batch_id = store.create(items(2), "2023-06-01")["id"]

    early = invalid(lambda: store.results(batch_id))
    assert (early.status, early.error_type) == (400, "invalid_request_error")
    assert "in_progress" in early.message
    assert invalid(lambda: store.delete(batch_id)).status == 400
    clock.now += 10
    assert store.delete(batch_id) == {"id": batch_id, "type": "message_batch_deleted"}
    for call in (store.retrieve, store.results, store.cancel, store.delete):
        with pytest.raises(InvalidRequest) as missing:
            call(batch_id)
        assert (missing.value.status, missing.value.error_type) == (404, "not_found_error")


def test_list_pages_newest_first_with_after_and_before_cursors() -> None:
    clock = Clock()
    store = store_at(clock)
    ids = []
    for _ in range(5):
        ids.append(store.create(items(1), "2023-06-01")["id"])
        clock.now += 1
    newest_first = ids[::-1]

    def page(**query: Any) -> tuple[list[str], bool, str | None, str | None]:
        got = store.list_batches(ListQuery(**query))
        return [b["id"] for b in got["data"]], got["has_more"], got["first_id"], got["last_id"]

    assert page() == (newest_first, False, newest_first[0], newest_first[-1])
    assert page(limit=2) == (newest_first[:2], True, newest_first[0], newest_first[1])
    assert page(limit=2, after_id=newest_first[1])[:2] == (newest_first[2:4], True)
    assert page(limit=2, after_id=newest_first[3])[:2] == (newest_first[4:], False)
    assert page(limit=2, before_id=newest_first[4])[:2] == (newest_first[2:4], True)
    assert page(limit=2, before_id=newest_first[2])[:2] == (newest_first[:2], False)
    assert page(after_id=newest_first[4]) == ([], False, None, None)
    assert invalid(lambda: page(after_id="msgbatch_nope")).status == 404
    assert invalid(lambda: page(after_id=ids[0], before_id=ids[1])).status == 400
    assert invalid(lambda: page(limit=0)).status == 400
    assert invalid(lambda: page(limit=1001)).status == 400
    assert page(limit=1000)[0] == newest_first


def test_list_query_parsing() -> None:
    assert parse_list_query({}) == ListQuery(20, None, None)
    assert parse_list_query({"limit": "5", "after_id": "a"}) == ListQuery(5, "a", None)
    assert invalid(lambda: parse_list_query({"limit": "many"})).status == 400


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "valid dictionary"),
        ({}, "requests: Field required"),
        ({"requests": [], "x": 1}, "x: Extra inputs"),
        ({"requests": "nope"}, "valid list"),
        ({"requests": []}, "at least 1 item"),
        ({"requests": [{"custom_id": "a"}]}, "requests.0.params: Field required"),
        ({"requests": [{"params": {}}]}, "requests.0.custom_id: Field required"),
        ({"requests": [{"custom_id": "a", "params": {}, "x": 1}]}, "requests.0.x: Extra"),
        ({"requests": [{"custom_id": 5, "params": {}}]}, "valid string"),
        ({"requests": [{"custom_id": "has space", "params": {}}]}, "should match pattern"),
        ({"requests": [{"custom_id": "", "params": {}}]}, "should match pattern"),
        ({"requests": [{"custom_id": "x" * 65, "params": {}}]}, "should match pattern"),
        ({"requests": [{"custom_id": "a", "params": "text"}]}, "params: Input should be"),
        ({"requests": [{"custom_id": "a", "params": {}}] * 2}, "requests.1.custom_id: Duplicate"),
    ],
)
def test_create_body_checks(body: object, words: str) -> None:
    refused = invalid(lambda: check_create_body(body))
    assert (refused.status, refused.error_type) == (400, "invalid_request_error")
    assert words in refused.message


def test_create_body_size_limits() -> None:
    too_many = {"requests": [{"custom_id": "a", "params": {}}] * 100_001}
    assert "at most 100000 items" in invalid(lambda: check_create_body(too_many)).message
    longest = check_create_body({"requests": [{"custom_id": "A_z-9" * 12 + "abcd", "params": {}}]})
    assert len(longest[0].custom_id) == 64


def test_settings_are_checked() -> None:
    for bad in (
        {"batch_processing_s": -1},
        {"batch_processing_s": float("inf")},
        {"batch_error_rate": 1.5},
        {"batch_expire_rate": -0.1},
        {"batch_error_rate": 0.6, "batch_expire_rate": 0.5},
        {"batch_cancel_s": -1},
    ):
        with pytest.raises(ValueError, match="batch_"):
            SimulatorConfig(**bad)
    config = SimulatorConfig(batch_processing_s=2, batch_error_rate=0.1, seed=4)
    assert config.batch_settings() == BatchSettings(2, 0.1, 0.0, 4)


def test_cli_simulate_has_the_batch_options() -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["simulate", "--help"])
    for flag in (
        "--batch-processing-s",
        "--batch-error-rate",
        "--batch-expire-rate",
        "--batch-cancel-s",
    ):
        assert flag in shown.output
    refused = runner.invoke(
        cli, ["simulate", "--batch-error-rate", "0.7", "--batch-expire-rate", "0.5"]
    )
    assert refused.exit_code == 2
    assert "must not exceed 1" in refused.output


# ------------------------------------------------------------------------------ over HTTP


@asynccontextmanager
async def running(**config: Any) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    """A started simulator (fast batches unless told) and a client pointed at it."""
    settings = SimulatorConfig(**{"batch_processing_s": 0.05, **config})
    async with (
        Simulator(settings) as sim,
        httpx.AsyncClient(base_url=sim.base_url, headers=HEADERS, timeout=30) as client,
    ):
        yield sim, client


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


async def until_ended(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    """Poll like a client would (bounded; not a timing assertion)."""
    for _ in range(1000):
        batch: dict[str, Any] = (await client.get(f"{BATCHES}/{batch_id}")).json()
        if batch["processing_status"] == "ended":
            return batch
        await asyncio.sleep(0.01)
    raise AssertionError(f"batch {batch_id} did not end")


def test_create_poll_and_fetch_results() -> None:
    async def scenario() -> None:
        async with running() as (sim, client):
            created = await client.post(BATCHES, json={"requests": requests_for(5)})
            assert created.status_code == 200
            assert created.headers["request-id"].startswith("req_sim_")
            batch = created.json()
            assert batch["processing_status"] == "in_progress"
            assert batch["request_counts"]["processing"] == 5

            ended = await until_ended(client, batch["id"])
            assert ended["request_counts"]["succeeded"] == 5
            url = f"{sim.base_url}{BATCHES}/{batch['id']}/results"
            assert ended["results_url"] == url
            results = await client.get(url)
            assert results.status_code == 200
            assert results.headers["content-type"].startswith("application/x-jsonl")
            got = by_id(results.content)
            assert sorted(got) == sorted(f"row-{i}" for i in range(5))
            assert {r["type"] for r in got.values()} == {"succeeded"}

            stats = sim.stats.snapshot()
            assert stats.batches_created == 1
            assert stats.batch_requests_submitted == 5
            assert stats.batch_custom_ids == Counter({f"row-{i}": 1 for i in range(5)})
            assert stats.answered_ok == 0  # batch results are not online answers

    run(scenario)


def test_batch_results_match_online_replies_apart_from_the_service_tier() -> None:
    async def scenario() -> None:
        async with running(reply_tokens=(5, 30)) as (_, client):
            bodies = {
                "plain": params("Same question, batch or not."),
                "short": params("Cut me short.", max_tokens=3),
                "stop": params("Stop here.", stop_sequences=["a"]),
                "thinks": params(
                    "Think first.",
                    max_tokens=2048,
                    thinking={"type": "enabled", "budget_tokens": 1024},
                ),
            }
            requests = [{"custom_id": k, "params": v} for k, v in bodies.items()]
            batch = (await client.post(BATCHES, json={"requests": requests})).json()
            ended = await until_ended(client, batch["id"])
            results = by_id((await client.get(ended["results_url"])).content)
            for custom_id, body in bodies.items():
                online = (await client.post("/v1/messages", json=body)).json()
                message = results[custom_id]["message"]
                assert message["usage"].pop("service_tier") == "batch"
                assert online["usage"].pop("service_tier") == "standard"
                assert message == online

    run(scenario)


def test_create_errors_are_400_envelopes() -> None:
    async def scenario() -> None:
        async with running() as (sim, client):
            dup = [{"custom_id": "same", "params": params()}] * 2
            for body, words in [
                ({"requests": []}, "at least 1 item"),
                ({"requests": dup}, "Duplicate custom_id"),
                ({"requests": [{"custom_id": "no/slash", "params": params()}]}, "pattern"),
                ({"requests": [{"custom_id": "a", "params": []}]}, "params"),
            ]:
                response = await client.post(BATCHES, json=body)
                assert response.status_code == 400
                envelope = response.json()
                assert envelope["type"] == "error"
                assert envelope["error"]["type"] == "invalid_request_error"
                assert words in envelope["error"]["message"]
                assert envelope["request_id"] == response.headers["request-id"]
            garbage = await client.post(BATCHES, content=b"{nope")
            assert garbage.status_code == 400
            assert sim.stats.batches_created == 0
            assert sim.stats.by_status == {400: 5}

    run(scenario)


def test_batch_endpoints_check_auth_and_version() -> None:
    async def scenario() -> None:
        async with running(api_key=TEST_KEY) as (_, client):
            body = {"requests": requests_for(1)}
            wrong = await client.post(BATCHES, json=body, headers={"x-api-key": "sk-wrong"})
            unversioned = await client.get(BATCHES, headers={"anthropic-version": ""})
            bearer = await client.get(
                BATCHES, headers={"x-api-key": "", "authorization": f"Bearer {TEST_KEY}"}
            )
            assert wrong.status_code == 401
            assert wrong.json()["error"]["type"] == "authentication_error"
            assert unversioned.status_code == 400
            assert "anthropic-version" in unversioned.json()["error"]["message"]
            assert bearer.status_code == 200

    run(scenario)


def test_invalid_params_come_back_errored() -> None:
    async def scenario() -> None:
        async with running() as (_, client):
            requests = [
                {"custom_id": "good", "params": params()},
                {"custom_id": "streamed", "params": params(stream=True)},
                {"custom_id": "nomodel", "params": {"max_tokens": 5, "messages": []}},
            ]
            created = await client.post(BATCHES, json={"requests": requests})
            assert created.status_code == 200  # params are checked asynchronously
            ended = await until_ended(client, created.json()["id"])
            assert ended["request_counts"]["errored"] == 2
            results = by_id((await client.get(ended["results_url"])).content)
            assert results["good"]["type"] == "succeeded"
            for custom_id in ("streamed", "nomodel"):
                error = results[custom_id]["error"]
                assert error["error"]["type"] == "invalid_request_error"

    run(scenario)


def test_results_and_delete_before_the_end_are_errors_and_unknown_ids_404() -> None:
    async def scenario() -> None:
        async with running(batch_processing_s=600) as (_, client):
            batch = (await client.post(BATCHES, json={"requests": requests_for(2)})).json()
            path = f"{BATCHES}/{batch['id']}"
            early = await client.get(f"{path}/results")
            assert early.status_code == 400
            assert early.json()["error"]["type"] == "invalid_request_error"
            assert "in_progress" in early.json()["error"]["message"]
            undeletable = await client.delete(path)
            assert undeletable.status_code == 400

            canceling = (await client.post(f"{path}/cancel")).json()
            assert canceling["processing_status"] == "canceling"
            assert canceling["cancel_initiated_at"] is not None

            unknown = f"{BATCHES}/msgbatch_unknown"
            for response in (
                await client.get(unknown),
                await client.get(f"{unknown}/results"),
                await client.post(f"{unknown}/cancel"),
                await client.delete(unknown),
            ):
                assert response.status_code == 404
                assert response.json()["error"]["type"] == "not_found_error"

    run(scenario)


def test_an_ended_batch_can_be_deleted() -> None:
    async def scenario() -> None:
        async with running(batch_processing_s=0) as (_, client):
            batch = (await client.post(BATCHES, json={"requests": requests_for(3)})).json()
            assert batch["processing_status"] == "ended"  # no processing time at all
            path = f"{BATCHES}/{batch['id']}"
            cancel = await client.post(f"{path}/cancel")
            assert cancel.status_code == 400
            deleted = await client.delete(path)
            assert deleted.status_code == 200
            assert deleted.json() == {"id": batch["id"], "type": "message_batch_deleted"}
            assert (await client.get(path)).status_code == 404
            listed = (await client.get(BATCHES)).json()
            assert listed == {"data": [], "has_more": False, "first_id": None, "last_id": None}

    run(scenario)


def test_list_over_http() -> None:
    async def scenario() -> None:
        async with running() as (_, client):
            ids = [
                (await client.post(BATCHES, json={"requests": requests_for(1)})).json()["id"]
                for _ in range(3)
            ]
            first = (await client.get(BATCHES, params={"limit": 2})).json()
            assert [b["id"] for b in first["data"]] == ids[::-1][:2]
            assert first["has_more"] is True
            rest = (await client.get(BATCHES, params={"after_id": first["last_id"]})).json()
            assert [b["id"] for b in rest["data"]] == ids[:1]
            assert rest["has_more"] is False
            for query in ({"limit": "0"}, {"limit": "1001"}, {"limit": "x"}):
                assert (await client.get(BATCHES, params=query)).status_code == 400

    run(scenario)


def test_the_hook_runs_after_storing_and_before_the_response() -> None:
    async def scenario() -> None:
        async with running() as (sim, client):
            events: list[str] = []

            def hook(batch: dict[str, Any]) -> None:
                stored = sim.batches.retrieve(batch["id"])
                events.append(f"hook {stored['id'] == batch['id']}")
                assert sim.stats.batches_created == 1

            sim.on_batch_created = hook
            response = await client.post(BATCHES, json={"requests": requests_for(2)})
            events.append("response")
            assert events == ["hook True", "response"]
            assert response.status_code == 200

    run(scenario)


def test_a_failing_hook_neither_loses_the_batch_nor_the_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async with running() as (sim, client):

            def hook(batch: dict[str, Any]) -> None:
                raise RuntimeError("boom")

            sim.on_batch_created = hook
            response = await client.post(BATCHES, json={"requests": requests_for(1)})
            assert response.status_code == 200
            assert sim.batches.retrieve(response.json()["id"])["id"] == response.json()["id"]

    with caplog.at_level(logging.ERROR, logger="batchrun.simulator.server"):
        run(scenario)
    assert "on_batch_created hook failed" in caplog.text


def test_a_client_gone_during_the_hook_leaves_the_batch_stored() -> None:
    """The crash test's moment: the client dies after the batch exists, before the answer."""
    body = json.dumps({"requests": requests_for(3)}).encode()
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.05)) as sim:
        host, port = sim.base_url.removeprefix("http://").split(":")
        conn = socket.create_connection((host, int(port)))
        called = threading.Event()

        def hook(batch: dict[str, Any]) -> None:
            conn.shutdown(socket.SHUT_RDWR)  # as a SIGKILLed client's socket would
            conn.close()
            called.set()

        sim.simulator.on_batch_created = hook
        head = (
            f"POST {BATCHES} HTTP/1.1\r\nHost: {host}\r\nx-api-key: k\r\n"
            f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        conn.sendall(head.encode() + body)
        assert called.wait(10)
        listed = httpx.get(f"{sim.base_url}{BATCHES}", headers=HEADERS).json()
        assert len(listed["data"]) == 1
        assert sim.stats.snapshot().batch_custom_ids == Counter(
            {"row-0": 1, "row-1": 1, "row-2": 1}
        )


def test_batch_bodies_may_pass_32_mb_where_messages_may_not() -> None:
    async def scenario() -> None:
        async with running(batch_processing_s=600) as (_, client):
            big = "x" * (17 * 1024 * 1024)
            requests = [{"custom_id": f"r{i}", "params": params(big)} for i in range(2)]
            created = await client.post(BATCHES, json={"requests": requests})
            assert created.status_code == 200
            online = await client.post("/v1/messages", json=params(big * 2))
            assert online.status_code == 413

    run(scenario)


def test_batch_bodies_over_the_limit_get_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("batchrun.simulator.server.MAX_BATCH_BYTES", 1000)

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: the read itself must stop
        yield json.dumps({"requests": requests_for(40)}).encode()

    async def scenario() -> None:
        async with running() as (sim, client):
            declared = await client.post(BATCHES, json={"requests": requests_for(40)})
            streamed = await client.post(BATCHES, content=chunks())
            for response in (declared, streamed):
                assert response.status_code == 413
                assert response.json()["error"]["type"] == "request_too_large"
            assert sim.stats.batches_created == 0

    run(scenario)


def test_a_batch_request_for_a_model_the_api_does_not_serve_is_errored_not_found() -> None:
    clock = Clock()
    store = store_at(clock)
    body = {
        "requests": [
            {"custom_id": "fine", "params": params()},
            {"custom_id": "typo", "params": params(model="claude-haiku-4-6")},
            {"custom_id": "retired", "params": params(model="claude-opus-4-1")},
        ]
    }
    batch_id = store.create(check_create_body(body), "2023-06-01")["id"]
    clock.now += 10
    results = by_id(store.results(batch_id))
    assert results["fine"]["type"] == "succeeded"
    for custom_id, model in (("typo", "claude-haiku-4-6"), ("retired", "claude-opus-4-1")):
        assert results[custom_id]["type"] == "errored"
        assert results[custom_id]["error"]["error"] == {
            "type": "not_found_error",
            "message": f"model: {model}",
        }
