"""Journal lines written by orjson (``core.jsoncodec.flat_line``) hold the values the
stdlib's encoder wrote, and whatever orjson would write otherwise is written by the stdlib
exactly as before: bytes for bytes, failures for failures."""

from __future__ import annotations

import enum
import json
import math
import random
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pj
import pytest

from batchrun.core.jsoncodec import compact, flat_line
from batchrun.store.columns import blank_row
from batchrun.store.journal import journal_bytes, journal_line


def _stdlib_line(index: int, row: dict[str, Any], run: str | None = None) -> str:
    """The line as journal_line wrote it before orjson (stdlib encoder, same record)."""
    record: dict[str, Any] = {"_index": index, **({"_run": run} if run else {}), **row}
    finished = record.get("finished_at")
    if isinstance(finished, datetime):
        moment = finished.astimezone(timezone.utc)
        record["finished_at"] = moment.strftime("%Y-%m-%dT%H:%M:%S.") + (
            f"{moment.microsecond // 1000:03d}Z"
        )
    return compact(record) + "\n"


def _floats() -> list[float]:
    rng = random.Random(26)
    fixed = [0.0, -0.0, 1.0, 0.1, 2.05e-05, 1e-7, 1e16, 1e22, 1.5e300, 5e-324, 2**53 + 0.0]
    fixed += [rng.uniform(0, 1) * 10 ** rng.randint(-12, 12) for _ in range(2000)]
    fixed += [rng.randint(0, 10**9) / 10 ** rng.randint(0, 12) for _ in range(2000)]
    return fixed


def _texts() -> list[str]:
    controls = "\n\r\t\b\f\x00\x1f\x7f"
    return ["", "plain", 'quote " and \\ back', controls, "é ü 中文 🙂", "\u2028\u2029"]


def test_a_journal_line_reads_back_as_the_stdlib_line_over_many_rows() -> None:
    finished = datetime(2026, 12, 7, 16, 54, 34, 228_999, tzinfo=timezone.utc)
    texts = _texts()
    for n, cost in enumerate(_floats()):
        row = blank_row(f"r{n}")
        row.update(
            status="ok",
            text=texts[n % len(texts)],
            input_tokens=n * 7919,
            output_tokens=2**63 - 1 if n == 3 else n,
            cost_usd=cost,
            elapsed_ms=cost * 3,
            finished_at=finished,
        )
        line = journal_line(n, row, "run-1")
        assert json.loads(line) == json.loads(_stdlib_line(n, row, "run-1"))
        assert line.endswith("}\n") and line.count("\n") == 1
        assert journal_bytes(n, row, "run-1") == line.encode()
        assert journal_bytes(n, row) == journal_line(n, row).encode()
        assert json.loads(journal_line(n, row)) == json.loads(_stdlib_line(n, row))


def test_pyarrow_reads_the_same_numbers_from_either_line() -> None:
    rows = [{"id": f"r{i}", "cost_usd": f, "input_tokens": i} for i, f in enumerate(_floats())]
    ours = b"".join(journal_bytes(i, row) for i, row in enumerate(rows))
    theirs = "".join(_stdlib_line(i, row) for i, row in enumerate(rows)).encode()
    schema = pa.schema([("_index", pa.int64()), ("cost_usd", pa.float64())])
    options = pj.ParseOptions(explicit_schema=schema)
    read = [pj.read_json(pa.BufferReader(b), parse_options=options) for b in (ours, theirs)]
    assert read[0].select(["_index", "cost_usd"]).equals(read[1].select(["_index", "cost_usd"]))


class _Kind(enum.IntEnum):
    ONE = 1


class _Text(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        math.nan,  # orjson writes null; the stdlib NaN
        math.inf,
        -math.inf,
        2**64,  # beyond orjson's integers
        -(2**63) - 1,
        _Kind.ONE,  # subclasses are the stdlib's to write
        _Text("sub"),
        np.float64(1.5),  # a float subclass
        np.int64(3),
        [1, 2.5, {"a": None}],  # nested values
        {"a": 1},
        (1, 2),
    ],
)
def test_what_orjson_would_not_write_alike_is_written_by_the_stdlib(value: Any) -> None:
    row = {"id": "r1", "value": value}
    assert flat_line({"_index": 1, **row}) is None
    assert _outcome(lambda: journal_line(1, row)) == _outcome(lambda: _stdlib_line(1, row))
    expected = _outcome(lambda: _stdlib_line(1, row).encode())
    assert _outcome(lambda: journal_bytes(1, row)) == expected


def _outcome(make: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", make()
    except Exception as exc:  # the failure, as a caller sees it
        return type(exc).__name__, str(exc)


def test_a_lone_surrogate_fails_as_it_did() -> None:
    row = {"id": "r1", "text": "half \ud83d"}
    assert flat_line({"_index": 1, **row}) is None
    assert journal_line(1, row) == _stdlib_line(1, row)  # a str, as before
    with pytest.raises(UnicodeEncodeError):
        journal_bytes(1, row)  # as journal_line(...).encode() raised


@pytest.mark.parametrize("row", [{1: "a key that is no str"}, {"at": datetime(2026, 1, 1)}])
def test_values_json_cannot_hold_fail_as_they_did(row: dict[Any, Any]) -> None:
    record = {"_index": 1, **row}
    try:
        expected: Any = compact(record) + "\n"
    except TypeError as exc:
        expected = type(exc)
    assert flat_line(record) is None
    if isinstance(expected, str):
        assert journal_line(1, row) == expected
    else:
        with pytest.raises(expected):
            journal_line(1, row)
        with pytest.raises(expected):
            journal_bytes(1, row)


def test_a_flat_row_of_every_plain_type_is_orjson_s() -> None:
    row = {"id": "r1", "ok": True, "no": False, "n": -3, "x": 0.5, "none": None, "t": "é"}
    line = flat_line({"_index": 1, **row})
    assert line is not None
    assert json.loads(line) == json.loads(_stdlib_line(1, row))
