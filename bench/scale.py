"""Scale: a large job online at zero latency and via Message Batches, against the same job at a
tenth of its size and against a bare aiohttp loop, all in one run (issue 26).

For each mode (``online``, ``batches``) and each size (``--small``, default 100,000 rows;
``--large``, default 1,000,000), against one ``batchrun simulate`` subprocess (zero latency;
batches end ``--batch-processing-s`` after creation):

* ``batchrun``  ``python -m batchrun run IN -o OUT.parquet --json`` in a subprocess
                (concurrency ``--concurrency``; ``--via batches`` for batches): wall time,
                rows/s, its own peak RSS (``ru_maxrss`` of that process, read at its exit),
                and the final step: from the last growth of its journal (sampled every
                0.1 s) to its exit, i.e. the final Parquet file built from the journal and put
                in place.
* ``resume``    the same job into a fresh output, SIGKILLed once its journal holds 90 % of the
                full run's journal bytes, then the same command again: that second run's wall
                time, and how many rows it still had to finish (the rest were kept).
* ``bare``      the floor, in a subprocess of its own so its RSS is its own too. Online: one
                ``aiohttp`` session (``--concurrency`` connections), as many workers pulling
                rows from the input file as it reads, POST, parse the JSON; nothing written.
                Batches: what a hand-written script does: every row into batches of at most
                100,000 requests (the API's cap, docs/api-facts.md §8.2), all created, polled
                until ended, results read line by line and written to Parquet.

Printed: the figures, then ratios: large/small for batchrun's peak RSS, rows/s, resume time
and final step (a job ten times larger should cost ten times the time and no more memory), and
batchrun/bare at each size. Target (issue 26): peak RSS large <= 1.3x small in every mode. Exit
code 0 when it passes.

``--modes ray`` measures ``run --engine ray`` (local Ray, ``pip install 'batchrun[ray]'``): the
driver's own peak RSS at both sizes (target: large <= 1.3x small). Ray listens on every
interface, so the benchmark re-runs itself in a network namespace of its own with only its
loopback up (``unshare -n``, as tests/support/ray_netns.py does; needs root or unprivileged
user namespaces).

A million rows takes a long time on a two-core machine (tens of minutes per mode); sizes are
settable. Run from the repository root::

    python bench/scale.py                                   # 100k and 1M, online and batches
    python bench/scale.py --small 20000 --large 200000 --modes online
    python bench/scale.py --small 10000 --large 100000 --modes ray
    python bench/scale.py --no-resume --no-bare             # the runs alone
    python bench/scale.py --quick                           # smoke run, targets not judged
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import (
    API_KEY,
    API_VERSION,
    MODEL,
    BenchError,
    SimulatorProcess,
    print_table,
    prompt_text,
    sigterm_as_interrupt,
    versions_banner,
    write_prompts_jsonl,
)

TARGET_RSS = 1.3
CONCURRENCY = 64
MAX_TOKENS = 16
KILL_AT = 0.9  # of the full run's journal bytes
BATCH_MAX = 100_000  # requests per Message Batch (docs/api-facts.md §8.2)
SAMPLE_S = 0.1
MODES = ("online", "batches", "ray")
# Run inside the benchmark's own network namespace (``--modes ray``): set by the re-run.
IN_NETNS = "BATCHRUN_BENCH_IN_NETNS"

# Ray's processes die with the first process of this namespace (tests/support/ray_netns.py).
PID_NAMESPACE = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"]
# What a child prints on its last stderr line: its own peak RSS (KiB), read at its exit.
RSS_TAG = "bench-peak-rss-kib="
# Runs the batchrun CLI and, as the process exits, prints its own peak RSS: not its
# children's (a local Ray cluster is started by the driver), nor this benchmark's.
WITH_PEAK_RSS = (
    "import atexit, resource, runpy, sys\n"
    "atexit.register(lambda: print('" + RSS_TAG + "%d' % "
    "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
    "sys.argv[0] = 'batchrun'\n"
    "runpy.run_module('batchrun', run_name='__main__')\n"
)


@dataclass
class Figures:
    mode: str
    contender: str  # batchrun | bare
    rows: int
    seconds: float
    rss_mb: float
    final_s: float | None = None
    resume_s: float | None = None
    resume_rows: int | None = None  # rows the resumed run still finished

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


# --------------------------------------------------------------------------- inputs


def write_rows(path: Path, rows: int) -> Path:
    """``rows`` lines of ``{"id", "prompt"}``, each prompt its own, never all in memory."""
    return write_prompts_jsonl(path, (prompt_text(i) for i in range(rows)))


def read_prompts(path: Path) -> Iterator[tuple[str, str]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            yield row["id"], row["prompt"]


def body(prompt: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": prompt}],
    }


# --------------------------------------------------------------------------- batchrun runs


class JournalWatch:
    """Samples a file's size in a thread: when it last grew, how large it got, and (when
    ``kill_at`` is given) kills ``proc`` once it holds that many bytes."""

    def __init__(
        self, path: Path, proc: subprocess.Popen[bytes], kill_at: int | None = None
    ) -> None:
        self.path = path
        self.size = 0
        self.grew_at = time.perf_counter()
        self.killed = False
        self._proc = proc
        self._kill_at = kill_at
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            try:
                size = self.path.stat().st_size
            except OSError:
                continue  # not there yet, or renamed away by the final step
            if size > self.size:
                self.size, self.grew_at = size, time.perf_counter()
            if self._kill_at is not None and size >= self._kill_at and not self.killed:
                self.killed = True
                self._proc.send_signal(signal.SIGKILL)


@dataclass
class Run:
    seconds: float
    rss_mb: float | None
    final_s: float | None
    journal_bytes: int
    summary: dict[str, Any] | None
    killed: bool


def batchrun_command(mode: str, inp: Path, out: Path, url: str, concurrency: int) -> list[str]:
    command = [sys.executable, "-c", WITH_PEAK_RSS, "run", str(inp), "-o", str(out)]
    command += ["--model", MODEL, "--max-tokens", str(MAX_TOKENS), "--base-url", url]
    command += ["--concurrency", str(concurrency), "--json", "-q"]
    if mode == "batches":
        command += ["--via", "batches", "--poll-interval", "0.2"]
    if mode == "ray":
        # In a PID namespace of its own: the local Ray cluster the driver starts goes with it.
        command = [*PID_NAMESPACE, *command, "--engine", "ray"]
    return command


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """Interrupt a child still running (the benchmark was), then kill it if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_batchrun(command: list[str], out: Path, kill_at: int | None = None) -> Run:
    env = {**os.environ, "ANTHROPIC_API_KEY": API_KEY}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
        watch = JournalWatch(out.with_name(out.name + ".journal"), proc, kill_at)
        try:
            code = proc.wait()
        finally:
            watch.stop()
            stop_child(proc)  # interrupted: the run goes with the benchmark
        ended = time.perf_counter()
        stdout.seek(0)
        stderr.seek(0)
        said, err = stdout.read().decode(), stderr.read().decode(errors="replace")
    if watch.killed:
        return Run(ended - started, None, 0.0, watch.size, None, True)
    if code not in (0, 3):
        raise BenchError(f"batchrun exited {code}:\n{err[-3000:]}")
    rss = [line for line in err.splitlines() if line.startswith(RSS_TAG)]
    summary = json.loads(said.strip().splitlines()[-1])
    if summary["outcome"] != "complete":
        raise BenchError(f"batchrun did not finish its job:\n{err[-3000:]}")
    return Run(
        ended - started,
        int(rss[-1][len(RSS_TAG) :]) / 1024.0 if rss else None,
        ended - watch.grew_at if watch.size else None,  # no journal: --engine ray
        watch.size,
        summary,
        False,
    )


