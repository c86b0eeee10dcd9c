"""``batchrun report`` through the command line: a missing output is an error; JSON and HTML
(the totals and the page: tests/unit/test_report.py)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from support.outputs import sample_rows, write_parquet

from batchrun.cli import cli


def test_a_missing_output_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "nope.parquet")])
    assert result.exit_code == 1 and "no such output" in result.stderr


def test_cli_report_json_and_html(tmp_path: Path) -> None:
    out = write_parquet(tmp_path / "out.parquet", sample_rows())
    html = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(out), "--json", "--html", str(html)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == 10 and data["errors"]["overloaded_error"]["count"] == 1
    assert data["latency_ms"]["p50"] is not None
    assert html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
