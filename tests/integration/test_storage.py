"""Storage on local paths, S3 (a real moto server) and GCS (a real emulator), and a remote
output's journal segments: sealed in order, never torn, rebuilt on a new machine."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from support.local_server import free_port
from support.s3_server import (
    SECRET_KEY,
    GcsEmulator,
    MotoServer,
    aws_environment,
    gcs_emulator_available,
)

from batchrun.core.locations import is_remote
from batchrun.remote.errors import StorageError
from batchrun.remote.mirror import (
    RemoteOutput,
    Segmenter,
    journal_prefix,
    segment_name,
    segment_seq,
    work_folder,
)
from batchrun.remote.objects import (
    ACCESS_DENIED,
    NO_SUCH_BUCKET,
    NO_SUCH_OBJECT,
    UNREACHABLE,
    UPLOAD_MARK,
    Storage,
    StorageSettings,
    parse_location,
)
from batchrun.store.columns import blank_row
from batchrun.store.sink import Sink


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Storage, str]:
    """A storage and a folder URL in it: a local folder, or a fresh bucket on moto."""
    if request.param == "local":
        return Storage(), str(tmp_path / "store")
    name = request.getfixturevalue("bucket")
    return request.getfixturevalue("s3"), f"s3://{name}/data"


def message(exc: pytest.ExceptionInfo[StorageError]) -> str:
    text = str(exc.value)
    assert SECRET_KEY not in text
    assert SECRET_KEY[:12] not in text
    return text


# -- locations ------------------------------------------------------------------------------


def test_locations() -> None:
    s3 = parse_location("s3://user:pw@bucket/a/b.parquet?x-amz-token=T")
    assert (s3.scheme, s3.path, s3.bucket, s3.name) == (
        "s3",
        "bucket/a/b.parquet",
        "bucket",
        "b.parquet",
    )
    assert s3.shown == "s3://bucket/a/b.parquet"
    assert parse_location("gs://b/k").remote
    local = parse_location("out/x.jsonl")
    assert (local.scheme, local.remote) == ("file", False)
    assert Path(local.path).is_absolute()
    assert is_remote("s3://b/k") and not is_remote("out/x.jsonl") and not is_remote(Path("s3:"))
    with pytest.raises(StorageError, match="names no bucket and key"):
        parse_location("s3://bucket")
    with pytest.raises(StorageError, match="unknown scheme ftp://"):
        parse_location("ftp://host/x")


def test_settings_from_environment() -> None:
    assert StorageSettings.from_environ({}) == StorageSettings()
    env = {"AWS_ENDPOINT_URL": "http://a:1", "STORAGE_EMULATOR_HOST": "http://g:2"}
    assert StorageSettings.from_environ(env) == StorageSettings("http://a:1", "http://g:2")
    env["AWS_ENDPOINT_URL_S3"] = "http://s3only:3"
    assert StorageSettings.from_environ(env).s3_endpoint == "http://s3only:3"


# -- every operation, locally and on S3 -----------------------------------------------------


def test_round_trip(place: tuple[Storage, str], tmp_path: Path) -> None:
    storage, folder = place
    url = f"{folder}/sub/a.jsonl"
    assert not storage.exists(url)
    assert storage.stat_or_none(url) is None
    storage.write_bytes(url, b'{"a": 1}\n')
    assert storage.exists(url)
    assert storage.read_bytes(url) == b'{"a": 1}\n'
    info = storage.stat(url)
    assert info.size == 9

    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(300_000))
    chunked = Storage(storage.settings, chunk_bytes=65_536)
    assert chunked.upload(local, f"{folder}/big.bin") == 300_000
    down = tmp_path / "down" / "big.bin"
    assert chunked.download(f"{folder}/big.bin", down) == 300_000
    assert down.read_bytes() == local.read_bytes()
    with storage.open_input(f"{folder}/big.bin") as stream:
        stream.seek(100_000)
        assert stream.read(10) == local.read_bytes()[100_000:100_010]

    storage.write_bytes(url, b"replaced: longer\n")
    assert storage.read_bytes(url) == b"replaced: longer\n"
    assert storage.stat(url).stamp != info.stamp

    listed = storage.list(folder)
    assert [o.name for o in listed] == ["big.bin", "a.jsonl"] or [o.name for o in listed] == [
        "a.jsonl",
        "big.bin",
    ]
    assert sorted(o.size for o in listed) == [17, 300_000]
    assert storage.list(f"{folder}/nothing-here") == []

    storage.delete(url)
    assert not storage.exists(url)
    storage.delete(url)  # missing is fine by default
    with pytest.raises(StorageError, match="cannot delete"):
        storage.delete(url, missing_ok=False)
    storage.check_writable(f"{folder}/out.parquet")
    assert [o.name for o in storage.list(folder)] == ["big.bin"]


def test_pyarrow_readers_read_through_open_arrow(s3: Storage, bucket: str) -> None:
    url = f"s3://{bucket}/in/rows.parquet"
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.table({"prompt": ["a", "b", "c"]}), buffer)
    s3.write_bytes(url, buffer.getvalue().to_pybytes())
    with s3.open_arrow(url) as native:
        assert pq.ParquetFile(native).read().column("prompt").to_pylist() == ["a", "b", "c"]
    error = s3.translate(url, "read", OSError("AWS Error NETWORK_CONNECTION during GetObject"))
    assert str(error).startswith(f"cannot read {url}: {UNREACHABLE}")


def test_list_is_sorted_and_complete_on_s3(s3: Storage, bucket: str) -> None:
    prefix = f"s3://{bucket}/p.batchrun/journal"
    names = [segment_name(n, "run") for n in (3, 1, 2)]
    for name in names:
        s3.write_bytes(f"{prefix}/{name}", b"x\n")
    s3.write_bytes(f"s3://{bucket}/p.batchrun/journalx", b"not in the folder")
    assert [o.url for o in s3.list(prefix)] == [f"{prefix}/{n}" for n in sorted(names)]


# -- what failed, in words ------------------------------------------------------------------


def test_no_such_object(s3: Storage, bucket: str) -> None:
    with pytest.raises(StorageError) as exc:
        s3.read_bytes(f"s3://{bucket}/missing.jsonl?versionId=SECRETISH")
    text = message(exc)
    assert text == f"cannot read s3://{bucket}/missing.jsonl: {NO_SUCH_OBJECT}"
    assert exc.value.reason == NO_SUCH_OBJECT
    with pytest.raises(StorageError, match=NO_SUCH_OBJECT):
        s3.stat(f"s3://{bucket}/missing.jsonl")
    with pytest.raises(StorageError, match=NO_SUCH_OBJECT):
        s3.download(f"s3://{bucket}/missing.jsonl", Path("never-written"))
    assert not Path("never-written").exists()


def test_no_such_bucket(s3: Storage) -> None:
    for act in (
        lambda: s3.read_bytes("s3://no-such-bucket-here/a.jsonl"),
        lambda: s3.write_bytes("s3://no-such-bucket-here/a.jsonl", b"x"),
        lambda: s3.list("s3://no-such-bucket-here/folder"),
        lambda: s3.check_writable("s3://no-such-bucket-here/out.parquet"),
    ):
        with pytest.raises(StorageError) as exc:
            act()
        text = message(exc)
        assert text.endswith(f": {NO_SUCH_BUCKET} 'no-such-bucket-here'")
        assert "s3://no-such-bucket-here/" in text


@pytest.mark.slow
def test_endpoint_unreachable(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    storage = Storage(StorageSettings(s3_endpoint=dead))
    with pytest.raises(StorageError) as exc:
        storage.read_bytes("s3://bucket/a.jsonl")
    text = message(exc)
    assert text == f"cannot read s3://bucket/a.jsonl: {UNREACHABLE}; nothing answers at {dead}"
    with pytest.raises(StorageError, match=UNREACHABLE):
        storage.write_bytes("s3://bucket/a.jsonl", b"x")


def test_access_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with MotoServer(auth=True) as strict:
        for name, value in aws_environment(strict.endpoint, tmp_path).items():
            monkeypatch.setenv(name, value)
        storage = Storage(StorageSettings(s3_endpoint=strict.endpoint))
        for act in (
            lambda: storage.read_bytes("s3://bucket/a.jsonl"),
            lambda: storage.write_bytes("s3://bucket/a.jsonl", b"x"),
            lambda: storage.list("s3://bucket/folder"),
        ):
            with pytest.raises(StorageError) as exc:
                act()
            text = message(exc)
            assert f": {ACCESS_DENIED}; check the credentials" in text
            assert "s3://bucket/" in text


def test_local_errors(tmp_path: Path) -> None:
    storage = Storage()
    with pytest.raises(StorageError, match="no such file"):
        storage.read_bytes(tmp_path / "missing.jsonl")
    with pytest.raises(StorageError, match=r"cannot read .*missing.bin: no such file"):
        storage.upload(tmp_path / "missing.bin", tmp_path / "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="cannot write"):
        storage.write_bytes(tmp_path / "file" / "under-a-file", b"x")


# -- all or nothing -------------------------------------------------------------------------


class _BreaksMidway:
    """A local file that fails after its first chunk, as a failing disk would."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self._reads = 0

    def read(self, size: int = -1) -> bytes:
        self._reads += 1
        if self._reads > 1:
            raise OSError(5, "Input/output error")
        return self._file.read(size)

    def __enter__(self) -> _BreaksMidway:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def _raw_names(place: tuple[Storage, str]) -> list[str]:
    """Every object or file under the folder, temporary ones too."""
    storage, folder = place
    loc = parse_location(folder)
    fs = pafs.LocalFileSystem() if not loc.remote else storage._fs(loc)
    selector = pafs.FileSelector(loc.path, recursive=True, allow_not_found=True)
    return sorted(i.base_name for i in fs.get_file_info(selector) if i.type == pafs.FileType.File)


