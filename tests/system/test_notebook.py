"""A run in a real Jupyter kernel (nbclient) shows a tqdm widget, not log lines: its final
state, saved with the notebook, has every row done; iter_answers works there too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbclient
import nbformat

ROWS = 30

CELL = f"""
import batchrun
rows = [{{"prompt": f"Question {{i}}?"}} for i in range({ROWS})]
result = batchrun.run(rows, model="claude-haiku-4-5", max_tokens=5, simulate=True, concurrency=4)
print("exit", result.exit_code)
answered = list(batchrun.iter_answers(rows, model="claude-haiku-4-5", max_tokens=5,
                                      simulate=True, quiet=True))
print("answers", len(answered))
"""


def _widgets(nb: Any) -> list[dict[str, Any]]:
    saved = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return [{"model": w["model_name"], **w["state"]} for w in saved.values()]


def test_a_run_in_a_notebook_draws_a_progress_widget_to_the_end(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = nb.cells[0].outputs
    printed = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "exit 0" in printed and f"answers {ROWS}" in printed
    # No log line every few seconds: the cell's stderr says nothing of the progress.
    assert "rows/s" not in printed and "batchrun:" not in printed
    shown = [o for o in outputs if o["output_type"] == "display_data"]
    assert len(shown) == 1  # the first run's bar (iter_answers was asked to be quiet)
    assert "application/vnd.jupyter.widget-view+json" in shown[0]["data"]
    widgets = _widgets(nb)
    bars = [w for w in widgets if w["model"] == "FloatProgressModel"]
    assert len(bars) == 1
    assert bars[0]["value"] == bars[0]["max"] == ROWS  # rows done = total
    assert bars[0]["bar_style"] == "success"
    texts = " ".join(w["value"] for w in widgets if w["model"] == "HTMLModel")
    texts = texts.replace("\u2007", " ")
    assert f"{ROWS}/{ROWS}" in texts and "row/s" in texts  # count and rate
    assert "$0." in texts and "0 errors" in texts  # cost and errors
    json.dumps(nb)  # the notebook as saved
