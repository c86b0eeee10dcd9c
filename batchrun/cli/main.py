"""The command line: parse flags and the job file into a config, call the library, summarise.

Exit codes (DESIGN §2): 0 every row ok; 1 aborted (configuration, authentication, I/O);
2 usage error; 3 finished with some rows in error; 4 stopped by the --max-cost budget (re-run
to resume); 130 stopped by Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from batchrun import __version__
from batchrun.config.load import RunConfig, load_config
from batchrun.core.errors import BatchrunError
from batchrun.drivers.batch_admin import cancel_batches, format_batches, list_batches
from batchrun.drivers.job import run
from batchrun.drivers.summary import RunSummary
from batchrun.drivers.validate import ValidationReport, validate
from batchrun.engine.outcome import LAPSED_REASONS
from batchrun.store.batch_journal import batch_journal_path
from batchrun.store.sink import journal_path

F = TypeVar("F", bound=Callable[..., Any])

PRECEDENCE = (
    "Settings come from, highest first: command-line flags, the environment "
    "(ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN, ANTHROPIC_BASE_URL, BATCHRUN_MODEL, "
    "BATCHRUN_MAX_TOKENS, BATCHRUN_CONCURRENCY, BATCHRUN_MAX_RETRIES, BATCHRUN_TIMEOUT, "
    "BATCHRUN_API_VERSION, BATCHRUN_HTTP_BACKEND, BATCHRUN_RPM, BATCHRUN_ITPM, "
    "BATCHRUN_OTPM, BATCHRUN_MAX_COST, BATCHRUN_VIA), the job file, then defaults."
)


def _concurrency_value(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--concurrency``: a whole number >= 1, or ``auto``."""
    if value is None or value.strip().lower() == "auto":
        return None if value is None else "auto"
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a whole number nor 'auto'") from None
    if number < 1:
        raise click.BadParameter(f"{number} is not >= 1")
    return number


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
        click.option(
            "--json-schema",
            type=click.Path(path_type=Path, dir_okay=False),
            help="Structured output: answers must satisfy this JSON Schema (structured_json).",
        ),
        click.option(
            "--cache-system/--no-cache-system",
            default=None,
            help="Mark the system prompt for prompt caching (cache_control).",
        ),
        click.option(
            "--cache-ttl", type=click.Choice(["5m", "1h"]), help="The system prompt's cache ttl."
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
    metavar="N|auto",
    callback=_concurrency_value,
    help="Requests in flight at once, or 'auto' (from the rate limits and the latency "
    "seen) [default: 16].",
)
@click.option(
    "--rpm",
    type=click.IntRange(min=1),
    help="Requests per minute to stay under [default: the API's, from its headers].",
)
@click.option(
    "--itpm",
    type=click.IntRange(min=1),
    help="Input tokens per minute to stay under (cache reads do not count).",
)
@click.option(
    "--otpm",
    type=click.IntRange(min=1),
    help="Output tokens per minute to stay under (max_tokens is reserved up front).",
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
@click.option(
    "--grace",
    type=click.FloatRange(min=0, min_open=True),
    help="After Ctrl-C/SIGTERM, seconds in-flight requests may take [default: 30].",
)
@click.option(
    "--max-cost",
    type=click.FloatRange(min=0),
    metavar="USD",
    help="Budget for this run: stop admitting rows before spending could pass it; finish "
    "what is in flight and exit 4. Re-running resumes (with a fresh budget).",
)
@click.option(
    "--prices",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Price file (TOML) over the packaged table: changes or adds models.",
)
@click.option(
    "--via",
    type=click.Choice(["online", "batches"]),
    help="online: requests one by one; batches: the Message Batches API, half the price, "
    "answers within 24 h [default: online].",
)
@click.option(
    "--batch-max-requests",
    type=click.IntRange(min=1, max=100_000),
    help="Requests per batch [default: 100,000, the API's limit].",
)
@click.option(
    "--batch-max-mb",
    type=click.FloatRange(min=0, min_open=True, max=256),
    help="MB of requests per batch [default: 256, the API's limit].",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between batch status checks at first; grows while nothing changes [default: 10].",
)
@click.option(
    "--resubmit-expired",
    is_flag=True,
    default=None,
    help="Send rows a batch left expired or cancelled again, in a new batch.",
)
@click.option(
    "--finish-online",
    is_flag=True,
    default=None,
    help="Send rows a batch left expired or cancelled again, online.",
)
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
    if summary.batches_running:
        click.echo(
            f"batchrun: {len(summary.batches_running)} batch(es) keep running on the API "
            f"({', '.join(summary.batches_running[:5])}). Re-run the same command to collect "
            "their results; `batchrun batches list` shows them, `batchrun batches cancel` "
            "stops them.",
            err=True,
        )
    if summary.budget_stop is not None and summary.final is None:
        click.echo(
            f"batchrun: stopped by the budget (--max-cost {summary.max_cost:g}): "
            f"{summary.budget_stop}. Finished rows are kept in {journal_path(config.output)}; "
            "re-run the same command to resume.",
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
@click.option(
    "--rpm", type=click.IntRange(min=1), help="Requests per minute per model [default: no limit]."
)
@click.option("--itpm", type=click.IntRange(min=1), help="Input tokens per minute per model.")
@click.option("--otpm", type=click.IntRange(min=1), help="Output tokens per minute per model.")
@click.option(
    "--batch-processing-s",
    type=click.FloatRange(0, 86400),
    default=0.5,
    show_default=True,
    help="Seconds a Message Batch takes from creation to its end.",
)
@click.option(
    "--batch-error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of valid batch requests that come back errored (a retryable server error).",
)
@click.option(
    "--batch-expire-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of valid batch requests that come back expired.",
)
def simulate_cmd(
    port: int,
    latency: float,
    jitter: float,
    error_rates: str,
    retry_after: float,
    api_key: str | None,
    seed: int,
    rpm: int | None,
    itpm: int | None,
    otpm: int | None,
    batch_processing_s: float,
    batch_error_rate: float,
    batch_expire_rate: float,
) -> None:
    """Serve a stand-in Messages API on 127.0.0.1 for demos, tests and benchmarks.

    Replies are deterministic functions of the request; usage follows max_tokens.
    Point a run at it with --base-url http://127.0.0.1:PORT and any API key.
    With --rpm/--itpm/--otpm it enforces those limits like the API: continuously
    refilled buckets, anthropic-ratelimit-* headers, 429 with retry-after when short.
    It also serves the Message Batches API: batches end --batch-processing-s after
    creation, with seeded errored and expired requests at the --batch-*-rate fractions.
    """
    from batchrun.simulator import SimulatorConfig, parse_fault_spec, serve

    try:
        rates = parse_fault_spec(error_rates)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--error-rate") from None
    try:
        config = SimulatorConfig(
            latency_mean=latency,
            latency_jitter=jitter,
            error_rates=rates,
            retry_after=retry_after,
            api_key=api_key,
            seed=seed,
            rpm=rpm,
            itpm=itpm,
            otpm=otpm,
            batch_processing_s=batch_processing_s,
            batch_error_rate=batch_error_rate,
            batch_expire_rate=batch_expire_rate,
        )
    except ValueError as exc:  # e.g. batch error and expire rates adding up to more than 1
        raise click.UsageError(str(exc)) from None

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


def _has_rows(journal: Path) -> bool:
    try:
        return journal.stat().st_size > 0
    except OSError:
        return False


def _fail(exc: BatchrunError, config: RunConfig | None) -> NoReturn:
    click.echo(f"batchrun: error: {exc}", err=True)
    if config is not None and _has_rows(journal_path(config.output)):
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
        lines.extend(_resend_hints(summary, config))
    lines.append(
        f"  tokens      in {summary.input_tokens:,}  out {summary.output_tokens:,}"
        + (
            f"  cache write {summary.cache_creation_input_tokens:,}"
            f"  cache read {summary.cache_read_input_tokens:,}"
            if summary.cache_creation_input_tokens or summary.cache_read_input_tokens
            else ""
        )
    )
    lines.append(
        f"  cost        ${summary.cost_usd:,.4f}"
        + (f" ({summary.unpriced:,} answers unpriced)" if summary.unpriced else "")
        + (f" of a ${summary.max_cost:g} budget" if summary.max_cost is not None else "")
    )
    if summary.via == "batches":
        lines.append(
            f"  batches     {summary.batches_created:,} created, "
            f"{summary.batches_collected:,} collected"
            + (f", {len(summary.batches_running):,} running" if summary.batches_running else "")
            + " (Message Batches: billed at the batch price)"
        )
    lines.append(f"  retries     {summary.retries:,}")
    lines.extend(_rate_limit_lines(summary))
    lines.append(f"  elapsed     {summary.elapsed_s:.1f} s ({summary.rows_per_second:,.1f} rows/s)")
    return "\n".join(lines)


def _resend_hints(summary: RunSummary, config: RunConfig) -> list[str]:
    """How to send the rows in error again: a plain re-run leaves them as they are."""
    resendable = summary.error - summary.invalid
    if not resendable or config.retry_errors:
        return []
    hints = [f"--retry-errors sends the {resendable:,} that were sent again"]
    lapsed = sum(summary.error_types.get(kind, 0) for kind in LAPSED_REASONS)
    if lapsed and not (config.resubmit_expired or config.finish_online):
        hints.append(
            f"--resubmit-expired only the {lapsed:,} a batch expired or cancelled "
            "(--finish-online: online)"
        )
    return ["              a re-run leaves these as they are; " + "; ".join(hints)]


def _rate_limit_lines(summary: RunSummary) -> list[str]:
    """Limits in force, 429s and admission waits; auto concurrency. Nothing if none applied."""
    lines = []
    for model, limits in summary.rate_limits.items():
        if limits.any:
            shown = [
                f"{value:,} {unit}"
                for value, unit in zip(limits.values(), ("rpm", "itpm", "otpm"), strict=True)
                if value is not None
            ]
            lines.append(f"  limits      {model}: {', '.join(shown)}")
    if lines or summary.rate_limited_429s or summary.rate_wait_s >= 0.05:
        pauses = f" in {summary.rate_pauses:,} pause(s)" if summary.rate_pauses else ""
        lines.append(
            f"  rate limit  {summary.rate_limited_429s:,} answered 429{pauses}; "
            f"admission held back {summary.rate_wait_s:.1f} s"
        )
    if summary.concurrency_chosen is not None:
        lines.append(f"  concurrency auto: {summary.concurrency_chosen:,} in flight")
    return lines


def format_validation(report: ValidationReport) -> str:
    lines = [str(problem) for problem in report.problems]
    lines += [
        f"{report.source}: {more:,} more row(s) with the same problem: {what}"
        for what, more in report.unlisted()
    ]
    lines.append(
        f"{report.source}: {report.rows:,} rows, {report.rows - report.invalid:,} valid, "
        f"{report.invalid:,} invalid"
    )
    return "\n".join(lines)


def _counts(counter: Any) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counter.most_common())


@cli.group("batches")
def batches_group() -> None:
    """The Message Batches of a job run with --via batches."""


@batches_group.command("list", epilog=PRECEDENCE)
@click.argument("source", type=click.Path(path_type=Path))
@_job_options
def batches_list_cmd(source: Path, **flags: Any) -> None:
    """Show SOURCE's batches: id, state and request counts."""
    _batches(source, flags, cancel=False)


@batches_group.command("cancel", epilog=PRECEDENCE)
@click.argument("source", type=click.Path(path_type=Path))
@_job_options
def batches_cancel_cmd(source: Path, **flags: Any) -> None:
    """Cancel SOURCE's batches still processing (re-running collects what they answered)."""
    _batches(source, flags, cancel=True)


def _batches(source: Path, flags: dict[str, Any], *, cancel: bool) -> None:
    config = _load(source, flags)
    try:
        found = cancel_batches(config) if cancel else list_batches(config)
    except BatchrunError as exc:
        _fail(exc, None)
    click.echo(format_batches(found, str(batch_journal_path(config.output))))


@cli.command("estimate", epilog=PRECEDENCE)
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--exact",
    is_flag=True,
    help="Count input tokens with the API's count_tokens (free; needs a key, or --simulate).",
)
@click.option(
    "--pilot",
    metavar="N|P%",
    help="First run N random rows (or P%) for real into the output (never paid again), "
    "then project the rest with a 10th-90th percentile range.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the pilot rows.")
