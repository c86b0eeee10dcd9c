"""batchrun.ray on a real local Ray: a killed pipeline run again, error rows, ``run --engine ray``.

Each test runs Ray in a network namespace of its own (``support/ray_netns.py``: Ray listens on
every interface), with the simulator inside it; they are skipped only where ray is not
installed. The stage's own logic without Ray: tests/integration/test_ray_stage.py."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.ray_netns import SCRIPTS, run_in_netns, run_script

# Starting Ray and its actors takes tens of seconds on two CPUs; the kill test starts it twice.
ON_RAY = pytest.mark.timeout(600)


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
    # A spool a killed driver left beside the output (the whole output's size, at worst).
    stale = tmp_path / ".out.parquet.4242.0123456789ab.ray.tmp"
    stale.write_bytes(b"spooled blocks")
    again = run_script("with_simulator.py", "{}", *cli, cwd=tmp_path)
    assert again["exit"] == 3, again["stderr"]
    assert not stale.exists()
    assert again["requests"] == 0  # every row was committed
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 301


@ON_RAY
def test_run_engine_ray_streams_each_block_to_disk_as_it_arrives(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    rows, block_rows = 600, 50
    report = tmp_path / "report.json"
    driver = [sys.executable, str(SCRIPTS / "engine_driver.py"), "{base_url}", str(tmp_path)]
    driver += [str(report), str(rows), str(block_rows)]
    result = run_script("with_simulator.py", "{}", *driver, cwd=tmp_path)
    assert result["exit"] == 0, result["stderr"]
    assert result["requests"] == rows
    seen = json.loads(report.read_text())
    assert seen["exit"] == 0 and seen["in_order"] and seen["statuses"] == ["ok"]
    # The driver keeps no block: each went to its spool on disk as it came back, before the
    # next was taken, so the spool grew with every block (never all at the end) ...
    sizes = [size for size, _ in seen["seen"]]
    spooled = [count for _, count in seen["seen"]]
    assert len(spooled) >= rows // block_rows
    assert spooled == sorted(spooled) and spooled[-1] == rows
    assert all(later > earlier for earlier, later in itertools.pairwise(sizes))
    # ... and nothing of it, nor of the staged input, is left once the output is in place.
    assert not seen["spool_left"] and seen["staged_left"] == []
    # Dedup is on (the default): the driver says, before sending, that it is per block.
    assert len(seen["told"]) == 1 and "within each block of" in seen["told"][0]


def test_ray_tests_run_in_their_own_network_namespace(tmp_path: Path) -> None:
    # The Ray tests rely on it: a namespace whose only interface is its loopback.
    done = run_in_netns(["ip", "-o", "link"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[1].strip() for line in done.stdout.splitlines()] == ["lo"]