def test_upload_is_all_or_nothing(place: tuple[Storage, str], tmp_path: Path) -> None:
    storage, folder = place
    source = tmp_path / "final.parquet"
    source.write_bytes(os.urandom(200_000))
    breaking = Storage(storage.settings, chunk_bytes=65_536, open_local=_BreaksMidway)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match=r"cannot read .*final.parquet: failed"):
        breaking.upload(source, f"{folder}/new.parquet")
    assert not storage.exists(f"{folder}/new.parquet")

    storage.write_bytes(f"{folder}/old.parquet", b"the old final file")
    with pytest.raises(StorageError):
        breaking.upload(source, f"{folder}/old.parquet")
    assert storage.read_bytes(f"{folder}/old.parquet") == b"the old final file"
    assert _raw_names(place) == ["old.parquet"]  # no temporary object left behind


# -- journal segments -----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _line(n: int) -> bytes:
    return b'{"_index":%d,"id":"row-%d","status":"ok"}\n' % (n, n)


def _append(journal: Path, data: bytes) -> int:
    with journal.open("ab") as fh:
        fh.write(data)
    return journal.stat().st_size


def _segments(storage: Storage, url: str) -> list[bytes]:
    return [storage.read_bytes(o.url) for o in storage.list(journal_prefix(url))]


