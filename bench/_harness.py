"""Shared pieces of the benchmarks in ``bench/``: simulator subprocess, inputs, timing, tables.

Not a benchmark itself. The benchmarks import it as a sibling module (``python bench/X.py``
puts ``bench/`` on ``sys.path``)::

    from _harness import SimulatorProcess, write_prompts_jsonl, measure, print_table

    with SimulatorProcess(latency=1.0) as sim:
        m = measure(lambda: my_contender(sim.base_url), sim=sim)
        print(m.seconds, m.client_cpu_s, m.sim_cpu_s)

The simulator runs as a separate process (``python -m batchrun simulate``) in its own session,
so it gets its own core and event loop, and a stop (also on Ctrl-C or an error) kills its
whole process group.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, TypeVar

T = TypeVar("T")

MODEL = "claude-haiku-4-5"
API_KEY = "bench-key"
API_VERSION = "2023-06-01"
START_TIMEOUT_S = 20.0
STOP_GRACE_S = 5.0


class BenchError(RuntimeError):
    """A benchmark could not measure what it meant to (a contender lost rows, no server...)."""


# --------------------------------------------------------------------------- simulator process


class SimulatorProcess:
    """``batchrun simulate`` in a subprocess on 127.0.0.1; a context manager.

    ``base_url`` is read from the first line the server prints on stdout. ``cpu_seconds()``
    reads the server's CPU time from /proc (None elsewhere), so a benchmark can tell when
    the server, not the client, is the bottleneck. ``command`` runs another server instead
    (a benchmark's own stand-in), which must print its URL first the same way.
    """

    def __init__(
        self,
        latency: float = 0.0,
        jitter: float = 0.0,
        extra: Sequence[str] = (),
        command: Sequence[str] | None = None,
    ):
        self.latency = latency
        self.jitter = jitter
        self.extra = tuple(extra)
        self.command = tuple(command) if command is not None else None
        self.base_url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def start(self) -> str:
        """Start the server and return its base URL once it listens."""
        cmd = (
            list(self.command)
            if self.command is not None
            else [
                sys.executable,
                "-m",
                "batchrun",
                "simulate",
                "--port",
                "0",
                "--latency",
                str(self.latency),
                "--jitter",
                str(self.jitter),
                *self.extra,
            ]
        )
        # Closed by stop(); a file, not a pipe, so a chatty server can never block on it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,  # own process group: Ctrl-C here does not reach it
        )
        try:
            self.base_url = self._read_url(self._proc)
        except BaseException:
            self.stop()
            raise
        return self.base_url

    def _read_url(self, proc: subprocess.Popen[bytes]) -> str:
        assert proc.stdout is not None
        stdout = proc.stdout
        lines: queue.Queue[bytes] = queue.Queue()
        reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
        reader.start()
        try:
            line = lines.get(timeout=START_TIMEOUT_S).decode().strip()
        except queue.Empty:
            raise BenchError(f"simulator printed no URL in {START_TIMEOUT_S:g} s") from None
        if not line.startswith("http://127.0.0.1:"):
            raise BenchError(f"simulator did not start: {line!r}\n{self.stderr_text()}")
        return line

    def stderr_text(self) -> str:
        """What the server wrote on stderr so far (for error messages)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds the server used so far; None where /proc is missing."""
        if self._proc is None:
            return None
        return process_cpu_seconds(self._proc.pid)

    def stop(self) -> None:
        """Interrupt the server's process group, then kill it if it lingers. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.poll() is None:
                    _signal_group(proc.pid, signal.SIGINT)
                    try:
                        proc.wait(STOP_GRACE_S)
                    except subprocess.TimeoutExpired:
                        _signal_group(proc.pid, signal.SIGKILL)
                        proc.wait(STOP_GRACE_S)
            finally:
                if proc.stdout is not None:
                    proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> SimulatorProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def canned_server(latency: float = 0.0, rate_limit_headers: bool = False) -> SimulatorProcess:
    """``bench/_canned_server.py`` in a subprocess: every Messages request answered with the
    same Message for a few microseconds of the server's CPU, so a zero-latency benchmark
    measures the client, not the server (``batchrun simulate`` checks and builds every reply:
    about as much CPU as a bare aiohttp client spends). ``rate_limit_headers``: each answer
    carries the API's ``anthropic-ratelimit-*`` headers, as every real answer does."""
    script = Path(__file__).with_name("_canned_server.py")
    flags = ["--rate-limit-headers"] if rate_limit_headers else []
    command = [sys.executable, str(script), "--latency", str(latency), *flags]
    return SimulatorProcess(latency, command=command)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # start_new_session made pid the group leader


def peak_rss_mib(
    cmd: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, int, str]:
    """Run ``cmd``; its own peak RSS in MiB (its ``ru_maxrss``, read from the kernel as it is
    reaped: none of this process's), its exit code and what it printed (stdout and stderr)."""
    child = subprocess.Popen(
        list(cmd), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return usage.ru_maxrss / 1024, child.returncode, output  # ru_maxrss is in KiB on Linux


def bytecode_env() -> dict[str, str]:
    """This environment, but writing bytecode: a checkout's first timed run must not count
    compiling every module (a shell may set PYTHONDONTWRITEBYTECODE)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc/PID/stat, or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Make SIGTERM raise KeyboardInterrupt, so ``finally`` blocks stop servers on a kill too."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- inputs


# A short labelling answer, as a Message: what the benchmarks' stand-in servers answer.
CANNED_MESSAGE: dict[str, Any] = {
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "positive"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 31, "output_tokens": 2, "service_tier": "batch"},
}


def prompt_text(i: int) -> str:
    """A distinct prompt per row, roughly the size of a short labelling task."""
    return (
        f"Review #{i}: the product arrived on day {i % 31 + 1}, works as described, "
        f"battery lasts {i % 17 + 3} hours. Answer positive, negative or neutral."
    )


def make_prompts(n: int) -> list[str]:
    return [prompt_text(i) for i in range(n)]


def message_body(prompt: str, max_tokens: int = 16) -> dict[str, Any]:
    """The Messages request body every contender sends for one row."""
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }


def write_prompts_jsonl(path: Path, prompts: Iterable[str]) -> Path:
    """One JSON object per line: ``{"id": "row-<i>", "prompt": ...}``; ``prompts`` may be a
    generator, so a million rows are never held at once."""
    with path.open("w", encoding="utf-8") as f:
        for i, prompt in enumerate(prompts):
            f.write(json.dumps({"id": f"row-{i}", "prompt": prompt}) + "\n")
    return path


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Measurement:
    """One timed call: wall seconds, this process's CPU, the server's CPU, rows answered ok."""

    seconds: float
    client_cpu_s: float
    sim_cpu_s: float | None
    ok: int

    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def measure(call: Callable[[], int], sim: SimulatorProcess | None = None) -> Measurement:
    """Time ``call()``, which returns the number of rows answered ok.

    Garbage from earlier calls is collected first so that it is not charged to this one.
    A contender's event loop may install and remove signal handlers (``batchrun.run`` does,
    leaving SIGTERM at its default afterwards); ours are put back when the call returns.
    """
    gc.collect()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    sim_before = sim.cpu_seconds() if sim else None
    cpu_before = time.process_time()
    started = time.perf_counter()
    try:
        ok = call()
    finally:
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
    sim_after = sim.cpu_seconds() if sim else None
    sim_cpu = sim_after - sim_before if sim_after is not None and sim_before is not None else None
    return Measurement(seconds, cpu, sim_cpu, ok)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def rotated(items: Sequence[T], by: int) -> list[T]:
    """``items`` rotated left by ``by``: alternates who goes first across rounds."""
    if not items:
        return []
    k = by % len(items)
    return [*items[k:], *items[:k]]


# --------------------------------------------------------------------------- reporting


def versions_banner() -> str:
    """Cores, Python and the HTTP stack's versions: what a figure depends on."""

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    packages = ("batchrun", "httpx", "httpx-aiohttp", "aiohttp", "anthropic", "pyarrow")
    return "\n".join(
        [
            f"machine   {os.cpu_count()} cores ({platform.machine()}, {platform.system()})",
            f"python    {platform.python_version()} ({platform.python_implementation()})",
            "packages  " + "  ".join(f"{name} {version(name)}" for name in packages),
        ]
    )


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table; the first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            value.ljust(width) if i == 0 else value.rjust(width)
            for i, (value, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(format_table(headers, rows), flush=True)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass(frozen=True)
class Target:
    """A ratio that must reach ``minimum``: e.g. batchrun / bare >= 0.85."""

    label: str
    value: float
    minimum: float

    @property
    def passed(self) -> bool:
        return self.value >= self.minimum

    def line(self, informational: bool = False) -> str:
        verdict = "info" if informational else ("PASS" if self.passed else "FAIL")
        return f"  [{verdict}] {self.label}: {self.value:.2f}x (target >= {self.minimum:g}x)"
