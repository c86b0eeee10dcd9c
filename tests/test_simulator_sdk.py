"""The official SDK accepts the simulator: proof that it speaks the real wire format."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

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
