"""``--deadline D``: a duration from the run's start (``90s``, ``45m``, ``6h``, ``1d``) or an
RFC 3339 time, read in one place: the settings check it when the job is loaded, the
``--via auto`` run (``batches.auto``) makes it a moment when it starts.

    >>> from datetime import datetime, timezone
    >>> start = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
    >>> deadline_moment("90s", start).isoformat()
    '2026-12-07T12:01:30+00:00'
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from batchrun.core.timestamps import parse_rfc3339

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])", re.IGNORECASE)

DEADLINE_FORMS = "a duration (90s, 45m, 6h, 1d) or an RFC 3339 time (2026-12-08T09:00:00Z)"


def duration_seconds(text: str) -> float | None:
    """``90s`` -> 90.0; None when ``text`` is not such a duration."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        return None
    return float(found.group(1)) * _UNITS[found.group(2).lower()]


def deadline_moment(text: str, start: datetime) -> datetime:
    """The moment ``text`` names: ``start`` plus a duration, or the time itself (UTC when it
    has no offset). ValueError, saying what a deadline may be, for anything else."""
    seconds = duration_seconds(text)
    if seconds is not None:
        if seconds <= 0:
            raise ValueError(f"a deadline of {text.strip()!r} leaves no time: give more than 0")
        return start + timedelta(seconds=seconds)
    try:
        return parse_rfc3339(text)
    except (ValueError, IndexError):
        raise ValueError(f"{text.strip()!r} is not a deadline: give {DEADLINE_FORMS}") from None
