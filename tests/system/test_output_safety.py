"""Outputs that cannot be destroyed or paid for twice: one run per output (a lock), temporary
files unique per run, and outputs and kept columns that cannot overwrite the input or the
output's own columns. Runs that race each other are real subprocesses against the simulator.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import (
    TEST_KEY,
    check_output,
    job_config,
    prompts,
    reply_tag,
    start_run,
    wait_for_journal,
    wait_until,
    write_jsonl,
)

from batchrun import run
from batchrun.batches import run as batch_driver
from batchrun.cli import cli
from batchrun.config.load import load_config
from batchrun.config.settings import BY_KEY
from batchrun.core.errors import ConfigError, OutputError
from batchrun.estimation.passes import estimate
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.columns import COLUMN_NAMES, blank_row
from batchrun.store.commit import temporary_path
from batchrun.store.lock import OutputLock, lock_path
from batchrun.store.sink import Sink, journal_path, remove_stale_temporaries

CONCURRENCY = 8
REFUSED = "is being written by another batchrun run"


def answered_once(sim: SimulatorThread, n: int) -> None:
    """The simulator answered every prompt of the job exactly once: nothing paid twice."""
    tags = sim.stats.snapshot().answers_by_tag
    assert sorted(tags) == sorted(reply_tag(p["prompt"]) for p in prompts(n))
    assert set(tags.values()) == {1}


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"ANTHROPIC_API_KEY": TEST_KEY})
    return result.exit_code, result.stderr


# --- one run per output ----------------------------------------------------------------------


def test_a_second_run_of_the_same_output_is_refused_at_once_naming_the_first(
    tmp_path: Path,
) -> None:
    n = 120
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "o.parquet"
    with SimulatorThread(SimulatorConfig(latency_mean=0.01)) as sim:
        first = start_run(inp, out, sim.base_url, concurrency=CONCURRENCY)
        wait_for_journal(out, first, 5)
        sim.simulator.config = SimulatorConfig(latency_mean=1.0)  # the first run goes on slowly
        second = start_run(inp, out, sim.base_url, concurrency=CONCURRENCY)
        _, err = second.communicate(timeout=60)
        assert first.poll() is None  # refused while the first one runs, not after it
        sim.simulator.config = SimulatorConfig(latency_mean=0.01)
        assert second.returncode == 1, err
        assert REFUSED in err and "Traceback" not in err
        assert f"pid {first.pid} on {socket.gethostname()}, started 20" in err
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        answered_once(sim, n)
    check_output(out, n)
    assert not lock_path(out).exists()  # released and removed at the end


def test_two_runs_started_together_send_every_row_once(tmp_path: Path) -> None:
    n = 80
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "o.parquet"
    with SimulatorThread(SimulatorConfig(latency_mean=0.25, latency_jitter=0.05)) as sim:
        procs = [start_run(inp, out, sim.base_url, concurrency=CONCURRENCY) for _ in range(2)]
        errs = [p.communicate(timeout=120)[1] for p in procs]
        results = [(p.returncode, err) for p, err in zip(procs, errs, strict=True)]
        assert all("Traceback" not in err for _, err in results), results
        # One is refused; unless it started so late that the other had finished (then it
        # resumes a complete output and sends nothing).
        codes = sorted(code for code, _ in results)
        assert codes in ([0, 1], [0, 0]), results
        if codes == [0, 1]:
            assert REFUSED in next(err for code, err in results if code == 1)
        answered_once(sim, n)
    check_output(out, n)


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(tmp_path: Path) -> None:
    n = 200
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "o.parquet"
    with SimulatorThread(SimulatorConfig(latency_mean=0.03, latency_jitter=0.02)) as sim:
        killed = start_run(inp, out, sim.base_url, concurrency=CONCURRENCY)
        wait_for_journal(out, killed, 20)
        killed.kill()
        killed.communicate(timeout=30)
        stale = json.loads(lock_path(out).read_text())  # kill -9 leaves the file behind
        assert stale["pid"] == killed.pid
        resumed = start_run(inp, out, sim.base_url, concurrency=CONCURRENCY)
        _, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        answered = sim.stats.snapshot().answered_ok
    check_output(out, n)
    assert n <= answered <= n + CONCURRENCY  # only what was in flight at the kill
    assert not lock_path(out).exists()


def test_an_online_run_is_refused_while_a_batch_run_writes_the_output(tmp_path: Path) -> None:
    n = 20
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "o.parquet"
    with SimulatorThread(SimulatorConfig(batch_processing_s=3.0)) as sim:
        batch = start_run(
            inp,
            out,
            sim.base_url,
            "--via",
            "batches",
            "--poll-interval",
            "0.05",
            concurrency=CONCURRENCY,
        )
        created = '"event":"created"'
        batches = out.with_name(out.name + ".batches")
        wait_until(
            lambda: batches.exists() and created in batches.read_text(),
            60,
            "a batch created",
            alive=[batch],
        )
        code, err = invoke(
            "run",
            str(inp),
            "-o",
            str(out),
            "--base-url",
            sim.base_url,
            "--model",
            "claude-haiku-4-5",
            "--max-tokens",
            "5",
        )
        assert code == 1 and REFUSED in err and f"pid {batch.pid}" in err
        _, err = batch.communicate(timeout=120)
        assert batch.returncode == 0, err
    check_output(out, n)


def test_the_lock_names_its_holder_and_a_released_lock_can_be_taken_again(
    tmp_path: Path,
) -> None:
    out = tmp_path / "sub" / "o.parquet"
    with OutputLock(out) as lock:
        assert lock.held and lock.path == tmp_path / "sub" / ".o.parquet.lock"
        holder = json.loads(lock.path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", holder["started"])
        with pytest.raises(OutputError, match=f"{REFUSED} \\(pid {os.getpid()} on "):
            OutputLock(out).acquire()  # locks are per open file: the same process too
    assert not lock.held and not lock.path.exists()
    with OutputLock(out):
        pass


def test_a_stale_lock_file_with_any_content_does_not_block(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    lock_path(out).write_text("garbage, from a run that died")
    with OutputLock(out) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_a_run_and_an_estimate_pilot_are_refused_while_the_output_is_locked(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(6))
    out = tmp_path / "o.parquet"
    online = job_config(inp, out, sim.base_url)
    batched = job_config(inp, out, sim.base_url, via="batches", poll_interval=0.05)
    with OutputLock(out):
        for config in (online, batched):
            with pytest.raises(OutputError, match=REFUSED):
                run(config)
        with pytest.raises(OutputError, match=REFUSED):
            estimate(online, pilot="2")
        assert sim.stats.snapshot().requests == 0
        assert not journal_path(out).exists()
    assert run(online).exit_code == 0


def test_the_cli_refusal_does_not_offer_the_holders_journal_as_its_own(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "o.parquet"
    journal_path(out).write_text('{"_index": 0}\n')  # the holder's rows so far
    args = ["run", str(inp), "-o", str(out), "--model", "m", "--max-tokens", "5"]
    args += ["--base-url", sim.base_url, "-q"]
    with OutputLock(out):
        result = CliRunner().invoke(cli, args, env={"ANTHROPIC_API_KEY": TEST_KEY})
    assert result.exit_code == 1
    assert "batchrun: error:" in result.output and "finished rows are kept" not in result.output


def test_finish_online_keeps_the_batch_runs_lock(tmp_path: Path) -> None:
    n = 6
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "o.parquet"
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.1, batch_expire_rate=1.0)) as sim:
        config = job_config(
            inp, out, sim.base_url, via="batches", poll_interval=0.05, finish_online=True
        )
        summary = run(config)
    assert summary.exit_code == 0, summary
    check_output(out, n)
    assert not lock_path(out).exists()


# --- temporary files -------------------------------------------------------------------------


def _row(i: int) -> dict[str, Any]:
    row = blank_row(f"r{i}")
    row.update(status="ok", text=f"answer {i}", request_hash=f"h{i}")
    return row


def test_the_final_step_uses_its_own_temporary_files_and_leaves_others_alone(
    tmp_path: Path,
) -> None:
    out = tmp_path / "o.parquet"
    # What another run's final step (of an older version, or a run that had no lock) holds.
    others = [tmp_path / ".o.parquet.journal.arrow", tmp_path / ".o.parquet.tmp"]
    for path in others:
        path.write_bytes(b"another run's file")
    sink = Sink(out)
    sink.open()
    sink.submit(0, _row(0))
    sink.finalize(1)
    assert [r["id"] for r in pq.read_table(out).to_pylist()] == ["r0"]
    assert [p.read_bytes() for p in others] == [b"another run's file"] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".o.parquet.journal.arrow", ".o.parquet.tmp", "o.parquet"]
    )


def test_temporary_names_are_unique_per_run_and_removed_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "o.parquet"
    a, b = temporary_path(out, ".tmp"), temporary_path(out, ".tmp")
    assert a != b and a.parent == tmp_path
    assert re.fullmatch(rf"\.o\.parquet\.{os.getpid()}\.[0-9a-f]{{12}}\.tmp", a.name)
    sink = Sink(out)
    sink.open()
    sink.submit(0, _row(0))
    seen: list[str] = []

    def fail(src: Any, dst: Any) -> None:
        seen.extend(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
        raise pa.ArrowInvalid("File too short")  # what a colliding run used to cause

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OutputError, match="File too short"):  # not a traceback
        sink.finalize(1)
    assert any(name.endswith(".journal.arrow") for name in seen)
    assert all(str(os.getpid()) in name for name in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "o.parquet.journal",
        "o.parquet.journal.idx",
    ]


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "o[1].parquet"
    stale = [
        temporary_path(out, ".tmp"),
        temporary_path(out, ".journal.arrow"),
        temporary_path(out, ".b3.results"),
    ]
    kept = [tmp_path / ".o[1].parquet.backup.tmp", tmp_path / "o[1].parquet.journal"]
    for path in stale + kept:
        path.write_text("x")
    assert sorted(remove_stale_temporaries(out, (".results",))) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_temporaries_are_looked_for_only_after_a_killed_run(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    """A run that ends removes its lock file, so one found when the lock is taken was left by
    a killed run, and only such a run leaves temporary files: they are looked for (listing
    the output's folder, which may hold anything) only then."""
    out = tmp_path / "o.parquet"
    with OutputLock(out) as lock:
        assert not lock.after_kill
    lock_path(out).write_text('{"pid": 1}')  # what a kill -9 leaves
    with OutputLock(out) as lock:
        assert lock.after_kill
    with OutputLock(out) as lock:
        assert not lock.after_kill  # the last run ended

    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    stale = temporary_path(out, ".tmp")
    stale.write_text("a final step cut short")
    assert run(job_config(inp, out, sim.base_url)).exit_code == 0
    assert stale.exists()  # not looked for: no run was killed since the lock file went
    lock_path(out).write_text('{"pid": 1}')
    assert run(job_config(inp, out, sim.base_url)).exit_code == 0
    assert not stale.exists() and not lock_path(out).exists()


def test_a_batch_runs_files_are_unique_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's body file, its kept rows (``batches.sent``) and the round's prepared rows
    (``batches.planned``) are this run's own, beside the output, and gone once the batch is
    collected; another's file is left alone."""
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(4))
    out = tmp_path / "o.parquet"
    others = [
        tmp_path / ".o.parquet.b1.sent",
        tmp_path / ".o.parquet.b1.body",
        tmp_path / ".o.parquet.b1.planned",
    ]
    for other in others:
        other.write_text("another run's file")
    made: list[Path] = []
    real = batch_driver.temporary_path

    def spy(output: Path, suffix: str) -> Path:
        made.append(real(output, suffix))
        return made[-1]

    monkeypatch.setattr(batch_driver, "temporary_path", spy)
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.1)) as sim:
        summary = run(job_config(inp, out, sim.base_url, via="batches", poll_interval=0.05))
    assert summary.exit_code == 0
    assert sorted(p.suffix for p in made) == [".body", ".planned", ".sent"]
    for path in made:
        assert path.parent == tmp_path and not path.exists()
        assert re.fullmatch(
            rf"\.o\.parquet\.{os.getpid()}\.[0-9a-f]{{12}}\.(body|sent|planned)", path.name
        )
    assert all(other.read_text() == "another run's file" for other in others)


