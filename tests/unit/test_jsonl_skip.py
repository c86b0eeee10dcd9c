"""Passing over rows a resume already has, a megabyte at a time (``formats.jsonl``:
``skip_lines``, ``count_lines``; ``runs.plan.SkipRuns``): the same rows as line by line."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

import batchrun.formats.jsonl as jsonl
from batchrun.formats.inputs import count_rows, read_rows
from batchrun.runs.plan import SkipRuns


def _lines(rng: random.Random) -> bytes:
    parts = []
    for i in range(rng.randint(0, 60)):
        r = rng.random()
        if r < 0.1:
            parts.append(b"\n")  # blank
        elif r < 0.15:
            parts.append(b"  \r\n")  # blank too
        elif r < 0.2:
            parts.append(b' {"a": %d}\n' % i)  # begins with a space, not blank
        else:
            parts.append(b'{"x": "%s"}\n' % (b"y" * rng.randint(0, 40)))
    if rng.random() < 0.3:
        parts.append(b'{"last": 1}')  # no newline at the end
    return b"".join(parts)


@pytest.mark.parametrize("chunk", [7, 16, 64, 1 << 20])
def test_skipping_and_counting_by_chunks_agree_with_line_by_line(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonl, "_SKIP_CHUNK", chunk)
    rng = random.Random(chunk)
    for _ in range(300):
        data = _lines(rng)
        lines = data.splitlines(keepends=True)
        assert jsonl.count_lines(io.BufferedReader(io.BytesIO(data))) == sum(
            1 for line in lines if not line.isspace()
        )
        wanted = rng.randint(0, len(lines) + 2)
        stream = io.BufferedReader(io.BytesIO(data))
        rows, passed = jsonl.skip_lines(stream, wanted)
        rest = stream.read()
        over = data[: len(data) - len(rest)].splitlines(keepends=True)
        assert passed == len(over) and rows == sum(1 for line in over if not line.isspace())
        assert rows <= wanted
        if rows < wanted:  # only the end of the file, or a line longer than a chunk, stops it
            assert b"\n" not in rest or len(rest.split(b"\n")[0]) + 1 > chunk


def test_a_resume_reads_the_same_rows_passing_over_runs(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    body = "".join(
        f'{{"id": "r{i}", "prompt": "p{i}"}}\n' + ("\n" if i % 7 == 0 else "") for i in range(500)
    )
    inp.write_text(body + '{"id": "r500", "prompt": "last"}')
    done = bytes(1 if i % 97 not in (0, 1) and i < 480 else 0 for i in range(490))
    calls: list[int] = []

    def skip(i: int) -> bool:
        calls.append(i)
        return i < len(done) and done[i] == 1

    fast = [(r.index, r.id, r.line) for r in read_rows(inp, skip=SkipRuns(skip, done))]
    slow = [(r.index, r.id, r.line) for r in read_rows(inp, skip=skip)]
    assert fast == slow and len(fast) == 501 - sum(done)
    assert count_rows(inp) == 501
    assert SkipRuns(skip, done).run(2) == 95 and SkipRuns(skip, done).run(0) == 0
