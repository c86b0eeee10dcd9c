"""What an output on S3 costs against the same job to a local file: peak memory and time.

    python bench/storage.py [--rows 200000] [--concurrency 64]

Starts a real S3 server (``moto_server`` on 127.0.0.1, from the dev extra) and the simulator,
then runs the same job twice as subprocesses (``batchrun run``), once to a local Parquet file
and once to ``s3://`` (local work folder, journal sealed into segments every 10,000 rows, one
final upload), and reads each child's peak RSS from the kernel (``ru_maxrss``). Prints both and
the ratios; issue 15's target is peak RSS to S3 within 1.3x of the local run. The S3 output is
read back: every id once, in order.
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

import pyarrow.parquet as pq
from _harness import API_KEY, MODEL, format_table, versions_banner

from batchrun.simulator import SimulatorThread

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.s3_server
from support.s3_server import MotoServer, aws_environment


def _run(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child, from its own rusage (``wait4``)."""
    started = time.perf_counter()
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{log.read_text()[-2000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(versions_banner())
    with tempfile.TemporaryDirectory() as tmp, MotoServer() as moto, SimulatorThread() as sim:
        folder = Path(tmp)
        inp = folder / "rows.jsonl"
        with inp.open("w", encoding="utf-8") as fh:
            for i in range(args.rows):
                fh.write(json.dumps({"id": f"r{i}", "prompt": f"Row {i}: say a word."}) + "\n")
        aws = aws_environment(moto.endpoint, folder)
        os.environ.update(aws)  # this process reads the output back through the AWS SDK too
        moto.create_bucket("bench")
        env = {**os.environ, **aws, "ANTHROPIC_API_KEY": API_KEY}
        env["XDG_CACHE_HOME"] = str(folder / "cache")
        base = [sys.executable, "-m", "batchrun", "run", str(inp), "--model", MODEL]
        base += ["--max-tokens", "8", "-c", str(args.concurrency), "-q", "--base-url"]
        base += [sim.base_url]
        results = []
        for name, out in (("local", str(folder / "out.parquet")), ("s3", "s3://bench/out.parquet")):
            elapsed, peak = _run([*base, "-o", out], env, folder / f"{name}.log")
            results.append((name, elapsed, peak))
        local_copy = folder / "back.parquet"
        from batchrun.remote.objects import Storage, StorageSettings

        Storage(StorageSettings.from_environ(aws)).download("s3://bench/out.parquet", local_copy)
        ids = pq.read_table(local_copy, columns=["id"]).column("id").to_pylist()
        assert ids == [f"r{i}" for i in range(args.rows)], "the S3 output lost or moved rows"
    (_, local_s, local_mib), (_, s3_s, s3_mib) = results
    print(
        format_table(
            ["output", "wall s", "peak RSS MiB"],
            [[name, f"{s:.1f}", f"{mib:.0f}"] for name, s, mib in results],
        )
    )
    print(
        f"s3 / local: wall {s3_s / local_s:.2f}x, peak RSS {s3_mib / local_mib:.2f}x "
        "(target <= 1.3x)"
    )


if __name__ == "__main__":
    main()
