"""A resume checks the files rows referred to, and nothing else beside the input
(``store.referenced``): an unrelated file leaves it on its fast path, which takes earlier
answers from their records; a changed file a row used sends it down the row-by-row check,
which refuses that row. The fast path is told from the checked one by an answered row whose
recorded request hash was altered: only the row-by-row check compares it, and refuses."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import RecordingTransport, batch_config, job_config, write_jsonl

from batchrun import run
from batchrun.runs.resume import ResumeMismatchError
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.referenced import files_path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sample_data"))
import make_media


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "notes.txt").write_text("the meeting is on Monday", encoding="utf-8")
    (root / "photo.png").write_bytes(make_media.png(4, 4, (1, 2, 3)))
    return root


def _rows(media: Path) -> Path:
    rows = [
        {"id": "doc", "document": "notes.txt", "prompt": "When is the meeting?"},
        {"id": "img", "image": "photo.png", "prompt": "What colour is it?"},
        {"id": "plain", "prompt": "Say hi"},
        {"id": "last", "prompt": "Say bye"},
    ]
    return write_jsonl(media / "in.jsonl", rows)


def _alter_hash(out: Path, row_id: str) -> None:
    """Give ``row_id``'s answer in a JSON lines output another request hash (same length)."""
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        if row["id"] == row_id:
            row["request_hash"] = "0" * len(row["request_hash"])
    out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _nothing_sent(config: Any) -> None:
    recorder = RecordingTransport()
    assert run(config, runtime=Runtime(transport=recorder)).exit_code == 0
    assert recorder.bodies == []


def test_an_unrelated_file_beside_the_input_leaves_the_resume_on_its_fast_path(
    media: Path, sim: SimulatorThread
) -> None:
    out = media / "out.jsonl"  # beside the input, with its journal, state and files log
    config = job_config(_rows(media), out, sim.base_url)
    assert run(config).exit_code == 0
    logged = files_path(out).read_text(encoding="utf-8")
    assert '"notes.txt"' in logged and '"photo.png"' in logged
    _alter_hash(out, "plain")

    (media / "unrelated.txt").write_text("no row names me", encoding="utf-8")
    (media / "more").mkdir()
    for i in range(50):
        (media / "more" / f"{i}.png").write_bytes(make_media.png(2, 2, (i, i, i)))
    (media / "other.jsonl").write_text('{"id": "x", "prompt": "another job"}\n')
    _nothing_sent(config)  # the altered hash was not looked at: the fast path

    (media / "notes.txt").write_text("the meeting is on Friday!", encoding="utf-8")
    with pytest.raises(ResumeMismatchError, match=r"\(ids doc, plain\)"):
        run(config, runtime=Runtime(transport=RecordingTransport()))


def test_a_changed_file_is_noticed_after_a_run_that_stopped_midway(
    media: Path, sim: SimulatorThread
) -> None:
    """The files of rows a stopped run answered are in the log though its final file was
    never written: its journal's rows are checked against them too."""
    rows = [{"id": f"r{i}", "document": "notes.txt", "prompt": f"Question {i}?"} for i in range(40)]
    inp = write_jsonl(media / "in.jsonl", rows)
    out = media / "out.parquet"
    stopped = run(job_config(inp, out, sim.base_url, concurrency=1, max_cost=0.0005))
    assert stopped.exit_code == 4 and 0 < stopped.finished < 40

    (media / "notes.txt").write_text("the meeting is on Friday!", encoding="utf-8")
    with pytest.raises(ResumeMismatchError, match="r0"):
        run(job_config(inp, out, sim.base_url), runtime=Runtime(transport=RecordingTransport()))


def test_rows_sent_again_for_a_changed_file_leave_later_resumes_fast(
    media: Path, sim: SimulatorThread
) -> None:
    """The check that found the change wrote the log anew: the file as it is now."""
    out = media / "out.jsonl"
    config = job_config(_rows(media), out, sim.base_url)
    assert run(config).exit_code == 0
    (media / "notes.txt").write_text("the meeting is on Friday!", encoding="utf-8")
    recorder = RecordingTransport()
    again = job_config(_rows(media), out, sim.base_url, resend_changed=True)
    assert run(again, runtime=Runtime(transport=recorder)).exit_code == 0
    assert len(recorder.bodies) == 1  # the row of the changed file, and no other
    _alter_hash(out, "plain")
    _nothing_sent(config)


@pytest.fixture
def bsim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(batch_processing_s=0.2)) as s:
        yield s


def test_a_batch_run_records_the_files_its_rows_used(media: Path, bsim: SimulatorThread) -> None:
    out = media / "out.jsonl"
    config = batch_config(_rows(media), out, bsim.base_url)
    assert run(config).exit_code == 0
    (media / "photo.png").write_bytes(make_media.png(4, 4, (200, 0, 0)))
    with pytest.raises(ResumeMismatchError, match=r"\(ids img\)"):
        run(config)
