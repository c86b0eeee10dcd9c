"""Fixtures shared by the end-to-end and CLI tests."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import TEST_KEY
from support.s3_server import MotoServer, aws_environment

from batchrun.remote.objects import Storage, StorageSettings
from batchrun.simulator import SimulatorConfig, SimulatorThread


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
