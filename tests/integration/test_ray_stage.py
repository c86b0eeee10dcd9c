"""batchrun.ray's stage without Ray: rows in, output rows out, parts committed and reused,
called on pyarrow tables against the simulator (on a real Ray, in a network namespace of its
own: tests/system/test_ray_stage_on_ray.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import TEST_KEY

from batchrun.ray.parts import part_paths
from batchrun.ray.stage import (
    FIELDS_COLUMN,
    INDEX_COLUMN,
    NOT_SENT,
    STAGED_COLUMN,
    BatchrunStage,
    indexed_schema,
)
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.sink import output_schema

ENV = {"ANTHROPIC_API_KEY": TEST_KEY}


def stage(url: str, parts: Path, **settings: Any) -> BatchrunStage:
    base = {"model": "claude-haiku-4-5", "max_tokens": 20, "base_url": url, "quiet": True}
    return BatchrunStage(parts_dir=parts, settings={**base, **settings}, environ=ENV)


def block(start: int, stop: int, prompt: str = "Question {i}") -> pa.Table:
    ids = [f"q{i:04d}" for i in range(start, stop)]
    return pa.table({"id": ids, "prompt": [prompt.format(i=i) for i in range(start, stop)]})


# --- the stage, without Ray -------------------------------------------------------------------


def test_a_block_comes_back_answered_in_the_output_schema_and_is_committed(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    answer = stage(sim.base_url, tmp_path)
    out = answer(block(0, 20))
    assert out.schema == output_schema()
    assert out.column("id").to_pylist() == [f"q{i:04d}" for i in range(20)]
    assert set(out.column("status").to_pylist()) == {"ok"}
    assert all(out.column("request_hash").to_pylist())
    assert all(n > 0 for n in out.column("input_tokens").to_pylist())
    assert all(c is not None for c in out.column("cost_usd").to_pylist())
    assert sim.stats.requests == 20
    (part,) = part_paths(answer.committed.folder)
    assert pq.read_table(part).num_rows == 20


def test_a_block_of_staged_paths_is_each_file_answered_with_its_input_indexes(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    # What run --engine ray's driver gives Ray: paths of block files it staged (ray.job).
    staged = []
    for number, (start, stop) in enumerate(((0, 3), (3, 5))):
        ids = [f"q{i:04d}" for i in range(start, stop)]
        fields = [json.dumps({"id": row_id, "prompt": f"Question {row_id}"}) for row_id in ids]
        table = pa.table(
            {
                "id": ids,
                INDEX_COLUMN: pa.array(range(start, stop), pa.int64()),
                FIELDS_COLUMN: fields,
            }
        )
        path = tmp_path / f"block-{number}.parquet"
        pq.write_table(table, path)
        staged.append(str(path))
    answer = stage(sim.base_url, tmp_path / "parts")
    out = answer(pa.table({STAGED_COLUMN: staged}))
    assert out.schema == indexed_schema(output_schema())
    assert out.column("id").to_pylist() == [f"q{i:04d}" for i in range(5)]
    assert out.column(INDEX_COLUMN).to_pylist() == list(range(5))
    assert set(out.column("status").to_pylist()) == {"ok"}
    assert sim.stats.requests == 5
    assert len(part_paths(answer.committed.folder)) == 2  # a part per staged block


def test_a_committed_block_is_returned_without_sending(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    first = stage(sim.base_url, tmp_path)(block(0, 20))
    again = stage(sim.base_url, tmp_path)(block(0, 20))  # a new actor: a re-run
    assert sim.stats.requests == 20
    assert again.column("text").to_pylist() == first.column("text").to_pylist()


def test_rows_committed_under_other_block_boundaries_are_not_sent_again(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    stage(sim.base_url, tmp_path)(block(0, 10))
    out = stage(sim.base_url, tmp_path)(block(5, 15))
    assert sim.stats.requests == 15  # 10, then only q0010..q0014
    assert out.column("id").to_pylist() == [f"q{i:04d}" for i in range(5, 15)]
    assert set(out.column("status").to_pylist()) == {"ok"}


def test_a_row_whose_request_changed_is_sent_again(sim: SimulatorThread, tmp_path: Path) -> None:
    stage(sim.base_url, tmp_path)(block(0, 10))
    stage(sim.base_url, tmp_path)(block(0, 10, prompt="Another question {i}"))
    assert sim.stats.requests == 20


def test_another_job_does_not_take_this_ones_parts(sim: SimulatorThread, tmp_path: Path) -> None:
    stage(sim.base_url, tmp_path)(block(0, 10))
    stage(sim.base_url, tmp_path, max_tokens=30)(block(0, 10))
    assert sim.stats.requests == 20
    assert len(list(tmp_path.iterdir())) == 2  # one folder per job fingerprint


def test_failing_rows_are_error_rows_and_the_block_still_returns(tmp_path: Path) -> None:
    rows = block(0, 10)
    rows = pa.concat_tables(
        [rows, pa.table({"id": ["no-prompt", None], "prompt": [None, "Has no id"]})]
    )
    config = SimulatorConfig(error_rates={"500": 1.0})
    with SimulatorThread(config) as sim:
        out = stage(sim.base_url, tmp_path, max_retries=0)(rows)
    assert out.num_rows == 12
    assert set(out.column("status").to_pylist()) == {"error"}
    types = out.column("error_type").to_pylist()
    assert types[:10] == ["api_error"] * 10
    assert types[10:] == ["invalid_request", "invalid_request"]
    assert "needs one" in out.column("error_message").to_pylist()[11]


def test_rows_an_engine_stop_left_unsent_are_returned_but_not_committed(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    # A budget smaller than one request: the engine admits nothing.
    out = stage(sim.base_url, tmp_path, max_cost=0.0)(block(0, 5))
    assert out.column("error_type").to_pylist() == [NOT_SENT] * 5
    assert sim.stats.requests == 0
    stage(sim.base_url, tmp_path)(block(0, 5))  # the re-run, with money: it sends them
    assert sim.stats.requests == 5


def test_a_dataset_without_ids_is_refused_by_name(sim: SimulatorThread, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no `id` column"):
        stage(sim.base_url, tmp_path)(pa.table({"prompt": ["Hi"]}))
