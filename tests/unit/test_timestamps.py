"""The one RFC 3339 reader and writer (core.timestamps)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from batchrun.core.timestamps import format_rfc3339, parse_rfc3339, parse_rfc3339_or_none


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-08-21T12:40:59Z", datetime(2025, 8, 21, 12, 40, 59, tzinfo=timezone.utc)),
        ("2025-08-21T12:40:59z", datetime(2025, 8, 21, 12, 40, 59, tzinfo=timezone.utc)),
        (
            "2024-08-20T18:37:24.100435Z",
            datetime(2024, 8, 20, 18, 37, 24, 100435, tzinfo=timezone.utc),
        ),
        (
            "2025-08-21T14:40:59+02:00",
            datetime(2025, 8, 21, 14, 40, 59, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("2025-08-21T12:40:59", datetime(2025, 8, 21, 12, 40, 59, tzinfo=timezone.utc)),
        (" 2025-08-21T12:40:59Z\n", datetime(2025, 8, 21, 12, 40, 59, tzinfo=timezone.utc)),
    ],
)
def test_parse_gives_aware_datetimes(text: str, expected: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == expected and parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["", "soon", "2025-13-01T00:00:00Z", "12:40:59Z"])
def test_bad_text_raises_or_gives_none(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)
    assert parse_rfc3339_or_none(text) is None


def test_none_gives_none() -> None:
    assert parse_rfc3339_or_none(None) is None


def test_format_round_trips_at_millisecond_precision() -> None:
    moment = datetime(2025, 8, 21, 14, 40, 59, 123456, tzinfo=timezone(timedelta(hours=2)))
    text = format_rfc3339(moment)
    assert text == "2025-08-21T12:40:59.123Z"
    assert parse_rfc3339(text) == moment.replace(microsecond=123000)
