"""An answer's output row is what it was before the per-row shortcuts: the same counts
from a usage whatever its values' types, the same texts made safe for UTF-8."""

from __future__ import annotations

import itertools
from typing import Any

from batchrun.client.response import put_message_fields
from batchrun.engine.outcome import _safe_text
from batchrun.rows.checks import without_surrogates


def _int_or_none_as_before(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Int(int):
    pass


class _Text(str):
    pass


ODD_COUNTS: list[Any] = [None, 0, 1, 31, 2**63 - 1, -(2**63), True, False, 2.0, "5", _Int(7)]


def test_usage_counts_are_read_as_before_whatever_their_type() -> None:
    for inp, out, written, read in itertools.product(ODD_COUNTS, repeat=4):
        usage = {
            "input_tokens": inp,
            "output_tokens": out,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        }
        row: dict[str, Any] = {}
        put_message_fields(row, {"content": [], "usage": usage}, checked=True)
        assert row["input_tokens"] == _int_or_none_as_before(inp)
        assert type(row["input_tokens"]) is type(_int_or_none_as_before(inp))
        assert row["output_tokens"] == _int_or_none_as_before(out)
        assert row["cache_creation_input_tokens"] == (_int_or_none_as_before(written) or 0)
        assert row["cache_read_input_tokens"] == (_int_or_none_as_before(read) or 0)


def _safe_as_before(row: dict[str, Any]) -> dict[str, Any]:
    for name, value in row.items():
        if isinstance(value, str) and not value.isascii():
            row[name] = without_surrogates(value)
    return row


def test_texts_are_made_safe_as_before() -> None:
    values: list[Any] = [
        None,
        "plain",
        "é 中文",
        "half \ud83d an emoji",
        "\udfff",
        _Text("sub é \ud800"),
        _Text("sub ascii"),
        3,
        2.5,
        True,
        b"bytes \xff",
        ["list \ud83d"],
    ]
    row = {f"c{i}": value for i, value in enumerate(values)}
    ours = _safe_text(dict(row))
    theirs = _safe_as_before(dict(row))
    assert ours == theirs
    assert [type(v) for v in ours.values()] == [type(v) for v in theirs.values()]
    assert ours["c3"] == "half \ufffd an emoji"
