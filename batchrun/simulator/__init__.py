"""A local stand-in for the Claude Messages API, for ``batchrun simulate``, tests and benchmarks.

Requests are checked as the API checks them (``checks``; the models it serves, from the price
table read as data: ``models``, and what each model takes: ``rules``) and their tokens counted
one way
for usage, ``count_tokens`` and limits (``tokens``); replies are deterministic functions of the
request (``replies``), sent as JSON or SSE events (``events``); faults are injected by rate
or by script (``faults``); RPM / ITPM / OTPM limits are enforced like the API's, with its
headers and 429s (``ratelimits``); Message Batches progress on a clock in ``batches``;
``Simulator`` serves all this over loopback HTTP with aiohttp, and ``SimulatorThread`` runs
one on its own thread for synchronous callers.

    >>> with SimulatorThread(SimulatorConfig(error_rates={"429": 0.05})) as sim:  # doctest: +SKIP
    ...     run_job(base_url=sim.base_url)
    ...     print(sim.stats.answered_ok, sim.stats.faults)
"""

from batchrun.simulator.batch_store import BatchSettings, BatchStore
from batchrun.simulator.faults import FAULT_NAMES, parse_fault_spec
from batchrun.simulator.ratelimits import SimLimits
from batchrun.simulator.replies import make_reply
from batchrun.simulator.server import Simulator, SimulatorConfig, SimulatorStats, serve
from batchrun.simulator.thread import SimulatorThread
from batchrun.simulator.tokens import count_input_tokens

__all__ = [
    "FAULT_NAMES",
    "BatchSettings",
    "BatchStore",
    "SimLimits",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "SimulatorThread",
    "count_input_tokens",
    "make_reply",
    "parse_fault_spec",
    "serve",
]