def measure_batchrun(
    mode: str, inp: Path, work: Path, url: str, rows: int, args: argparse.Namespace
) -> Figures:
    out = work / f"{mode}-{rows}.parquet"
    full = run_batchrun(batchrun_command(mode, inp, out, url, args.concurrency), out)
    assert full.summary is not None
    if full.summary["output_rows"]["ok"] != rows:
        raise BenchError(f"{mode}, {rows:,} rows: {full.summary['output_rows']} (not all ok)")
    figures = Figures(mode, "batchrun", rows, full.seconds, full.rss_mb or 0.0, full.final_s)
    out.unlink()
    if args.resume and mode != "ray":
        again = work / f"{mode}-{rows}-killed.parquet"
        command = batchrun_command(mode, inp, again, url, args.concurrency)
        killed = run_batchrun(command, again, kill_at=int(full.journal_bytes * KILL_AT))
        if not killed.killed:
            # A small job on a busy machine can end between two looks at its journal: its
            # resume is then not measured (said, and shown as "-"), the rest of the figures are.
            print(
                f"  [info] {mode}, {rows:,} rows: the run ended before it could be killed at "
                f"{KILL_AT:.0%}: resume not measured",
                file=sys.stderr,
            )
            again.unlink(missing_ok=True)
            return figures
        resumed = run_batchrun(command, again)
        assert resumed.summary is not None
        figures.resume_s = resumed.seconds
        figures.resume_rows = resumed.summary["rows"]["finished"]
        again.unlink()
    return figures


