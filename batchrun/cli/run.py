"""``batchrun run SOURCE``: send every row, write one output row per input row."""

from __future__ import annotations

import sys
from typing import Any

import click

from batchrun.cli.options import (
    ENGINE_OPTIONS,
    SCALE_OUT,
    SOURCE,
    fail,
    kept_rows,
    load,
    precedence_epilog,
    setting_options,
)


@click.command("run", epilog=precedence_epilog("run"))
@click.argument("source", type=SOURCE)
@setting_options("run", {SCALE_OUT: ENGINE_OPTIONS})
def run_cmd(source: str, engine: str, address: str | None, **flags: Any) -> None:
    """Run SOURCE and write one output row per input row, in input order.

    \b
    Examples:
      batchrun run jobs/label_sentiment.toml --simulate
      batchrun run reviews.jsonl -o out/labels.parquet --model claude-haiku-4-5 \\
          --max-tokens 5 --system "Answer positive, negative or neutral." -c 64
      batchrun run jobs/label_sentiment.toml --simulate --json -q | jq .cost_usd
      batchrun run jobs/label_sentiment.toml --engine ray --address ray://head:10001
    """
    # Ctrl-C before the run starts (here, or loading the config) is the group's: one line,
    # exit 130 (``cli.root``).
    from batchrun.core.errors import BatchrunError
    from batchrun.public.run import run
    from batchrun.render.summary import failure_dict, format_summary, summary_dict
    from batchrun.runs.interrupt import StoppedBySignal

    if address is not None and engine != "ray":
        raise click.UsageError("--address is for --engine ray")
    config = load(source, flags)
    if engine == "ray" and (config.run.limit is not None or config.run.sample is not None):
        raise click.UsageError("--limit and --sample run a trial here, not with --engine ray")
    if engine == "ray" and config.engine.samples > 1:
        raise click.UsageError("--samples gathers a row's samples here, not with --engine ray")
    # Where this run's journal is: a shard's own output (``shards.run``), or the output.
    mine = config
    if config.shard is not None:
        from batchrun.shards.run import shard_config

        mine = shard_config(config, config.shard)
    try:
        if engine == "ray":
            from batchrun.ray import run_on_ray

            def tell(message: str) -> None:
                if not config.run.quiet:
                    click.echo(message, err=True)

            summary = run_on_ray(source, flags, address=address, notify=tell)
        else:
            summary = run(config).summary
    except KeyboardInterrupt as exc:
        what = (
            f"stopped by {exc.signal_name}" if isinstance(exc, StoppedBySignal) else "interrupted"
        )
        if config.run.json_summary:
            _print_json(failure_dict(config, what, 130))
        click.echo(f"batchrun: {kept_rows(mine, stopped=what) or what}", err=True)
        sys.exit(130)
    except BatchrunError as exc:
        if config.run.json_summary:
            _print_json(failure_dict(config, str(exc), 1))
        fail(exc, mine)
    if config.run.json_summary:
        _print_json(summary_dict(summary, config))
    # With --json the person's summary is a courtesy on stderr, which --quiet silences; so
    # does it for a shard, one of many runs whose summaries nobody reads one by one (merge
    # says what the job's output holds). What stopped a run is still said below.
    if not (config.run.quiet and (config.run.json_summary or config.shard is not None)):
        click.echo(format_summary(summary, config), err=True)
    if summary.interrupted is not None:
        what = f"stopped by {summary.interrupted}"
        click.echo(f"batchrun: {kept_rows(mine, stopped=what) or what}", err=True)
    if summary.batches_running:
        click.echo(
            f"batchrun: {len(summary.batches_running)} batch(es) keep running on the API "
            f"({', '.join(summary.batches_running[:5])}). Re-run the same command to collect "
            "their results; `batchrun batches list` shows them, `batchrun batches cancel` "
            "stops them.",
            err=True,
        )
    if summary.budget_stop is not None and summary.final is None:
        from batchrun.render.summary import budget_advice

        what = f"stopped by the budget (--max-cost {summary.max_cost:g}): {summary.budget_stop}"
        # A model without a price stops every re-run at the same row: say to fix it first.
        # Otherwise the cap is the job's: only a larger one lets a re-run go on.
        advice = budget_advice(summary, details=False)
        then = (
            "Fix that, then re-run the same command to resume."
            if advice is None
            else f"{summary.rows_left:,} rows are left: {advice}."
        )
        click.echo(f"batchrun: {kept_rows(mine, stopped=what, then=then) or what}", err=True)
    sys.exit(summary.exit_code)


def _print_json(value: dict[str, Any]) -> None:
    """One JSON object on one line of stdout, for scripts (``--json``)."""
    import json

    click.echo(json.dumps(value))
