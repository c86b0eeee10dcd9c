"""The spool of ``run --engine ray``'s driver (issue 26): blocks go to disk as they arrive, in
any order, and the output comes back from it in input order, each row once, a window at a
time (``batchrun.ray.assemble``); and what the driver says of its dedup. No Ray here: tables
stand for the blocks."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from support import TEST_KEY, write_jsonl

from batchrun.cli.options import flag_names
from batchrun.config.load import load_config
from batchrun.core.errors import OutputError
from batchrun.core.wording import command_line
from batchrun.ray.assemble import OutputSpool
from batchrun.ray.job import dedup_scope_notice
from batchrun.ray.stage import INDEX_COLUMN, indexed_schema
from batchrun.store.columns import blank_row
from batchrun.store.sink import output_schema

SCHEMA = output_schema()


def block(indexes: list[int], status: str = "ok") -> pa.Table:
    rows = []
    for index in indexes:
        row = blank_row(f"r{index}")
        row.update(status=status, text=f"answer {index}", **{INDEX_COLUMN: index})
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=indexed_schema(SCHEMA))


def assembled(spool: OutputSpool, total: int) -> tuple[list[pa.Table], int]:
    written: list[pa.Table] = []
    ok = spool.write_into(written.append, total)
    return written, ok


def test_blocks_in_any_order_come_out_in_input_order_a_window_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "spool.arrow"
    with OutputSpool(path, SCHEMA, window=4) as spool:
        sizes = []
        # Consecutive blocks back out of order, one answered in reverse, refused rows
        # (errors) between them, and one block spread wide (Ray joined two).
        for indexes, status in (
            ([8, 9, 10, 11], "ok"),
            ([3, 2, 1, 0], "ok"),
            ([4, 12], "error"),
            ([5, 6, 7], "ok"),
            ([13, 14], "ok"),
        ):
            spool.add(block(indexes, status))
            sizes.append(spool.bytes)
        assert spool.rows == 15
        # On disk as each block arrived: the driver keeps none of them.
        assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
        written, ok = assembled(spool, 15)
    assert [t.num_rows for t in written] == [4, 4, 4, 3]  # windows of 4
    table = pa.concat_tables(written)
    assert table.schema == SCHEMA  # the output's columns, no index
    assert table.column("id").to_pylist() == [f"r{i}" for i in range(15)]
    assert ok == 13
    assert not path.exists()  # removed with the spool


def test_a_row_that_came_back_twice_is_written_once(tmp_path: Path) -> None:
    with OutputSpool(tmp_path / "spool.arrow", SCHEMA, window=3) as spool:
        spool.add(block([0, 1, 2]))
        spool.add(block([3, 4]))
        spool.add(block([2, 3]))  # a block Ray ran again
        written, ok = assembled(spool, 5)
    assert pa.concat_tables(written).column("id").to_pylist() == [f"r{i}" for i in range(5)]
    assert ok == 5


def test_a_row_no_block_brought_back_is_an_error(tmp_path: Path) -> None:
    with OutputSpool(tmp_path / "spool.arrow", SCHEMA, window=4) as spool:
        spool.add(block([0, 1, 2, 4]))
        with pytest.raises(OutputError, match="no block brought back input row 3"):
            assembled(spool, 5)


def test_a_row_past_the_input_is_an_error(tmp_path: Path) -> None:
    with OutputSpool(tmp_path / "spool.arrow", SCHEMA) as spool:
        spool.add(block([0, 1, 2]))
        with pytest.raises(OutputError, match="came back with input row 2, and the input has 2"):
            assembled(spool, 2)


def test_the_driver_says_its_dedup_is_per_block(tmp_path: Path) -> None:
    """Blocks are answered apart: identical rows in different blocks are each sent, and
    ``--engine ray`` says so before sending, unless dedup is off."""
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi"}])
    flags = {"model": "claude-haiku-4-5", "max_tokens": 5, "output": str(tmp_path / "o.parquet")}
    env = {"ANTHROPIC_API_KEY": TEST_KEY}
    with command_line(flag_names()):
        told = dedup_scope_notice(load_config(inp, flags, env), block_rows=256)
    assert told == (
        "batchrun: --engine ray finds identical requests within each block of 256 rows only: "
        "identical rows in different blocks are each sent and paid for (a local run, online "
        "or via batches, finds them all)"
    )
    assert dedup_scope_notice(load_config(inp, {**flags, "dedup": False}, env)) is None