# --------------------------------------------------------------------------- bare contenders


def bare_online(url: str, inp: Path, concurrency: int) -> int:
    import aiohttp

    async def main() -> int:
        headers = {"x-api-key": API_KEY, "anthropic-version": API_VERSION}
        prompts = read_prompts(inp)
        done = 0
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(url, connector=connector, headers=headers) as session:

            async def worker() -> None:
                nonlocal done
                for _, prompt in prompts:  # shared: each row taken once
                    async with session.post("/v1/messages", json=body(prompt)) as response:
                        answer = await response.json()
                    if response.status != 200 or answer["type"] != "message":
                        raise BenchError(f"bare online: {response.status} {answer}")
                    done += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done

    return asyncio.run(main())


def bare_batches(url: str, inp: Path, out: Path) -> int:
    import aiohttp
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("id", pa.string()), ("text", pa.string()), ("stop_reason", pa.string())]
        + [(name, pa.int64()) for name in ("input_tokens", "output_tokens")]
    )

    async def main() -> int:
        headers = {"x-api-key": API_KEY, "anthropic-version": API_VERSION}
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(url, headers=headers, timeout=timeout) as session:
            ids: list[str] = []
            prompts = read_prompts(inp)
            while True:
                requests = [
                    {"custom_id": custom_id, "params": body(prompt)}
                    for custom_id, prompt in itertools.islice(prompts, BATCH_MAX)
                ]
                if not requests:
                    break
                async with session.post(
                    "/v1/messages/batches", json={"requests": requests}
                ) as response:
                    created = await response.json()
                if response.status != 200:
                    raise BenchError(f"bare batches: create answered {response.status}")
                ids.append(created["id"])
                del requests
            written = 0
            with pq.ParquetWriter(out, schema) as writer:
                for batch_id in ids:
                    while True:
                        async with session.get(f"/v1/messages/batches/{batch_id}") as response:
                            batch = await response.json()
                        if batch["processing_status"] == "ended":
                            break
                        await asyncio.sleep(0.2)
                    async with session.get(batch["results_url"]) as response:
                        rows: list[dict[str, Any]] = []
                        async for line in response.content:
                            result = json.loads(line)
                            message = result["result"]["message"]
                            rows.append(
                                {
                                    "id": result["custom_id"],
                                    "text": message["content"][0]["text"],
                                    "stop_reason": message["stop_reason"],
                                    "input_tokens": message["usage"]["input_tokens"],
                                    "output_tokens": message["usage"]["output_tokens"],
                                }
                            )
                            if len(rows) == 10_000:
                                writer.write_table(pa.Table.from_pylist(rows, schema))
                                written += len(rows)
                                rows = []
                        if rows:
                            writer.write_table(pa.Table.from_pylist(rows, schema))
                            written += len(rows)
        return written

    return asyncio.run(main())


def measure_bare(
    mode: str, inp: Path, work: Path, url: str, rows: int, concurrency: int
) -> Figures:
    """This file run again as ``--bare MODE``, in a process of its own."""
    out = work / f"bare-{mode}-{rows}.parquet"
    command = [sys.executable, __file__, "--bare", mode, url, str(inp), str(out)]
    command += ["--concurrency", str(concurrency)]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        said, err = proc.communicate()
    finally:
        stop_child(proc)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise BenchError(f"bare {mode} failed:\n{err.decode()[-3000:]}")
    report = json.loads(said.decode().strip().splitlines()[-1])
    if report["rows"] != rows:
        raise BenchError(f"bare {mode}: {report['rows']:,} of {rows:,} rows answered")
    out.unlink(missing_ok=True)
    return Figures(mode, "bare", rows, seconds, report["rss_kib"] / 1024.0)


def bare_main(mode: str, url: str, inp: Path, out: Path, concurrency: int) -> int:
    import resource

    rows = bare_online(url, inp, concurrency) if mode == "online" else bare_batches(url, inp, out)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "rss_kib": rss}))
    return 0


