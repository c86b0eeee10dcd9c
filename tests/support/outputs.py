"""Output rows as a run writes them, and files of them, for the tests that read outputs back
(the report)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.store.columns import blank_row
from batchrun.store.sink import Sink, output_schema

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def row(i: int, **fields: Any) -> dict[str, Any]:
    r = blank_row(f"r{i}")
    r.update(
        status="ok",
        model="claude-haiku-4-5-20251001",
        stop_reason="end_turn",
        input_tokens=100,
        output_tokens=10,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=0,
        cost_usd=0.00015,
        attempts=1,
        latency_ms=100.0 + i,
        elapsed_ms=100.0 + i,
        finished_at=T0 + timedelta(seconds=i),
    )
    r.update(fields)
    return r


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=output_schema()), path)
    return path


def sample_rows() -> list[dict[str, Any]]:
    rows = [row(i) for i in range(8)]
    rows.append(
        row(
            8,
            model="claude-sonnet-4-5-20250929",
            input_tokens=1000,
            output_tokens=200,
            cache_creation_input_tokens=500,
            cache_read_input_tokens=2000,
            cost_usd=0.01,
            stop_reason="max_tokens",
            attempts=3,
        )
    )
    rows.append(
        row(
            9,
            status="error",
            model="claude-haiku-4-5",
            stop_reason=None,
            input_tokens=None,
            output_tokens=None,
            cost_usd=None,
            error_type="overloaded_error",
            error_message="Overloaded <script>alert(1)</script>",
            latency_ms=None,
            attempts=9,
        )
    )
    return rows


def write_rows(
    out: Path,
    rows: list[tuple[int, dict[str, Any]]],
    keep: tuple[str, ...] = (),
    *,
    overwrite: bool = False,
    **options: Any,
) -> Sink:
    """A run that journals ``rows`` (input index, row) into ``out`` and stops: a Sink opened,
    each row submitted, closed (its journal, and the journal's index, left beside ``out``)."""
    sink = Sink(out, keep, **options)
    sink.open(overwrite=overwrite)

    async def main() -> None:
        for index, row in rows:
            sink.submit(index, row)
        await sink.close()

    asyncio.run(main())
    return sink
