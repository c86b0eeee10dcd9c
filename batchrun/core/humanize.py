"""How amounts read to people: dollars and durations, the same in every text batchrun writes."""

from __future__ import annotations

from decimal import Decimal


def money(amount: float | Decimal | None) -> str:
    """Dollars with enough decimals to show small per-row costs."""
    if amount is None:
        return "unknown"
    value = float(amount)
    if value == 0:
        return "$0.00"
    if abs(value) < 0.01:
        return f"${value:.6f}"
    if abs(value) < 100:
        return f"${value:,.4f}"
    return f"${value:,.2f}"


def duration_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:,.0f} ms" if ms < 10_000 else f"{ms / 1000:,.1f} s"


def duration_s(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 86_400:,.1f} days"
