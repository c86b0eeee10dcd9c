"""One input row's journey in output terms: its request (``Work``) and its output row.

Shared by the online runner and the Message Batches runner, so a row answered either way
gets exactly the same columns from the same message.

This is also the per-row boundary: whatever goes wrong while preparing one row or turning
its reply into a row stays that row's (an ``invalid_request`` or ``malformed_response``
error row), and every output row's text can be written as UTF-8. Only what concerns every
row (credentials, the output, the disk) may stop a run, and none of it happens here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from batchrun.client.response import MALFORMED, put_message_fields
from batchrun.config.load import RunConfig
from batchrun.core.errors import ApiResponseError, InvalidRowError, Problem
from batchrun.core.frozen import frozen
from batchrun.core.scrub import Scrubber
from batchrun.core.wording import option
from batchrun.cost.models import (
    OUTPUT_300K_BETA,
    check_row_model,
    model_rules,
    unsupported_sampling,
)
from batchrun.cost.prices import PriceTable
from batchrun.formats.values import value_text
from batchrun.rows.checks import CHECKS, Invalid, failure, lone_surrogate, without_surrogates
from batchrun.rows.files import FileCache, MediaSource
from batchrun.rows.prefix import SeenFiles
from batchrun.rows.reader import InputRow
from batchrun.rows.request import RequestDefaults, prepare_request, setting_value
from batchrun.rows.structured import (
    AnswerField,
    Mode,
    answer_fields,
    asked_mode,
    structured_answer,
    structured_mode,
)
from batchrun.store.columns import STATUS_ERROR, STATUS_OK, blank_row
from batchrun.store.provenance import answer_source

EMPTY_ANSWER = "empty_answer"
"""error_type of an answer cut at max_tokens before any text (thinking used them up)."""

VIA_ONLINE = "online"
VIA_BATCHES = "batches"


def structured_mode_for(model: str, prices: PriceTable) -> Mode | None:
    """How ``model`` is asked for a ``--json-schema`` answer (``rows.structured``): as its
    rules say (``cost.models.model_rules``); a model nobody gave rules to (a gateway's alias)
    by ``output_config.format``, the API's way (a ``--prices`` file's rules can say
    ``structured_outputs = false``)."""
    rules = model_rules(model, prices)
    if rules is None:
        return structured_mode(True, True)
    return structured_mode(rules.structured_outputs, rules.forced_tool_choice)


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
    # Sent as Message Batches with the 300K output beta: a model's larger limit applies.
    batch_beta: bool = False
    # Masks the run's credentials in texts that did not come through the client (an errored
    # Message Batches result quoting the key: a gateway may).
    scrub: Scrubber = field(default_factory=lambda: Scrubber(()))
    # Reads the files rows attach; a run's own records which (``runs.resume``). None: the
    # process's cache.
    files: FileCache | None = None

    @cached_property
    def answer_fields(self) -> tuple[AnswerField, ...] | None:
        """The answer's fields and their types (``rows.structured.answer_fields``)."""
        return None if self.json_schema is None else answer_fields(self.json_schema)

    def ask(self, model: str) -> Mode | None:
        """How ``model`` is asked for the structured answer (``structured_mode_for``)."""
        return structured_mode_for(model, self.prices)

    @classmethod
    def of(cls, config: RunConfig, files: FileCache | None = None) -> RowSettings:
        return cls(
            file=str(config.input.path),
            defaults=config.defaults,
            media=config.input.media_source or config.input.media_folder,
            prices=config.cost.prices,
            keep_columns=config.output.keep_columns,
            json_schema=config.engine.json_schema,
            source=answer_source(config.client.simulate, config.client.base_url),
            batch_beta=config.via == "batches" and OUTPUT_300K_BETA in config.client.betas,
            scrub=Scrubber(secret for _, secret in config.client.credentials.secrets()),
            files=files,
        )


@frozen  # made for every row: frozen to the type checker, quick to make
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
    dropped: tuple[str, ...] = ()  # settings left out for its model (--drop-unsupported)
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
    dropped: tuple[str, ...] = ()
    try:
        dropped = _dropped(row.fields, rows)
        prepared = prepare_request(
            row.fields,
            rows.defaults,
            base_dir=rows.media,
            seen_files=seen_files,
            files=rows.files,
            ask=rows.ask,
            leave_out=dropped,
        )
        # A Claude id the API would 404, a setting its model would answer 400 to.
        check_row_model(prepared.body, rows.prices, batch_beta=rows.batch_beta)
    except InvalidRowError as exc:
        return Work(row, None, None, _printable(exc.located(file, row.line)))
    except MemoryError:
        raise  # the process's trouble, not this row's
    except Exception as exc:
        reason = f"the request could not be built ({failure(exc)})"
        return Work(
            row, None, None, InvalidRowError([Problem(None, reason)], file=file, row=row.line)
        )
    return Work(
        row, prepared.body, prepared.hash, None, prepared.content, prepared.prefix_key, dropped
    )


_SAMPLING_PROBE = ("model", "temperature", "top_p", "top_k", "thinking")


