"""What every driver does before and around sending: the credentials check, the claim on the
output (``claim_output``: one run per output, an output that cannot destroy the input, kept
columns that exist), the resume check against what the output already holds, and the lazy
plan of rows left to send.

Shared by the online driver and the Message Batches driver (neither imports the other).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import sys
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.config.load import (
    RunConfig,
    check_keep_columns,
    check_output_is_not_input,
    did_you_mean,
)
from batchrun.core.errors import ConfigError, InputError, OutputError
from batchrun.core.scrub import url_without_secrets
from batchrun.core.wording import named, option, shown_input
from batchrun.drivers.interrupt import stopped_by_signals
from batchrun.drivers.output import RunOutput, output_lease, shown_output
from batchrun.drivers.summary import RunSummary
from batchrun.engine.outcome import Work, prepare
from batchrun.rows.files import folder_stamp
from batchrun.rows.formats import InputKind, csv_columns
from batchrun.rows.prefix import SeenFiles
from batchrun.rows.reader import InputRow, InputShape, count_rows, input_kind, read_rows
from batchrun.rows.text import bounded_lines, open_utf8
from batchrun.store.lock import OutputLock
from batchrun.store.provenance import SourceRule, answer_source, describe, is_simulator
from batchrun.store.resume import (
    RunState,
    changed_settings,
    job_fingerprint,
    job_settings,
    read_state,
    record_run_spend,
    restamp_journal,
    stamp_input,
    stamp_journal,
    state_path,
    unchanged_since,
    vouches_for,
    write_state,
)
from batchrun.store.row_state import RowState, count_done, state_of, to_send
from batchrun.store.sink import (
    PriorRecord,
    PriorState,
    Sink,
    journal_path,
    remove_stale_temporaries,
)
from batchrun.store.spend import Ledger, at_start

Sleep = Callable[[float], Awaitable[None]]


class ResumeMismatchError(ConfigError):
    """The output holds answers to requests that the input no longer makes."""


class SourceMismatchError(ResumeMismatchError):
    """The output holds answers from another source than the one this run asks."""


@dataclass
class Resume:
    """What a run takes over from earlier ones (``load_prior``): a ``RowState`` per earlier
    row and its id ("" where nothing was recorded); which sources' answers count as done
    (``sources``: what was kept or is asked again); what the job spent (``ledger``)."""

    states: bytearray
    ids: list[str]
    sources: SourceRule
    ledger: Ledger

    @property
    def spent(self) -> float:
        """What the job spent before this run, on the kind of source this run asks."""
        return self.ledger.spent_for(self.sources.current)


def check_credentials(config: RunConfig, transport: httpx.AsyncBaseTransport | None) -> None:
    """Refuse to start without a key, before anything is read or sent."""
    if not config.simulate and config.credentials == type(config.credentials)() and not transport:
        raise ConfigError(
            "no credentials: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN for a gateway), "
            f"or try the job against the built-in simulator with {option('simulate', True)}"
        )


@contextlib.contextmanager
def claim_output(config: RunConfig, held: OutputLock | None = None) -> Iterator[OutputLock]:
    """The output, for this run alone, checked before anything is sent; released at the end.

    Refuses (ConfigError) an output that is the input and kept columns the output cannot
    hold, then takes the output's lock (``store.lock``; OutputError naming the run that
    holds it), then refuses kept columns the input does not have. Holding the lock, it
    removes the temporary files runs killed midway left. ``held`` is the caller's own lock
    on this output (a batch run finishing online): it is used, not taken again.
    """
    check_output_is_not_input(config.input, config.output)
    check_keep_columns(config.keep_columns)
    if held is not None:
        if not held.held or held.output != config.output:
            raise OutputError(f"internal error: the lock given is not held for {config.output}")
        yield held
        return
    with OutputLock(config.output) as lock, output_lease(config):
        check_kept_columns_exist(config.input, config.keep_columns, config.input_shape)
        remove_stale_temporaries(config.output)
        yield lock


def check_kept_columns_exist(
    path: Path, columns: Iterable[str], shape: InputShape | None = None
) -> None:
    """ConfigError unless every kept column is a column of the input, before anything is sent.

    Parquet and CSV declare their columns (the footer's schema, the header row): those are
    read. JSONL and JSON arrays have none; a column is a field of at least one row, so rows
    are read until every kept column has been seen: the first row, as a rule. Only a name
    that no row has costs a pass over the file, which is then an error. A JSONL line is
    parsed only when it may name a wanted field (its JSON text for the name, or any escape),
    which keeps that pass about as fast as counting lines. An input that cannot be read is
    left to the reader, which says why.
    """
    wanted = list(dict.fromkeys(columns))
    if not wanted:
        return
    try:
        kind = input_kind(path, shape)
        fmt = kind.format
        if fmt == "jsonl":
            missing, known = _missing_fields(path, wanted, kind)
        elif fmt == "json":
            missing, known = _missing_elements(path, wanted, shape)
        else:
            known = _parquet_columns(path) if fmt == "parquet" else csv_columns(path, kind)
            missing = [name for name in wanted if name not in known]
    except (InputError, OSError, ValueError, csv.Error, pa.ArrowException):
        return  # the reader reports what is wrong with the file
    if not missing:
        return
    names = ", ".join(f"`{m}`{did_you_mean(m, set(known))}" for m in missing)
    shown = ", ".join(f"`{k}`" for k in known[:12]) + (", ..." if len(known) > 12 else "")
    if fmt in ("jsonl", "json"):
        what = f"no row of {path} has the field {names}"
        has = f" (the first row has {shown})" if known else ""
    else:
        what = f"{path} has no column {names}"
        has = f" (its columns: {shown})" if known else ""
    raise ConfigError(
        f"`keep_columns`: {what}{has}. Kept columns are copied from the input: fix the "
        f"name, or drop it from {named('keep_columns')}"
    )


def _parquet_columns(path: Path) -> list[str]:
    return list(pq.read_schema(path).names)


def _missing_elements(
    path: Path, wanted: list[str], shape: InputShape | None
) -> tuple[list[str], list[str]]:
    """The wanted fields no element of a JSON array has, and the first row's fields."""
    left = dict.fromkeys(wanted)
    first: list[str] | None = None
    for row in read_rows(path, shape=shape):
        if first is None:
            first = list(row.fields)
        for name in row.fields.keys() & left.keys():
            del left[name]
        if not left:
            break
    return list(left), first or []


def _missing_fields(
    path: Path, wanted: list[str], kind: InputKind | None = None
) -> tuple[list[str], list[str]]:
    """The wanted fields no line of a JSONL file has, and the first row's fields (its text
    read as the reader reads it: decoded, and no line too long for a row held)."""
    left = dict.fromkeys(wanted)
    needles = {name: json.dumps(name, ensure_ascii=False).encode() for name in wanted}
    first: list[str] | None = None
    with open_utf8(path, kind or InputKind("jsonl")) as stream:
        for data in bounded_lines(stream):
            if not isinstance(data, bytes) or data.isspace():
                continue
            plain = b"\\" not in data
            if first is not None and plain and not any(needles[m] in data for m in left):
                continue  # no name still wanted can be a key of this line
            try:
                record = json.loads(data)
            except ValueError:
                continue  # a bad line: the reader makes it an error row
            if not isinstance(record, dict):
                continue
            if first is None:
                first = list(record)
            for name in record.keys() & left.keys():
                del left[name]
            if not left:
                break
    return list(left), first or []


def _afresh() -> str:
    """The way out of a refused resume, for whoever reads."""
    return (
        f"use {option('overwrite', True)} to start afresh, or write to a new output "
        f"({option('output', 'OUT')})"
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


def load_prior(config: RunConfig, prior: PriorState) -> Resume:
    """What earlier runs answered, checked against the requests the input makes now and
    against the source this run asks (``store.provenance``).

    Returns one ``RowState`` per earlier row and each row's id ("" where nothing was
    recorded), and what the job has spent so far. Before anything is sent, records this
    run's job fingerprint, input stamp, row count, source and the journal's stamp, which lets
    the next resume skip the row-by-row check (see ``store.resume``), and the job's ledger
    with the journal's spending folded in (``store.spend``). The journal is verified, not
    trusted: records for rows the input no longer has are refused (ResumeMismatchError),
    records past any row it had are damage (skipped, their rows sent again, reported once
    with the damaged lines the reader skipped), and records the state does not vouch for
    are checked row by row. Answers from another source than this run's are refused
    (SourceMismatchError), or sent again (--reask-other-source), or kept
    (--keep-other-source; never the simulator's for a run against the API).
    """
    # Rows may embed local files: a changed file must send resume down the row-by-row check.
    fingerprint = job_fingerprint(config.defaults) + folder_stamp(
        config.media_folder, skip=(config.input, config.output)
    )
    state = None if config.overwrite else read_state(config.output)
    current = answer_source(config.simulate, config.base_url)
    rule = SourceRule(
        current,
        state.mixed_sources if state is not None else (),
        reask=config.reask_other_source,
        keep=config.keep_other_source,
    )
    journal = journal_path(config.output)
    rows = input_rows(config.input, parse=bool(len(prior)), shape=config.input_shape)
    if len(prior):
        _check_rows_exist(config, prior, state, rows)
    if prior.damaged:
        _notice(
            config,
            f"batchrun: {prior.damaged:,} damaged journal line(s) skipped in {journal}; "
            "their rows are sent again",
        )
    if not len(prior):
        states, ids = bytearray(), list[str]()
    elif (
        state is not None
        and state.fingerprint == fingerprint
        and state.source == current  # answers of another source are never trusted wholesale
        and unchanged_since(config.input, state.input)
        and (not prior.journal or vouches_for(state.journal, journal, config.output))
        and _spot_check(config, prior)
    ):
        states, ids = _trusted_prior(config, prior, rule)
    else:
        states, ids = _check_prior(config, prior, state, rule)
    if rule.unrecorded and (state is None or state.source is None):
        _notice(
            config,
            f"batchrun: {rule.unrecorded:,} row(s) of {config.output} were recorded by an older "
            "batchrun, which did not record where answers came from; none is the simulator's "
            "(it marks its answers), so they count as answered, as before",
        )
    ledger = at_start(state.ledger if state is not None else None, prior)
    try:
        stamp = stamp_journal(journal, config.output)
        settings = job_settings(config.defaults)
        write_state(
            config.output,
            RunState(
                fingerprint,
                stamp_input(config.input),
                rows,
                stamp,
                settings,
                current,
                tuple(rule.mixed_after()),
                ledger,
            ),
        )
    except OSError as exc:
        raise OutputError(f"cannot write {state_path(config.output)}: {exc}") from exc
    return Resume(states, ids, rule, ledger)


def _check_sources(config: RunConfig, rule: SourceRule) -> None:
    """Refuse a resume whose output holds answers of another source, unless this run was
    told what to do with them; say what it does with them."""
    refused = rule.refused
    if refused:
        raise SourceMismatchError(source_refusal(config, rule, refused))
    for source, rows in rule.reasked.items():
        _notice(
            config,
            f"batchrun: {rows:,} row(s) answered by {describe(source)} are asked again of "
            f"{describe(rule.current)} ({option('reask_other_source', True)}); their answers "
            "are replaced",
        )
    for source, rows in rule.kept.items():
        _notice(
            config,
            f"batchrun: {rows:,} row(s) answered by {describe(source)} are kept as they are "
            f"({option('keep_other_source', True)}): {shown_output(config)} mixes answers of "
            f"{describe(source)} and "
            f"{describe(rule.current)}; its `source` column tells them apart",
        )


def source_refusal(config: RunConfig, rule: SourceRule, refused: Mapping[str, int]) -> str:
    """Why a resume against another source is refused, and the ways on."""
    held = " and ".join(
        f"{rows:,} row(s) answered by {describe(source)}" for source, rows in refused.items()
    )
    total = sum(refused.values())
    them = "that row" if total == 1 else f"those {total:,} rows"
    to = "the simulator" if is_simulator(rule.current) else rule.current
    head = f"{shown_output(config)} holds {held}, and this run asks {describe(rule.current)}. "
    reask = (
        f"{option('reask_other_source', True)} sends {them} again to {to} and replaces their "
        "answers (nothing else is sent again)"
    )
    rest = (
        f"{option('overwrite', True)} starts afresh (every row is sent again); or write to a "
        f"new output ({option('output', 'OUT')})"
    )
    keep_flag = option("keep_other_source", True)
    if not all(rule.keepable(source) for source in refused):
        kept = f" ({keep_flag} keeps another API's, never these)" if rule.keep else ""
        placeholders = "The simulator's answers are placeholders: they never count as answers"
        return head + f"{placeholders} of the API{kept}. {reask}; {rest}"
    keep = (
        f"{keep_flag} keeps their answers as they are (the output then mixes sources, told "
        "apart by its `source` column)"
    )
    return head + f"Choose: {reask}; {keep}; {rest}"


def _notice(config: RunConfig, message: str) -> None:
    if not config.quiet:
        print(message, file=sys.stderr, flush=True)


_ROW_COUNTS: dict[tuple[str, int, int, int, int, InputShape | None], int | None] = {}


def cheap_row_count(path: Path, shape: InputShape | None = None) -> int | None:
    """``count_rows`` (None for CSV and JSON arrays), remembered while the file's size and
    time stay the same: a run counts its input once, for the resume check and the progress
    bar."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, shape)
    if key not in _ROW_COUNTS:
        _ROW_COUNTS.clear()
        _ROW_COUNTS[key] = count_rows(path, shape)
    return _ROW_COUNTS[key]


def input_rows(path: Path, *, parse: bool, shape: InputShape | None = None) -> int | None:
    """How many rows the input has; None when it cannot be read (the reader says why) or,
    unless ``parse``, when only a pass over a CSV file or a JSON array would tell (no row is
    parsed, but every one is scanned)."""
    rows = cheap_row_count(path, shape)
    if rows is None and parse:
        rows = _count_by_reading(path, shape)
    return rows


def _count_by_reading(path: Path, shape: InputShape | None = None) -> int | None:
    seen = 0

    def skip(index: int) -> bool:
        nonlocal seen
        seen = max(seen, index + 1)
        return True

    try:
        for _ in read_rows(path, shape=shape, skip=skip):
            pass
    except (InputError, OSError):
        return None
    return seen


def _check_rows_exist(
    config: RunConfig, prior: PriorState, state: RunState | None, rows: int | None
) -> None:
    """Refuse records of rows the input no longer has; drop those of rows it never had.

    A record past the input's end is of a row the input lost when an earlier run saw that
    row (its index is below the row count the state recorded, or no count was recorded):
    refused like any other change of the input. Past every row any run saw, it is damage.
    """
    if rows is None:
        return  # the input cannot be read: the reader says why
    if prior.final_rows > rows:
        raise ResumeMismatchError(
            f"{config.output} holds {prior.final_rows} rows but {shown_input(config.input)} now "
            f"has only {rows}: restore the input, {_afresh()}"
        )
    beyond = sorted(i for i in prior.journal if i >= rows)
    if not beyond:
        return
    known = state.rows if state is not None else None
    lost = [i for i in beyond if known is None or i < known]
    if lost:
        shown = ", ".join(prior.journal[i].id for i in lost[:10])
        shown += " ..." if len(lost) > 10 else ""
        where = f"row {lost[0]}" if len(lost) == 1 else f"rows {lost[0]}..{lost[-1]}"
        raise ResumeMismatchError(
            f"{config.output} holds answers for {len(lost)} row(s) that "
            f"{shown_input(config.input)} no longer has ({where}, ids {shown}): it has {rows} "
            f"rows now. Restore the input, {_afresh()}"
        )
    prior.drop(beyond)


def _spot_check(config: RunConfig, prior: PriorState) -> bool:
    """The journal's first and last rows still make the requests recorded for them: a
    cheap guard, beside the journal's stamp, against another job's journal."""
    if not prior.journal:
        return True
    wanted = {min(prior.journal), max(prior.journal)}
    last = max(wanted)
    for row in read_rows(config.input, shape=config.input_shape, skip=lambda i: i not in wanted):
        if row.index > last:
            break
        record = prior.journal.get(row.index)
        if record is not None and _differs(record, prepare(row, config), row):
            return False
        if row.index == last:
            break
    return True


def _trusted_prior(
    config: RunConfig, prior: PriorState, rule: SourceRule
) -> tuple[bytearray, list[str]]:
    """States and ids straight from the records: neither the job nor those rows changed.
    A record of another source stays to send (or is refused: ``_check_sources``)."""
    states = bytearray(len(prior))
    ids = [""] * len(prior)
    for index in range(len(prior)):
        record = prior.lookup(index)
        if record is not None:
            if rule.done(record.source):
                states[index] = _state(record)
            ids[index] = record.id
    _check_sources(config, rule)
    return states, ids


def _check_prior(
    config: RunConfig, prior: PriorState, state: RunState | None, rule: SourceRule
) -> tuple[bytearray, list[str]]:
    """Compare each earlier answer's request hash with the request its row makes now, and
    its source with this run's (``rule``).

    Rows whose request changed are refused, naming the settings that changed since the
    state was written (or the rows, when no setting did); with ``--resend-changed`` they
    are sent again instead, and nothing else is. Rows answered by another source: see
    ``_check_sources``."""
    states = bytearray(len(prior))
    ids = [""] * len(prior)
    mismatched: list[str] = []
    foreign: list[tuple[int, str, str]] = []  # recorded under another id than the row's
    seen = 0
    for row in read_rows(config.input, shape=config.input_shape):
        if row.index >= len(states):
            break
        seen += 1
        record = prior.lookup(row.index)
        if record is None:
            continue
        if record.id != row.id:
            foreign.append((row.index, record.id, row.id))
        elif _differs(record, prepare(row, config), row):
            mismatched.append(row.id)
            if config.resend_changed:
                ids[row.index] = row.id
                continue  # its state stays NOTHING: the plan sends it again
        ids[row.index] = row.id
        if rule.done(record.source):
            states[row.index] = _state(record)  # else NOTHING: sent again, or refused
    if seen < prior.final_rows:
        raise ResumeMismatchError(
            f"{config.output} holds {prior.final_rows} rows but {shown_input(config.input)} now "
            f"has only {seen}: {_afresh()}"
        )
    if foreign:
        shown = "; ".join(f"row {i}: {was!r}, now {now!r}" for i, was, now in foreign[:5])
        shown += " ..." if len(foreign) > 5 else ""
        raise ResumeMismatchError(
            f"{config.output} holds {len(foreign)} row(s) recorded under other ids than "
            f"{shown_input(config.input)} has for them ({shown}): another job's journal or "
            "output, or an input whose rows moved. Restore the input (or put the other job's "
            f"files back), {_afresh()}"
        )
    _check_sources(config, rule)
    if mismatched:
        shown = ", ".join(mismatched[:10]) + (" ..." if len(mismatched) > 10 else "")
        changes = changed_settings(
            state.settings if state is not None else None, job_settings(config.defaults)
        )
        why = (
            f"the job's settings changed: {'; '.join(changes)}"
            if changes
            else "those rows of the input (or the files they refer to) changed"
        )
        if config.resend_changed:
            _notice(
                config,
                f"batchrun: {len(mismatched):,} row(s) whose request changed are sent again "
                f"({option('resend_changed', True)}; {why})",
            )
            return states, ids
        raise ResumeMismatchError(
            f"{config.output} was made from different requests for {len(mismatched)} row(s) "
            f"(ids {shown}): {why}. {option('resend_changed', True)} sends only those rows "
            f"again; {option('overwrite', True)} starts afresh (every row is sent again); or "
            f"write to a new output ({option('output', 'OUT')})"
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
    rows = read_rows(config.input, shape=config.input_shape, skip=skip, known_ids=known)
    seen_files = SeenFiles()  # files rows attach alike are cached (``rows.prefix``)
    for row in rows:
        counter.rows = max(counter.rows, row.index + 1)
        if only is not None and row.index not in only:
            continue
        if config.shard is not None and not in_shard(row.id, config.shard):
            continue  # another shard's row (``drivers.shards``): never sent by this run
        yield prepare(row, config, seen_files)


def count_hint(config: RunConfig, states: bytearray, redo_lapsed: bool = False) -> int | None:
    """Rows left to do, for the progress bar's total; None when it cannot be told cheaply."""
    total = cheap_row_count(config.input, config.input_shape)
    if total is None:
        return None
    skip = count_done(states, retry_errors=config.retry_errors, redo_lapsed=redo_lapsed)
    return max(total - skip, 0)


def record_spend(config: RunConfig, sink: Sink, summary: RunSummary) -> None:
    """Write what this run spent into the job's ledger (``store.spend``), before the final
    step may remove the journal that holds it; the job's total into ``summary``."""
    try:
        ledger = record_run_spend(config.output, sink.run_id, sink.spent)
    except OSError as exc:
        raise OutputError(f"cannot write {state_path(config.output)}: {exc}") from exc
    if ledger is not None and summary.source is not None:
        summary.job_cost_usd = ledger.spent_for(summary.source)


def write_output(
    config: RunConfig, output: RunOutput, summary: RunSummary, rows_read: int, *, complete: bool
) -> None:
    """The run's last step: the final dataset when every row is done (``summary.final``);
    after a stop, the rows finished so far as a partial output (``summary.partial``), so
    what is paid for can be read now; the journal stays and a re-run completes it.

    All or nothing either way: a signal abandons the step (``StoppedBySignal``) and leaves
    the journal, from which a re-run writes it.
    """
    sink = output.sink
    if output.seal_error is not None:
        _notice(
            config,
            f"batchrun: warning: the last journal segment of "
            f"{url_without_secrets(config.output_url or '')} could not be "
            f"uploaded ({output.seal_error}); this machine's journal has every row",
        )
    with stopped_by_signals():
        if complete:
            summary.final = sink.finalize(rows_read)
            output.publish()
            return
        # The reader may have stopped early: count the rest, for the "of" of the mark.
        total = max(rows_read, input_rows(config.input, parse=True, shape=config.input_shape) or 0)
        summary.total_rows = max(summary.total_rows, total)  # for the rows left
        counts = sink.write_finished(total)
    if counts is None:
        return
    if counts.partial is None:
        summary.final = counts  # every row had a record after all
        return
    summary.partial = counts
    try:
        restamp_journal(config.output, sink.journal)
    except OSError as exc:
        raise OutputError(f"cannot write {state_path(config.output)}: {exc}") from exc


def shard_of(row_id: str, count: int) -> int:
    """The shard (0..count-1) a row belongs to, by its id alone: the first 8 bytes of the
    id's SHA-256, modulo ``count``. Stable across processes and machines (Python's own
    ``hash`` of a string is salted per process), so every worker agrees on it."""
    digest = hashlib.sha256(row_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


def in_shard(row_id: str, shard: tuple[int, int]) -> bool:
    """Whether the row of ``row_id`` is in shard ``(index, count)``."""
    index, count = shard
    return shard_of(row_id, count) == index
