"""Which files a resume checks: those requests were built from, recorded as they were read
(``rows.files.FileUse``, ``store.referenced``), and never the rest of the folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import wait_until

from batchrun.rows.files import FileCache, FileProblem, FileUse, still_same
from batchrun.rows.request import RequestDefaults, prepare_request
from batchrun.store.referenced import FileLog, files_path, log_size, rebuilt, unchanged

DEFAULTS = RequestDefaults(model="claude-haiku-4-5", max_tokens=20)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(PNG)
    (root / "notes.txt").write_text("plain notes", encoding="utf-8")
    (root / "sub" / "b.png").write_bytes(PNG)
    return root


def _uses(media: Path, *rows: dict[str, object]) -> list[FileUse]:
    uses: list[FileUse] = []
    cache = FileCache(on_use=uses.append)
    for fields in rows:
        prepare_request({"prompt": "x", **fields}, DEFAULTS, base_dir=media, files=cache)
    return uses


def test_the_cache_tells_of_every_file_a_request_is_built_from(media: Path) -> None:
    uses: list[FileUse] = []
    cache = FileCache(on_use=uses.append)
    rows = [
        {"image": "a.png", "document": "notes.txt"},
        {"image": "./a.png"},  # the same file, found in the cache: told all the same
        {"image": "https://example.com/c.png"},  # a URL is no file of ours
    ]
    for fields in rows:
        prepare_request({"prompt": "x", **fields}, DEFAULTS, base_dir=media, files=cache)
    assert [use.ref for use in uses] == ["a.png", "notes.txt", "./a.png"]
    assert uses[0].real == uses[2].real == str((media / "a.png").resolve())
    assert uses[0].stamp == uses[2].stamp
    assert cache.reads == 2


def test_still_same_notices_any_change_to_a_file_a_row_used(media: Path, tmp_path: Path) -> None:
    (use,) = _uses(media, {"image": "a.png"})
    assert still_same(use, media)
    (media / "unrelated.txt").write_text("a file no row names", encoding="utf-8")
    (media / "sub" / "b.png").write_bytes(PNG + b"more")
    assert still_same(use, media)  # the rest of the folder is not looked at

    # Rewritten in place, same size, its modification time put back: its change time moved.
    before = (media / "a.png").stat()

    def rewritten() -> bool:
        (media / "a.png").write_bytes(PNG[:-1] + b"\x01")
        os.utime(media / "a.png", ns=(before.st_atime_ns, before.st_mtime_ns))
        return (media / "a.png").stat().st_ctime_ns != before.st_ctime_ns

    wait_until(rewritten, 10, "a rewrite with a new change time")
    assert not still_same(use, media)

    (use,) = _uses(media, {"image": "a.png"})
    (media / "a.png").unlink()
    assert not still_same(use, media)  # gone
    (media / "a.png").write_bytes(PNG)
    assert not still_same(use, media)  # another file by that name

    (media / "link.png").symlink_to(media / "a.png")
    (use,) = _uses(media, {"image": "link.png"})
    (media / "link.png").unlink()
    (media / "link.png").symlink_to(media / "sub" / "b.png")
    assert not still_same(use, media)  # the same name now points at another file

    (use,) = _uses(media, {"image": "a.png"})
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "a.png").write_bytes(PNG)
    assert not still_same(use, other)  # another media folder: another file


class _Bucket:
    """A remote media folder (``rows.files.MediaSource``) of files by name."""

    def __init__(self) -> None:
        self.files = {"a.png": ("s3://b/m/a.png@1", PNG)}
        self.asked = 0

    def identify(self, path: str) -> tuple[str, int]:
        self.asked += 1
        if path not in self.files:
            raise FileProblem(f"file {path!r} not found")
        identity, content = self.files[path]
        return identity, len(content)

    def read(self, path: str) -> bytes:
        return self.files[path][1]


def test_a_file_of_a_remote_media_folder_is_identified_again(media: Path) -> None:
    bucket = _Bucket()
    uses: list[FileUse] = []
    prepare_request(
        {"prompt": "x", "image": "a.png"},
        DEFAULTS,
        base_dir=bucket,
        files=FileCache(on_use=uses.append),
    )
    (use,) = uses
    assert use.real is None and still_same(use, bucket)
    bucket.files["a.png"] = ("s3://b/m/a.png@2", PNG)
    assert not still_same(use, bucket)
    assert not still_same(use, media)  # a local folder now: not the file the row used
    (local,) = _uses(media, {"image": "a.png"})
    assert not still_same(local, bucket)


def test_the_log_holds_each_use_once_and_vouches_for_nothing_else(media: Path) -> None:
    path = files_path(media.parent / "out.parquet")
    assert path.name == "out.parquet.files"
    assert unchanged(path, media, 0)  # no log, no file to check
    log = FileLog(path)
    cache = FileCache(on_use=log.record)
    for _ in range(3):
        for fields in ({"image": "a.png"}, {"image": "a.png", "document": "notes.txt"}):
            prepare_request({"prompt": "x", **fields}, DEFAULTS, base_dir=media, files=cache)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    size = log_size(path)
    assert unchanged(path, media, size)
    (media / "unrelated.txt").write_text("beside the input", encoding="utf-8")
    assert unchanged(path, media, size)
    assert not unchanged(path, media, size + 1)  # shorter than a run saw it: cut
    (media / "notes.txt").write_text("other notes", encoding="utf-8")
    assert not unchanged(path, media, size)

    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"ref": "a.png", "real"\n')  # damaged: nothing it says can be trusted
    (media / "notes.txt").write_text("plain notes", encoding="utf-8")
    assert not unchanged(path, media, 0)


def test_a_rebuilt_log_replaces_the_old_one_only_when_the_check_passed(media: Path) -> None:
    path = files_path(media.parent / "out.jsonl")
    stale = FileUse("gone.png", str(media / "gone.png"), "1:2:3:4")
    FileLog(path).record(stale)
    (fresh,) = _uses(media, {"image": "a.png"})

    with pytest.raises(RuntimeError), rebuilt(path) as log:
        log.record(fresh)
        raise RuntimeError("the check refused")
    assert '"gone.png"' in path.read_text(encoding="utf-8")  # kept as it was
    assert not unchanged(path, media, 0)

    with rebuilt(path) as log:
        log.record(fresh)
    assert '"gone.png"' not in path.read_text(encoding="utf-8")
    assert unchanged(path, media, log_size(path))
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []

    with rebuilt(path):
        pass  # no answered row refers to a file any more
    assert not path.exists()
