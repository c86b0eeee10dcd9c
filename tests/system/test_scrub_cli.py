"""The command line as a real process prints no credential a server quotes back (the scrubber:
tests/unit/test_scrub.py)."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import prompts, python_process, write_jsonl
from support.canaries import (
    ENV_OF,
    VALUE_OF,
    assert_hidden,
    everything_written,
    quoting_envelope,
)

from batchrun.core.scrub import mask_for


class _QuotingHandler(BaseHTTPRequestHandler):
    """A loopback stand-in for the CLI: every request refused, the credential quoted."""

    server: _QuotingServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        kind = "x-api-key" if self.headers.get("x-api-key") else "bearer"
        data = json.dumps(quoting_envelope(kind, self.server.status)).encode()
        self.send_response(self.server.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet


class _QuotingServer(ThreadingHTTPServer):
    daemon_threads = True
    status = 400


@contextmanager
def quoting_server(status: int) -> Iterator[str]:
    server = _QuotingServer(("127.0.0.1", 0), _QuotingHandler)
    server.status = status
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _cli(args: list[str], env_name: str, value: str) -> subprocess.CompletedProcess[str]:
    return python_process("-m", "batchrun", *args, env={env_name: value}, unset=ENV_OF.values())


@pytest.mark.parametrize(("status", "kind"), [(401, "x-api-key"), (400, "bearer")])
def test_the_cli_prints_no_credential_a_server_quotes(
    tmp_path: Path, status: int, kind: str
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(6))
    out_dir = tmp_path / "out"
    with quoting_server(status) as url:
        proc = _cli(
            [
                "run",
                str(inp),
                "-o",
                str(out_dir / "o.jsonl"),
                "--base-url",
                url,
                "--model",
                "claude-haiku-4-5",
                "--max-tokens",
                "9",
                "--max-retries",
                "0",
                "-c",
                "1",
            ],
            ENV_OF[kind],
            VALUE_OF[kind],
        )
    assert proc.returncode in (1, 3), proc.stderr
    assert f"HTTP {status}" in proc.stderr and mask_for(VALUE_OF[kind]) in proc.stderr
    assert_hidden(proc.stdout + proc.stderr, VALUE_OF[kind])
    assert_hidden(everything_written(out_dir).decode("utf-8", "replace"), VALUE_OF[kind])
