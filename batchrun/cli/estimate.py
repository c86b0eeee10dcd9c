"""``batchrun estimate SOURCE``: tokens, cost and time of a job before running it."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from batchrun.cli.options import SOURCE, fail, load, precedence_epilog, setting_options


@click.command("estimate", epilog=precedence_epilog("estimate"))
@click.argument("source", type=SOURCE)
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
@click.option(
    "--count-rpm",
    type=click.IntRange(min=1),
    help="count_tokens requests per minute [default: 100, the lowest tier; unpaced with "
    "--simulate].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
@setting_options("estimate")  # run's flags that bear on the estimate (a pilot is a run)
def estimate_cmd(
    source: str,
    exact: bool,
    pilot: str | None,
    count_rpm: int | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Tokens, cost (online and via Message Batches) and time of SOURCE before running it.

    Takes the flags of `run` that change what it would send, pay or take (a pilot is a
    run). Offline by default (a local token estimate); --exact counts input tokens with the
    API; --pilot runs a random sample for real and projects. Exits 2, before anything is
    sent, when every row would be refused alike (no model, no such template column), and 1
    when no row can be sent.

    \b
    Examples:
      batchrun estimate jobs/estimate_costs.toml
      batchrun estimate jobs/estimate_costs.toml --pilot 10 --simulate
      batchrun estimate reviews.jsonl --model claude-haiku-4-5 --max-tokens 5 --exact --json
    """
    from batchrun.core.errors import BatchrunError
    from batchrun.estimation.passes import estimate
    from batchrun.render.estimate_text import format_estimate

    config = load(source, flags)
    try:
        est = estimate(config, exact=exact, pilot=pilot, seed=config.run.seed, count_rpm=count_rpm)
    except KeyboardInterrupt:
        click.echo("batchrun: interrupted; pilot rows already answered are kept.", err=True)
        sys.exit(130)
    except BatchrunError as exc:
        fail(exc, config)
    click.echo(json.dumps(est.to_dict(), indent=2) if as_json else format_estimate(est))