# --- outputs that cannot destroy inputs ------------------------------------------------------


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_an_output_that_is_the_input_is_refused(tmp_path: Path, suffix: str) -> None:
    rows = prompts(3)
    inp = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        write_jsonl(inp, rows)
    else:
        _write_parquet(inp, rows)
    before = inp.read_bytes()
    os.link(inp, tmp_path / f"hard{suffix}")
    (tmp_path / f"soft{suffix}").symlink_to(inp)
    for out in (inp, tmp_path / f"hard{suffix}", tmp_path / f"soft{suffix}"):
        code, err = invoke("run", str(inp), "-o", str(out), "--simulate", "--model", "m")
        assert code == 1 and "is the input file" in err, err
        code, err = invoke("run", str(inp), "-o", str(out), "--simulate", "--via", "batches")
        assert code == 1 and "is the input file" in err, err
    assert inp.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"in{suffix}", f"hard{suffix}", f"soft{suffix}"]
    )


def test_an_output_that_is_the_input_is_refused_by_the_library_too(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    config = job_config(inp, tmp_path / "o.jsonl", sim.base_url)
    before = inp.read_bytes()
    with pytest.raises(ConfigError, match="is the input file"):
        run(replace(config, output=replace(config.output, path=inp)))
    assert inp.read_bytes() == before and sim.stats.snapshot().requests == 0


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ("id", "`id` is always in the output"),
        ("text", "`text` is one of the output's own columns"),
        ("status", "`status` is one of the output's own columns"),
        ("_index", "`_index` is the name batchrun's journal gives"),
    ],
)
def test_kept_columns_that_collide_with_the_output_are_refused(
    tmp_path: Path, column: str, message: str
) -> None:
    rows = [{**p, "text": "the input's text", "_index": 7, "status": "x"} for p in prompts(3)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "o.parquet"
    code, err = invoke("run", str(inp), "-o", str(out), "--simulate", "--keep-column", column)
    assert code == 1 and message in err and "drop" in err, err
    assert not out.exists() and not journal_path(out).exists()
    job = tmp_path / "job.toml"
    job.write_text(f'input = "in.jsonl"\nkeep_columns = ["{column}"]\n')
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(job, {})


def test_every_output_column_and_a_repeated_column_are_refused() -> None:
    from batchrun.config.load import check_keep_columns

    for name in COLUMN_NAMES:
        with pytest.raises(ConfigError, match=f"`{name}`"):
            check_keep_columns([name])
    with pytest.raises(ConfigError, match="names `topic` twice"):
        check_keep_columns(["topic", "topic"])
    check_keep_columns(["topic", "input_text"])


def _inputs(tmp_path: Path) -> dict[str, Path]:
    rows = [{**p, "topic": f"t{i}"} for i, p in enumerate(prompts(4))]
    csv_path = tmp_path / "in.csv"
    csv_path.write_text(
        "id,prompt,topic\n" + "".join(f"{r['id']},{r['prompt']},{r['topic']}\n" for r in rows)
    )
    return {
        "jsonl": write_jsonl(tmp_path / "in.jsonl", rows),
        "parquet": _write_parquet(tmp_path / "in.parquet", rows),
        "csv": csv_path,
    }


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_an_unknown_kept_column_is_an_error_before_anything_is_sent(
    tmp_path: Path, sim: SimulatorThread, fmt: str
) -> None:
    inp = _inputs(tmp_path)[fmt]
    out = tmp_path / "o.parquet"
    for via in ("online", "batches"):
        config = job_config(inp, out, sim.base_url, keep_columns=("topic", "topik"), via=via)
        with pytest.raises(ConfigError, match=r"`topik` \(did you mean `topic`\?\)") as caught:
            run(config)
        assert "drop it from keep_columns" in str(caught.value)
    assert sim.stats.snapshot().requests == 0
    assert not out.exists() and not journal_path(out).exists()
    summary = run(job_config(inp, out, sim.base_url, keep_columns=("topic",)))
    assert summary.exit_code == 0
    assert [r["topic"] for r in pq.read_table(out).to_pylist()] == ["t0", "t1", "t2", "t3"]


def test_a_jsonl_field_only_later_rows_have_is_a_known_column(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    rows: list[dict[str, Any]] = prompts(5)
    lines = [json.dumps(r) for r in rows]
    lines[3] = lines[3][:-1] + ', "n\\u006fte": "escaped key"}'  # the key is "note"
    lines[4] = lines[4][:-1] + ', "late": null}'  # a field with a null value is a field
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o.jsonl"
    summary = run(job_config(inp, out, sim.base_url, keep_columns=("note", "late")))
    assert summary.exit_code == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["note"] for r in got] == [None, None, None, "escaped key", None]
    assert all(r["late"] is None for r in got)


def test_keep_column_flags_replace_the_job_files_list_and_the_help_says_so(
    tmp_path: Path,
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(1))
    job = tmp_path / "job.toml"
    job.write_text('input = "in.jsonl"\nkeep_columns = ["a", "b"]\n')
    assert load_config(job, {}).output.keep_columns == ("a", "b")
    assert load_config(job, {"keep_columns": ("c",)}).output.keep_columns == ("c",)
    assert "replace the job file's keep_columns" in BY_KEY["keep_columns"].help
    result = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200)
    assert "replace the job file's keep_columns" in " ".join(result.stdout.split())
