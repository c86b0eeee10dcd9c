"""Every command's ``--help`` runs and lists its flags: pinned before the package was
reorganised, so no flag a user or script passes can disappear in a move. New flags may appear.
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from batchrun.cli import cli

JOB_FLAGS = [
    "--allow-insecure-http",
    "--base-url",
    "--cache-system",
    "--cache-ttl",
    "--json-schema",
    "--keep-column",
    "--max-tokens",
    "--model",
    "--no-cache-system",
    "--output",
    "--stop-sequence",
    "--system",
    "--temperature",
    "--template",
    "--top-k",
    "--top-p",
    "-o",
]
RUN_FLAGS = [
    *JOB_FLAGS,
    "--api-version",
    "--batch-max-mb",
    "--batch-max-requests",
    "--beta",
    "--concurrency",
    "--finish-online",
    "--grace",
    "--http-backend",
    "--itpm",
    "--max-cost",
    "--max-retries",
    "--no-stream",
    "--otpm",
    "--overwrite",
    "--poll-interval",
    "--prices",
    "--quiet",
    "--resubmit-expired",
    "--retry-errors",
    "--rpm",
    "--simulate",
    "--stream",
    "--timeout",
    "--via",
    "-c",
    "-q",
]
COMMANDS: dict[tuple[str, ...], list[str]] = {
    (): ["--version"],
    ("run",): RUN_FLAGS,
    ("validate",): JOB_FLAGS,
    ("simulate",): [
        "--api-key",
        "--batch-error-rate",
        "--batch-expire-rate",
        "--batch-processing-s",
        "--error-rate",
        "--itpm",
        "--jitter",
        "--latency",
        "--otpm",
        "--port",
        "--retry-after",
        "--rpm",
        "--seed",
    ],
    ("batches",): [],
    ("batches", "list"): JOB_FLAGS,
    ("batches", "cancel"): JOB_FLAGS,
    ("estimate",): [
        "--allow-insecure-http",
        "--base-url",
        "--cache-system",
        "--cache-ttl",
        "--json-schema",
        "--keep-column",
        "--max-tokens",
        "--model",
        "--output",
        "--stop-sequence",
        "--system",
        "--temperature",
        "--template",
        "--top-k",
        "--top-p",
        "-o",
        "--api-version",
        "--beta",
        "--concurrency",
        "--count-rpm",
        "--exact",
        "--http-backend",
        "--itpm",
        "--json",
        "--max-retries",
        "--otpm",
        "--pilot",
        "--prices",
        "--quiet",
        "--retry-errors",
        "--rpm",
        "--seed",
        "--simulate",
        "--timeout",
        "--via",
        "-c",
        "-q",
    ],
    ("report",): ["--html", "--json", "--prices"],
}


def _commands(group: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if isinstance(group, click.Group):
        for name, sub in group.commands.items():
            found += _commands(sub, (*path, name))
    return found


def test_every_command_is_pinned() -> None:
    assert sorted(_commands(cli)) == sorted(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "batchrun")
def test_help_runs_and_lists_the_flags(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="batchrun")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: batchrun {' '.join(path)}".rstrip()), result.output
    for flag in COMMANDS[path]:
        assert flag in result.output, (path, flag)
