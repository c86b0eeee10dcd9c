"""Where a shard lives (issue 26): beside a local output, and on object storage as an output
of its own, mirrored in the output's work folder as a local shard is laid out."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import TEST_KEY

from batchrun import load_config
from batchrun.config.load import RunConfig, output_alone
from batchrun.shards.layout import ShardError, shard_count_of, shard_output, shard_url
from batchrun.shards.run import shard_config

ENV = {"ANTHROPIC_API_KEY": TEST_KEY, "XDG_CACHE_HOME": "/cache"}


def config(out: str, tmp_path: Path) -> RunConfig:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"prompt": "hi"}\n')
    flags = {"output": out, "model": "claude-haiku-4-5", "max_tokens": 5}
    return load_config(inp, flags, environ=ENV)


def test_a_local_shard_is_a_file_beside_the_output(tmp_path: Path) -> None:
    job = config(str(tmp_path / "out" / "labels.csv"), tmp_path)
    own = shard_config(job, (2, 4)).output
    assert own.path == tmp_path / "out" / "labels.csv.shards" / "2-of-4" / "labels.csv"
    assert own.url is None and own.format is None


@pytest.mark.parametrize(
    ("out", "name"),
    [("s3://b/out/labels.parquet", "labels.parquet"), ("s3://b/out/labels/", "labels.parquet")],
)
def test_a_shard_on_object_storage_is_an_output_of_its_own_there(
    tmp_path: Path, out: str, name: str
) -> None:
    job = config(out, tmp_path)
    own = shard_config(job, (2, 4)).output
    assert own.url == f"{out.rstrip('/')}.shards/2-of-4/{name}"
    # Its work folder is OUTPUT.shards/2-of-4/ in the output's: its files are a local shard's.
    local = job.output.path
    assert own.path == shard_output(local, 2, 4) and own.path.name == name
    assert own.work_dir == own.path.parent
    assert own.url == shard_url(out, own.path.name, 2, 4)


def test_an_output_named_alone_takes_its_work_folder_from_the_environment() -> None:
    environ = {**ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:5055"}
    settings, storage = output_alone("s3://b/out/labels.parquet", environ)
    assert storage.s3_endpoint == "http://127.0.0.1:5055"
    assert settings.url == "s3://b/out/labels.parquet"
    assert settings.cache_home == Path("/cache")
    assert settings.path.parent.parent == Path("/cache/batchrun")
    assert settings.path.name == "labels.parquet"
    local, _ = output_alone("out/labels.parquet", ENV)
    assert local.url is None and local.path == Path("out/labels.parquet").absolute()


def test_the_shard_count_is_read_from_the_folder_names() -> None:
    assert shard_count_of(["0-of-3", "2-of-3", "notes"], "out.shards", "out") == 3
    with pytest.raises(ShardError, match="no I-of-N folder"):
        shard_count_of(["notes"], "out.shards", "out")
    with pytest.raises(ShardError, match=r"different counts \(N = 2, 3\)"):
        shard_count_of(["0-of-2", "0-of-3"], "out.shards", "out")
    with pytest.raises(ShardError, match="at most 10,000 shards"):
        shard_count_of(["0-of-20000"], "out.shards", "out")