@click.option(
    "--count-rpm",
    type=click.IntRange(min=1),
    help="count_tokens requests per minute [default: 100, the lowest tier; unpaced with "
    "--simulate].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
def estimate_cmd(
    source: Path,
    exact: bool,
    pilot: str | None,
    seed: int,
    count_rpm: int | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Tokens, cost (online and via Message Batches) and time of SOURCE before running it.

    Takes every flag `run` takes. Offline by default (a local token estimate); --exact
    counts input tokens with the API; --pilot runs a random sample for real and projects.

    \b
    Examples:
      batchrun estimate jobs/estimate_costs.toml
      batchrun estimate jobs/estimate_costs.toml --pilot 10 --simulate
      batchrun estimate reviews.jsonl --model claude-haiku-4-5 --max-tokens 5 --exact --json
    """
    from batchrun.estimation.estimate import estimate
    from batchrun.render.estimate import format_estimate

    config = _load(source, flags)
    try:
        est = estimate(config, exact=exact, pilot=pilot, seed=seed, count_rpm=count_rpm)
    except KeyboardInterrupt:
        click.echo("batchrun: interrupted; pilot rows already answered are kept.", err=True)
        sys.exit(130)
    except BatchrunError as exc:
        _fail(exc, config)
    click.echo(json.dumps(est.to_dict(), indent=2) if as_json else format_estimate(est))


# Same inputs and flags as `run` (a pilot is a run), whatever flags `run` gains.
estimate_cmd.params.extend(p for p in run_cmd.params if p.name != "source")


@cli.command("report")
@click.argument("outputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write a self-contained HTML page with charts to this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--prices",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Price file for answers that had no price when they ran.",
)
def report_cmd(
    outputs: tuple[Path, ...], html_file: Path | None, as_json: bool, prices: Path | None
) -> None:
    """Totals, stop reasons, errors, latency, cost and throughput of one or more outputs.

    An output may be a finished dataset or one still in its journal (a run that stopped).

    \b
    Examples:
      batchrun report out/analysis.parquet
      batchrun report out/a.parquet out/b.parquet --html report.html
    """
    from batchrun.cost.prices import load_prices
    from batchrun.render.report_html import render_html
    from batchrun.reporting.report import format_report, report

    try:
        rep = report(outputs, load_prices(prices))
        if html_file is not None:
            html_file.write_text(render_html(rep), encoding="utf-8")
    except OSError as exc:
        _fail(BatchrunError(f"cannot write {html_file}: {exc.strerror or exc}"), None)
    except BatchrunError as exc:
        _fail(exc, None)
    click.echo(json.dumps(rep.to_dict(), indent=2) if as_json else format_report(rep))
    if html_file is not None:
        click.echo(f"batchrun: wrote {html_file}", err=True)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="batchrun")
