"""``batchrun.run(rows, ...)`` in a fresh interpreter: the frame libraries load only when given
their frames, and an interrupt in a notebook stops the run and a second call resumes (the
Python API in-process: tests/integration/test_from_python.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from support import (
    TEST_KEY,
    RecordingTransport,
    against,
    assert_answers,
    wait_until,
)

import batchrun
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorThread
from batchrun.store.sink import journal_path

# --- imports ------------------------------------------------------------------------------------


def test_the_frame_libraries_load_only_when_given_their_frames() -> None:
    # pyarrow's first pa.array() imports pandas when it is installed: that is not batchrun's.
    probe = textwrap.dedent(
        """
        import sys
        import pyarrow
        pyarrow.array([1])
        frames = ("pandas", "polars", "datasets")
        before = {m for m in frames if m in sys.modules}
        import batchrun
        batchrun.run([{"prompt": "a"}], model="claude-haiku-4-5", max_tokens=5, simulate=True,
                     quiet=True)
        print(",".join(m for m in frames if m in sys.modules and m not in before))
        """
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


# --- an interrupt while run() waits inside a running loop, in a real process ------------------

NOTEBOOK_CHILD = """
import asyncio, json, os, signal, sys
import httpx
import batchrun

url, output, ready = sys.argv[1:4]
rows = [{"id": f"q{i}", "prompt": f"What is {i} + {i}?"} for i in range(10)]


class StallsOnTheFourth(httpx.AsyncBaseTransport):
    # Forwards three requests; at the fourth it says so and waits for ever.
    def __init__(self):
        self.inner, self.seen = httpx.AsyncHTTPTransport(), 0

    async def handle_async_request(self, request):
        self.seen += 1
        if self.seen == 4:
            open(ready, "w").close()
            await asyncio.Event().wait()
        return await self.inner.handle_async_request(request)


async def cell():
    # What ipykernel does while a cell runs: SIGINT raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        batchrun.run(rows, model="claude-haiku-4-5", max_tokens=20, base_url=url,
                     environ={"ANTHROPIC_API_KEY": os.environ["TEST_KEY"]}, quiet=True,
                     concurrency=1, output=output,
                     runtime=batchrun.Runtime(transport=StallsOnTheFourth()))
    except KeyboardInterrupt:
        print("KeyboardInterrupt")


asyncio.run(cell())
"""


def test_an_interrupt_in_a_notebook_stops_the_run_and_a_second_call_resumes(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    output, ready = tmp_path / "labels.parquet", tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", NOTEBOOK_CHILD, sim.base_url, str(output), str(ready)],
        env={**os.environ, "TEST_KEY": TEST_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # three rows answered and journaled, the fourth stalled
    wait_until(ready.exists, 60, "the child's fourth request", alive=[child])
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)

    assert (child.returncode, out.strip()) == (0, "KeyboardInterrupt"), err
    assert journal_path(output).exists()
    sent = RecordingTransport()
    rows = [{"id": f"q{i}", "prompt": f"What is {i} + {i}?"} for i in range(10)]
    table = batchrun.run(rows, **against(sim), output=output, runtime=Runtime(transport=sent)).table
    assert len(sent.bodies) == 7  # the three answered before the interrupt are not sent again
    assert_answers(table, rows)
