"""Job files, price files and the files rows attach, on S3 (a real moto server on
127.0.0.1): read through the storage layer, a remote job file's relative input, output and
prices resolved beside it on the store, and errors that name the URL and never a secret."""

from __future__ import annotations

import base64
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import prompts, write_jsonl
from support.s3_server import SECRET_KEY

from batchrun import load_config, run
from batchrun.cli import cli
from batchrun.config.load import RunConfig
from batchrun.core.errors import ConfigError
from batchrun.remote.errors import StorageError
from batchrun.remote.objects import (
    NO_SUCH_OBJECT,
    Storage,
    StorageMedia,
)
from batchrun.rows.files import FileCache, FileProblem, source_for
from batchrun.runs.fetch import fetched
from batchrun.simulator import SimulatorThread

PRICES = "[models.claude-haiku-4-5]\noutput = 4.5\n"


def put_job(storage: Storage, url: str, text: str) -> None:
    storage.write_bytes(url, text.encode())


def test_a_job_file_on_s3_resolves_its_relative_files_beside_it(
    tmp_path: Path, env: dict[str, str], bucket: str, storage: Storage, sim: SimulatorThread
) -> None:
    n = 12
    storage.upload(write_jsonl(tmp_path / "rows.jsonl", prompts(n)), f"s3://{bucket}/data/in.jsonl")
    storage.write_bytes(f"s3://{bucket}/jobs/prices.toml", PRICES.encode())
    job = f"s3://{bucket}/jobs/label.toml"
    put_job(
        storage,
        job,
        'input = "../data/in.jsonl"\noutput = "out/labels.parquet"\nprices = "prices.toml"\n'
        'model = "claude-haiku-4-5"\nmax_tokens = 20\n',
    )
    config = loaded(job, {"base_url": sim.base_url, "quiet": True}, environ=env)
    assert config.input.url == f"s3://{bucket}/data/in.jsonl"
    assert config.output.url == f"s3://{bucket}/jobs/out/labels.parquet"
    haiku = config.cost.prices.lookup("claude-haiku-4-5")
    assert haiku is not None and haiku.rates.output == Decimal("4.5")
    summary = run(config)
    assert summary.exit_code == 0 and sim.stats.snapshot().answered_ok == n
    local = tmp_path / "final.parquet"
    storage.download(config.output.url, local)
    assert [r["id"] for r in pq.read_table(local).to_pylist()] == [p["id"] for p in prompts(n)]


def test_flags_win_over_a_remote_job_file_and_stay_relative_to_the_working_folder(
    tmp_path: Path,
    env: dict[str, str],
    bucket: str,
    storage: Storage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "here.jsonl", prompts(2))
    job = f"s3://{bucket}/jobs/x.toml"
    put_job(storage, job, 'input = "gone.jsonl"\nmodel = "claude-haiku-4-5"\n')
    config = loaded(job, {"input": "here.jsonl"}, environ=env)
    assert config.input.path == (tmp_path / "here.jsonl").resolve() and config.input.url is None


def test_the_prices_flag_takes_a_url(
    tmp_path: Path, env: dict[str, str], bucket: str, storage: Storage
) -> None:
    url = f"s3://{bucket}/shared/prices.toml"
    storage.write_bytes(url, PRICES.encode())
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    config = loaded(inp, {"prices": url, "model": "claude-haiku-4-5"}, environ=env)
    haiku = config.cost.prices.lookup("claude-haiku-4-5")
    assert haiku is not None and haiku.rates.output == Decimal("4.5")
    assert config.cost.prices.sources[-1] == url
    storage.write_bytes(url, b"[models.x]\ninput = 1\n")
    with pytest.raises(ConfigError, match="needs output") as caught:
        loaded(inp, {"prices": url, "model": "claude-haiku-4-5"}, environ=env)
    assert url in str(caught.value)


def test_missing_remote_files_are_named_by_url_without_secrets(
    tmp_path: Path, env: dict[str, str], bucket: str, storage: Storage
) -> None:
    job = f"s3://{bucket}/jobs/missing.toml"
    with pytest.raises(StorageError, match=NO_SUCH_OBJECT) as caught:
        loaded(job, {}, environ=env)
    assert job in str(caught.value) and SECRET_KEY not in str(caught.value)
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    prices = f"s3://{bucket}/nope/prices.toml"
    with pytest.raises(StorageError, match=NO_SUCH_OBJECT) as caught:
        loaded(inp, {"prices": prices}, environ=env)
    assert prices in str(caught.value)
    # Through the CLI: the message names the URL, and no secret is shown.
    shown = CliRunner().invoke(cli, ["run", job], env=env)
    assert shown.exit_code != 0 and job in shown.output and SECRET_KEY not in shown.output


def test_a_remote_job_file_cannot_name_a_relative_local_path(
    tmp_path: Path, env: dict[str, str], bucket: str, storage: Storage
) -> None:
    storage.upload(write_jsonl(tmp_path / "rows.jsonl", prompts(2)), f"s3://{bucket}/jobs/in.jsonl")
    job = f"s3://{bucket}/jobs/schema.toml"
    put_job(storage, job, 'input = "in.jsonl"\njson_schema = "schema.json"\n')
    with pytest.raises(ConfigError, match="is relative") as caught:
        loaded(job, {}, environ=env)
    assert job in str(caught.value) and "`json_schema` = 'schema.json'" in str(caught.value)


