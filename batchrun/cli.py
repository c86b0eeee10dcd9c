"""The command line: parse flags and the job file into a config, call the library, summarise.

Exit codes (DESIGN §2): 0 every row ok; 1 aborted (configuration, authentication, I/O);
2 usage error; 3 finished with some rows in error; 130 stopped by Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from . import __version__
from .config import RunConfig, load_config
from .errors import BatchrunError
from .runner import RunSummary, run
from .sink import journal_path
from .validate import ValidationReport, validate

F = TypeVar("F", bound=Callable[..., Any])

PRECEDENCE = (
    "Settings come from, highest first: command-line flags, the environment "
    "(ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN, ANTHROPIC_BASE_URL, BATCHRUN_MODEL, "
    "BATCHRUN_MAX_TOKENS, BATCHRUN_CONCURRENCY, BATCHRUN_MAX_RETRIES, BATCHRUN_TIMEOUT, "
    "BATCHRUN_API_VERSION, BATCHRUN_HTTP_BACKEND), the job file, then defaults."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchrun")
def cli() -> None:
    """Run bulk prompts through the Claude Messages API.

    SOURCE is a TOML job file or a dataset (.jsonl, .parquet, .csv) of prompts.
    """


def _job_options(func: F) -> F:
    """The flags every command that reads a job shares; each is also a job-file key."""
    options = [
        click.option(
            "-o",
            "--output",
            type=click.Path(path_type=Path),
            help="Output dataset (.parquet or .jsonl). Re-running with the same output resumes.",
        ),
        click.option("--model", help="Model for rows that do not name one."),
        click.option("--max-tokens", type=int, help="Output token limit per request."),
        click.option("--system", help="System prompt for every row."),
        click.option(
            "--template",
            help="Builds each prompt from the row's columns, e.g. 'Summarize {title}: {body}'.",
        ),
        click.option("--temperature", type=float, help="Sampling temperature, 0 to 1."),
        click.option("--top-p", type=float, help="Nucleus sampling, 0 to 1."),
        click.option("--top-k", type=int, help="Top-k sampling."),
        click.option(
            "--stop-sequence", "stop_sequences", multiple=True, help="A stop sequence (repeatable)."
        ),
        click.option(
            "--keep-column",
            "keep_columns",
            multiple=True,
            help="Input column to copy to the output (repeatable).",
        ),
        click.option("--base-url", help="API base URL [default: https://api.anthropic.com]."),
        click.option(
            "--allow-insecure-http",
            is_flag=True,
            default=None,
            help="Allow a plain-http base URL that is not on this machine.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.command(epilog=PRECEDENCE)
@click.argument("source", type=click.Path(path_type=Path))
@_job_options
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    help="Requests in flight at once [default: 16].",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    help="Retries per row for retryable failures [default: 8].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds one attempt may take [default: 600].",
)
@click.option("--api-version", help="anthropic-version header [default: 2023-06-01].")
@click.option("--beta", "betas", multiple=True, help="anthropic-beta feature (repeatable).")
@click.option(
    "--http-backend",
    type=click.Choice(["aiohttp", "httpx"]),
    help="HTTP transport [default: aiohttp, which holds up at high concurrency].",
)
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Send with stream: true (automatic above 21,333 max_tokens).",
)
@click.option(
    "--simulate",
    is_flag=True,
    default=None,
    help="Run against the built-in simulator: no key needed, nothing is paid.",
)
@click.option(
    "--retry-errors", is_flag=True, default=None, help="Re-send rows an earlier run left in error."
)
@click.option(
    "--overwrite",
    is_flag=True,
    default=None,
    help="Start afresh: discard the existing output and its journal.",
)
@click.option("--grace", type=click.FloatRange(min=0, min_open=True),
              help="After Ctrl-C/SIGTERM, seconds in-flight requests may take [default: 30].")
@click.option("-q", "--quiet", is_flag=True, default=None, help="No progress display.")
def run_cmd(source: Path, **flags: Any) -> None:
    """Run SOURCE and write one output row per input row, in input order.

    \b
    Examples:
      batchrun run jobs/label_sentiment.toml --simulate
      batchrun run reviews.jsonl -o out/labels.parquet --model claude-haiku-4-5 \\
          --max-tokens 5 --system "Answer positive, negative or neutral." -c 64
    """
    config = _load(source, flags)
    try:
        summary = run(config)
    except KeyboardInterrupt:
        click.echo(
            f"batchrun: interrupted; finished rows are kept. Re-run the same command to "
            f"resume into {config.output}.",
            err=True,
        )
        sys.exit(130)
    except BatchrunError as exc:
        _fail(exc, config)
    click.echo(format_summary(summary, config), err=True)
    if summary.interrupted is not None:
        click.echo(
            f"batchrun: stopped by {summary.interrupted}; finished rows are kept in "
            f"{journal_path(config.output)}. Re-run the same command to resume.",
            err=True,
        )
    sys.exit(summary.exit_code)


run_cmd.name = "run"


@cli.command("validate", epilog=PRECEDENCE)
@click.argument("source", type=click.Path(path_type=Path))
@_job_options
def validate_cmd(source: Path, **flags: Any) -> None:
    """Check every row of SOURCE and the job, send nothing.

    Lists each row that could not be sent with its file, line and field. Exit 0 when
    every row is valid, 3 when some are not, 1 when the input cannot be read at all.
    """
    config = _load(source, flags)
    try:
        report = validate(config)
    except BatchrunError as exc:
        _fail(exc, config)
    click.echo(format_validation(report))
    sys.exit(0 if report.invalid == 0 else 3)


@cli.command("simulate")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port on 127.0.0.1 (0 picks a free one).",
)
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Mean seconds before each reply.",
)
@click.option(
    "--jitter",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Reply latency varies uniformly by up to this many seconds.",
)
@click.option(
    "--error-rate",
    "error_rates",
    default="",
    metavar="SPEC",
    help="Faults by rate, e.g. 429=0.05,529=0.02,500=0.01,reset=0.01 (also 503, "
    "hang, malformed, cut, sse_error).",
)
@click.option(
    "--retry-after",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="retry-after seconds sent with simulated 429s.",
)
@click.option("--api-key", default=None, help="Accept only this key (default: any non-empty key).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for faults.")
def simulate_cmd(
    port: int,
    latency: float,
    jitter: float,
    error_rates: str,
    retry_after: float,
    api_key: str | None,
    seed: int,
) -> None:
    """Serve a stand-in Messages API on 127.0.0.1 for demos, tests and benchmarks.

    Replies are deterministic functions of the request; usage follows max_tokens.
    Point a run at it with --base-url http://127.0.0.1:PORT and any API key.
    """
    from .simulator import SimulatorConfig, parse_fault_spec, serve

    try:
        rates = parse_fault_spec(error_rates)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--error-rate") from None
    config = SimulatorConfig(
        latency_mean=latency,
        latency_jitter=jitter,
        error_rates=rates,
        retry_after=retry_after,
        api_key=api_key,
        seed=seed,
    )

    def ready(url: str) -> None:
        click.echo(f"batchrun simulator listening on {url}", err=True)
        click.echo(url)  # stdout: scripts read the URL from here

    with _suppress_interrupt():
        asyncio.run(serve(config, "127.0.0.1", port, ready))


class _suppress_interrupt:
    """Ctrl-C is how a user stops the simulator: exit quietly, not with a traceback."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is KeyboardInterrupt


