"""``batchrun render``: the exact request one row would be sent with, as JSON, sending nothing
and needing no key; the same body the run sends."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from click.testing import CliRunner
from support import TEST_KEY, RecordingTransport, job_config, write_jsonl

from batchrun import run
from batchrun.cli import cli
from batchrun.runs.row_request import row_request
from batchrun.runs.runtime import Runtime
from batchrun.simulator import SimulatorThread

ARGS = ["--model", "claude-haiku-4-5", "--max-tokens", "7"]


def _rows(n: int) -> list[dict[str, str]]:
    return [{"id": f"row-{i:07d}", "prompt": f"Review {i}: fine."} for i in range(n)]


def test_render_prints_the_rows_request_and_sends_nothing(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(20))
    result = CliRunner().invoke(
        cli,
        ["render", str(inp), "--row", "row-0000005", *ARGS, "--system", "Be brief."],
        env={"ANTHROPIC_API_KEY": None, "ANTHROPIC_AUTH_TOKEN": None},
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["messages"][-1] == {"role": "user", "content": "Review 5: fine."}
    assert body["model"] == "claude-haiku-4-5" and body["max_tokens"] == 7
    assert body["system"] == "Be brief."
    assert sim.stats.requests == 0
    first = json.loads(CliRunner().invoke(cli, ["render", str(inp), *ARGS]).stdout)
    assert first["messages"][-1]["content"] == "Review 0: fine."


def test_render_shows_the_body_the_run_sends(tmp_path: Path, sim: SimulatorThread) -> None:
    """Template, cache marks and all: the bytes the simulator received, as JSON."""
    rows = [{"id": f"r{i}", "text": f"Text {i}."} for i in range(3)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    system = "You label texts. " * 2000  # past the model's cacheable minimum: a cache mark
    config = job_config(
        inp, tmp_path / "out.parquet", sim.base_url, template="Label: {text}", system=system
    )
    shown = row_request(config, "r1").body
    assert shown is not None
    blocks = shown["messages"][-1]["content"]
    assert "".join(b["text"] for b in blocks) == "Label: Text 1."
    assert blocks[0]["cache_control"] == {"type": "ephemeral"}  # the template's head
    transport = RecordingTransport()
    run(config, runtime=Runtime(transport=transport))
    assert shown in transport.bodies  # what the simulator was sent


def test_large_files_are_shortened_unless_full(tmp_path: Path) -> None:
    picture = tmp_path / "p.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "What is it?", "image": "p.png"}])
    short = CliRunner().invoke(cli, ["render", str(inp), *ARGS])
    assert short.exit_code == 0, short.output
    block = json.loads(short.stdout)["messages"][0]["content"][0]
    assert block["source"]["type"] == "base64" and "--full shows them" in block["source"]["data"]
    full = CliRunner().invoke(cli, ["render", str(inp), *ARGS, "--full"])
    data = json.loads(full.stdout)["messages"][0]["content"][0]["source"]["data"]
    assert base64.b64decode(data) == picture.read_bytes()


def test_a_row_that_would_not_be_sent_is_said_and_an_unknown_id_named(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [*_rows(2), {"id": "bad", "prompt": "x", "top_k": -1}])
    bad = CliRunner().invoke(cli, ["render", str(inp), "--row", "bad", *ARGS])
    assert bad.exit_code == 3 and bad.stdout == ""
    assert "row bad would not be sent" in bad.stderr and "top_k" in bad.stderr
    missing = CliRunner().invoke(cli, ["render", str(inp), "--row", "nope", *ARGS])
    assert missing.exit_code == 1
    assert "no row of" in missing.stderr and "'nope'" in missing.stderr
    assert "row-0000000" in missing.stderr
    assert TEST_KEY not in missing.output


def test_render_checks_the_row_against_its_model_s_rules_as_a_run_does(tmp_path: Path) -> None:
    # The run's own prepare: a row breaking its model's rules is that row's error (exit 3),
    # a job setting every row breaks is refused before any row (exit 2), and
    # --drop-unsupported shows the body sent without the setting.
    rows = [{"id": "a", "prompt": "Hi."}, {"id": "b", "prompt": "Hi.", "temperature": 0.2}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    haiku = ["--model", "claude-haiku-5-5", "--max-tokens", "2048"]
    broken = CliRunner().invoke(cli, ["render", str(inp), "--row", "b", *haiku])
    assert broken.exit_code == 3 and broken.stdout == ""
    assert "row b would not be sent" in broken.stderr
    assert "temperature: only 1 on claude-haiku-5-5" in broken.stderr
    job = CliRunner().invoke(cli, ["render", str(inp), *haiku, "--temperature", "0"])
    assert job.exit_code == 2 and "temperature: only 1 on claude-haiku-5-5" in job.stderr
    dropped = CliRunner().invoke(
        cli, ["render", str(inp), "--row", "b", *haiku, "--drop-unsupported"]
    )
    assert dropped.exit_code == 0, dropped.output
    body = json.loads(dropped.stdout)
    assert body["model"] == "claude-haiku-5-5" and "temperature" not in body