def test_segments_sealed_every_n_rows(s3: Storage, bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}/out/labels.parquet"
    remote = RemoteOutput(url, s3, work_dir=tmp_path / "a", rows_per_segment=3)
    remote.pull()
    segmenter = remote.segmenter()
    for n in range(7):
        segmenter.noticed(_append(remote.local_journal, _line(n)))
        segmenter.wait()
    assert _segments(s3, url) == [
        b"".join(map(_line, range(3))),
        b"".join(map(_line, range(3, 6))),
    ]
    segmenter.close()
    segments = _segments(s3, url)
    assert segments[-1] == _line(6)
    assert b"".join(segments) == remote.local_journal.read_bytes()
    names = [o.name for o in s3.list(journal_prefix(url))]
    assert [segment_seq(n) for n in names] == [1, 2, 3]
    assert all(n.endswith(f"-{remote.run_id}.jsonl") for n in names)


def test_segments_sealed_by_time(s3: Storage, bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}/labels.jsonl"
    clock = FakeClock()
    remote = RemoteOutput(
        url, s3, work_dir=tmp_path, rows_per_segment=1000, seconds_per_segment=60, clock=clock
    )
    remote.pull()
    segmenter = remote.segmenter()
    for n in range(5):
        segmenter.noticed(_append(remote.local_journal, _line(n)))
        clock.now += 10
    segmenter.wait()
    assert _segments(s3, url) == []  # 40 s: nothing sealed yet
    clock.now += 30
    segmenter.noticed(_append(remote.local_journal, _line(5)))
    segmenter.wait()
    assert _segments(s3, url) == [b"".join(map(_line, range(6)))]
    segmenter.close()


def test_a_segment_never_ends_in_a_torn_line(tmp_path: Path) -> None:
    journal = tmp_path / "out.jsonl.journal"
    sealed: list[bytes] = []
    segmenter = Segmenter(
        journal, lambda source, end: sealed.append(source.read()), rows_per_segment=1
    )
    segmenter.noticed(_append(journal, _line(0) + _line(1)[:10]))  # a line half written
    segmenter.wait()
    segmenter.noticed(_append(journal, _line(1)[10:20]))  # still no line end
    segmenter.wait()
    segmenter.noticed(_append(journal, _line(1)[20:] + _line(2)))
    segmenter.close()
    assert sealed == [_line(0), _line(1) + _line(2)]
    assert segmenter.sealed_bytes == journal.stat().st_size


