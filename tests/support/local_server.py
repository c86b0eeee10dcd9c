"""A server the tests run as a subprocess on 127.0.0.1: started on entering a ``with``,
waited for until it answers, stopped on leaving (``s3_server``, ``redis_server``)."""

from __future__ import annotations

import os
import socket
import subprocess
from types import TracebackType

from support.waiting import wait_until

START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """``argv`` as a subprocess listening on 127.0.0.1:``port``; subclasses say when it
    ``answers``."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self._argv = argv
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None

    def answers(self) -> bool:
        raise NotImplementedError

    def __enter__(self) -> LocalServer:
        self._process = subprocess.Popen(
            self._argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(self._env or {})},
        )
        try:
            what = f"{self._argv[0]} to answer on port {self.port}"
            wait_until(self.answers, START_TIMEOUT_S, what, alive=[self._process], every=0.05)
        except AssertionError:
            self.kill()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop it gently (SIGTERM), at once if it does not go within 10 s."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def kill(self) -> None:
        """Stop it at once (SIGKILL): what a client sees when the server dies."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait()
        self._process = None
