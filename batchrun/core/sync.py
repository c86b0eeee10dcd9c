"""Async work called from synchronous code, in one place: ``run``, ``estimate`` and the batch
commands all go through ``run_sync`` (``run`` is ``blocking(run_async)``: one parameter list).

``asyncio.run`` refuses to start where an event loop already runs on the thread (a Jupyter
cell, an async web handler calling sync code); there the work runs on a worker thread of its
own, with its own loop, and the caller's thread waits. Ctrl-C (the notebook's stop button)
reaches the caller's thread, not the worker: the work is cancelled there, so it can close
its journal, and KeyboardInterrupt is raised here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, ParamSpec, TypeVar, cast

T = TypeVar("T")
P = ParamSpec("P")


def run_sync(work: Coroutine[Any, Any, T]) -> T:
    """``work`` run to its end: on a fresh event loop here, or, when this thread runs one
    already (which ``asyncio.run`` refuses), on a worker thread's."""
    if not _loop_running():
        return asyncio.run(work)
    worker = Worker(work)
    worker.start()
    try:
        worker.join()
    except KeyboardInterrupt:
        # Ctrl-C reaches this thread, not the worker (signal handlers live in the main
        # thread only): stop the job there, let it close its journal, then stop here.
        worker.cancel()
        worker.join()
        raise
    return worker.outcome()


def blocking(work: Callable[P, Coroutine[Any, Any, T]], name: str, doc: str) -> Callable[P, T]:
    """The synchronous twin of the coroutine function ``work``, named ``name`` and documented
    by ``doc``: it takes ``work``'s parameters (``inspect.signature`` shows them) and runs it
    to its end with ``run_sync``."""

    @functools.wraps(work)
    def twin(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(work(*args, **kwargs))

    twin.__name__ = twin.__qualname__ = name
    twin.__doc__ = doc
    return twin


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Worker(threading.Thread, Generic[T]):
    """A coroutine run to its end by ``asyncio.run`` on a thread of its own; ``on_end`` is
    called on that thread when it ends, however it ends (``batchrun.iter_answers`` wakes its
    reader with it)."""

    def __init__(
        self,
        work: Coroutine[Any, Any, T],
        on_end: Callable[[], None] | None = None,
        *,
        daemon: bool = False,
    ) -> None:
        super().__init__(name="batchrun-sync", daemon=daemon)
        self._work = work
        self._on_end = on_end
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._result: T | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._result = asyncio.run(self._main())
        except BaseException as exc:  # handed to the caller's thread by outcome()
            self._error = exc
        finally:
            self._started.set()  # also when it failed before starting
            if self._on_end is not None:
                self._on_end()

    async def _main(self) -> T:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._started.set()
        return await self._work

    def cancel(self) -> None:
        """Cancel the work from another thread (as a second Ctrl-C would)."""
        self._started.wait()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the work had ended
                loop.call_soon_threadsafe(task.cancel)

    def outcome(self) -> T:
        if self._error is not None:
            raise self._error
        return cast(T, self._result)  # set, as no error was
