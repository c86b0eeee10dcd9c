"""Every command's ``--help`` runs and lists its flags: pinned before the package was
reorganised, so no flag a user or script passes can disappear in a move. New flags may appear.
Each command lists only the flags it uses: those pinned as absent must stay away.
"""

from __future__ import annotations

import re

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
# What the batch commands use: where the output (and its batch journal) is, and the API.
BATCH_FLAGS = [
    "--allow-insecure-http",
    "--api-version",
    "--base-url",
    "--beta",
    "--http-backend",
    "--max-retries",
    "--output",
    "--simulate",
    "--timeout",
    "-o",
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
    ("cache",): [],  # issue 28: the answer cache
    ("cache", "info"): [],
    ("cache", "prune"): ["--older-than", "--max-size"],
    ("batches", "list"): BATCH_FLAGS,
    ("batches", "cancel"): BATCH_FLAGS,
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
    ("render",): [
        "--row",
        "--full",
        "--model",
        "--max-tokens",
        "--system",
        "--template",
        "--json-schema",
        "--cache",
        "--format",
        "--media-root",
        "--stream",
        "--prices",
    ],
    ("report",): ["--html", "--json", "--prices"],
    ("merge",): ["--csv-delimiter", "--format", "--output", "--quiet", "-o", "-q"],  # issue 16
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


# Flags a command once listed without using them. The batch commands build no request and
# send no row; estimate never writes a final output, waits for Ctrl-C or polls a batch.
REQUEST_ONLY = ["--model", "--max-tokens", "--template", "--system", "--keep-column", "--format"]
SENDING_ONLY = ["--concurrency", "--rpm", "--max-cost", "--retry-errors", "--via", "--quiet"]
RUN_ONLY = [
    "--overwrite",
    "--grace",
    "--resubmit-expired",
    "--finish-online",
    "--batch-max-requests",
    "--batch-max-mb",
    "--poll-interval",
    "--resend-changed",
]
ABSENT: dict[tuple[str, ...], list[str]] = {
    ("batches", "list"): [*REQUEST_ONLY, *SENDING_ONLY, *RUN_ONLY],
    ("batches", "cancel"): [*REQUEST_ONLY, *SENDING_ONLY, *RUN_ONLY],
    ("estimate",): RUN_ONLY,
    ("validate",): [*SENDING_ONLY, *RUN_ONLY, "--simulate"],
    # render builds one request and sends nothing: no output, no API, no key.
    ("render",): [*SENDING_ONLY, *RUN_ONLY, "--simulate", "--output", "--base-url", "--timeout"],
}


def _listed_options(path: tuple[str, ...]) -> set[str]:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    ctx = click.Context(command, info_name="batchrun")
    return {
        flag
        for param in command.get_params(ctx)
        if isinstance(param, click.Option)
        for flag in (*param.opts, *param.secondary_opts)
    }


@pytest.mark.parametrize("path", sorted(ABSENT), ids=" ".join)
def test_a_command_lists_no_flag_it_does_not_use(path: tuple[str, ...]) -> None:
    listed = _listed_options(path)
    assert listed >= set(COMMANDS[path])
    assert not listed & set(ABSENT[path])
    shown = CliRunner().invoke(cli, [*path, "--help"], prog_name="batchrun").output
    options = shown.split("Options:", 1)[1].split("Settings come from", 1)[0]
    for flag in ABSENT[path]:
        assert f"{flag} " not in options and f"{flag}," not in options, (path, flag)


@pytest.mark.parametrize("flag", ["--overwrite", "--grace", "--finish-online", "--poll-interval"])
def test_estimate_refuses_a_flag_only_run_uses(flag: str) -> None:
    result = CliRunner().invoke(cli, ["estimate", "x.jsonl", flag], prog_name="batchrun")
    assert result.exit_code == 2
    assert f"No such option '{flag}'" in result.output


# -- sections, choices, variables -----------------------------------------------------------


def _help(path: tuple[str, ...]) -> str:
    return CliRunner().invoke(cli, [*path, "--help"], prog_name="batchrun").output


def test_run_help_lists_its_flags_in_sections() -> None:
    from batchrun.cli.options import SECTIONS

    shown = _help(("run",))
    starts = [shown.index(f"\n  {title}:") for title in SECTIONS]
    assert starts == sorted(starts)  # every section, in order
    expected = ["--limit", "--model", "--overwrite", "--rpm", "--max-cost", "--engine", "--quiet"]
    for flag, start, end in zip(expected, starts, [*starts[1:], len(shown)], strict=True):
        listed = re.search(rf"\n    (-\w, )?{flag} ", shown)  # where the flag is listed
        assert listed is not None and start < listed.start() < end, flag


def test_every_flag_of_the_table_has_a_section() -> None:
    from batchrun.cli.options import SECTIONS, section_of
    from batchrun.config.settings import SETTINGS

    for setting in SETTINGS:
        if setting.long_flag is not None:
            assert section_of(setting) in SECTIONS, setting.key


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "batchrun")
def test_every_choice_is_listed(path: tuple[str, ...]) -> None:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    shown = _help(path)
    for param in command.params:
        if isinstance(param.type, click.Choice):
            assert "|".join(map(str, param.type.choices)) in shown, (path, param.name)


def test_merge_format_takes_only_a_known_format() -> None:
    shown = _help(("merge",))
    assert "--format [jsonl|json|csv|tsv|parquet]" in shown
    result = CliRunner().invoke(cli, ["merge", "x", "--format", "xml"])
    assert result.exit_code == 2 and "'xml' is not one of" in result.output


def test_a_command_names_only_the_variables_it_reads() -> None:
    listed = _help(("batches", "list")).split("Settings come from", 1)[1]
    for name in ("BATCHRUN_MODEL", "BATCHRUN_CONCURRENCY", "BATCHRUN_MAX_COST", "BATCHRUN_GRACE"):
        assert name not in listed, name
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "BATCHRUN_TIMEOUT"):
        assert name in listed, name
    rendered = _help(("render",)).split("Settings come from", 1)[1]
    assert "ANTHROPIC_API_KEY" not in rendered and "BATCHRUN_MODEL" in rendered
