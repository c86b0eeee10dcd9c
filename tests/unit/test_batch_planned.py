"""A round's rows as its first pass prepared them (``batches.planned``): what the batch
builder reads of each row comes back exactly as preparing it again gives it, rows that
cannot be sent included, and past the file's bound the rest are prepared again."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support import TEST_KEY, write_jsonl

from batchrun.batches import planned as planned_module
from batchrun.batches.planned import PlannedRows
from batchrun.config.load import load_config
from batchrun.engine.outcome import VIA_BATCHES, RowSettings, Work, base_row, error_row, kept_texts
from batchrun.runs.plan import RowCounter, plan

HEAD = "Read this first. " + "alpha " * 6000  # long enough to be cached


def _turns(question: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": HEAD},
        {"role": "assistant", "content": "Understood."},
        {"role": "user", "content": question},
    ]


ROWS: list[dict[str, Any]] = [
    {"id": "plain", "prompt": "Name a river.", "topic": "rivers", "n": 3},
    {"id": "unicode", "prompt": "Nommez un fleuve — « vite » 🌊", "topic": "fleuves", "n": 1.5},
    {"id": "shared-1", "messages": _turns("One?"), "n": [1, 2]},
    {"id": "shared-2", "messages": _turns("Two?"), "topic": None},
    {"id": "too-long", "prompt": "Too many tokens asked.", "max_tokens": 10**9},
    {"id": "no-prompt", "topic": "missing"},
    {"id": "sampled", "prompt": "Pick one.", "temperature": 0.3, "n": {"a": 1}},
    {"id": "plain", "prompt": "A duplicate id."},
]


def _works(tmp_path: Path, **flags: Any) -> tuple[list[Work], RowSettings]:
    inp = write_jsonl(tmp_path / "in.jsonl", ROWS)
    flags = {
        "model": "claude-haiku-4-5",
        "max_tokens": 20,
        "via": "batches",
        "output": str(tmp_path / "out.parquet"),
        "keep_columns": "topic,n",
        **flags,
    }
    config = load_config(inp, flags, {"ANTHROPIC_API_KEY": TEST_KEY})
    return list(plan(config, bytearray(), [], RowCounter(), None)), RowSettings.of(config)


def _without_time(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "finished_at"}


def _same(light: Work, full: Work, rows: RowSettings) -> None:
    """What the builder and an output row read of a row: identical."""
    assert (light.row.index, light.row.line, light.row.id) == (
        full.row.index,
        full.row.line,
        full.row.id,
    )
    assert light.request_hash == full.request_hash
    assert light.content == full.content
    assert light.prefix_key == full.prefix_key
    assert light.dropped == full.dropped
    assert (light.body is None) == (full.body is None)
    if full.body is not None:
        assert light.body == {"model": full.body.get("model")}
    assert kept_texts(light, rows) == kept_texts(full, rows)
    assert str(light.problem) == str(full.problem)
    assert _without_time(base_row(light, rows, VIA_BATCHES)) == _without_time(
        base_row(full, rows, VIA_BATCHES)
    )
    if full.problem is not None:
        assert _without_time(
            error_row(light, rows, "invalid_request", str(light.problem), None, 0, VIA_BATCHES)
        ) == _without_time(
            error_row(full, rows, "invalid_request", str(full.problem), None, 0, VIA_BATCHES)
        )


def _kept_and_read(
    works: list[Work], rows: RowSettings, path: Path, **bound: Any
) -> tuple[PlannedRows, list[Work], list[Work], list[int]]:
    planned = PlannedRows(path, rows, **bound)
    passed = list(planned.keeping(iter(works)))
    asked: list[int] = []

    def rest(last: int) -> Iterator[Work]:
        asked.append(last)
        return iter([w for w in works if w.row.index > last])

    return planned, passed, list(planned.works(rest)), asked


def test_every_row_comes_back_as_preparing_it_again_gives_it(tmp_path: Path) -> None:
    works, rows = _works(tmp_path)
    sendable = [w.problem is None for w in works]
    # Rows that cannot be sent: too many tokens asked, no prompt, an id used twice.
    assert sendable == [True, True, True, True, False, False, True, False]
    assert works[2].prefix_key is not None and works[2].prefix_key == works[3].prefix_key
    planned, passed, read, asked = _kept_and_read(works, rows, tmp_path / "rows.planned")
    assert passed == works  # the first pass sees the rows as they are
    assert planned.complete and asked == [] and planned.kept_rows == len(works)
    assert len(read) == len(works)
    for light, full in zip(read, works, strict=True):
        _same(light, full, rows)
    planned.remove()
    assert not (tmp_path / "rows.planned").exists()


def test_rows_dropped_settings_come_back(tmp_path: Path) -> None:
    works, rows = _works(tmp_path, model="claude-opus-4-7", drop_unsupported=True)
    assert any(w.dropped for w in works), "a setting the model does not take, dropped"
    _, _, read, _ = _kept_and_read(works, rows, tmp_path / "rows.planned")
    for light, full in zip(read, works, strict=True):
        _same(light, full, rows)


def test_past_its_bound_the_rest_is_prepared_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    works, rows = _works(tmp_path)
    monkeypatch.setattr(planned_module, "ROWS_PER_RECORD", 3)
    planned, passed, read, asked = _kept_and_read(
        works, rows, tmp_path / "rows.planned", max_bytes=1
    )
    assert passed == works  # the first pass still sees every row
    assert not planned.complete and planned.kept_rows == 3 and asked == [2]
    assert [w.row.index for w in read] == [w.row.index for w in works]
    for light, full in zip(read[:3], works[:3], strict=True):
        _same(light, full, rows)
    assert read[3:] == works[3:]  # prepared again: the rows themselves


def test_a_pass_cut_short_keeps_only_what_it_saw(tmp_path: Path) -> None:
    works, rows = _works(tmp_path)
    planned = PlannedRows(tmp_path / "rows.planned", rows)
    seen = planned.keeping(iter(works))
    assert [next(seen).row.id, next(seen).row.id] == ["plain", "unicode"]
    seen.close()  # the pass stopped (an error, a stop): nothing is built from it
    planned.remove()
    assert not (tmp_path / "rows.planned").exists()


def test_a_body_not_encoded_yet_is_not_kept(tmp_path: Path) -> None:
    """A Work made by hand may hold a body and no content: its light copy could not say what
    to send, so it and every row after it are prepared again."""
    works, rows = _works(tmp_path)
    by_hand = replace(works[1], content=None)
    given = [works[0], by_hand, *works[2:]]
    planned, passed, read, asked = _kept_and_read(given, rows, tmp_path / "rows.planned")
    assert passed == given and planned.kept_rows == 1 and asked == [0]
    assert read[1:] == given[1:]
