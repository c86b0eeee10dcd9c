"""The one committer of final outputs (``store.commit``): built beside the target under a
name of its own, swapped in whole, or nothing changed at all."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow as pa
import pytest

from batchrun.core.errors import OutputError
from batchrun.formats.base import OutputFormat
from batchrun.formats.marks import Partial, mark_path
from batchrun.formats.registry import output_formats, read_partial
from batchrun.store.columns import blank_row
from batchrun.store.commit import Commit, remove_stale, replace_folder, temporary_path
from batchrun.store.sink import output_batches, output_schema

SCHEMA = output_schema()


def table(text: str, n: int = 3) -> pa.Table:
    rows = []
    for i in range(n):
        row = blank_row(f"r{i}")
        row.update(status="ok", text=text)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def target_of(tmp_path: Path, fmt: OutputFormat) -> Path:
    return tmp_path / (f"out{fmt.suffixes[0]}" if fmt.suffixes else "out")


def commit(target: Path, fmt: OutputFormat, text: str, **options: object) -> Commit:
    done = Commit(target, fmt, **options)  # type: ignore[arg-type]
    with done.building() as tmp, fmt.writer(tmp, SCHEMA) as write:
        write(table(text))
    return done


def texts(target: Path) -> list[str]:
    return [t for b in output_batches(target, SCHEMA, ["text"]) for t in b.column(0).to_pylist()]


def beside(target: Path) -> list[str]:
    """What the target's folder holds, but the target."""
    return sorted(p.name for p in target.parent.iterdir() if p != target)


@pytest.mark.parametrize("fmt", output_formats(), ids=lambda f: f.name)
def test_a_commit_puts_the_new_output_in_place_and_leaves_nothing_beside_it(
    tmp_path: Path, fmt: OutputFormat
) -> None:
    target = target_of(tmp_path, fmt)
    first = commit(target, fmt, "old")
    assert first.committed is not None and first.committed.path == target
    assert first.committed.format is fmt and first.committed.partial is None
    second = commit(target, fmt, "new")
    assert texts(target) == ["new"] * 3
    assert beside(target) == [] and second.committed is not None


@pytest.mark.parametrize("fmt", output_formats(), ids=lambda f: f.name)
def test_a_failure_midway_leaves_the_old_output_and_no_temporary(
    tmp_path: Path, fmt: OutputFormat
) -> None:
    target = target_of(tmp_path, fmt)
    commit(target, fmt, "old")
    failing = Commit(target, fmt)
    with (
        pytest.raises(OSError, match="No space left"),
        failing.building() as tmp,
        fmt.writer(tmp, SCHEMA) as write,
    ):
        write(table("new"))
        assert tmp.exists()  # half written, under its own name
        raise OSError(errno.ENOSPC, "No space left on device")
    assert texts(target) == ["old"] * 3
    assert beside(target) == [] and failing.committed is None


@pytest.mark.parametrize("fmt", output_formats(), ids=lambda f: f.name)
def test_a_failed_swap_leaves_the_old_output_and_no_temporary(
    tmp_path: Path, fmt: OutputFormat, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = target_of(tmp_path, fmt)
    commit(target, fmt, "old")

    def refuse(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.setattr("batchrun.store.commit._exchange", lambda a, b: False)
    with pytest.raises(OSError, match="Input/output error"):
        commit(target, fmt, "new")
    monkeypatch.undo()
    assert texts(target) == ["old"] * 3
    assert beside(target) == []


def test_too_little_free_space_refuses_before_anything_is_written(tmp_path: Path) -> None:
    fmt = output_formats()[0]
    target = target_of(tmp_path, fmt)
    commit(target, fmt, "old")
    asked: list[Path] = []

    def small(folder: Path) -> int:
        asked.append(folder)
        return 1 << 20  # one MiB

    short = Commit(target, fmt, free_space=small)
    with pytest.raises(OutputError) as info:
        short.check_space(3 << 20, needs="the shards' size", then="Free some space.")
    assert asked == [tmp_path]
    assert str(info.value) == (
        f"not enough space to write {target}: the final step needs about 3.0 MiB free in "
        f"{tmp_path} (the shards' size), and 1.0 MiB are free. Free some space."
    )
    assert beside(target) == [] and texts(target) == ["old"] * 3
    # Enough room, or no way to tell: the commit goes ahead.
    Commit(target, fmt, free_space=small).check_space(1 << 20, needs="", then="")

    def unknown(folder: Path) -> int:
        raise OSError(errno.ENOSYS, "no statvfs here")

    Commit(target, fmt, free_space=unknown).check_space(1 << 40, needs="", then="")


def test_a_full_disk_is_said_with_what_the_step_needs() -> None:
    fmt = output_formats()[0]
    commit = Commit(Path("out.x"), fmt, free_space=lambda folder: 1 << 40)
    full = OSError(errno.ENOSPC, "No space left on device")
    assert commit.short_of_space(full) == ""  # the need is not known yet
    commit.check_space(5 << 20, needs="", then="")
    assert commit.short_of_space(full) == " (the final step needs about 5.0 MiB free beside it)"
    assert commit.short_of_space(OSError(errno.EIO, "Input/output error")) == ""


@pytest.mark.parametrize("fmt", output_formats(), ids=lambda f: f.name)
def test_a_partial_output_is_marked_where_its_format_keeps_the_mark(
    tmp_path: Path, fmt: OutputFormat
) -> None:
    from batchrun.formats.marks import partial_metadata

    target = target_of(tmp_path, fmt)
    partial = Commit(target, fmt)
    schema = SCHEMA.with_metadata(partial_metadata(Partial(3, 10)))
    with partial.building(Partial(3, 10)) as tmp, fmt.writer(tmp, schema) as write:
        write(table("some"))
    assert read_partial(target) == Partial(3, 10)
    assert partial.committed is not None and partial.committed.partial == Partial(3, 10)
    assert mark_path(target).exists() is not fmt.marks_itself
    commit(target, fmt, "all")  # complete now: a mark beside it is gone
    assert read_partial(target) is None and not mark_path(target).exists()


def test_stale_temporaries_go_and_a_folder_a_crash_left_aside_comes_back(
    tmp_path: Path,
) -> None:
    fmt = next(f for f in output_formats() if f.folder)
    target = tmp_path / "labels"
    commit(target, fmt, "old")
    # A crash between the two renames of a swap: the old output aside, none in place.
    aside = target.with_name(f".labels.{os.getpid()}.0123456789ab.old")
    os.replace(target, aside)
    left = [temporary_path(target, ".tmp"), temporary_path(target, ".journal.arrow")]
    left[0].mkdir()
    left[1].write_bytes(b"half")
    keep = tmp_path / ".labels.notours.tmp"  # not a name batchrun gives
    keep.write_bytes(b"")
    removed = remove_stale(target, (".journal.arrow",))
    assert sorted(removed) == sorted(left)
    assert texts(target) == ["old"] * 3 and beside(target) == [keep.name]


def test_a_folder_swap_replaces_the_old_folder_whole(tmp_path: Path) -> None:
    fmt = next(f for f in output_formats() if f.folder)
    target = tmp_path / "labels"
    commit(target, fmt, "old")
    old_parts = {name for name in os.listdir(target) if name.endswith(".parquet")}
    commit(target, fmt, "new")
    assert old_parts and not old_parts & set(os.listdir(target))  # no old part is left
    new = tmp_path / "new"
    new.mkdir()
    (new / "x").write_text("x")
    replace_folder(new, target)
    assert os.listdir(target) == ["x"] and not new.exists()
