"""One input row's journey in output terms: its request (``Work``) and its output row.

Shared by the online runner and the Message Batches runner, so a row answered either way
gets exactly the same columns from the same message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from batchrun.api.response import message_fields
from batchrun.config.load import RunConfig
from batchrun.core.errors import InvalidRowError
from batchrun.rows.reader import InputRow
from batchrun.rows.request import prepare_request
from batchrun.rows.structured import SCHEMA_MISMATCH, structured_answer
from batchrun.store.columns import STATUS_ERROR, STATUS_OK, blank_row

VIA_ONLINE = "online"
VIA_BATCHES = "batches"


@dataclass(frozen=True)
class Work:
    """One row to process: its request body, or why it cannot be sent.

    ``content`` is the body as JSON (``PreparedRequest.content``), ready to send.
    """

    row: InputRow
    body: dict[str, Any] | None
    request_hash: str | None
    problem: InvalidRowError | None
    content: bytes | None = None


def prepare(row: InputRow, config: RunConfig) -> Work:
    """The row's request, or the located reason the API would refuse it."""
    if row.problem is not None:
        return Work(row, None, None, row.problem)
    try:
        prepared = prepare_request(row.fields, config.defaults, base_dir=config.input.parent)
    except InvalidRowError as exc:
        return Work(row, None, None, exc.located(str(config.input), row.line))
    return Work(row, prepared.body, prepared.hash, None, prepared.content)


def ok_row(
    work: Work, config: RunConfig, message: dict[str, Any], via: str = VIA_ONLINE
) -> dict[str, Any]:
    """The row for an answered request; an answer that breaks ``json_schema`` is an error.

    The caller adds the transport's columns (attempts, latency, request id, HTTP status).
    """
    row = base_row(work, config, via)
    row.update(message_fields(message))
    if config.json_schema is not None:
        row["structured_json"], mismatch = structured_answer(message, config.json_schema)
        if mismatch is not None:
            row.update(error_type=SCHEMA_MISMATCH, error_message=mismatch)
    asked = (work.body or {}).get("model")
    row["status"] = STATUS_OK if row["error_type"] is None else STATUS_ERROR
    row["cost_usd"] = config.prices.reply_cost(
        (message.get("model"), asked), message.get("usage") or {}
    )
    return row


def error_row(
    work: Work,
    config: RunConfig,
    error_type: str,
    message: str,
    http_status: int | None,
    attempts: int,
    via: str = VIA_ONLINE,
) -> dict[str, Any]:
    """The row for a request that got no answer (or was never sent)."""
    row = base_row(work, config, via)
    row.update(
        status=STATUS_ERROR,
        error_type=error_type,
        error_message=message,
        http_status=http_status,
        attempts=attempts,
    )
    return row


def base_row(work: Work, config: RunConfig, via: str = VIA_ONLINE) -> dict[str, Any]:
    row = blank_row(work.row.id)
    requested_model = (work.body or {}).get("model") or config.defaults.model
    row.update(
        model=requested_model,
        request_hash=work.request_hash,
        via=via,
        finished_at=datetime.now(timezone.utc),
    )
    for name in config.keep_columns:
        row[name] = _as_text(work.row.fields.get(name))
    return row


def _as_text(value: Any) -> str | None:
    """Kept columns are strings in every output, so outputs of many runs concatenate."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
