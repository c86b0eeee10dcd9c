"""Helpers shared by the end-to-end and CLI tests: input files and answer tags."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from batchrun import load_config
from batchrun.config.load import RunConfig
from batchrun.store.sink import journal_path

TEST_KEY = "sk-ant-test-0123456789abcdef"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def prompts(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"q{i:04d}", "prompt": f"Question number {i}: what is {i} + {i}?"} for i in range(n)
    ]


def reply_tag(prompt: str) -> str:
    """The tag the simulator starts every answer with: ties an answer to its own prompt."""
    return "re:" + hashlib.sha256(prompt.encode()).hexdigest()[:8]


class RecordingTransport(httpx.AsyncBaseTransport):
    """A real loopback transport that remembers every JSON body it sent (whole-run tests)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(await request.aread()))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def no_wait(seconds: float) -> None:
    """Retry waits cost nothing in tests; the policy itself is tested in test_retry."""


def job_config(inp: Path, out: Path, url: str, **flags: Any) -> RunConfig:
    """A run of ``inp`` against the simulator at ``url``, quiet, with a test key."""
    settings = {
        "output": str(out),
        "model": "claude-haiku-4-5",
        "max_tokens": 40,
        "base_url": url,
        "quiet": True,
        "concurrency": 8,
        **flags,
    }
    return load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY})


def start_run(
    inp: Path, out: Path, url: str, *extra: str, concurrency: int = 16
) -> subprocess.Popen[str]:
    """``python -m batchrun run`` of ``inp`` into ``out`` against ``url``, as a real process."""
    env = {**os.environ, "ANTHROPIC_API_KEY": TEST_KEY}
    cmd = [sys.executable, "-m", "batchrun", "run", str(inp), "-o", str(out)]
    cmd += ["--base-url", url, "--model", "claude-haiku-4-5", "--max-tokens", "20"]
    cmd += ["-c", str(concurrency), "-q", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def journal_lines(out: Path) -> int:
    """Rows journaled so far (lines of ``out``'s journal)."""
    path = journal_path(out)
    return path.read_bytes().count(b"\n") if path.exists() else 0


def canned_message(
    model: str, text: str = "fine", *, input_tokens: int = 10, output_tokens: int = 3
) -> dict[str, Any]:
    """A Message the API could answer with, for stand-in transports."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
