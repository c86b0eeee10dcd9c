"""``batchrun cache info|prune DIR``: the answer cache that ``run --answer-cache DIR`` fills."""

from __future__ import annotations

import os
import re
from typing import Any

import click

from batchrun.cli.options import fail

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$", re.IGNORECASE)
_BYTES = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


class Duration(click.ParamType[float]):
    """``90s``, ``45m``, ``6h``, ``30d``, ``2w`` as seconds."""

    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        match = _DURATION.match(str(value))
        if match is None:
            self.fail(
                f"{value!r} is not a duration: a number and s, m, h, d or w (30d)", param, ctx
            )
        return float(match.group(1)) * _SECONDS[match.group(2)]


class Size(click.ParamType[int]):
    """``500MB``, ``10GiB``, ``2000000`` (bytes) as bytes."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = _SIZE.match(str(value))
        if match is None:
            self.fail(f"{value!r} is not a size: a number and B, KB, MB, GB or GiB...", param, ctx)
        return int(float(match.group(1)) * _BYTES[(match.group(2) or "b").lower()])


@click.group("cache")
def cache_group() -> None:
    """The answer cache of run --answer-cache DIR (a folder, or an s3:// or gs:// prefix)."""


@cache_group.command("info")
@click.argument("location", metavar="DIR")
def cache_info_cmd(location: str) -> None:
    """How many answers DIR holds, their size, the oldest and the newest."""
    from batchrun.core.errors import BatchrunError
    from batchrun.render.answer_cache import format_cache_info

    try:
        info = _cache(location).info()
    except BatchrunError as exc:
        fail(exc, None)
    click.echo(format_cache_info(info))


@cache_group.command("prune")
@click.argument("location", metavar="DIR")
@click.option(
    "--older-than",
    type=Duration(),
    help="Delete the answers stored longer ago than this (30d, 12h, 90m).",
)
@click.option(
    "--max-size",
    type=Size(),
    help="Then delete the oldest answers until the rest take at most this (500MB, 10GiB).",
)
def cache_prune_cmd(location: str, older_than: float | None, max_size: int | None) -> None:
    """Delete answers from DIR by age (--older-than) or total size (--max-size)."""
    from batchrun.core.errors import BatchrunError
    from batchrun.render.answer_cache import format_pruned

    if older_than is None and max_size is None:
        raise click.UsageError("say what to prune: --older-than 30d, --max-size 10GB, or both")
    try:
        cache = _cache(location)
        deleted, freed = cache.prune(older_than=older_than, max_bytes=max_size)
        left = cache.info()
    except BatchrunError as exc:
        fail(exc, None)
    click.echo(format_pruned(cache.shown, deleted, freed, left))


def _cache(location: str) -> Any:
    from batchrun.core.locations import StorageSettings
    from batchrun.remote.answer_cache import AnswerCache

    # The object stores' endpoints, from the variables the AWS and Google tools read.
    return AnswerCache(location, StorageSettings.from_environ(os.environ))
