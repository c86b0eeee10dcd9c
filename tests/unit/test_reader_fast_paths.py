"""A row's id is read as it was before the shortcut for the usual (ASCII text) id."""

from __future__ import annotations

from typing import Any

from batchrun.core.errors import Problem
from batchrun.rows.checks import describe, lone_surrogate, surrogate_reason
from batchrun.rows.raw import json_kind
from batchrun.rows.reader import _row_id


def _row_id_as_before(value: Any, index: int) -> tuple[str, Problem | None]:
    default = f"row-{index}"
    if value is None or value == "":
        return default, None
    if isinstance(value, str):
        at = lone_surrogate(value)
        if at is None:
            return value, None
        reason = surrogate_reason("", f"\\u{ord(value[at]):04x}")
        return default, Problem("id", f"{describe(value)} {reason}")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    return default, Problem("id", f"must be a string or an integer, not {json_kind(value)}")


class _Text(str):
    pass


def test_ids_are_read_as_before() -> None:
    values: list[Any] = [
        None,
        "",
        "r1",
        " ",
        "é-42",
        "half \ud83d",
        _Text("sub"),
        _Text(""),
        0,
        -7,
        10**30,
        True,
        1.5,
        [1],
        {"a": 1},
    ]
    for index, value in enumerate(values):
        ours = _row_id(value, index)
        assert ours == _row_id_as_before(value, index), value
        assert type(ours[0]) is type(_row_id_as_before(value, index)[0])
