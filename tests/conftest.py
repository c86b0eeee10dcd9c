"""Fixtures shared by the end-to-end and CLI tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchrun.simulator import SimulatorConfig, SimulatorThread


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    """A simulator with a little latency, so requests overlap as they do for real."""
    with SimulatorThread(SimulatorConfig(latency_mean=0.002, latency_jitter=0.002)) as s:
        yield s
