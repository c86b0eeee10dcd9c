"""Faults from the API, end to end against the simulator: every row ends ok or explained."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from support import job_config, no_wait, prompts, reply_tag, write_jsonl

from batchrun import FatalRunError, run
from batchrun.config.load import RunConfig
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread


def config_for(inp: Path, out: Path, url: str, **flags: Any) -> RunConfig:
    return job_config(inp, out, url, **{"max_tokens": 30, "concurrency": 16, **flags})


def check_all_ok_and_tied(out: Path, n: int) -> list[dict[str, Any]]:
    rows = pq.read_table(out).to_pylist()
    assert [r["id"] for r in rows] == [r["id"] for r in prompts(n)]
    for src, res in zip(prompts(n), rows, strict=True):
        assert res["status"] == "ok", res
        assert res["text"].startswith(reply_tag(src["prompt"]))
    return rows  # type: ignore[no-any-return]


@pytest.mark.slow
def test_the_issue_fault_mix_ends_with_every_row_ok(tmp_path: Path) -> None:
    n = 2000
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    rates = {"529": 0.05, "500": 0.03, "429": 0.03, "reset": 0.02, "malformed": 0.01}
    with SimulatorThread(SimulatorConfig(error_rates=rates, retry_after=0, seed=11)) as sim:
        summary = run(
            config_for(inp, tmp_path / "out.parquet", sim.base_url), runtime=Runtime(sleep=no_wait)
        )
        faults = dict(sim.stats.faults)
    rows = check_all_ok_and_tied(tmp_path / "out.parquet", n)
    assert set(faults) == set(rates)
    assert summary.retries == sum(faults.values()) == sum(r["attempts"] - 1 for r in rows)


@pytest.mark.parametrize("fault", ["cut", "sse_error", "reset", "503", "malformed"])
def test_streamed_requests_are_retried_on_each_fault(tmp_path: Path, fault: str) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    with SimulatorThread(SimulatorConfig()) as sim:
        sim.script([fault] * 5)
        summary = run(
            config_for(inp, tmp_path / "out.parquet", sim.base_url, stream=True),
            runtime=Runtime(sleep=no_wait),
        )
        assert sim.stats.faults[fault] == 5
    check_all_ok_and_tied(tmp_path / "out.parquet", 20)
    assert summary.retries == 5


def test_a_request_that_hangs_past_the_timeout_is_retried(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(6))
    with SimulatorThread(SimulatorConfig()) as sim:
        sim.script(["hang", "hang"])
        summary = run(
            config_for(inp, tmp_path / "out.parquet", sim.base_url, timeout=0.5),
            runtime=Runtime(sleep=no_wait),
        )
    rows = check_all_ok_and_tied(tmp_path / "out.parquet", 6)
    assert summary.retries == 2
    assert sorted(r["attempts"] for r in rows)[-2:] == [2, 2]


def test_retries_give_up_after_max_retries_with_the_last_error(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    with SimulatorThread(SimulatorConfig()) as sim:
        sim.script(["529"] * 4)
        summary = run(
            config_for(inp, tmp_path / "out.parquet", sim.base_url, max_retries=3, concurrency=1),
            runtime=Runtime(sleep=no_wait),
        )
    first = pq.read_table(tmp_path / "out.parquet").to_pylist()[0]
    assert (first["status"], first["error_type"], first["http_status"]) == (
        "error",
        "overloaded_error",
        529,
    )
    assert first["attempts"] == 4 and first["request_id"]
    assert summary.exit_code == 3 and summary.ok == 2


def test_a_model_that_does_not_exist_stops_the_run_early(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(500))
    with SimulatorThread(SimulatorConfig()) as sim:
        with pytest.raises(FatalRunError, match=r"stopping early.*404 not_found_error.*gpt-5"):
            run(
                config_for(
                    inp, tmp_path / "out.parquet", sim.base_url, model="gpt-5", concurrency=4
                )
            )
        assert sim.stats.requests < 20


def test_an_api_that_cannot_be_reached_stops_the_run_early(tmp_path: Path) -> None:
    # A port nothing listens on: every connection is refused, as with a wrong --base-url.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(500))
    out = tmp_path / "out.parquet"
    secret_url = url.replace("http://", "http://gateway-user:gw-secret-1@") + "/?token=gw-2"
    config = config_for(inp, out, secret_url, concurrency=4, max_retries=2)
    with pytest.raises(
        FatalRunError, match=r"first [5-8] requests all got no answer from http"
    ) as e:
        run(config, runtime=Runtime(sleep=no_wait))
    assert "connection_error after 3 attempt(s) each: could not connect" in str(e.value)
    assert "retry_errors=True" in str(e.value)
    assert f"no answer from {url}/ (" in str(e.value)  # shown without its user, password, query
    assert "gw-secret-1" not in str(e.value) and "gw-2" not in str(e.value)
    journaled = Path(f"{out}.journal").read_text().splitlines()
    assert 5 <= len(journaled) < 5 + 4  # the five, and at most the others then in flight


def test_an_api_that_answers_once_is_not_stopped_by_later_connection_errors(
    tmp_path: Path,
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(8))
    with SimulatorThread(SimulatorConfig()) as sim:
        sim.script([None] + ["reset"] * 7)
        summary = run(
            config_for(inp, tmp_path / "out.parquet", sim.base_url, concurrency=1, max_retries=0)
        )
    assert (summary.ok, summary.error, summary.exit_code) == (1, 7, 3)
    assert dict(summary.error_types) == {"connection_error": 7}


def test_per_row_404s_after_a_success_do_not_stop_the_run(tmp_path: Path) -> None:
    rows = [*prompts(3)] + [{"id": f"b{i}", "prompt": "x", "model": "gpt-5"} for i in range(8)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    with SimulatorThread(SimulatorConfig()) as sim:
        summary = run(config_for(inp, tmp_path / "out.parquet", sim.base_url, concurrency=1))
    assert (summary.ok, summary.error, summary.exit_code) == (3, 8, 3)


def envelope(status: int, error_type: str, message: str, **extra: Any) -> httpx.Response:
    body = {"type": "error", "error": {"type": error_type, "message": message, **extra}}
    return httpx.Response(status, json=body, headers={"request-id": "req_x"})


def ok_message(prompt: str) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": "fine"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    )


def test_a_spend_limit_429_stops_the_run_without_retrying(tmp_path: Path) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return envelope(
            429,
            "rate_limit_error",
            "You have reached your specified API usage limits.",
            details={"error_code": "enforced_spend_limit_reached"},
        )

    inp = write_jsonl(tmp_path / "in.jsonl", prompts(50))
    with pytest.raises(FatalRunError, match="usage limits"):
        run(
            config_for(inp, tmp_path / "out.parquet", "https://api.anthropic.com", concurrency=2),
            runtime=Runtime(transport=httpx.MockTransport(handler), sleep=no_wait),
        )
    assert calls <= 2


def test_a_413_for_one_row_is_that_rows_error_and_the_job_goes_on(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][0]["content"]
        if "number 2:" in prompt:
            return envelope(413, "request_too_large", "Request exceeds the maximum size")
        return ok_message(prompt)

    inp = write_jsonl(tmp_path / "in.jsonl", prompts(5))
    summary = run(
        config_for(inp, tmp_path / "out.parquet", "https://api.anthropic.com"),
        runtime=Runtime(transport=httpx.MockTransport(handler), sleep=no_wait),
    )
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok", "error", "ok", "ok"]
    assert rows[2]["error_type"] == "request_too_large" and rows[2]["http_status"] == 413
    assert rows[2]["attempts"] == 1 and "maximum size" in rows[2]["error_message"]
    assert summary.exit_code == 3
