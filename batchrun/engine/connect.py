"""The one HTTP client of a run: to the API, or to an in-process simulator for ``--simulate``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from batchrun.client.messages import MessagesClient
from batchrun.config.layers import ClientSettings
from batchrun.cost.models import sendable_models
from batchrun.cost.prices import PriceTable

# Latency of the built-in simulator behind `--simulate`: enough to look like a real API.
SIMULATE_LATENCY_S = 0.05
SIMULATE_JITTER_S = 0.03


@contextlib.asynccontextmanager
async def open_client(
    settings: ClientSettings,
    *,
    connections: int,
    prices: PriceTable,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[MessagesClient]:
    """The run's one client, closed (and the simulator stopped) when the block ends: at most
    ``connections`` at once; ``prices`` says which models a simulator stands in for."""
    async with contextlib.AsyncExitStack() as stack:
        base_url = settings.base_url
        if settings.simulate and transport is None:
            from batchrun.simulator import Simulator, SimulatorConfig

            sim = Simulator(
                SimulatorConfig(
                    latency_mean=SIMULATE_LATENCY_S,
                    latency_jitter=SIMULATE_JITTER_S,
                    # Serve what the run may send: a model a --prices file adds (the user
                    # says it exists) and a gateway's alias (not a Claude id: sent as asked).
                    # A Claude id batchrun does not know is refused before it gets here.
                    gateway_models=sendable_models(prices),
                    gateway=True,
                )
            )
            base_url = await sim.start()
            stack.push_async_callback(sim.stop)
        client = MessagesClient(
            base_url,
            settings.credentials,
            api_version=settings.api_version,
            betas=settings.betas,
            timeout=settings.timeout,
            max_connections=connections,
            backend=settings.http_backend,
            transport=transport,
        )
        stack.push_async_callback(client.aclose)
        yield client
