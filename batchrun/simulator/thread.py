"""A simulator on its own thread and event loop, for synchronous callers.

Sync tests, the CLI's ``--simulate`` and benchmarks need a server that keeps answering while
the caller blocks (or runs its own event loop), so the simulator gets a loop of its own.

    >>> with SimulatorThread(SimulatorConfig()) as sim:  # doctest: +SKIP
    ...     httpx.post(f"{sim.base_url}/v1/messages", ...)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from types import TracebackType

from batchrun.simulator.server import Simulator, SimulatorConfig, SimulatorStats

START_TIMEOUT = 10.0
"""Seconds to wait for the server thread to report that it listens."""


class SimulatorThread:
    """Runs a ``Simulator`` in a daemon thread; use as a context manager or start()/stop()."""

    def __init__(
        self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.simulator = Simulator(config)
        self._host = host
        self._port = port
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_signal: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` while running."""
        return self.simulator.base_url

    @property
    def stats(self) -> SimulatorStats:
        """The live counters (use ``stats.snapshot()`` for a consistent copy mid-run)."""
        return self.simulator.stats

    def script(self, faults: Iterable[str | None]) -> None:
        """Queue exact faults for the next requests (see ``Simulator.script``)."""
        self.simulator.script(faults)

    def start(self) -> str:
        """Start the thread, wait until the server listens, and return the base URL."""
        if self._thread is not None:
            raise RuntimeError("the simulator thread is already running")
        self._ready.clear()
        self._failure = None
        self._thread = threading.Thread(target=self._run, name="batchrun-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError("the simulator did not start in time")
        if self._failure is not None:
            self._thread.join()
            self._thread = None
            raise self._failure
        return self.base_url

    def stop(self) -> None:
        """Stop the server, close its connections and join the thread.

        Re-raises an error the server thread died with, so it cannot pass unnoticed.
        """
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, signal = self._loop, self._stop_signal
        if loop is not None and signal is not None:
            # The loop may already be closing if the thread failed; then there is nothing to do.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(signal.set)
        thread.join()
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(), which re-raises in the caller
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_signal = asyncio.Event()
        await self.simulator.start(self._host, self._port)
        try:
            self._ready.set()
            await self._stop_signal.wait()
        finally:
            await self.simulator.stop()
            self._loop = None
