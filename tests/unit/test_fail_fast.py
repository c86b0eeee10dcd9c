"""Failing fast before the first answer: an API that cannot be reached, or a server that is
not the API, stops the run after a few quick attempts, naming the cause and the base URL.

Once the API has answered, the full retry policy applies again. Checked by the requests a
run made and the waits it asked for, never by wall time (the machines are shared). The
command line as a real process: tests/system/test_fail_fast_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import canned_message, job_config, prompts, write_jsonl

from batchrun import FatalRunError, run
from batchrun.engine.fail_fast import QUICK_RETRIES, QUICK_WAIT_S, FailFast
from batchrun.runs.runtime import Runtime
from batchrun.store.sink import journal_path

URL = "http://127.0.0.1:9"


class Server:
    """A MockTransport handler: ``answer(n, request)`` says what the n-th request (1-based) gets."""

    def __init__(self, answer: Any) -> None:
        self.requests = 0
        self._answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        result = self._answer(self.requests, request)
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, httpx.Response)
        return result


def refused(n: int, request: httpx.Request) -> Exception:
    return httpx.ConnectError("[Errno 111] Connection refused", request=request)


def html_page(n: int, request: httpx.Request) -> httpx.Response:
    page = "<!doctype html><html><body>Sign in to the corporate proxy</body></html>"
    return httpx.Response(200, text=page, headers={"content-type": "text/html"})


def answers(n: int, request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=canned_message(json.loads(request.content)["model"]))


class Waits:
    """The retry sleep: records each wait asked for and waits for none."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_refused_connection_before_any_answer_stops_after_a_few_quick_attempts(
    tmp_path: Path, concurrency: int
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(200))
    out = tmp_path / "out.parquet"
    config = job_config(inp, out, URL, concurrency=concurrency)  # max_retries: the default, 8
    server, waits = Server(refused), Waits()
    with pytest.raises(FatalRunError) as e:
        run(
            config,
            runtime=Runtime(transport=httpx.MockTransport(server), sleep=waits),
        )
    message = str(e.value)
    assert "stopping early" in message and f"no answer from {URL} (" in message
    assert "connection_error" in message and "Connection refused" in message
    # Five rows of at most three attempts each (and the rows in flight then), not nine each.
    rows = FailFast.LIMIT + concurrency - 1
    assert server.requests <= rows * (1 + QUICK_RETRIES) < rows * (1 + config.engine.max_retries)
    assert waits.asked and max(waits.asked) <= QUICK_WAIT_S
    for line in journal_path(out).read_text().splitlines():
        assert json.loads(line)["attempts"] <= 1 + QUICK_RETRIES


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_html_page_answered_with_200_stops_the_run_early(tmp_path: Path, stream: bool) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(200))
    secret_url = "http://proxy-user:px-secret-1@127.0.0.1:9/?token=px-2"
    config = job_config(inp, tmp_path / "out.parquet", secret_url, concurrency=1, stream=stream)
    server = Server(html_page)
    with pytest.raises(FatalRunError) as e:
        run(
            config,
            runtime=Runtime(transport=httpx.MockTransport(server), sleep=Waits()),
        )
    message = str(e.value)
    assert "stopping early" in message and "not the Messages API" in message
    assert "HTTP 200 malformed_response" in message and f"{URL}/" in message
    assert "px-secret-1" not in message and "px-2" not in message
    assert server.requests <= FailFast.LIMIT * (1 + QUICK_RETRIES)


def test_a_refusal_before_the_first_answer_is_still_retried(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    config = job_config(inp, tmp_path / "out.parquet", URL, concurrency=1)
    server = Server(lambda n, request: refused(n, request) if n <= 2 else answers(n, request))
    summary = run(
        config,
        runtime=Runtime(transport=httpx.MockTransport(server), sleep=Waits()),
    )
    assert (summary.ok, summary.error, summary.retries) == (3, 0, 2)


def test_a_wait_the_api_asks_for_is_waited_in_full_after_quick_retries(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    config = job_config(inp, tmp_path / "out.parquet", URL, concurrency=1)
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}

    def answer(n: int, request: httpx.Request) -> Any:
        if n == 1:
            return refused(n, request)
        if n == 2:
            return httpx.Response(529, json=overloaded, headers={"retry-after": "7"})
        return answers(n, request)

    waits = Waits()
    summary = run(
        config,
        runtime=Runtime(transport=httpx.MockTransport(Server(answer)), sleep=waits),
    )
    assert summary.ok == 1
    assert len(waits.asked) == 2 and waits.asked[0] <= QUICK_WAIT_S and waits.asked[1] == 7


def test_once_the_api_has_answered_failures_get_the_full_retry_policy(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(4))
    out = tmp_path / "out.parquet"
    config = job_config(inp, out, URL, concurrency=1, max_retries=4)

    def answer(n: int, request: httpx.Request) -> Any:
        if n == 1:
            return answers(n, request)
        return refused(n, request) if n % 2 else html_page(n, request)

    server = Server(answer)
    summary = run(
        config,
        runtime=Runtime(transport=httpx.MockTransport(server), sleep=Waits()),
    )
    assert (summary.ok, summary.error, summary.exit_code) == (1, 3, 3)
    assert server.requests == 1 + 3 * (1 + 4)  # every retry the policy allows


def test_only_non_api_answers_before_the_first_answer_count_toward_the_early_stop() -> None:
    def row(status: str, http_status: int | None, error_type: str | None) -> dict[str, Any]:
        return {
            "status": status,
            "http_status": http_status,
            "error_type": error_type,
            "error_message": "the response body is not valid JSON",
            "attempts": 3,
        }

    before = FailFast(URL)
    with pytest.raises(FatalRunError, match="not the Messages API"):
        for _ in range(FailFast.LIMIT):
            before.observe(row("error", 200, "malformed_response"))

    after = FailFast(URL)
    after.answered()  # the API answered a request still in flight: a bad reply is one row's
    for _ in range(3 * FailFast.LIMIT):
        after.observe(row("error", 200, "malformed_response"))
