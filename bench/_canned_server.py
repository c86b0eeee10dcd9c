"""A cheap stand-in for ``POST /v1/messages``: the server of the client-overhead benchmarks.

``batchrun simulate`` checks every request like the API, counts tokens, applies limits and
faults, and builds each reply from the request: about 0.2 ms of CPU a request here, as much
as a bare aiohttp client spends on it. Next to a client that spends that little, the
benchmark would measure the server. This one parses only what HTTP/1.1 keep-alive needs (the
request line and ``content-length``) and answers every Messages request with the same
Message (the simulator's shape: text content, ``end_turn``, usage), so what a benchmark
measures is the client.

With ``--rate-limit-headers`` each answer also carries the ``anthropic-ratelimit-*`` headers
the API sends with every response (docs/api-facts.md §7.2), with limits no run reaches:
a client that reads them does the work it does against the API.

    python bench/_canned_server.py [--latency S] [--rate-limit-headers]

prints its base URL (``http://127.0.0.1:PORT``) as the first line of stdout and serves until
SIGINT or SIGTERM. Not a benchmark itself: ``_harness.CannedServerProcess`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from datetime import datetime, timedelta, timezone

MODEL_SERVED = "claude-haiku-4-5-20251001"
LIMIT = 1_000_000_000  # per minute, each of requests, input and output tokens: never reached

MESSAGE = json.dumps(
    {
        "id": "msg_canned_0000000000000000",
        "type": "message",
        "role": "assistant",
        "model": MODEL_SERVED,
        "content": [{"type": "text", "text": "positive: cotton saffron comet timber cabin"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 30,
            "output_tokens": 8,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "service_tier": "standard",
        },
    },
    separators=(",", ":"),
).encode()

NOT_FOUND = json.dumps(
    {"type": "error", "error": {"type": "not_found_error", "message": "not found"}}
).encode()


def rate_limit_headers() -> bytes:
    """The API's rate-limit headers (docs/api-facts.md §7.2), for limits no run reaches."""
    reset = (datetime.now(timezone.utc) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = []
    for kind in ("requests", "input-tokens", "output-tokens"):
        prefix = f"anthropic-ratelimit-{kind}"
        lines += [f"{prefix}-limit: {LIMIT}", f"{prefix}-remaining: {LIMIT - 1}"]
        lines.append(f"{prefix}-reset: {reset}")
    return "".join(line + "\r\n" for line in lines).encode()


class CannedHttp(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, one request at a time per connection, every answer canned."""

    def __init__(self, server: CannedServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            found = head.startswith(b"post /v1/messages ")
            self.server.answer(self, MESSAGE if found else NOT_FOUND, 200 if found else 404)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class CannedServer:
    """Answers after ``latency`` seconds (0: at once), each with a request id of its own."""

    def __init__(self, latency: float, with_rate_limit_headers: bool) -> None:
        self.latency = latency
        self.count = 0
        self.extra = rate_limit_headers() if with_rate_limit_headers else b""

    def answer(self, conn: CannedHttp, body: bytes, status: int) -> None:
        self.count += 1
        reason = b"OK" if status == 200 else b"Not Found"
        response = b"".join(
            [
                b"HTTP/1.1 %d %s\r\n" % (status, reason),
                b"request-id: req_canned_%012d\r\n" % self.count,
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                self.extra,
                b"\r\n",
                body,
            ]
        )
        if self.latency > 0:
            asyncio.get_running_loop().call_later(self.latency, _write, conn, response)
        else:
            _write(conn, response)


def _write(conn: CannedHttp, response: bytes) -> None:
    if conn.transport is not None:
        conn.transport.write(response)


async def serve(latency: float, with_rate_limit_headers: bool) -> None:
    canned = CannedServer(latency, with_rate_limit_headers)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: CannedHttp(canned), "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--rate-limit-headers",
        action="store_true",
        help="send the API's anthropic-ratelimit-* headers with every answer",
    )
    args = parser.parse_args()
    asyncio.run(serve(args.latency, args.rate_limit_headers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
