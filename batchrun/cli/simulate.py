"""``batchrun simulate``: a stand-in Messages API on 127.0.0.1 for demos, tests and benchmarks."""

from __future__ import annotations

from typing import Any

import click


@click.command("simulate")
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
@click.option(
    "--batch-cancel-s",
    type=click.FloatRange(0, 86400),
    default=1.0,
    show_default=True,
    help="Seconds a cancelled Message Batch stays canceling (its requests in progress finish).",
)
@click.option(
    "--batch-queue-limit",
    type=click.IntRange(min=1),
    default=None,
    help="Requests queued over all unended Message Batches; a create past it gets a 429 "
    "rate_limit_error with retry-after, as a full organisation queue does [default: no limit].",
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
    batch_cancel_s: float,
    batch_queue_limit: int | None,
) -> None:
    """Serve a stand-in Messages API on 127.0.0.1 for demos, tests and benchmarks.

    Replies are deterministic functions of the request; usage follows max_tokens.
    Point a run at it with --base-url http://127.0.0.1:PORT and any API key.
    With --rpm/--itpm/--otpm it enforces those limits like the API: continuously
    refilled buckets, anthropic-ratelimit-* headers, 429 with retry-after when short.
    It also serves the Message Batches API: batches end --batch-processing-s after
    creation, with seeded errored and expired requests at the --batch-*-rate fractions;
    --batch-queue-limit caps the requests queued over all batches, as a tier's queue does.
    """
    import asyncio

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
            batch_cancel_s=batch_cancel_s,
            batch_queue_limit=batch_queue_limit,
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