# --------------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def report(figures: list[Figures], small: int, large: int) -> int:
    print()
    print_table(
        [
            "mode",
            "contender",
            "rows",
            "wall s",
            "rows/s",
            "peak RSS MiB",
            "final s",
            "resume s",
            "resumed rows",
        ],
        [
            [
                f.mode,
                f.contender,
                f.rows,
                f.seconds,
                f.rate,
                f.rss_mb,
                f.final_s,
                f.resume_s,
                f.resume_rows,
            ]
            for f in figures
        ],
    )
    failed = False
    for mode in MODES:
        ours = {f.rows: f for f in figures if f.mode == mode and f.contender == "batchrun"}
        bare = {f.rows: f for f in figures if f.mode == mode and f.contender == "bare"}
        if not ours:
            continue
        print(f"\n  {mode}:")
        for rows in sorted(bare):
            if rows in ours:
                mine, floor = ours[rows], bare[rows]
                print(
                    f"    {rows:,} rows, batchrun / bare: rows/s {ratio(mine.rate, floor.rate)}, "
                    f"peak RSS {ratio(mine.rss_mb, floor.rss_mb)}"
                )
        if small in ours and large in ours:
            big, base = ours[large], ours[small]
            print(
                f"    {large:,} / {small:,} rows: rows/s {ratio(big.rate, base.rate)}, "
                f"final step {ratio(big.final_s, base.final_s)}, "
                f"resume {ratio(big.resume_s, base.resume_s)} (ideal: "
                f"{large / small:g}x for times, 1x for rates)"
            )
            rss = big.rss_mb / base.rss_mb if base.rss_mb else float("inf")
            verdict = "PASS" if rss <= TARGET_RSS else "FAIL"
            failed |= rss > TARGET_RSS
            print(
                f"    [{verdict}] peak RSS {large:,} / {small:,} rows: {rss:.3f}x "
                f"(target <= {TARGET_RSS:g}x)"
            )
    return 1 if failed else 0


# --------------------------------------------------------------------------- main


def in_own_netns(argv: Sequence[str]) -> int:
    """This benchmark again, in a network namespace whose only interface is its loopback."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        raise BenchError("--modes ray needs unshare and ip (a network namespace of its own)")
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
    command += [sys.executable, __file__, *argv]
    return subprocess.run(command, env={**os.environ, IN_NETNS: "1"}, check=False).returncode


def measure_all(args: argparse.Namespace) -> int:
    figures: list[Figures] = []
    sizes = [args.small, args.large]
    with (
        sigterm_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.work) as tmp,
        SimulatorProcess(extra=["--batch-processing-s", str(args.batch_processing_s)]) as sim,
    ):
        work = Path(tmp)
        for rows in sizes:
            inp = write_rows(work / f"in-{rows}.jsonl", rows)
            for mode in args.modes:
                contenders = ["batchrun"] + (["bare"] if args.bare and mode != "ray" else [])
                for contender in contenders:
                    print(f"  {mode}, {contender}, {rows:,} rows ...", end="", flush=True)
                    if contender == "bare":
                        f = measure_bare(mode, inp, work, sim.base_url, rows, args.concurrency)
                    else:
                        f = measure_batchrun(mode, inp, work, sim.base_url, rows, args)
                    print(
                        f" {f.seconds:.1f} s, {f.rate:,.0f} rows/s, {f.rss_mb:,.1f} MiB"
                        + (f", resume {f.resume_s:.1f} s" if f.resume_s is not None else ""),
                        flush=True,
                    )
                    figures.append(f)
                    if not sim.alive():
                        raise BenchError(f"the simulator died:\n{sim.stderr_text()}")
            inp.unlink()
    return report(figures, args.small, args.large)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--modes", default="online,batches", help="of online, batches, ray")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--batch-processing-s", type=float, default=0.5)
    parser.add_argument("--no-resume", dest="resume", action="store_false")
    parser.add_argument("--no-bare", dest="bare", action="store_false")
    parser.add_argument("--work", help="folder for inputs and outputs (default: the temp dir)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 300 and 1,200 rows, targets not judged"
    )
    parser.add_argument("--bare", dest="bare_mode", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_mode:
        mode, url, inp, out = args.bare_mode
        return bare_main(mode, url, Path(inp), Path(out), args.concurrency)
    if args.quick:
        args.small, args.large = 300, 1_200
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"--modes: unknown {', '.join(sorted(unknown))} (of {', '.join(MODES)})")
    try:
        if "ray" in args.modes and not os.environ.get(IN_NETNS):
            return in_own_netns(argv)
        print("batchrun scale benchmark")
        print(versions_banner(), flush=True)
        verdict = measure_all(args)
        if args.quick:
            print("\n  quick run: targets not judged")
            return 0
        return verdict
    except BenchError as exc:
        print(f"\nBENCHMARK BROKEN: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