def _load(source: Path, flags: dict[str, Any]) -> RunConfig:
    try:
        return load_config(source, flags)
    except BatchrunError as exc:
        _fail(exc, None)


def _fail(exc: BatchrunError, config: RunConfig | None) -> NoReturn:
    click.echo(f"batchrun: error: {exc}", err=True)
    if config is not None and journal_path(config.output).exists():
        click.echo(
            f"batchrun: finished rows are kept in {journal_path(config.output)}; re-run the "
            "same command to resume.",
            err=True,
        )
    sys.exit(1)


def format_summary(summary: RunSummary, config: RunConfig) -> str:
    """The end-of-run summary a person reads."""
    final = summary.final
    lines = [f"batchrun: {config.input} -> {config.output}"]
    if final is not None:
        lines.append(f"  output      {final.rows:,} rows: {final.ok:,} ok, {final.error:,} error")
    lines.append(
        f"  this run    {summary.finished:,} rows: {summary.ok:,} ok, {summary.error:,} error"
        + (f" ({summary.invalid:,} invalid, not sent)" if summary.invalid else "")
        + (f"; {summary.skipped:,} already done" if summary.skipped else "")
    )
    if summary.stop_reasons:
        lines.append("  stop        " + _counts(summary.stop_reasons))
    if summary.error_types:
        lines.append("  errors      " + _counts(summary.error_types))
    lines.append(
        f"  tokens      in {summary.input_tokens:,}  out {summary.output_tokens:,}"
        + (
            f"  cache write {summary.cache_creation_input_tokens:,}"
            f"  cache read {summary.cache_read_input_tokens:,}"
            if summary.cache_creation_input_tokens or summary.cache_read_input_tokens
            else ""
        )
    )
    lines.append(f"  retries     {summary.retries:,}")
    lines.append(f"  elapsed     {summary.elapsed_s:.1f} s ({summary.rows_per_second:,.1f} rows/s)")
    return "\n".join(lines)


def format_validation(report: ValidationReport) -> str:
    lines = [str(problem) for problem in report.problems]
    lines.append(
        f"{report.source}: {report.rows:,} rows, {report.rows - report.invalid:,} valid, "
        f"{report.invalid:,} invalid"
    )
    return "\n".join(lines)


def _counts(counter: Any) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counter.most_common())


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="batchrun")
