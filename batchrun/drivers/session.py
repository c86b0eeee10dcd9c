"""What every driver does before and around sending: the credentials check, the resume check
against what the output already holds, and the lazy plan of rows left to send.

Shared by the online driver and the Message Batches driver (neither imports the other).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, Iterator

import httpx

from batchrun.config.load import RunConfig
from batchrun.core.errors import ConfigError, OutputError
from batchrun.engine.outcome import Work, prepare
from batchrun.rows.files import folder_stamp
from batchrun.rows.reader import InputRow, count_rows, read_rows
from batchrun.store.resume import (
    RunState,
    job_fingerprint,
    read_state,
    stamp_input,
    state_path,
    unchanged_since,
    write_state,
)
from batchrun.store.row_state import RowState, count_done, state_of, to_send
from batchrun.store.sink import PriorRecord, PriorState

Sleep = Callable[[float], Awaitable[None]]


class ResumeMismatchError(ConfigError):
    """The output holds answers to requests that the input no longer makes."""


def check_credentials(config: RunConfig, transport: httpx.AsyncBaseTransport | None) -> None:
    """Refuse to start without a key, before anything is read or sent."""
    if not config.simulate and config.credentials == type(config.credentials)() and not transport:
        raise ConfigError(
            "no credentials: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN for a gateway), "
            "or try the job against the built-in simulator with --simulate"
        )


def redo_lapsed(config: RunConfig) -> bool:
    """Whether this job sends again the rows a Message Batch expired or cancelled: in a new
    batch (--resubmit-expired) or online (--finish-online), both only with --via batches."""
    return config.via == "batches" and (config.resubmit_expired or config.finish_online)


class RowCounter:
    """How many rows the input has, as far as it has been read."""

    rows = 0
    skipped = 0  # done by an earlier run, not read again


def _state(record: PriorRecord) -> RowState:
    return state_of(record.status, record.error_type)


def load_prior(config: RunConfig, prior: PriorState) -> tuple[bytearray, list[str]]:
    """What earlier runs answered, checked against the requests the input makes now.

    Returns one ``RowState`` per earlier row and each row's id ("" where nothing was
    recorded). Before anything is sent, records this run's job fingerprint and input stamp,
    which lets the next resume skip the row-by-row check (see ``store.resume``).
    """
    # Rows may embed local files: a changed file must send resume down the row-by-row check.
    fingerprint = job_fingerprint(config.defaults) + folder_stamp(config.input.parent)
    state = None if config.overwrite else read_state(config.output)
    if not len(prior):
        states, ids = bytearray(), list[str]()
    elif (
        state is not None
        and state.fingerprint == fingerprint
        and unchanged_since(config.input, state.input)
    ):
        states, ids = _trusted_prior(prior)
    else:
        states, ids = _check_prior(config, prior)
    try:
        write_state(config.output, RunState(fingerprint, stamp_input(config.input)))
    except OSError as exc:
        raise OutputError(f"cannot write {state_path(config.output)}: {exc}") from exc
    return states, ids


def _trusted_prior(prior: PriorState) -> tuple[bytearray, list[str]]:
    """States and ids straight from the records: neither the job nor those rows changed."""
    states = bytearray(len(prior))
    ids = [""] * len(prior)
    for index in range(len(prior)):
        record = prior.lookup(index)
        if record is not None:
            states[index] = _state(record)
            ids[index] = record.id
    return states, ids


def _check_prior(config: RunConfig, prior: PriorState) -> tuple[bytearray, list[str]]:
    """Compare each earlier answer's request hash with the request its row makes now."""
    states = bytearray(len(prior))
    ids = [""] * len(prior)
    mismatched: list[str] = []
    seen = 0
    for row in read_rows(config.input):
        if row.index >= len(states):
            break
        seen += 1
        record = prior.lookup(row.index)
        if record is None:
            continue
        if _differs(record, prepare(row, config), row):
            mismatched.append(row.id)
        states[row.index] = _state(record)
        ids[row.index] = row.id
    if seen < prior.final_rows:
        raise ResumeMismatchError(
            f"{config.output} holds {prior.final_rows} rows but {config.input} now has only "
            f"{seen}: use --overwrite to start afresh, or write to a new output with -o"
        )
    if mismatched:
        shown = ", ".join(mismatched[:10]) + (" ..." if len(mismatched) > 10 else "")
        raise ResumeMismatchError(
            f"{config.output} was made from different requests for {len(mismatched)} row(s) "
            f"(ids {shown}): the input or the job's parameters changed. Use --overwrite to "
            "start afresh, or write to a new output with -o"
        )
    return states, ids


def _differs(record: PriorRecord, work: Work, row: InputRow) -> bool:
    if record.id != row.id:
        return True
    return (
        record.request_hash is not None
        and work.request_hash is not None
        and record.request_hash != work.request_hash
    )


def plan(
    config: RunConfig,
    states: bytearray,
    known_ids: list[str],
    counter: RowCounter,
    only: Container[int] | None,
    *,
    redo_lapsed: bool = False,
    pending: bytearray | None = None,
) -> Iterator[Work]:
    """The rows this run must process, read lazily.

    Rows earlier runs finished are skipped by the reader itself, unparsed: a resumed
    million-row job starts sending as soon as it reaches the first row left to do.
    ``redo_lapsed`` sends again the rows a Message Batch expired or cancelled before
    answering; ``pending`` flags rows that sit in a batch still running (not sent again).
    """
    waiting = pending or bytearray()

    def finished(index: int) -> bool:
        state = states[index] if index < len(states) else RowState.NOTHING
        return not to_send(state, retry_errors=config.retry_errors, redo_lapsed=redo_lapsed)

    def in_batch(index: int) -> bool:
        return index < len(waiting) and waiting[index] == 1

    skipped = [i for i in range(len(states)) if finished(i) and not in_batch(i)]
    counter.skipped = len(skipped)
    counter.rows = len(states)

    def skip(index: int) -> bool:
        # Called for every row, read or not: the only place that sees them all.
        if index >= counter.rows:
            counter.rows = index + 1
        return finished(index) or in_batch(index)

    # Ids of rows skipped here that an earlier run recorded, to catch a read row reusing one.
    # ``known_ids`` may be shorter than ``states`` (or empty): a later round of a batch run
    # reads again rows whose ids were all checked in its first round.
    known = (known_ids[i] for i in skipped if i < len(known_ids))
    rows = read_rows(config.input, skip=skip, known_ids=known)
    for row in rows:
        counter.rows = max(counter.rows, row.index + 1)
        if only is not None and row.index not in only:
            continue
        yield prepare(row, config)


def count_hint(config: RunConfig, states: bytearray, redo_lapsed: bool = False) -> int | None:
    """Rows left to do, for the progress bar's total; None when it cannot be told cheaply."""
    total = count_rows(config.input)
    if total is None:
        return None
    skip = count_done(states, retry_errors=config.retry_errors, redo_lapsed=redo_lapsed)
    return max(total - skip, 0)
