"""``batchrun render``: the exact request body one row would be sent with, sending nothing.

The body is the run's own: the row goes through ``engine.outcome.prepare`` (template, files,
the job's checks and the model's, cache marks) after the rows before it, as a run prepares
them (a file every row attaches is marked for the cache once rows have shared it), and
``stream`` is added when the run would stream it (``engine.sender.streams``). No client is
made and no key is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from batchrun.config.load import RunConfig
from batchrun.core.errors import ConfigError, InvalidRowError
from batchrun.engine.outcome import RowSettings, prepare
from batchrun.engine.sender import streams
from batchrun.formats.inputs import read_rows
from batchrun.rows.prefix import SeenFiles
from batchrun.rows.reader import check_input_file
from batchrun.runs.fetch import fetched
from batchrun.runs.preflight import check_every_row_can_be_built

SHOWN_IDS = 3  # ids named when the one asked for is not in the input


@dataclass(frozen=True)
class RowRequest:
    """One row's request as a run would send it, or why it would not be sent."""

    id: str
    line: int  # the row's line (or element, or record) in the input, as messages name it
    body: dict[str, Any] | None  # the JSON body, ``stream`` included when it is sent so
    problem: InvalidRowError | None  # why the row is never sent (an invalid_request row)


def row_request(config: RunConfig, row_id: str | None = None) -> RowRequest:
    """The request of the row whose id is ``row_id`` (None: the first row).

    Raises what ``run`` would raise before sending (an input that cannot be read, a job
    whose every row would be refused alike), and ConfigError when no row has that id.
    """
    config = fetched(config)  # a remote input and price file, brought here first
    check_input_file(config.input.path)
    check_every_row_can_be_built(config)
    settings = RowSettings.of(config)
    seen_files = SeenFiles()
    first_ids: list[str] = []
    for row in read_rows(config.input.path, shape=config.input.shape):
        work = prepare(row, settings, seen_files)  # every row, as the run, for the file marks
        if row_id is not None and row.id != row_id:
            if len(first_ids) < SHOWN_IDS:
                first_ids.append(row.id)
            continue
        body = None
        if work.content is not None:
            body = json.loads(work.content)  # exactly the bytes sent, cache marks included
            if streams(config.engine, body):
                body["stream"] = True
        return RowRequest(row.id, row.line, body, work.problem)
    if row_id is None:
        raise ConfigError(f"{config.input.shown} has no rows")
    ids = ", ".join(first_ids) + (", ..." if len(first_ids) == SHOWN_IDS else "")
    raise ConfigError(
        f"no row of {config.input.shown} has the id {row_id!r}"
        + (f" (its ids: {ids})" if first_ids else "")
    )