def test_a_seal_asked_for_while_one_is_under_way_is_made_too(tmp_path: Path) -> None:
    """The sink asks without a size (seal up to the journal's end): a second ask that comes
    while the first seal uploads must not be taken for the first and dropped (its rows then
    waited for the time limit, a minute, instead of ``rows_per_segment``)."""
    journal = tmp_path / "out.jsonl.journal"
    sealed: list[bytes] = []
    uploading, go_on = threading.Event(), threading.Event()

    def seal(source: object, end: int) -> None:
        if not sealed:
            uploading.set()
            go_on.wait(30)
        sealed.append(source.read())  # type: ignore[attr-defined]

    segmenter = Segmenter(journal, seal, rows_per_segment=1, seconds_per_segment=3600)
    _append(journal, _line(0))
    segmenter.noticed()
    assert uploading.wait(30)
    _append(journal, _line(1))
    segmenter.noticed()  # while the first seal uploads
    go_on.set()
    segmenter.wait()
    assert sealed == [_line(0), _line(1)]
    segmenter.close()


def test_a_failed_seal_is_retried_and_the_run_goes_on(tmp_path: Path) -> None:
    journal = tmp_path / "out.jsonl.journal"
    sealed: list[bytes] = []

    def seal(source: object, end: int) -> None:
        if not sealed and segmenter.failures == 0:
            raise StorageError("s3://b/x", "write", UNREACHABLE)
        sealed.append(source.read())  # type: ignore[attr-defined]

    segmenter = Segmenter(journal, seal, rows_per_segment=2)
    for n in range(4):
        segmenter.noticed(_append(journal, _line(n)))
        segmenter.wait()
    assert segmenter.failures == 1
    assert sealed == [b"".join(map(_line, range(4)))]  # the retry took all four rows
    segmenter.close()
    assert segmenter.last_error is None


def test_close_raises_when_the_last_seal_fails(tmp_path: Path) -> None:
    journal = tmp_path / "j"
    _append(journal, _line(0))

    def seal(source: object, end: int) -> None:
        raise StorageError("s3://b/x", "write", UNREACHABLE)

    segmenter = Segmenter(journal, seal)
    with pytest.raises(StorageError, match=UNREACHABLE):
        segmenter.close()


# -- the remote output: new machines, returning machines, publish ---------------------------


def _run(remote: RemoteOutput, lines: list[bytes]) -> None:
    """What a run's sink does: append rows, notice each, seal the rest at the end (waiting
    after each row, so that where segments end does not depend on the thread's speed)."""
    segmenter = remote.segmenter()
    for line in lines:
        segmenter.noticed(_append(remote.local_journal, line))
        segmenter.wait()
    segmenter.close()