def test_a_remote_job_file_with_bad_toml_or_keys_is_named(
    env: dict[str, str], bucket: str, storage: Storage
) -> None:
    job = f"s3://{bucket}/jobs/bad.toml"
    put_job(storage, job, "input = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        loaded(job, {}, environ=env)
    assert job in str(caught.value)
    put_job(storage, job, 'input = "in.jsonl"\nconcurrensy = 4\n')
    with pytest.raises(ConfigError, match="concurren") as caught:
        loaded(job, {}, environ=env)
    assert job in str(caught.value)


# -- media references in a folder on the store ---------------------------------------------

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")


def test_files_rows_attach_are_read_from_a_media_folder_on_s3(
    bucket: str, storage: Storage
) -> None:
    folder = f"s3://{bucket}/media/"
    storage.write_bytes(f"{folder}img/cat.png", PNG)
    storage.write_bytes(f"{folder}notes.txt", b"some notes")
    media = StorageMedia(storage, folder)
    cache = FileCache()
    image = source_for("image", "img/cat.png", media, cache)
    assert image["type"] == "base64" and image["media_type"] == "image/png"
    assert base64.b64decode(image["data"]) == PNG
    note = source_for("document", "./notes.txt", media, cache)
    assert note == {"type": "text", "media_type": "text/plain", "data": "some notes"}
    source_for("image", "img/cat.png", media, cache)
    assert cache.reads == 2  # the second reference to the image came from the cache
    storage.write_bytes(f"{folder}img/cat.png", PNG + b"\0" * 10)  # changed: read again
    source_for("image", "img/cat.png", media, cache)
    assert cache.reads == 3


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("img/dog.png", "not found"),
        ("../secret.txt", "outside the media folder"),
        ("img/../../secret.txt", "outside the media folder"),
        ("/etc/passwd", "outside the media folder"),
        ("notes.bin", "not a type the API accepts"),
    ],
)
def test_a_bad_media_reference_is_a_problem_of_its_row_naming_the_folder(
    bucket: str, storage: Storage, ref: str, problem: str
) -> None:
    folder = f"s3://{bucket}/media"
    storage.write_bytes(f"{folder}/notes.bin", b"\xff\xfe\x00binary")
    with pytest.raises(FileProblem, match=problem) as caught:
        source_for("document", ref, StorageMedia(storage, folder), FileCache())
    assert ref in str(caught.value)
    if problem != "not a type the API accepts":
        assert folder in str(caught.value)
    assert SECRET_KEY not in str(caught.value)


def test_a_remote_input_or_media_root_gives_the_run_its_media_folder_on_the_store(
    tmp_path: Path, env: dict[str, str], bucket: str, storage: Storage
) -> None:
    inp = f"s3://{bucket}/data/in.jsonl"
    storage.upload(write_jsonl(tmp_path / "rows.jsonl", prompts(2)), inp)
    storage.write_bytes(f"s3://{bucket}/data/notes.txt", b"beside the input")
    storage.write_bytes(f"s3://{bucket}/media/notes.txt", b"in the media root")
    beside = loaded(inp, {"model": "claude-haiku-4-5"}, environ=env).input.media_source
    assert beside is not None
    assert source_for("document", "notes.txt", beside, FileCache())["data"] == "beside the input"
    flags = {"model": "claude-haiku-4-5", "media_root": f"s3://{bucket}/media"}
    rooted = loaded(inp, flags, environ=env).input.media_source
    assert rooted is not None
    assert source_for("document", "notes.txt", rooted, FileCache())["data"] == "in the media root"
    local = write_jsonl(tmp_path / "local.jsonl", prompts(1))
    assert loaded(local, {"model": "claude-haiku-4-5"}, environ=env).input.media_source is None


def test_a_whole_run_sends_the_files_its_rows_attach_from_s3(
    tmp_path: Path, env: dict[str, str], bucket: str, storage: Storage, sim: SimulatorThread
) -> None:
    storage.write_bytes(f"s3://{bucket}/data/notes.txt", b"the notes")
    rows = [
        {"id": "ok", "document": "notes.txt", "q": "Read it"},
        {"id": "missing", "document": "nope.txt", "q": "Read it"},
    ]
    inp = f"s3://{bucket}/data/in.jsonl"
    storage.upload(write_jsonl(tmp_path / "rows.jsonl", rows), inp)
    out = tmp_path / "out.parquet"
    settings = {"output": str(out), "model": "claude-haiku-4-5", "max_tokens": 20}
    settings |= {"template": "{q}", "base_url": sim.base_url, "quiet": True}
    summary = run(loaded(inp, settings, environ=env))
    got = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert summary.exit_code == 3
    assert got["ok"]["status"] == "ok"
    assert got["missing"]["error_type"] == "invalid_request"
    assert f"s3://{bucket}/data" in got["missing"]["error_message"]


def loaded(*args: Any, **kwargs: Any) -> RunConfig:
    """A job as a run sees it: configured (``load_config``, which downloads nothing), then
    its remote input and price file brought here (``runs.fetch``)."""
    return fetched(load_config(*args, **kwargs))
