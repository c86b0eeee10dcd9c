"""Run one command against a simulator on this namespace's loopback; report what it saw.

Runs inside the test's network namespace (tests/support/ray_netns.py). ``{base_url}`` in the command
is replaced by the simulator's address. Prints one JSON line: the command's exit code, its
output's tail, and the simulator's request and status counts. The command runs in a PID
namespace of its own: whatever Ray processes it leaves die with it.

    python with_simulator.py SIMULATOR_CONFIG_JSON COMMAND...
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from batchrun.simulator import SimulatorConfig, SimulatorThread

sys.path.insert(0, str(Path(__file__).parents[2]))  # tests/: support.ray_netns
from support.ray_netns import PID_NAMESPACE, die_with_parent

TEST_KEY = "sk-ant-test-0123456789abcdef"


def main() -> None:
    sim_config = SimulatorConfig(**json.loads(sys.argv[1]))
    with SimulatorThread(sim_config) as sim:
        command = [*PID_NAMESPACE] + [a.replace("{base_url}", sim.base_url) for a in sys.argv[2:]]
        env = {**os.environ, "ANTHROPIC_API_KEY": TEST_KEY}
        done = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=die_with_parent,
        )
        stats = sim.stats.snapshot()
    print(
        json.dumps(
            {
                "exit": done.returncode,
                "stdout": done.stdout[-4000:],
                "stderr": done.stderr[-4000:],
                "requests": stats.requests,
                "by_status": {str(k): v for k, v in stats.by_status.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
