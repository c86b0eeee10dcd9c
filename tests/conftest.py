"""Fixtures shared by the end-to-end and CLI tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from s3_server import MotoServer

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
