"""What the output already says of each input row: one enum, read by every driver and by
``estimate``, so "which rows does this run send?" has one answer everywhere.

Earlier runs leave one of four states per row. A run sends a row when its state says so under
that run's flags (``to_send``); an estimate counts the same rows as pending.
"""

from __future__ import annotations

import enum

from batchrun.store.columns import INVALID_REQUEST, SAMPLES_CUT, STATUS_OK

# The error types of a row a Message Batch ended without processing, and what they mean: the
# row was never answered, and --resubmit-expired / --finish-online send it again.
LAPSED_REASONS = {
    "expired": "the batch expired (24 h after creation) before this request was processed",
    "canceled": "the batch was cancelled before this request was processed",
}


class RowState(enum.IntEnum):
    """A row's state in the output. Stored one byte per row (``bytearray``): inputs have
    millions of rows, so the values are small integers."""

    NOTHING = 0  # no record, or recorded invalid (never sent: every run checks it again)
    OK = 1  # answered
    ERROR = 2  # sent and failed; sent again only with --retry-errors
    LAPSED = 3  # a Message Batch expired or was cancelled before reaching it


def state_of(status: str | None, error_type: str | None) -> RowState:
    """The state a record leaves its row in."""
    if status == STATUS_OK:
        return RowState.OK
    if status is None or error_type in (INVALID_REQUEST, SAMPLES_CUT):
        # Never sent: the row broke an API rule. Every run checks it again, so a row that a
        # fix to the job (a --model forgotten) or to the input made valid is sent; one still
        # invalid costs nothing and is recorded again. A row whose samples were cut off by a
        # stop (SAMPLES_CUT) is asked again whole; what its samples cost stays counted.
        return RowState.NOTHING
    return RowState.LAPSED if error_type in LAPSED_REASONS else RowState.ERROR


def to_send(state: int, *, retry_errors: bool, redo_lapsed: bool) -> bool:
    """Whether a run with these flags sends a row in ``state``."""
    if state == RowState.OK:
        return False
    if state == RowState.LAPSED:
        return redo_lapsed or retry_errors
    if state == RowState.ERROR:
        return retry_errors
    return True


def count_done(states: bytearray, *, retry_errors: bool, redo_lapsed: bool) -> int:
    """How many rows of ``states`` a run with these flags skips (cheap: counts bytes)."""
    done = states.count(RowState.OK)
    if not retry_errors:
        done += states.count(RowState.ERROR)
        if not redo_lapsed:
            done += states.count(RowState.LAPSED)
    return done


def done_flags(states: bytearray, *, retry_errors: bool, redo_lapsed: bool) -> bytes:
    """One byte per row of ``states``: 1 where a run with these flags skips the row, 0
    where it sends it (``to_send``); made at C speed, for the million rows of a resume."""
    table = bytes(
        0 if to_send(state, retry_errors=retry_errors, redo_lapsed=redo_lapsed) else 1
        for state in range(256)
    )
    return bytes(states).translate(table)
