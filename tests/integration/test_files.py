"""Local files in requests: sniffing, containment, limits, the cache, attachments, whole runs."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from support import TEST_KEY, RecordingTransport, write_jsonl
from test_conformance import assert_conforms

from batchrun import load_config, run
from batchrun.core.errors import InvalidRowError
from batchrun.rows.files import (
    IMAGE_MAX_BYTES,
    FileCache,
    FileProblem,
    sniff,
    source_for,
)
from batchrun.rows.request import RequestDefaults, build_request, prepare_request
from batchrun.runs.resume import ResumeMismatchError
from batchrun.simulator import SimulatorThread

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sample_data"))
import make_media

from batchrun.runs.runtime import Runtime

DEFAULTS = RequestDefaults(model="claude-haiku-4-5", max_tokens=50)
PNG = make_media.png(4, 4, (1, 2, 3))
PDF = make_media.pdf(["hello"])


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.png").write_bytes(PNG)
    (root / "b.gif").write_bytes(make_media.gif())
    (root / "doc.pdf").write_bytes(PDF)
    (root / "notes.txt").write_text("plain notes", encoding="utf-8")
    (root / "blob.bin").write_bytes(b"\x00\x01\x02\xff")
    (root / "sub").mkdir()
    (root / "sub" / "c.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG)
    return root


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xd8\xff\xe0rest", ("image", "image/jpeg")),
        (PNG, ("image", "image/png")),
        (b"GIF87a...", ("image", "image/gif")),
        (b"RIFF\x10\x00\x00\x00WEBPVP8L", ("image", "image/webp")),
        (PDF, ("pdf", "application/pdf")),
        ("naïve text\n".encode(), ("text", "text/plain")),
        (b"\x00\x01binary", None),
        (b"\xc3\x28 not utf-8", None),
    ],
)
def test_the_media_type_comes_from_the_bytes(
    content: bytes, expected: tuple[str, str] | None
) -> None:
    assert sniff(content) == expected


def test_sources_are_the_apis_base64_or_text_sources(media: Path) -> None:
    cache = FileCache()
    image = source_for("image", "a.png", media, cache)
    assert image == {
        "type": "base64",
        "media_type": "image/png",
        "data": base64.b64encode(PNG).decode(),
    }
    assert source_for("document", "doc.pdf", media, cache)["media_type"] == "application/pdf"
    assert source_for("document", "notes.txt", media, cache) == {
        "type": "text",
        "media_type": "text/plain",
        "data": "plain notes",
    }
    assert source_for("image", "sub/c.png", media, cache)["data"] == image["data"]


@pytest.mark.parametrize(
    ("block", "path", "reason"),
    [
        ("image", "missing.png", "not found"),
        ("image", "../secret.png", "outside the media folder"),
        ("image", "sub/../../secret.png", "outside the media folder"),
        ("image", "doc.pdf", "not an image"),
        ("document", "a.png", "is an image"),
        ("image", "blob.bin", "not a type the API accepts"),
        ("image", "sub", "not a regular file"),
    ],
)
def test_unusable_files_are_refused_with_a_reason(
    media: Path, block: str, path: str, reason: str
) -> None:
    with pytest.raises(FileProblem, match=reason):
        source_for(block, path, media, FileCache())


def test_absolute_paths_and_symlinks_out_of_the_folder_are_refused(media: Path) -> None:
    secret = media.parent / "secret.png"
    with pytest.raises(FileProblem, match="outside"):
        source_for("image", str(secret), media, FileCache())
    (media / "link.png").symlink_to(secret)
    with pytest.raises(FileProblem, match="outside"):
        source_for("image", "link.png", media, FileCache())
    # An absolute path that stays inside is fine.
    assert source_for("image", str(media / "a.png"), media, FileCache())["type"] == "base64"


def test_size_limits_are_checked(media: Path) -> None:
    (media / "big.png").write_bytes(PNG + b"\0" * IMAGE_MAX_BYTES)
    with pytest.raises(FileProblem, match="over the API's 5 MB for an image"):
        source_for("image", "big.png", media, FileCache())


def test_a_shared_file_is_read_once_and_again_after_it_changes(media: Path) -> None:
    cache = FileCache(entries=2)
    for _ in range(5):
        source_for("image", "a.png", media, cache)
    assert cache.reads == 1
    (media / "a.png").write_bytes(make_media.png(5, 5, (9, 9, 9)))
    os.utime(media / "a.png", ns=(1, 1))  # a different mtime whatever the clock's resolution
    source_for("image", "a.png", media, cache)
    assert cache.reads == 2
    source_for("image", "b.gif", media, cache)
    source_for("document", "doc.pdf", media, cache)  # evicts a.png (2 entries at most)
    source_for("image", "a.png", media, cache)
    assert cache.reads == 5


def test_path_sources_in_messages_become_base64(media: Path) -> None:
    url = {"type": "url", "url": "https://example.com/x.png"}
    fields = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "path", "path": "a.png"}},
                    {"type": "image", "source": url},
                    {"type": "document", "source": {"type": "path", "path": "doc.pdf"}},
                    {"type": "text", "text": "Compare."},
                ],
            }
        ]
    }
    body = build_request(fields, DEFAULTS, base_dir=media)
    blocks = body["messages"][0]["content"]
    assert blocks[0]["source"]["media_type"] == "image/png"
    assert blocks[1]["source"] == url
    assert blocks[2]["source"]["media_type"] == "application/pdf"
    assert fields["messages"][0]["content"][0]["source"]["type"] == "path"  # row untouched
    assert_conforms(body)


def test_attachment_columns_go_before_the_prompt_in_order(media: Path) -> None:
    fields = {
        "images": '["a.png", "https://example.com/x.jpg"]',
        "image": "b.gif",
        "document": ["notes.txt", "doc.pdf"],
        "q": "Describe.",
    }
    defaults = RequestDefaults(model="m", max_tokens=5, template="{q}")
    body = build_request(fields, defaults, base_dir=media)
    blocks = body["messages"][0]["content"]
    kinds = [(b["type"], b.get("source", {}).get("type")) for b in blocks]
    assert kinds == [
        ("image", "base64"),
        ("image", "base64"),
        ("image", "url"),
        ("document", "text"),
        ("document", "base64"),
        ("text", None),
    ]
    assert blocks[0]["source"]["media_type"] == "image/gif"  # `image` before `images`
    assert blocks[-1]["text"] == "Describe."
    assert_conforms(body)


def test_a_column_the_template_uses_is_text_not_an_attachment(media: Path) -> None:
    defaults = RequestDefaults(model="m", max_tokens=5, template="Summarize: {document}")
    body = build_request({"document": "a long text"}, defaults, base_dir=media)
    assert body["messages"][0]["content"] == "Summarize: a long text"


def test_file_problems_are_row_problems_naming_the_field(media: Path) -> None:
    fields: dict[str, Any] = {"prompt": "x", "image": ["a.png", "../secret.png"], "document": 5}
    with pytest.raises(InvalidRowError) as info:
        build_request(fields, DEFAULTS, base_dir=media)
    found = {(p.field, p.message.split(" ")[0]) for p in info.value.problems}
    assert ("image", "file") in found and ("document", "must") in found
    with pytest.raises(InvalidRowError, match="needs an input file"):
        build_request({"prompt": "x", "image": "a.png"}, DEFAULTS)
    messages = [{"role": "user", "content": [{"type": "image", "source": {"type": "path"}}]}]
    with pytest.raises(InvalidRowError, match=r"\[0\]\.content\[0\]"):
        build_request({"messages": messages}, DEFAULTS, base_dir=media)
    with pytest.raises(InvalidRowError, match="not messages"):
        build_request(
            {"messages": '[{"role": "user", "content": "hi"}]', "image": "a.png"},
            DEFAULTS,
            base_dir=media,
        )


def test_the_hash_covers_the_files_content(media: Path) -> None:
    fields = {"prompt": "x", "image": "a.png"}
    first = prepare_request(fields, DEFAULTS, base_dir=media).hash
    assert prepare_request(fields, DEFAULTS, base_dir=media).hash == first
    (media / "a.png").write_bytes(make_media.png(6, 6, (7, 7, 7)))
    assert prepare_request(fields, DEFAULTS, base_dir=media).hash != first


def test_whole_run_sends_files_and_refuses_bad_rows(
    media: Path, tmp_path: Path, sim: SimulatorThread
) -> None:
    rows = [
        {"id": "png", "image": "a.png", "q": "What is it?"},
        {"id": "both", "images": ["a.png", "sub/c.png"], "document": "doc.pdf", "q": "Compare"},
        {"id": "escape", "image": "../secret.png", "q": "Leak it"},
        {"id": "missing", "document": "nope.pdf", "q": "Read it"},
    ]
    inp = write_jsonl(media / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    recorder = RecordingTransport()
    settings = {
        "output": str(out),
        "model": "claude-haiku-4-5",
        "max_tokens": 40,
        "template": "{q}",
        "base_url": sim.base_url,
        "quiet": True,
    }
    config = load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY})
    summary = run(config, runtime=Runtime(transport=recorder))
    assert summary.exit_code == 3
    got = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert got["png"]["status"] == got["both"]["status"] == "ok"
    for bad, reason in (("escape", "outside the media folder"), ("missing", "not found")):
        assert got[bad]["status"] == "error"
        assert got[bad]["error_type"] == "invalid_request"
        assert reason in got[bad]["error_message"]
    assert len(recorder.bodies) == 2  # the bad rows were never sent
    for body in recorder.bodies:
        assert_conforms(body)
    # A multimodal prompt costs more input tokens than its text alone.
    assert got["both"]["input_tokens"] > got["png"]["input_tokens"] > 1000

    # Resume notices an edited file even though the input file itself did not change.
    (media / "a.png").write_bytes(make_media.png(8, 8, (0, 0, 0)))
    with pytest.raises(ResumeMismatchError, match="png"):
        run(config, runtime=Runtime(transport=RecordingTransport()))


def test_the_sample_job_runs(tmp_path: Path, sim: SimulatorThread) -> None:
    job = Path(__file__).resolve().parents[2] / "jobs" / "describe_images.toml"
    settings = {"output": str(tmp_path / "o.jsonl"), "base_url": sim.base_url, "quiet": True}
    summary = run(load_config(job, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY}))
    assert summary.exit_code == 0 and summary.final is not None and summary.final.ok == 6


def _rewrite(path: Path, content: bytes) -> None:
    """New content, and an mtime a second later, as an editor would leave it."""
    before = path.stat().st_mtime_ns
    path.write_bytes(content)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_resume_notices_a_changed_file_whatever_its_name(media: Path, sim: SimulatorThread) -> None:
    (media / "notes.log").write_text("the meeting is on Monday", encoding="utf-8")
    (media / "photo").write_bytes(PNG)  # an image without an extension
    rows = [
        {"id": "log", "document": "notes.log", "q": "When is the meeting?"},
        {"id": "img", "image": "photo", "q": "What colour is it?"},
        {"id": "plain", "q": "Say hi"},
    ]
    inp = write_jsonl(media / "in.jsonl", rows)
    settings = {
        "output": str(media / "out.jsonl"),  # beside the input, with its journal and state
        "model": "claude-haiku-4-5",
        "max_tokens": 40,
        "template": "{q}",
        "base_url": sim.base_url,
        "quiet": True,
    }
    config = load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY})
    assert run(config).exit_code == 0
    recorder = RecordingTransport()
    assert (
        run(config, runtime=Runtime(transport=recorder)).exit_code == 0
    )  # nothing changed: nothing sent
    assert recorder.bodies == []

    _rewrite(media / "notes.log", b"the meeting is on Friday")
    with pytest.raises(ResumeMismatchError, match=r"1 row\(s\) \(ids log\)"):
        run(config, runtime=Runtime(transport=RecordingTransport()))
    _rewrite(media / "notes.log", b"the meeting is on Monday")
    _rewrite(media / "photo", make_media.png(4, 4, (200, 0, 0)))
    with pytest.raises(ResumeMismatchError, match=r"1 row\(s\) \(ids img\)"):
        run(config, runtime=Runtime(transport=RecordingTransport()))


def test_media_root_lets_data_and_images_sit_in_sibling_folders(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    """The common layout: ``data/prompts.jsonl`` beside ``images/``."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "images").mkdir()
    (project / "images" / "cat.png").write_bytes(make_media.png(4, 4, (200, 10, 10)))
    (tmp_path / "secret.txt").write_text("not for the API")
    rows = [
        {"id": "cat", "image": "images/cat.png", "prompt": "What is it?"},
        {"id": "out", "document": "../secret.txt", "prompt": "Read it"},
    ]
    inp = write_jsonl(project / "data" / "prompts.jsonl", rows)
    out = tmp_path / "out.jsonl"
    settings = {
        "output": str(out),
        "model": "claude-haiku-4-5",
        "max_tokens": 40,
        "base_url": sim.base_url,
        "quiet": True,
    }
    env = {"ANTHROPIC_API_KEY": TEST_KEY}
    # Without it, paths resolve against data/: the image is not found there.
    run(load_config(inp, settings, environ=env))
    first = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert "not found" in first["cat"]["error_message"]

    recorder = RecordingTransport()
    config = load_config(
        inp, {**settings, "media_root": str(project / "images" / ".."), "overwrite": True}, env
    )
    assert config.input.media_folder == project
    run(config, runtime=Runtime(transport=recorder))
    got = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert got["cat"]["status"] == "ok"
    # Still confined: a path out of the media folder is refused, and never sent.
    assert "outside the media folder" in got["out"]["error_message"]
    assert len(recorder.bodies) == 1
    image = recorder.bodies[0]["messages"][0]["content"][0]
    assert image["type"] == "image" and image["source"]["media_type"] == "image/png"


def test_a_media_root_that_is_not_a_folder_is_refused(tmp_path: Path) -> None:
    from batchrun.core.errors import ConfigError

    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    with pytest.raises(ConfigError, match=r"`media_root`.*not a folder"):
        load_config(inp, {"media_root": str(tmp_path / "nope")}, environ={})
