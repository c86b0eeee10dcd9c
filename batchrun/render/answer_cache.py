"""The text of ``batchrun cache info|prune``: an answer cache's size and age, what a prune did."""

from __future__ import annotations

from datetime import datetime

from batchrun.remote.answer_cache import CacheInfo


def amount_of_bytes(size: int) -> str:
    """1536 -> "1.5 KiB"."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size:,} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _moment(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_cache_info(info: CacheInfo) -> str:
    return "\n".join(
        (
            f"answer cache {info.location}",
            f"  entries  {info.entries:,}",
            f"  size     {amount_of_bytes(info.bytes)}",
            f"  oldest   {_moment(info.oldest)}",
            f"  newest   {_moment(info.newest)}",
        )
    )


def format_pruned(location: str, deleted: int, freed: int, left: CacheInfo) -> str:
    return (
        f"answer cache {location}: deleted {deleted:,} entries ({amount_of_bytes(freed)}); "
        f"{left.entries:,} entries ({amount_of_bytes(left.bytes)}) left"
    )