def test_new_machine_rebuilds_the_journal_from_segments(
    s3: Storage, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/out/labels.parquet"
    first = RemoteOutput(url, s3, work_dir=tmp_path / "a", rows_per_segment=4)
    assert first.pull().segments_pulled == 0
    _run(first, [_line(n) for n in range(10)])

    second = RemoteOutput(url, s3, work_dir=tmp_path / "b", rows_per_segment=4)
    report = second.pull()
    assert (report.final, report.segments_pulled, report.unsealed_bytes) == (False, 3, 0)
    assert second.local_journal.read_bytes() == first.local_journal.read_bytes()
    _run(second, [_line(n) for n in range(10, 13)])
    names = [o.name for o in s3.list(journal_prefix(url))]
    assert [segment_seq(n) for n in names] == [1, 2, 3, 4]  # numbered on, across runs

    third = RemoteOutput(url, s3, work_dir=tmp_path / "c")
    third.pull()
    assert third.local_journal.read_bytes() == b"".join(map(_line, range(13)))


def test_a_pull_removes_the_temporary_objects_of_cut_off_segment_uploads(
    s3: Storage, bucket: str, tmp_path: Path
) -> None:
    """A run cut off from the store mid-upload leaves the upload's temporary object (pyarrow
    completes it on close); the next run, holding the lease, is the only writer of the
    journal folder: it removes them, and keeps every segment."""
    url = f"s3://{bucket}/out/labels.parquet"
    first = RemoteOutput(url, s3, work_dir=tmp_path / "a", rows_per_segment=4)
    first.pull()
    _run(first, [_line(n) for n in range(8)])
    cut = f"{journal_prefix(url)}/.000003-run{UPLOAD_MARK}4242-0123456789ab"
    s3.write_bytes(cut, _line(8))
    assert [o.url for o in s3.list(journal_prefix(url), unfinished_uploads=True)] == [cut]

    second = RemoteOutput(url, s3, work_dir=tmp_path / "b")
    second.pull()
    assert s3.list(journal_prefix(url), unfinished_uploads=True) == []
    assert len(s3.list(journal_prefix(url))) == 2  # the sealed segments stay
    assert second.local_journal.read_bytes() == b"".join(map(_line, range(8)))


def test_returning_machine_keeps_its_unsealed_tail(
    s3: Storage, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/labels.jsonl"
    a = RemoteOutput(url, s3, work_dir=tmp_path / "a")
    a.pull()
    _run(a, [_line(0), _line(1)])
    tail = _line(2)  # finished on machine A, which was then lost before sealing it
    _append(a.local_journal, tail)

    b = RemoteOutput(url, s3, work_dir=tmp_path / "b")
    b.pull()
    _run(b, [_line(2), _line(3)])

    a_again = RemoteOutput(url, s3, work_dir=tmp_path / "a")
    report = a_again.pull()
    assert (report.segments_pulled, report.unsealed_bytes) == (1, len(tail))
    expected = _line(0) + _line(1) + _line(2) + _line(3) + tail
    assert a_again.local_journal.read_bytes() == expected
    _run(a_again, [])  # seals the tail
    c = RemoteOutput(url, s3, work_dir=tmp_path / "c")
    c.pull()
    assert c.local_journal.read_bytes() == expected


def test_publish_uploads_the_final_file_then_removes_segments(
    s3: Storage, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/out/labels.parquet"
    remote = RemoteOutput(url, s3, work_dir=tmp_path / "a")
    remote.pull()
    _run(remote, [_line(0), _line(1)])
    remote.local_output.write_bytes(b"PAR1 the final dataset PAR1")  # the sink's finalize
    remote.local_journal.unlink()
    assert not s3.exists(url)  # absent until the run ends
    remote.publish()
    assert s3.read_bytes(url) == b"PAR1 the final dataset PAR1"
    assert s3.list(journal_prefix(url)) == []

    again = RemoteOutput(url, s3, work_dir=tmp_path / "a")
    assert again.pull().final
    fresh = RemoteOutput(url, s3, work_dir=tmp_path / "new")
    report = fresh.pull()
    assert (report.final, report.segments_pulled) == (True, 0)
    assert fresh.local_output.read_bytes() == b"PAR1 the final dataset PAR1"


def test_keep_journal_keeps_segments(s3: Storage, bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}/labels.jsonl"
    remote = RemoteOutput(url, s3, work_dir=tmp_path, keep_journal=True)
    remote.pull()
    _run(remote, [_line(0)])
    remote.local_output.write_bytes(_line(0))
    remote.publish()
    assert _segments(s3, url) == [_line(0)]


def test_a_journal_made_stale_by_another_machine_is_set_aside(
    s3: Storage, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/labels.jsonl"
    a = RemoteOutput(url, s3, work_dir=tmp_path / "a")
    a.pull()
    _run(a, [_line(0)])
    b = RemoteOutput(url, s3, work_dir=tmp_path / "b")
    b.pull()
    b.local_output.write_bytes(b"final by b\n")
    b.publish()  # the segments A knew are gone

    a_again = RemoteOutput(url, s3, work_dir=tmp_path / "a")
    report = a_again.pull()
    assert report.set_aside is not None and report.set_aside.read_bytes() == _line(0)
    assert not a_again.local_journal.exists() or a_again.local_journal.read_bytes() == b""
    assert a_again.local_output.read_bytes() == b"final by b\n"


def test_overwrite_clears_segments_and_the_local_copy(
    s3: Storage, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/labels.jsonl"
    remote = RemoteOutput(url, s3, work_dir=tmp_path)
    remote.pull()
    _run(remote, [_line(0)])
    again = RemoteOutput(url, s3, work_dir=tmp_path)
    assert again.pull(overwrite=True).segments_pulled == 0
    assert s3.list(journal_prefix(url)) == []
    assert not again.local_journal.exists()


def test_work_folder(tmp_path: Path) -> None:
    one = work_folder("s3://b/out/labels.parquet", cache_home=tmp_path)
    assert one.parent == tmp_path / "batchrun"
    assert one.name.startswith("labels.parquet-")
    assert one == work_folder("s3://b/out/labels.parquet", cache_home=tmp_path)
    assert one != work_folder("s3://b/other/labels.parquet", cache_home=tmp_path)
    assert work_folder("s3://b/x", work_dir=tmp_path / "w") == tmp_path / "w"


def test_a_work_folder_of_another_output_is_refused(
    s3: Storage, bucket: str, tmp_path: Path
) -> None:
    RemoteOutput(f"s3://{bucket}/a.jsonl", s3, work_dir=tmp_path).pull()
    wrong = RemoteOutput(f"s3://{bucket}/a.jsonl", s3, work_dir=tmp_path)
    wrong.state_path.write_text(wrong.state_path.read_text().replace("a.jsonl", "b.jsonl"))
    with pytest.raises(StorageError, match="belongs to another output"):
        wrong.pull()


# -- GCS, on the emulator -------------------------------------------------------------------


@pytest.mark.skipif(not gcs_emulator_available(), reason="gcp-storage-emulator is not installed")
def test_gcs_round_trip(tmp_path: Path) -> None:
    with GcsEmulator("gbucket") as emulator:
        storage = Storage(
            StorageSettings.from_environ({"STORAGE_EMULATOR_HOST": emulator.endpoint})
        )
        url = "gs://gbucket/out/labels.jsonl"
        storage.write_bytes(url, b"hello\n")
        assert storage.read_bytes(url) == b"hello\n"
        assert storage.stat(url).size == 6
        local = tmp_path / "up.bin"
        local.write_bytes(os.urandom(100_000))
        storage.upload(local, "gs://gbucket/out/up.bin")
        storage.download("gs://gbucket/out/up.bin", tmp_path / "down.bin")
        assert (tmp_path / "down.bin").read_bytes() == local.read_bytes()
        assert [o.name for o in storage.list("gs://gbucket/out")] == ["labels.jsonl", "up.bin"]
        storage.delete(url)
        with pytest.raises(StorageError) as exc:
            storage.read_bytes(url)
        assert str(exc.value) == f"cannot read {url}: {NO_SUCH_OBJECT}"
        with pytest.raises(StorageError, match=f"{NO_SUCH_BUCKET} 'nobucket'"):
            storage.read_bytes("gs://nobucket/x")

        remote = RemoteOutput("gs://gbucket/run/labels.jsonl", storage, work_dir=tmp_path / "a")
        remote.pull()
        _run(remote, [_line(0), _line(1)])
        fresh = RemoteOutput("gs://gbucket/run/labels.jsonl", storage, work_dir=tmp_path / "b")
        fresh.pull()
        assert fresh.local_journal.read_bytes() == _line(0) + _line(1)


# -- with the real sink ---------------------------------------------------------------------


def _sink_row(i: int) -> dict[str, Any]:
    row = blank_row(f"r{i}")
    row.update(status="ok", text=f"answer {i}", request_hash=f"h{i}")
    return row


def test_the_sink_on_a_remote_output_survives_the_machine(
    moto: MotoServer, s3: Storage, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/out/labels.parquet"
    # Machine A: 5 of 8 rows, sealed two at a time, then lost (no final step).
    a = RemoteOutput(url, s3, work_dir=tmp_path / "a", rows_per_segment=2)
    a.pull()
    sink = Sink(a.local_output)
    sink.open()
    segmenter = a.segmenter()
    for i in range(5):
        sink.submit(i, _sink_row(i))
        segmenter.noticed()
        segmenter.wait()
    asyncio.run(sink.close())
    assert not s3.exists(url)

    # Machine B, empty work folder: resumes after the last sealed row, then finishes.
    b = RemoteOutput(url, s3, work_dir=tmp_path / "b", rows_per_segment=2)
    b.pull()
    sink = Sink(b.local_output)
    prior = sink.open()
    assert sorted(prior.journal) == [0, 1, 2, 3]  # row 4 was never sealed
    segmenter = b.segmenter()
    for i in range(4, 8):
        sink.submit(i, _sink_row(i))
        segmenter.noticed()
    asyncio.run(sink.close())
    segmenter.close()
    assert sink.finalize(total_rows=8).rows == 8
    b.publish()

    table = pq.read_table(parse_location(url).path, filesystem=moto.filesystem())
    assert table.column("id").to_pylist() == [f"r{i}" for i in range(8)]
    assert s3.list(journal_prefix(url)) == []
