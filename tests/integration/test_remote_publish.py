"""The end of a run on an s3:// output: the final upload failing (the store out of reach)
costs nothing, the summary names the URL, and the run leaves only its output on the store
(no lease, no segments, no empty "folder" objects).

The store is moto behind a TCP proxy that the test cuts at the very moment the last answer
comes back (``TcpProxy``), so everything after it (the last segment, the upload, giving the
lease back) meets an unreachable endpoint, as when a network fails at the end of a run."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import TEST_KEY, prompts, wait_until, write_jsonl
from support.s3_server import MotoServer, aws_environment
from support.tcp_proxy import TcpProxy

from batchrun import load_config
from batchrun.cli import cli
from batchrun.config.load import RunConfig
from batchrun.remote.lease import LeaseRecord, lease_url
from batchrun.remote.objects import Storage, StorageSettings
from batchrun.runs.online import run_async
from batchrun.runs.output import PublishError
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorThread
from batchrun.store.sink import journal_path

pytestmark = pytest.mark.slow


class CutAfter(httpx.AsyncBaseTransport):
    """A real loopback transport that cuts ``proxy`` once ``answers`` answers came back."""

    def __init__(self, proxy: TcpProxy, answers: int) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._proxy = proxy
        self._left = answers

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        self._left -= 1
        if self._left == 0:
            self._proxy.cut()  # before the run sees its last answer
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def keys(endpoint: str, bucket: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=endpoint)
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def wait_until_lapsed(storage: Storage, out: str) -> None:
    """Until the lease of ``out`` (left behind by a run that could not give it back) has
    expired, or is gone."""

    def lapsed() -> bool:
        found = storage.read_versioned(lease_url(out))
        record = LeaseRecord.from_bytes(found.data) if found is not None else None
        return record is None or record.expired(time.time())

    wait_until(lapsed, 60, f"the lease of {out} to lapse", every=0.2)


@pytest.fixture
def proxied(moto: MotoServer, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """moto behind a proxy, and the environment a user would have, pointed at the proxy."""
    with TcpProxy(moto.endpoint) as proxy:
        aws = aws_environment(proxy.endpoint, tmp_path)
        for name, value in aws.items():
            monkeypatch.setenv(name, value)
        env = {
            **aws,
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "ANTHROPIC_API_KEY": TEST_KEY,
            "BATCHRUN_LEASE_TTL": "8",  # the lease left behind lapses in seconds
        }
        yield proxy, env


def config(inp: Path, out: str, url: str, env: dict[str, str]) -> RunConfig:
    settings = {"output": out, "model": "claude-haiku-4-5", "max_tokens": 20}
    settings |= {"base_url": url, "quiet": True, "concurrency": 8, "segment_rows": 7}
    return load_config(inp, settings, environ=env)


def test_a_failed_final_upload_keeps_every_row_and_the_rerun_uploads_without_sending(
    proxied: Any, bucket: str, tmp_path: Path, sim: SimulatorThread, moto: MotoServer
) -> None:
    proxy, env = proxied
    n = 40
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = f"s3://{bucket}/out/labels.parquet"
    cfg = config(inp, out, sim.base_url, env)
    with pytest.raises(PublishError) as caught:
        asyncio.run(run_async(cfg, runtime=Runtime(transport=CutAfter(proxy, n))))
    message = str(caught.value)
    print(message)
    main, _, after = message.partition("\nbatchrun: also, ")
    # The upload's failure first, naming the URL and the store's error; the lease second.
    assert main.startswith(f"every row of {out} is answered, but the final file could not be")
    assert f"(cannot write {out}" in main  # the output, or its lease beside it
    assert "endpoint unreachable" in main and "sends no request" in main
    assert after.startswith(f"the lease {out}.batchrun/lease.json could not be removed")
    assert sim.stats.snapshot().requests == n
    # Every row is still here: the final file and the journal.
    assert len(pq.read_table(cfg.output.path)) == n
    assert journal_path(cfg.output.path).read_bytes().count(b"\n") == n

    proxy.restore()
    storage = Storage(StorageSettings.from_environ(env))
    assert not storage.exists(out)
    wait_until_lapsed(storage, out)  # this process is alive: its lease must lapse first
    again = asyncio.run(run_async(config(inp, out, sim.base_url, env)))
    assert again.exit_code == 0 and again.final is not None and again.finished == 0
    assert sim.stats.snapshot().requests == n  # nothing sent again
    local = tmp_path / "published.parquet"
    storage.download(out, local)
    assert [r["id"] for r in pq.read_table(local).to_pylist()] == [p["id"] for p in prompts(n)]
    assert not journal_path(cfg.output.path).exists()  # dropped once the upload is done
    # Only the output is left: no lease, no segments, no empty "folder" objects.
    assert keys(moto.endpoint, bucket) == ["out/labels.parquet"]


def test_the_summary_names_the_urls_not_the_work_folder(
    env: dict[str, str], bucket: str, tmp_path: Path, sim: SimulatorThread, moto: MotoServer
) -> None:
    storage = Storage(StorageSettings.from_environ(env))
    inp = f"s3://{bucket}/in/rows.jsonl"
    storage.upload(write_jsonl(tmp_path / "rows.jsonl", prompts(12)), inp)
    out = f"s3://{bucket}/out/labels.parquet"
    args = ["run", inp, "-o", out, "--model", "claude-haiku-4-5", "--max-tokens", "20"]
    args += ["--base-url", sim.base_url, "-q", "--segment-rows", "5"]
    shown = CliRunner().invoke(cli, args, env={**os.environ, **env})
    assert shown.exit_code == 0, shown.output
    assert f"batchrun: {inp} -> {out}\n" in shown.output
    assert str(tmp_path / "cache") not in shown.output
    as_json = CliRunner().invoke(cli, [*args, "--json"], env={**os.environ, **env})
    assert as_json.exit_code == 0, as_json.output
    assert f'"output": "{out}"' in as_json.output and f'"input": "{inp}"' in as_json.output
    # The run leaves its output and the input it was given: no empty "folder" objects.
    assert keys(moto.endpoint, bucket) == ["in/rows.jsonl", "out/labels.parquet"]
    # A stopped run's resume hint names the URL, and the work folder only as the journal's.
    costly = f"s3://{bucket}/out/costly.parquet"
    args = ["run", inp, "-o", costly, "--model", "claude-sonnet-4-6", "--max-tokens", "400"]
    args += ["--base-url", sim.base_url, "-q", "--max-cost", "0.01"]
    stopped = CliRunner().invoke(cli, args, env={**os.environ, **env})
    assert stopped.exit_code == 4, stopped.output
    assert f"batchrun: {inp} -> {costly}\n" in stopped.output
    hint = next(line for line in stopped.output.splitlines() if "stopped by the budget" in line)
    assert f"the rows of {costly} finished so far are kept in this machine's journal, " in hint
    assert hint.count(str(tmp_path / "cache")) == 1 and ".journal. " in hint
    # The way on after a budget stop is a larger cap: the budget is the job's (issue 23, 8).
    assert re.search(
        r"rows are left: re-run with --max-cost [0-9.]+ to spend up to \$[0-9.]+ more\.$", hint
    )