def _dropped(fields: Mapping[str, Any], rows: RowSettings) -> tuple[str, ...]:
    """With ``--drop-unsupported``, the sampling settings of the row (its own or the job's)
    that its model would refuse (``cost.models.unsupported_sampling``); else none."""
    if not rows.defaults.drop_unsupported:
        return ()
    probe = {name: setting_value(name, fields, rows.defaults) for name in _SAMPLING_PROBE}
    thinking = probe["thinking"]
    if thinking is not None:
        try:
            probe["thinking"] = CHECKS["thinking"](thinking)  # JSON text in a CSV cell
        except Invalid:
            probe["thinking"] = None  # the row's own problem: building it says so
    return unsupported_sampling(probe, rows.prices)


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
    work: Work,
    rows: RowSettings,
    message: dict[str, Any],
    via: str = VIA_ONLINE,
    *,
    checked: bool = False,
) -> dict[str, Any]:
    """The row for an answered request; an answer that breaks ``json_schema`` is an error.

    A reply whose values do not fit the columns (``client.response.as_message`` says why)
    is a ``malformed_response`` error row, as is one that fails here in any other way: it
    was answered, and recording it must not stop the run. ``checked``: ``message`` passed
    that check already (a ``client.messages.Reply``'s). The caller adds the transport's
    columns (attempts, latency, request id, HTTP status).
    """
    try:
        return _safe_text(_answered_row(work, rows, message, via, checked))
    except ApiResponseError as exc:
        return error_row(work, rows, exc.error_type, exc.message, exc.status, 1, via)
    except MemoryError:
        raise
    except Exception as exc:
        reason = f"the reply could not be recorded ({failure(exc)})"
        return error_row(work, rows, MALFORMED, reason, None, 1, via)


def _asked(body: dict[str, Any], rows: RowSettings) -> Mode:
    """How the request asked for its structured answer: read off the body, or, where the
    body kept is only its model (a batch's rows, ``batches.sent``), as the model is asked."""
    mode = asked_mode(body)
    if mode is None and isinstance(body.get("model"), str):
        mode = rows.ask(body["model"])
    return mode or "tool"


def _answered_row(
    work: Work, rows: RowSettings, message: dict[str, Any], via: str, checked: bool
) -> dict[str, Any]:
    row = base_row(work, rows, via)
    put_message_fields(row, message, checked=checked)
    body = work.body or {}
    if rows.json_schema is not None:
        mode = _asked(body, rows)
        answer, error_type, why = structured_answer(
            message, rows.json_schema, mode, rows.answer_fields
        )
        row["structured_json"] = answer
        if error_type is not None:
            row.update(error_type=error_type, error_message=why)
    if row["error_type"] is None and row["stop_reason"] == "max_tokens":
        empty = _empty_answer(row, message, body)
        if empty is not None:
            row.update(error_type=EMPTY_ANSWER, error_message=empty)
    asked = body.get("model")
    row["status"] = STATUS_OK if row["error_type"] is None else STATUS_ERROR
    row["cost_usd"] = rows.prices.reply_cost(
        (message.get("model"), asked), message.get("usage") or {}
    )
    return row


def _empty_answer(
    row: Mapping[str, Any], message: Mapping[str, Any], body: Mapping[str, Any]
) -> str | None:
    """Why an answer cut at max_tokens before any text or tool call is no answer, or None.

    A model that thinks spends max_tokens on thinking first (its blocks come before the
    text, and thinking counts toward max_tokens: docs/api-facts.md §12.7); with too few left
    the reply holds thinking and no text. It was paid for, but it answers nothing: an error
    row, never an ``ok`` row with empty text."""
    if row.get("stop_reason") != "max_tokens" or row.get("text") or row.get("tool_calls_json"):
        return None
    blocks = message.get("content") or []
    thought = any(
        isinstance(b, Mapping) and b.get("type") in ("thinking", "redacted_thinking")
        for b in blocks
    )
    max_tokens = body.get("max_tokens")
    limit = f"{max_tokens:,} " if isinstance(max_tokens, int) else ""
    raise_it = f"raise {option('max_tokens', 'N')}"
    if not thought:
        reached = f"it reached max_tokens ({limit.strip()})" if limit else "it reached max_tokens"
        return f"the answer is empty: {reached} before any text; {raise_it}"
    thinking = body.get("thinking")
    budgeted = isinstance(thinking, Mapping) and thinking.get("type") == "enabled"
    advice = (
        f"{raise_it}, or lower thinking's budget_tokens"
        if budgeted
        else f"{raise_it}, or pass {option('effort', 'low')} where the model takes it"
    )
    used = row.get("output_tokens")
    paid = f" ({used:,} output tokens, paid)" if isinstance(used, int) else ""
    return (
        f"the answer is empty: thinking used all {limit}max_tokens{paid} before any text; {advice}"
    )


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
        if type(value) is str:  # the usual text, told apart without isinstance
            if value.isascii():
                continue
        elif value is None or not isinstance(value, str):
            continue
        row[name] = without_surrogates(value)
    return row


def base_row(work: Work, rows: RowSettings, via: str = VIA_ONLINE) -> dict[str, Any]:
    row = blank_row(work.row.id)
    body = work.body
    row["model"] = (body.get("model") if body else None) or rows.defaults.model
    row["request_hash"] = work.request_hash
    row["via"] = via
    row["source"] = rows.source
    row["finished_at"] = datetime.now(timezone.utc)
    if rows.keep_columns:
        row.update(zip(rows.keep_columns, kept_texts(work, rows), strict=True))
    return row


def kept_texts(work: Work, rows: RowSettings) -> list[str | None]:
    """The row's kept columns (``rows.keep_columns``), as the output holds them: texts."""
    return [_as_text(work.row.fields.get(name)) for name in rows.keep_columns]


def _as_text(value: Any) -> str | None:
    """A kept column's value as the journal keeps it: text (``formats.values.value_text``),
    which the final output gives back its type (``store.typed``)."""
    try:
        return value_text(value)
    except (ValueError, TypeError, RecursionError) as exc:  # the row's own problem says why
        return f"<{type(value).__name__} not shown: {failure(exc)}>"
