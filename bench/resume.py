"""How fast a resumed run starts sending: a 1,000,000-row output with 1,000 new input rows.

    python bench/resume.py [--rows 1000000] [--new 1000]

Builds an input of ``rows + new`` JSONL rows and an output that already answers the first
``rows`` (made directly with pyarrow: answering a million requests would take an hour), then
times ``batchrun run`` (a subprocess) from its start until the simulator receives the first
request, twice:

- fast path: the state file an earlier run leaves says the job and the input's first bytes
  are unchanged, so answered rows are skipped unparsed;
- checked path: no state file, so every answered row's request is rebuilt and its hash
  compared before anything is sent (what happens after a job or input edit).

Both runs then finish the new rows; the output must hold every id once. Prints seconds and
the ratio; the issue's target is "within seconds, not minutes" for the fast path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _harness import API_KEY, MODEL, format_table, versions_banner

from batchrun.rows.request import RequestDefaults, prepare_request
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.columns import blank_row
from batchrun.store.resume import RunState, job_fingerprint, stamp_input, state_path, write_state
from batchrun.store.sink import output_schema

MAX_TOKENS = 16
TARGET_S = 10.0


def row(i: int) -> dict[str, str]:
    return {
        "id": f"r{i:07d}",
        "prompt": f"Review {i}: the product was fine; it came in {i % 9} days.",
    }


def build(folder: Path, rows: int, new: int) -> tuple[Path, Path]:
    """The input (rows + new) and an output answering the first ``rows``, with its state."""
    inp, out = folder / "in.jsonl", folder / "out.parquet"
    defaults = RequestDefaults(model=MODEL, max_tokens=MAX_TOKENS)
    with inp.open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row(i)) + "\n" for i in range(rows))
    schema = output_schema()
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for start in range(0, rows, 100_000):
            batch = []
            for i in range(start, min(start + 100_000, rows)):
                record = blank_row(row(i)["id"])
                prepared = prepare_request({"prompt": row(i)["prompt"]}, defaults)
                record.update(
                    status="ok",
                    text="answer",
                    input_tokens=20,
                    output_tokens=5,
                    attempts=1,
                    http_status=200,
                    request_hash=prepared.hash,
                )
                batch.append(record)
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    write_state(out, RunState(job_fingerprint(defaults), stamp_input(inp)))
    with inp.open("a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row(i)) + "\n" for i in range(rows, rows + new))
    return inp, out


def time_to_first_request(inp: Path, out: Path, sim: SimulatorThread) -> tuple[float, float]:
    """Seconds from process start to the first request, and to the end of the run."""
    before = sim.stats.requests
    env = {**os.environ, "ANTHROPIC_API_KEY": API_KEY}
    cmd = [
        sys.executable,
        "-m",
        "batchrun",
        "run",
        str(inp),
        "-o",
        str(out),
        "--model",
        MODEL,
        "--max-tokens",
        str(MAX_TOKENS),
        "--base-url",
        sim.base_url,
        "-c",
        "32",
        "-q",
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    first = None
    while proc.poll() is None:
        if first is None and sim.stats.requests > before:
            first = time.perf_counter() - started
        time.sleep(0.002)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"batchrun failed ({proc.returncode}):\n{err}")
    total = time.perf_counter() - started
    return (first if first is not None else total), total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=1_000)
    args = parser.parse_args()
    print(versions_banner())
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="batchrun-resume-") as tmp,
        SimulatorThread(SimulatorConfig()) as sim,
    ):
        folder = Path(tmp)
        print(f"building {args.rows:,} answered rows + {args.new:,} new ...", flush=True)
        t = time.perf_counter()
        inp, out = build(folder, args.rows, args.new)
        print(f"  built in {time.perf_counter() - t:.1f} s", flush=True)
        snapshot = out.read_bytes()
        state = state_path(out).read_bytes()

        for label, keep_state in (("fast path (state file)", True), ("checked path", False)):
            out.write_bytes(snapshot)
            if keep_state:
                state_path(out).write_bytes(state)
            else:
                state_path(out).unlink(missing_ok=True)
            first, total = time_to_first_request(inp, out, sim)
            ids = pq.read_table(out, columns=["id"]).column("id")
            if len(ids) != args.rows + args.new or len(set(ids.to_pylist())) != len(ids):
                raise SystemExit(f"{label}: the output does not hold every id exactly once")
            results.append((label, first, total))
    print(
        format_table(
            ["resume of", "first request after (s)", "whole run (s)"],
            [(label, f"{first:.2f}", f"{total:.2f}") for label, first, total in results],
        )
    )
    fast = results[0][1]
    ratio = results[1][1] / fast if fast else float("inf")
    verdict = "PASS" if fast <= TARGET_S else "FAIL"
    print(
        f"fast path starts {ratio:.1f}x sooner than the checked path; "
        f"target: first request within {TARGET_S:g} s for {args.rows:,} rows: {verdict}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
