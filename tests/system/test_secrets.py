"""The API key never appears in outputs, journals, progress lines, messages or tracebacks."""

from __future__ import annotations

import subprocess
import traceback
from pathlib import Path

import pytest
from support import prompts, python_process, write_jsonl
from support.canaries import KEY, everything_written

from batchrun import BatchrunError, load_config, run
from batchrun.simulator import SimulatorConfig, SimulatorThread


def cli(args: list[str], env_key: str = KEY) -> subprocess.CompletedProcess[str]:
    return python_process("-m", "batchrun", *args, env={"ANTHROPIC_API_KEY": env_key})


@pytest.mark.parametrize(
    "sim_config",
    [
        SimulatorConfig(api_key="a-different-key"),  # 401 on every request
        SimulatorConfig(error_rates={"500": 1.0}),  # retries exhausted
        SimulatorConfig(error_rates={"reset": 0.5, "malformed": 0.5}),
        SimulatorConfig(error_rates={"429": 0.5, "529": 0.5}, retry_after=0),
    ],
    ids=["401", "500", "reset-malformed", "429-529"],
)
def test_no_failure_path_shows_the_key(tmp_path: Path, sim_config: SimulatorConfig) -> None:
    rows = [*prompts(6), {"id": "bad", "prompt": "x", "temperature": 9}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out_dir = tmp_path / "out"
    with SimulatorThread(sim_config) as sim:
        proc = cli(
            [
                "run",
                str(inp),
                "-o",
                str(out_dir / "o.parquet"),
                "--base-url",
                sim.base_url,
                "--model",
                "claude-haiku-4-5",
                "--max-tokens",
                "9",
                "--max-retries",
                "1",
                "-c",
                "2",
            ]
        )
        assert proc.returncode in (1, 3), proc.stderr
        assert KEY not in proc.stdout + proc.stderr
        assert KEY.encode() not in everything_written(out_dir)

        # The same failure through the library: the exception and its traceback.
        config = load_config(
            inp,
            {
                "output": str(tmp_path / "lib.parquet"),
                "model": "claude-haiku-4-5",
                "max_tokens": 9,
                "base_url": sim.base_url,
                "quiet": True,
                "max_retries": 0,
                "overwrite": True,
            },
            environ={"ANTHROPIC_API_KEY": KEY},
        )
        assert KEY not in repr(config)
        try:
            run(config)
        except BatchrunError as exc:
            shown = "".join(traceback.format_exception(exc))
            assert KEY not in shown and KEY not in repr(exc)
    for path in tmp_path.glob("lib.parquet*"):  # the output and its journal, if any
        assert KEY.encode() not in path.read_bytes()


def test_a_key_with_illegal_characters_is_refused_without_echoing_it(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    bad = KEY + "\n\tinjected"
    with SimulatorThread() as sim:
        proc = cli(
            [
                "run",
                str(inp),
                "-o",
                str(tmp_path / "o.parquet"),
                "--base-url",
                sim.base_url,
                "--model",
                "m",
                "--max-tokens",
                "5",
            ],
            env_key=bad,
        )
    assert proc.returncode == 1
    assert "ANTHROPIC_API_KEY" in proc.stderr and KEY not in proc.stderr


def test_plain_http_to_a_remote_host_is_refused_before_the_key_travels(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    proc = cli(
        [
            "run",
            str(inp),
            "--base-url",
            "http://api.example.com",
            "--model",
            "m",
            "--max-tokens",
            "5",
        ]
    )
    assert proc.returncode == 1 and "--allow-insecure-http" in proc.stderr
    assert KEY not in proc.stderr


def test_a_refused_base_url_is_printed_without_its_user_password_or_query(
    tmp_path: Path,
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    url = f"http://gateway-user:{KEY}@api.example.com/v1?key={KEY}&user=gateway-user"
    proc = cli(["run", str(inp), "--base-url", url, "--model", "m", "--max-tokens", "5"])
    assert proc.returncode == 1 and "--allow-insecure-http" in proc.stderr
    assert "'http://api.example.com/v1'" in proc.stderr
    assert KEY not in proc.stderr and "gateway-user" not in proc.stderr
