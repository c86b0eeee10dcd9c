"""Message Batches at scale: ``batchrun run --via batches`` against a hand-written script.

Both contenders send the same rows (100,000 by default) through the Message Batches API of a
stand-in server whose batches end 0.5 s after they are created, and each writes a Parquet
file with one row per input row:

* ``script``    what a user would write by hand with httpx alone: read the JSONL, build one
                create body holding every row, POST it, poll until the batch ends, stream
                the results, join them to the rows by ``custom_id``, write Parquet. No
                journal, no checks, no resume: the floor for this work on this machine.
* ``batchrun``  ``python -m batchrun run IN -o OUT --via batches``, as a user runs it (row
                checks, write-ahead batch journal, output journal, final Parquet).

Each contender runs in a child process of its own, timed from start to exit (interpreter
start-up and imports included for both), and its peak RSS is read from the kernel when it is
reaped (``os.wait4``). The parent stays small on purpose: a child's peak as the kernel counts
it includes the parent's resident memory at the moment it was forked.

Both poll every ``--poll`` seconds (0.25 by default). The servers (each a subprocess, so it
has its own core):

* ``stand-in``  a small aiohttp server in this file (``--serve``): it answers the Message
                Batches endpoints with canned answers, in a shuffled order, as fast as it can.
* ``simulator`` ``batchrun simulate --batch-processing-s 0.5``, the built-in simulator,
                which checks every request and makes every answer.

Targets (issue 26), against the stand-in: batchrun >= 0.6x the script's rows/s, and batchrun's
peak RSS <= 250 MB. Against the simulator the figures are informational. Exit code 0 when
every judged target passes, 1 otherwise, 2 when a contender broke.

Run from the repository root (a minute or two)::

    python bench/batches_scale.py                       # 100,000 rows, stand-in server
    python bench/batches_scale.py --server both         # ... and the built-in simulator
    python bench/batches_scale.py --rows 300000 --repeats 3
    python bench/batches_scale.py --quick               # a small smoke run; nothing judged
    python bench/batches_scale.py --before /tmp/main    # ... and another checkout's batchrun
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from _harness import (
    API_KEY,
    API_VERSION,
    CANNED_MESSAGE,
    MODEL,
    BenchError,
    SimulatorProcess,
    Target,
    median,
    print_table,
    prompt_text,
    rotated,
    sigterm_as_interrupt,
    versions_banner,
    write_prompts_jsonl,
)

MAX_TOKENS = 16
PROCESSING_S = 0.5
RATIO_TARGET = 0.6
RSS_TARGET_MB = 250.0
SCRIPT_TIMEOUT_S = 600.0


# --------------------------------------------------------------------------- the stand-in


class StandIn:
    """The Message Batches endpoints, answered from memory; batches end ``processing_s`` after
    creation. Only what a client needs: create, retrieve, list, cancel, results."""

    def __init__(self, processing_s: float) -> None:
        self.processing_s = processing_s
        self.batches: dict[str, dict[str, Any]] = {}  # id -> the batch, in creation order
        self.custom_ids: dict[str, list[str]] = {}
        self.created: dict[str, float] = {}
        self.base_url = ""

    def view(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        ended = time.monotonic() - self.created[batch_id] >= self.processing_s
        count = len(self.custom_ids[batch_id])
        batch.update(
            processing_status="ended" if ended else "in_progress",
            request_counts={
                "processing": 0 if ended else count,
                "succeeded": count if ended else 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            ended_at=batch["ends_at"] if ended else None,
            results_url=f"{self.base_url}/v1/messages/batches/{batch_id}/results"
            if ended
            else None,
        )
        return {k: v for k, v in batch.items() if k != "ends_at"}

    async def create(self, request: Any) -> Any:
        from aiohttp import web

        body = json.loads(await request.read())
        custom_ids = [item["custom_id"] for item in body["requests"]]
        batch_id = f"msgbatch_standin{len(self.batches) + 1:08d}"
        now = datetime.now(timezone.utc)
        self.custom_ids[batch_id] = custom_ids
        self.created[batch_id] = time.monotonic()
        self.batches[batch_id] = {
            "id": batch_id,
            "type": "message_batch",
            "created_at": _stamp(now),
            "expires_at": _stamp(now + timedelta(days=1)),
            "ends_at": _stamp(now + timedelta(seconds=self.processing_s)),
            "cancel_initiated_at": None,
            "archived_at": None,
        }
        return web.json_response(self.view(batch_id))

    async def retrieve(self, request: Any) -> Any:
        from aiohttp import web

        batch_id = request.match_info["batch_id"]
        if batch_id not in self.batches:
            return _not_found(batch_id)
        return web.json_response(self.view(batch_id))

    async def listing(self, request: Any) -> Any:
        from aiohttp import web

        ids = list(reversed(self.batches))
        after = request.query.get("after_id")
        start = ids.index(after) + 1 if after in ids else 0
        limit = int(request.query.get("limit", "20"))
        page = ids[start : start + limit]
        return web.json_response(
            {
                "data": [self.view(i) for i in page],
                "has_more": start + limit < len(ids),
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    async def results(self, request: Any) -> Any:
        from aiohttp import web

        batch_id = request.match_info["batch_id"]
        if batch_id not in self.batches:
            return _not_found(batch_id)
        if self.view(batch_id)["processing_status"] != "ended":
            return web.json_response({"type": "error"}, status=400)
        custom_ids = list(self.custom_ids[batch_id])
        random.Random(batch_id).shuffle(custom_ids)  # the API's results come in no order
        response = web.StreamResponse(headers={"content-type": "application/x-jsonl"})
        await response.prepare(request)
        for start in range(0, len(custom_ids), 2000):
            await response.write(
                "".join(_result_line(cid) for cid in custom_ids[start : start + 2000]).encode()
            )
        await response.write_eof()
        return response

    def app(self) -> Any:
        from aiohttp import web

        app = web.Application(client_max_size=300 * 1024 * 1024)
        app.router.add_post("/v1/messages/batches", self.create)
        app.router.add_get("/v1/messages/batches", self.listing)
        app.router.add_get("/v1/messages/batches/{batch_id}", self.retrieve)
        app.router.add_get("/v1/messages/batches/{batch_id}/results", self.results)
        return app


_MESSAGE_TAIL = json.dumps(
    CANNED_MESSAGE,
    separators=(",", ":"),
)[1:]


def _result_line(custom_id: str) -> str:
    return (
        f'{{"custom_id":"{custom_id}","result":{{"type":"succeeded",'
        f'"message":{{"id":"msg_{custom_id}",{_MESSAGE_TAIL}}}}}\n'
    )


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _not_found(batch_id: str) -> Any:
    from aiohttp import web

    error = {"type": "not_found_error", "message": f"no batch {batch_id}"}
    return web.json_response({"type": "error", "error": error}, status=404)


def serve(processing_s: float) -> None:
    """``--serve``: run the stand-in on a free port of 127.0.0.1 and print its URL."""
    from aiohttp import web

    async def main() -> None:
        stand_in = StandIn(processing_s)
        runner = web.AppRunner(stand_in.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        stand_in.base_url = f"http://127.0.0.1:{port}"
        print(stand_in.base_url, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# --------------------------------------------------------------------------- inputs


def write_rows(path: Path, rows: int) -> Path:
    """``rows`` lines of ``{"id", "prompt"}``, each prompt its own, never all in memory."""
    return write_prompts_jsonl(path, (prompt_text(i) for i in range(rows)))


# --------------------------------------------------------------------------- contenders


@dataclass(frozen=True)
class Outcome:
    seconds: float
    ok: int
    peak_rss_mb: float | None = None
    cpu_s: float | None = None  # user + system time of the contender's process


def script(base_url: str, inp: Path, out: Path, poll: float) -> int:
    """The hand-written contender: one batch of every row, poll, results, Parquet."""

    async def main() -> int:
        with inp.open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        requests = [
            {
                "custom_id": row["id"],
                "params": {
                    "model": MODEL,
                    "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": row["prompt"]}],
                },
            }
            for row in rows
        ]
        body = json.dumps({"requests": requests}).encode()
        del requests
        headers = {
            "x-api-key": API_KEY,
            "anthropic-version": API_VERSION,
            "content-type": "application/json",
        }
        async with httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=SCRIPT_TIMEOUT_S
        ) as client:
            response = await client.post("/v1/messages/batches", content=body)
            response.raise_for_status()
            batch = response.json()
            while batch["processing_status"] != "ended":
                await asyncio.sleep(poll)
                response = await client.get(f"/v1/messages/batches/{batch['id']}")
                response.raise_for_status()
                batch = response.json()
            results: dict[str, dict[str, Any]] = {}
            async with client.stream("GET", f"/v1/messages/batches/{batch['id']}/results") as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if line:
                        record = json.loads(line)
                        results[record["custom_id"]] = record["result"]
        columns: dict[str, list[Any]] = {
            name: []
            for name in ("id", "status", "text", "stop_reason", "input_tokens", "output_tokens")
        }
        for row in rows:
            result = results.get(row["id"], {})
            message = result.get("message") or {}
            usage = message.get("usage") or {}
            columns["id"].append(row["id"])
            columns["status"].append("ok" if result.get("type") == "succeeded" else "error")
            columns["text"].append("".join(b.get("text", "") for b in message.get("content") or []))
            columns["stop_reason"].append(message.get("stop_reason"))
            columns["input_tokens"].append(usage.get("input_tokens"))
            columns["output_tokens"].append(usage.get("output_tokens"))
        pq.write_table(pa.table(columns), out)
        return sum(1 for s in columns["status"] if s == "ok")

    return asyncio.run(main())


def batchrun_command(inp: Path, out: Path, base_url: str, poll: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "batchrun",
        "run",
        str(inp),
        "-o",
        str(out),
        "--via",
        "batches",
        "--model",
        MODEL,
        "--max-tokens",
        str(MAX_TOKENS),
        "--base-url",
        base_url,
        "--poll-interval",
        str(poll),
        "--overwrite",
        "-q",
    ]


def script_command(inp: Path, out: Path, base_url: str, poll: float) -> list[str]:
    here = str(Path(__file__).resolve())
    return [sys.executable, here, "--script", str(inp), str(out), base_url, str(poll)]


def timed_child(
    name: str, command: list[str], out: Path, rows: int, cwd: Path | None = None
) -> Outcome:
    """``command`` as a child process (in ``cwd``: ``python -m batchrun`` there runs that
    checkout's batchrun), timed from start to exit; its peak RSS read from the kernel as it
    is reaped; its output checked: every row there, and ok."""
    env = {**os.environ, "ANTHROPIC_API_KEY": API_KEY}
    env.pop("ANTHROPIC_AUTH_TOKEN", None)
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    proc.stderr.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise BenchError(f"{name} exited {proc.returncode}:\n{stderr.decode()[-3000:]}")
    table = pq.read_table(out, columns=["id", "status"])
    ok = table.column("status").to_pylist().count("ok")
    if table.num_rows != rows or ok != rows:
        raise BenchError(f"{name}: {ok:,} of {rows:,} rows ok ({table.num_rows:,} rows)")
    cpu = usage.ru_utime + usage.ru_stime
    return Outcome(seconds, ok, usage.ru_maxrss / 1024.0, cpu)  # ru_maxrss is in KiB on Linux


# --------------------------------------------------------------------------- servers


def stand_in_process() -> SimulatorProcess:
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", str(PROCESSING_S)]
    return SimulatorProcess(command=command)


def simulator_process() -> SimulatorProcess:
    return SimulatorProcess(extra=("--batch-processing-s", str(PROCESSING_S)))


SERVERS: dict[str, Callable[[], SimulatorProcess]] = {
    "stand-in": stand_in_process,
    "simulator": simulator_process,
}


# --------------------------------------------------------------------------- main


def compare(
    server: str,
    inp: Path,
    workdir: Path,
    rows: int,
    poll: float,
    repeats: int,
    before: Path | None = None,
) -> tuple[float, float, float]:
    """(script rows/s, batchrun rows/s, batchrun peak RSS MB), medians over ``repeats``;
    with ``before``, that checkout's batchrun runs too (shown, not judged)."""
    contenders: list[str] = ["script", "batchrun", *(["before"] if before is not None else [])]
    outcomes: dict[str, list[Outcome]] = {name: [] for name in contenders}
    with SERVERS[server]() as process:
        for round_number in range(repeats):
            for contender in rotated(contenders, round_number):
                out = workdir / f"{server}-{contender}-{round_number}.parquet"
                if contender == "script":
                    command = script_command(inp, out, process.base_url, poll)
                else:
                    command = batchrun_command(inp, out, process.base_url, poll)
                cwd = before if contender == "before" else None
                outcomes[contender].append(timed_child(contender, command, out, rows, cwd))
                if not process.alive():
                    raise BenchError(f"the {server} server died:\n{process.stderr_text()}")
    table: list[list[Any]] = []
    for name in contenders:
        got = outcomes[name]
        table.append(
            [
                name if name != "before" else f"batchrun in {before}",
                rows,
                median([o.seconds for o in got]),
                median([rows / o.seconds for o in got]),
                median([o.cpu_s or 0.0 for o in got]),
                median([o.peak_rss_mb or 0.0 for o in got]),
            ]
        )
    print_table(
        ["contender", "rows", "wall s (median)", "rows/s (median)", "CPU s", "peak RSS MB"], table
    )
    script_rate, script_cpu = table[0][3], table[0][4]
    batchrun_rate, batchrun_cpu, rss = table[1][3], table[1][4], table[1][5]
    # On a busy machine wall time follows the processor time each contender gets: this
    # ratio says how much of the gap is work (informational).
    if batchrun_cpu:
        print(f"  [info] script / batchrun CPU seconds: {script_cpu / batchrun_cpu:.2f}x")
    return script_rate, batchrun_rate, rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=float, metavar="PROCESSING_S", help=argparse.SUPPRESS)
    parser.add_argument("--script", nargs=4, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between polls")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--server", choices=(*SERVERS, "both"), default="stand-in")
    parser.add_argument("--quick", action="store_true", help="2,000 rows; targets not judged")
    parser.add_argument(
        "--before",
        type=Path,
        metavar="CHECKOUT",
        help="also run the batchrun of another checkout (e.g. a git worktree of main), shown",
    )
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0
    if args.script is not None:
        inp, out, base_url, poll = args.script
        script(base_url, Path(inp), Path(out), float(poll))
        return 0
    rows = 2_000 if args.quick else args.rows
    servers = list(SERVERS) if args.server == "both" else [args.server]
    print(versions_banner())
    passed = True
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="bench-batches-") as tmp:
        inp = write_rows(Path(tmp) / "in.jsonl", rows)
        for server in servers:
            print(f"\n{rows:,} rows via batches, {server} server, batches end in {PROCESSING_S} s")
            try:
                script_rate, batchrun_rate, rss = compare(
                    server, inp, Path(tmp), rows, args.poll, args.repeats, args.before
                )
            except BenchError as exc:
                print(f"BENCHMARK BROKEN: {exc}", file=sys.stderr)
                return 2
            judged = server == "stand-in" and not args.quick
            ratio = Target("batchrun / script rows/s", batchrun_rate / script_rate, RATIO_TARGET)
            print(ratio.line(informational=not judged))
            rss_ok = rss <= RSS_TARGET_MB
            verdict = "info" if not judged else ("PASS" if rss_ok else "FAIL")
            print(f"  [{verdict}] batchrun peak RSS: {rss:,.0f} MB (target <= {RSS_TARGET_MB:g})")
            if judged:
                passed = passed and ratio.passed and rss_ok
    if args.quick:
        print("quick run: targets not judged")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
