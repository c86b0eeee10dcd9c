"""The official SDK accepts the simulator: proof that it speaks the real wire format."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from batchrun.simulator import Simulator, SimulatorConfig, SimulatorThread

anthropic = pytest.importorskip("anthropic")

KEY = "sk-ant-sim-test"
MESSAGES = [{"role": "user", "content": "List three colours."}]


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(api_key=KEY)) as running:
        yield running


def test_create_and_stream_give_the_same_message(sim: SimulatorThread) -> None:
    with anthropic.Anthropic(api_key=KEY, base_url=sim.base_url, max_retries=0) as client:
        created = client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES)
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES
        ) as stream:
            streamed = stream.get_final_message()

    assert created.content[0].type == "text"
    assert created.content[0].text.startswith("re:")
    assert created.model == "claude-haiku-4-5-20251001"
    assert created._request_id.startswith("req_sim_")
    for message in (created, streamed):
        assert message.stop_reason in ("end_turn", "max_tokens")
    assert streamed.id == created.id
    assert [(b.type, b.text) for b in streamed.content] == [
        (b.type, b.text) for b in created.content
    ]
    assert streamed.stop_reason == created.stop_reason
    assert streamed.usage.input_tokens == created.usage.input_tokens
    assert streamed.usage.output_tokens == created.usage.output_tokens
    assert sim.stats.answered_ok == 2


def test_sdk_sees_tool_use_and_thinking(sim: SimulatorThread) -> None:
    tool = {
        "name": "pick",
        "input_schema": {
            "type": "object",
            "properties": {"colour": {"type": "string", "enum": ["red", "blue"]}},
            "required": ["colour"],
        },
    }
    with anthropic.Anthropic(api_key=KEY, base_url=sim.base_url, max_retries=0) as client:
        with client.messages.stream(
            model="claude-sonnet-4-6",
            max_tokens=64,
            messages=MESSAGES,
            tools=[tool],
            tool_choice={"type": "tool", "name": "pick"},
        ) as stream:
            used = stream.get_final_message()
        thought = client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=2048,
            messages=MESSAGES,
            thinking={"type": "enabled", "budget_tokens": 1024},
        )

    assert used.stop_reason == "tool_use"
    assert used.content[0].type == "tool_use"
    assert used.content[0].input == {"colour": "red"}
    assert [block.type for block in thought.content] == ["thinking", "text"]


def test_sdk_errors_map_to_its_exception_classes(sim: SimulatorThread) -> None:
    sim.script(["429", "sse_error"])
    with anthropic.Anthropic(api_key=KEY, base_url=sim.base_url, max_retries=0) as client:
        with pytest.raises(anthropic.RateLimitError) as limited:
            client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=MESSAGES)
        with (
            pytest.raises(anthropic.APIStatusError) as overloaded,
            client.messages.stream(
                model="claude-haiku-4-5", max_tokens=8, messages=MESSAGES
            ) as stream,
        ):
            stream.get_final_message()
        with pytest.raises(anthropic.AuthenticationError):
            client.with_options(api_key="sk-wrong").messages.create(
                model="claude-haiku-4-5", max_tokens=8, messages=MESSAGES
            )

    assert limited.value.response.headers["retry-after"] == "1"
    assert overloaded.value.type == "overloaded_error"


def test_async_sdk_against_an_in_loop_simulator() -> None:
    async def scenario() -> None:
        async with Simulator(SimulatorConfig(api_key=KEY)) as server:
            async with anthropic.AsyncAnthropic(
                api_key=KEY, base_url=server.base_url, max_retries=0
            ) as client:
                replies = await asyncio.gather(
                    *(
                        client.messages.create(
                            model="claude-haiku-4-5",
                            max_tokens=32,
                            messages=[{"role": "user", "content": f"row {i}"}],
                        )
                        for i in range(8)
                    )
                )
            assert len({reply.content[0].text for reply in replies}) == 8
            assert server.stats.answered_ok == 8

    asyncio.run(scenario())


def test_sdk_drives_the_message_batches_api() -> None:
    """Create, retrieve, list, cancel, results and delete, all through the official client."""
    requests = [
        {
            "custom_id": f"row-{i}",
            "params": {"model": "claude-haiku-4-5", "max_tokens": 32, "messages": MESSAGES},
        }
        for i in range(3)
    ]
    with (
        SimulatorThread(SimulatorConfig(api_key=KEY, batch_processing_s=0.5)) as running,
        anthropic.Anthropic(api_key=KEY, base_url=running.base_url, max_retries=0) as client,
    ):
        batches = client.messages.batches
        created = batches.create(requests=requests)
        other = batches.create(requests=[{**requests[0], "custom_id": "later"}])
        canceling = batches.cancel(other.id)
        assert created.processing_status == "in_progress"
        assert created.request_counts.processing == 3
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None
        with pytest.raises(anthropic.BadRequestError):
            batches.delete(created.id)  # not ended yet
        ended = wait_for_end(batches, created.id)
        assert ended.request_counts.succeeded == 3
        assert ended.ended_at is not None and ended.results_url is not None

        results = {line.custom_id: line.result for line in batches.results(created.id)}
        assert sorted(results) == ["row-0", "row-1", "row-2"]
        for result in results.values():
            assert result.type == "succeeded"
            assert result.message.usage.service_tier == "batch"
            assert result.message.content[0].type == "text"
        assert wait_for_end(batches, other.id).request_counts.canceled == 1
        assert [line.result.type for line in batches.results(other.id)] == ["canceled"]
        assert [b.id for b in batches.list(limit=10)] == [other.id, created.id]
        assert [b.id for b in batches.list(limit=1)] == [other.id, created.id]  # auto-paging

        deleted = batches.delete(created.id)
        assert (deleted.id, deleted.type) == (created.id, "message_batch_deleted")
        with pytest.raises(anthropic.NotFoundError):
            batches.retrieve(created.id)


def wait_for_end(batches: Any, batch_id: str) -> Any:
    """Poll as the SDK docs do (bounded; not a timing assertion)."""
    for _ in range(1000):
        batch = batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        time.sleep(0.01)
    raise AssertionError(f"batch {batch_id} did not end")
