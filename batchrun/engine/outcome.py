"""One input row's journey in output terms: its request (``Work``) and its output row.

Shared by the online runner and the Message Batches runner, so a row answered either way
gets exactly the same columns from the same message.

This is also the per-row boundary: whatever goes wrong while preparing one row or turning
its reply into a row stays that row's (an ``invalid_request`` or ``malformed_response``
error row), and every output row's text can be written as UTF-8. Only what concerns every
row (credentials, the output, the disk) may stop a run, and none of it happens here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchrun.client.response import MALFORMED, message_fields
from batchrun.config.load import RunConfig
from batchrun.core.errors import ApiResponseError, InvalidRowError, Problem
from batchrun.core.scrub import Scrubber
from batchrun.cost.models import check_row_model
from batchrun.cost.prices import PriceTable
from batchrun.rows.checks import failure, lone_surrogate, without_surrogates
from batchrun.rows.files import MediaSource
from batchrun.rows.prefix import SeenFiles
from batchrun.rows.reader import InputRow
from batchrun.rows.request import RequestDefaults, prepare_request
from batchrun.rows.structured import SCHEMA_MISMATCH, structured_answer
from batchrun.store.columns import STATUS_ERROR, STATUS_OK, blank_row
from batchrun.store.provenance import answer_source

VIA_ONLINE = "online"
VIA_BATCHES = "batches"


@dataclass(frozen=True)
class RowSettings:
    """What turning a row into its request, and an answer into its output row, takes: the
    job's request defaults, where files resolve, the prices, the kept columns, the replies'
    schema and the source the answers come from. One per run (``of``), shared by every
    driver, so a row gets the same request and the same columns whichever way it is sent."""

    file: str  # the input, as messages name it
    defaults: RequestDefaults
    media: Path | MediaSource  # where file references resolve
    prices: PriceTable
    keep_columns: tuple[str, ...] = ()
    json_schema: Mapping[str, Any] | None = None
    source: str | None = None  # where answers come from (store.provenance)
    # Masks the run's credentials in texts that did not come through the client (an errored
    # Message Batches result quoting the key: a gateway may).
    scrub: Scrubber = field(default_factory=lambda: Scrubber(()))

    @classmethod
    def of(cls, config: RunConfig) -> RowSettings:
        return cls(
            file=str(config.input.path),
            defaults=config.defaults,
            media=config.input.media_source or config.input.media_folder,
            prices=config.cost.prices,
            keep_columns=config.output.keep_columns,
            json_schema=config.engine.json_schema,
            source=answer_source(config.client.simulate, config.client.base_url),
            scrub=Scrubber(secret for _, secret in config.client.credentials.secrets()),
        )


@dataclass(frozen=True)
class Work:
    """One row to process: its request body, or why it cannot be sent.

    ``content`` is the body as JSON (``PreparedRequest.content``), ready to send;
    ``prefix_key`` names the cached prefix it shares with other rows (``rows.prefix``), if any.
    """

    row: InputRow
    body: dict[str, Any] | None
    request_hash: str | None
    problem: InvalidRowError | None
    content: bytes | None = None
    prefix_key: str | None = None
    sample: int | None = None  # with --samples K: which of the row's K requests (engine.samples)


def prepare(row: InputRow, rows: RowSettings, seen_files: SeenFiles | None = None) -> Work:
    """The row's request, or the located reason the API would refuse it.

    ``seen_files``: the leading files of the run's rows so far (``rows.prefix.SeenFiles``),
    kept by a driver for the run so a file every row attaches is cached.

    Never raises for one row's sake: an exception nothing foresaw while building its
    request becomes the row's problem like any other (the last-resort boundary), so the
    run, ``validate`` and a resume's check all go on to the next row.
    """
    if row.problem is not None:
        return Work(row, None, None, _printable(row.problem))
    file = rows.file
    try:
        prepared = prepare_request(
            row.fields, rows.defaults, base_dir=rows.media, seen_files=seen_files
        )
        check_row_model(prepared.body, rows.prices)  # a Claude id the API would 404
    except InvalidRowError as exc:
        return Work(row, None, None, _printable(exc.located(file, row.line)))
    except MemoryError:
        raise  # the process's trouble, not this row's
    except Exception as exc:
        reason = f"the request could not be built ({failure(exc)})"
        return Work(
            row, None, None, InvalidRowError([Problem(None, reason)], file=file, row=row.line)
        )
    return Work(row, prepared.body, prepared.hash, None, prepared.content, prepared.prefix_key)


def _printable(problem: InvalidRowError) -> InvalidRowError:
    """``problem``, its texts made encodable (a field name may hold a lone surrogate)."""
    if lone_surrogate(str(problem)) is None:
        return problem
    problems = [
        Problem(
            None if p.field is None else without_surrogates(p.field), without_surrogates(p.message)
        )
        for p in problem.problems
    ]
    return InvalidRowError(problems, file=problem.file, row=problem.row)


def ok_row(
    work: Work, rows: RowSettings, message: dict[str, Any], via: str = VIA_ONLINE
) -> dict[str, Any]:
    """The row for an answered request; an answer that breaks ``json_schema`` is an error.

    A reply whose values do not fit the columns (``message_fields`` says why) is a
    ``malformed_response`` error row, as is one that fails here in any other way: it was
    answered, and recording it must not stop the run. The caller adds the transport's
    columns (attempts, latency, request id, HTTP status).
    """
    try:
        return _safe_text(_answered_row(work, rows, message, via))
    except ApiResponseError as exc:
        return error_row(work, rows, exc.error_type, exc.message, exc.status, 1, via)
    except MemoryError:
        raise
    except Exception as exc:
        reason = f"the reply could not be recorded ({failure(exc)})"
        return error_row(work, rows, MALFORMED, reason, None, 1, via)


def _answered_row(
    work: Work, rows: RowSettings, message: dict[str, Any], via: str
) -> dict[str, Any]:
    row = base_row(work, rows, via)
    row.update(message_fields(message))
    if rows.json_schema is not None:
        row["structured_json"], mismatch = structured_answer(message, rows.json_schema)
        if mismatch is not None:
            row.update(error_type=SCHEMA_MISMATCH, error_message=mismatch)
    asked = (work.body or {}).get("model")
    row["status"] = STATUS_OK if row["error_type"] is None else STATUS_ERROR
    row["cost_usd"] = rows.prices.reply_cost(
        (message.get("model"), asked), message.get("usage") or {}
    )
    return row


def error_row(
    work: Work,
    rows: RowSettings,
    error_type: str,
    message: str,
    http_status: int | None,
    attempts: int,
    via: str = VIA_ONLINE,
) -> dict[str, Any]:
    """The row for a request that got no answer (or was never sent)."""
    row = base_row(work, rows, via)
    row.update(
        status=STATUS_ERROR,
        error_type=error_type,
        error_message=message,
        http_status=http_status,
        attempts=attempts,
    )
    if attempts == 0:
        row["source"] = None  # never sent: no source answered it (store.provenance)
    return _safe_text(row)


def _safe_text(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every text encodable as UTF-8, so the journal can always write it.

    A lone surrogate (JSON's ``"\\ud83d"``: half of an emoji) can reach a row from a kept
    column, an id, an error message or a reply; it is replaced by U+FFFD here, where output
    rows are made, rather than fail the journal write and with it the run.
    """
    for name, value in row.items():
        if isinstance(value, str) and not value.isascii():
            row[name] = without_surrogates(value)
    return row


def base_row(work: Work, rows: RowSettings, via: str = VIA_ONLINE) -> dict[str, Any]:
    row = blank_row(work.row.id)
    requested_model = (work.body or {}).get("model") or rows.defaults.model
    row.update(
        model=requested_model,
        request_hash=work.request_hash,
        via=via,
        source=rows.source,
        finished_at=datetime.now(timezone.utc),
    )
    for name in rows.keep_columns:
        row[name] = _as_text(work.row.fields.get(name))
    return row


def _as_text(value: Any) -> str | None:
    """Kept columns are strings in every output, so outputs of many runs concatenate."""
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, TypeError, RecursionError) as exc:  # the row's own problem says why
        return f"<{type(value).__name__} not shown: {failure(exc)}>"
