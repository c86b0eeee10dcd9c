"""batchrun.ray: the Ray Data stage, its committed parts, and ``run --engine ray``.

The stage's own logic (rows in, output rows out, parts committed and reused) is tested here
without Ray, by calling it on pyarrow tables against the simulator. The tests that start Ray
run each in a network namespace of its own (``tests/ray_netns.py``: Ray listens on every
interface), with the simulator inside it; they are skipped only where ray is not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import TEST_KEY
from support.ray_netns import SCRIPTS, run_in_netns, run_script

from batchrun.ray.parts import part_paths
from batchrun.ray.stage import NOT_SENT, BatchrunStage
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.sink import output_schema

ENV = {"ANTHROPIC_API_KEY": TEST_KEY}
# Starting Ray and its actors takes tens of seconds on two CPUs; the kill test starts it twice.
ON_RAY = pytest.mark.timeout(600)


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


def test_importing_batchrun_ray_does_not_load_ray() -> None:
    code = "import sys, batchrun.ray; assert 'ray' not in sys.modules, 'ray was loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- on Ray, each in a network namespace of its own --------------------------------------------


@ON_RAY
def test_a_killed_pipeline_run_again_sends_only_the_rows_not_committed(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    rows = 2000
    result = run_script("kill_rerun.py", str(tmp_path), str(rows), cwd=tmp_path)
    committed = result["committed"]
    assert 0 < committed < rows  # killed mid-way, after some blocks were committed
    assert result["first_requests"] >= committed
    assert result["second_exit"] == 0
    assert result["second_requests"] == rows - committed
    report = result["report"]
    assert report["rows"] == rows and report["every_id_once"]
    assert report["statuses"] == {"ok": rows}
    assert report["with_hash"] == rows


@ON_RAY
def test_error_rows_never_fail_the_dataset(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    report = tmp_path / "report.json"
    driver = [sys.executable, str(SCRIPTS / "stage_driver.py"), "{base_url}"]
    driver += [str(tmp_path / "parts"), str(report), "200", "50", json.dumps({"max_retries": 0})]
    sim_config = json.dumps({"error_rates": {"500": 0.3}, "seed": 7})
    result = run_script("with_simulator.py", sim_config, *driver, cwd=tmp_path)
    assert result["exit"] == 0, result["stderr"]
    seen = json.loads(report.read_text())
    assert seen["rows"] == 200 and seen["every_id_once"]
    assert seen["statuses"]["error"] == result["by_status"]["500"] > 0
    assert seen["statuses"]["ok"] == result["by_status"]["200"] > 0


@ON_RAY
def test_run_engine_ray_writes_the_output_in_input_order_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    rows = [{"id": f"q{i:04d}", "prompt": f"Question {i}"} for i in range(300)]
    rows.insert(7, {"id": "q0001", "prompt": "a duplicate id"})
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cli = [sys.executable, "-m", "batchrun", "run", "in.jsonl", "-o", "out.parquet"]
    cli += ["--base-url", "{base_url}", "--model", "claude-haiku-4-5", "--max-tokens", "20"]
    cli += ["--engine", "ray"]
    first = run_script("with_simulator.py", "{}", *cli, cwd=tmp_path)
    assert first["exit"] == 3, first["stderr"]  # finished, one row in error (the duplicate)
    assert first["requests"] == 300
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column("id").to_pylist() == [r["id"] for r in rows]
    assert out.column("error_type").to_pylist()[7] == "invalid_request"
    again = run_script("with_simulator.py", "{}", *cli, cwd=tmp_path)
    assert again["exit"] == 3, again["stderr"]
    assert again["requests"] == 0  # every row was committed
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 301


def test_ray_tests_run_in_their_own_network_namespace(tmp_path: Path) -> None:
    # The Ray tests rely on it: a namespace whose only interface is its loopback.
    done = run_in_netns(["ip", "-o", "link"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[1].strip() for line in done.stdout.splitlines()] == ["lo"]
