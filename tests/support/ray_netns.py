"""Running a test's Ray work in a network namespace of its own.

Ray's processes listen on every interface, whatever node address they are given; a test
must not open ports to the machine's network. ``unshare -n`` gives the script a namespace
with only a loopback (brought up here), so Ray, the simulator and the drivers all live on
that loopback and nothing outside can reach them. Needs root (CI and this machine run tests
as root) or unprivileged user namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).parent / "ray_scripts"
TIMEOUT_S = 600


def netns_available() -> bool:
    """Whether ``unshare -n`` works here (it needs privileges)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, check=False
    )
    return probe.returncode == 0


def run_in_netns(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``args`` run in a fresh network namespace (loopback up), from ``cwd``.

    ``cwd`` should hold no ``batchrun/`` folder: Ray puts the driver's working directory on
    its workers' path, where such a folder would shadow the installed package.
    """
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *args]
    return subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def run_script(name: str, *args: str, cwd: Path) -> dict[str, Any]:
    """Run ``ray_scripts/<name>`` in its own namespace; the JSON its last line prints."""
    done = run_in_netns([sys.executable, str(SCRIPTS / name), *args], cwd)
    assert done.returncode == 0, f"{name} failed ({done.returncode}):\n{done.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# Prefix of a command that must take every process it starts with it when it ends or is
# killed: a PID namespace of its own, whose processes all die with its first one.
PID_NAMESPACE = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"]


def die_with_parent() -> None:
    """A ``preexec_fn``: this child is killed when its parent dies (Linux PR_SET_PDEATHSIG),
    so a test killed by its timeout leaves no Ray processes behind."""
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
