"""Kill a Ray pipeline mid-way, run it again: the second run sends only the missing rows.

Runs inside the test's network namespace (tests/support/ray_netns.py), with the simulator on this
namespace's loopback. Each driver runs in a PID namespace of its own (``unshare -p``), so
SIGKILL to it takes every Ray process it started with it, at once: like a machine lost.
Prints one JSON line: the rows committed when the first driver died, the requests the second
run sent, and the second run's report.

    python kill_rerun.py WORK_DIR ROWS
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from batchrun.simulator import SimulatorConfig, SimulatorThread

sys.path.insert(0, str(Path(__file__).parents[2]))  # tests/: support.ray_netns
from support.ray_netns import PID_NAMESPACE, die_with_parent
from support.runs import settled

HERE = Path(__file__).parent
DRIVER = HERE / "stage_driver.py"
TEST_KEY = "sk-ant-test-0123456789abcdef"
PARTS_BEFORE_KILL = 3


def driver(base_url: str, parts: Path, report: Path, rows: int) -> subprocess.Popen[bytes]:
    cmd = [*PID_NAMESPACE, sys.executable, str(DRIVER)]
    cmd += [base_url, str(parts), str(report), str(rows)]
    env = {**os.environ, "ANTHROPIC_API_KEY": TEST_KEY}
    log = (report.parent / (report.name + ".log")).open("wb")
    return subprocess.Popen(
        cmd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=report.parent,
        preexec_fn=die_with_parent,
    )


def committed_ids(parts: Path) -> set[str]:
    ids: set[str] = set()
    for path in parts.glob("*/*.parquet"):
        if not path.name.startswith("."):
            ids.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return ids


def namespace_init(unshare: subprocess.Popen[bytes]) -> int:
    """The driver: the child ``unshare --fork`` started (PID 1 of the new namespace)."""
    while True:
        children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)


def main() -> None:
    work, rows = Path(sys.argv[1]), int(sys.argv[2])
    parts = work / "parts"
    # Latency enough that the first run is still going when the first parts are committed.
    with SimulatorThread(SimulatorConfig(latency_mean=0.05, latency_jitter=0.02)) as sim:
        first = driver(sim.base_url, parts, work / "first.json", rows)
        init = namespace_init(first)
        while len(list(parts.glob("*/*.parquet"))) < PARTS_BEFORE_KILL:
            if first.poll() is not None:
                raise SystemExit(f"the first driver ended before it was killed: {first.returncode}")
            time.sleep(0.05)
        os.kill(init, signal.SIGKILL)
        first.wait()  # unshare returns once every process of the namespace is gone
        before, _ = settled(sim, every=1.0)
        kept = committed_ids(parts)
        second = driver(sim.base_url, parts, work / "second.json", rows)
        second.wait()
        after, _ = settled(sim, every=1.0)
    report = json.loads((work / "second.json").read_text()) if second.returncode == 0 else None
    print(
        json.dumps(
            {
                "first_requests": before,
                "committed": len(kept),
                "second_requests": after - before,
                "second_exit": second.returncode,
                "report": report,
            }
        )
    )


if __name__ == "__main__":
    main()
