"""RFC 3339 timestamps, read and written in one place: the API's batch times and rate-limit
reset headers, and the ``finished_at`` of journal lines.

Python 3.10's ``datetime.fromisoformat`` refuses a trailing ``Z`` (3.11 takes it), and a
timestamp without an offset is taken as UTC, as the API means it.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """Now, as an aware UTC datetime: the clock the batch lanes plan and journal by."""
    return datetime.now(timezone.utc)


def parse_rfc3339(text: str) -> datetime:
    """``2025-08-21T12:40:59Z`` (or with an offset, or fractions) -> an aware datetime.

    Raises ValueError when ``text`` is not such a timestamp.

    >>> parse_rfc3339("2024-08-20T18:37:24.100435Z").isoformat()
    '2024-08-20T18:37:24.100435+00:00'
    """
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def parse_rfc3339_or_none(text: str | None) -> datetime | None:
    """``parse_rfc3339``, or None for a missing or unreadable value (headers may be odd)."""
    if not text:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


def format_rfc3339(moment: datetime) -> str:
    """An aware datetime as UTC with a ``Z`` and millisecond precision, which pyarrow reads back:
    ``2025-08-21T12:40:59.123Z``."""
    # Spelled out: isoformat() of an aware datetime takes ~3x as long, and every journal
    # line has one.
    t = moment.astimezone(timezone.utc)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 (the quicker)
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.microsecond // 1000,
    )
