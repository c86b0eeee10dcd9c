"""A missing optional extra, from the command line as a real process in which its module cannot
be imported (``sys.modules[name] = None``): one line naming the ``pip install``, nothing
written (from Python: tests/integration/test_extras.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support import TEST_KEY, prompts, python_process, write_jsonl

MODEL = "claude-haiku-4-5"


def cli_without(modules: list[str], args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``batchrun ARGS`` in a process where ``modules`` cannot be imported."""
    blocked = "".join(f"sys.modules[{name!r}] = None; " for name in modules)
    code = f"import sys; {blocked}from batchrun.cli import main; sys.argv[1:] = {args!r}; main()"
    return python_process("-c", code, "batchrun", env={"ANTHROPIC_API_KEY": TEST_KEY}, cwd=cwd)


def job_args(tmp_path: Path) -> list[str]:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.parquet"
    return ["run", str(inp), "-o", str(out), "--model", MODEL, "--max-tokens", "5", "--simulate"]


@pytest.mark.parametrize(
    ("modules", "flags", "line"),
    [
        (
            ["redis"],
            ["--rate-limit-store", "redis://:pw@127.0.0.1:6379/0"],
            "batchrun: error: --rate-limit-store needs the `redis` package, which is not "
            "installed: pip install 'batchrun[redis]'",
        ),
        (
            ["ray"],
            ["--engine", "ray"],
            "batchrun: error: --engine ray needs the `ray` package, which is not installed: "
            "pip install 'batchrun[ray]'",
        ),
    ],
    ids=["redis", "ray"],
)
def test_the_cli_names_the_pip_install_in_one_line_and_writes_nothing(
    tmp_path: Path, modules: list[str], flags: list[str], line: str
) -> None:
    proc = cli_without(modules, [*job_args(tmp_path), *flags], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [line], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no output, no journal
