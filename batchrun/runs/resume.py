"""The resume check: what earlier runs answered, checked against the requests the input makes
now and the source this run asks (``load_prior``), before anything is sent."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from batchrun.config.load import (
    RunConfig,
)
from batchrun.core.errors import ConfigError, OutputError
from batchrun.core.wording import option
from batchrun.engine.outcome import RowSettings, Work, prepare
from batchrun.formats.inputs import InputRow, read_rows
from batchrun.rows.files import FileCache
from batchrun.runs.claim import Claim
from batchrun.runs.output import RunOutput
from batchrun.runs.plan import KnownIds, SkipRuns, input_rows
from batchrun.runs.summary import RunSummary
from batchrun.store.provenance import SourceRule, answer_source, describe, is_simulator
from batchrun.store.referenced import FileLog, files_path, log_size, rebuilt, unchanged
from batchrun.store.resume import (
    RunState,
    changed_settings,
    job_fingerprint,
    job_settings,
    read_state,
    stamp_input,
    stamp_journal,
    state_path,
    unchanged_since,
    vouches_for,
    write_state,
)
from batchrun.store.row_state import RowState, state_of
from batchrun.store.sink import (
    PriorRecord,
    PriorState,
    journal_path,
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
    (``sources``: what was kept or is asked again); what the job spent (``ledger``); and the
    cache that reads the files rows attach and records which (``files``: every request the
    run sends must be built through it, ``store.referenced``)."""

    states: bytearray
    ids: list[str]
    sources: SourceRule
    ledger: Ledger
    files: FileCache

    @property
    def spent(self) -> float:
        """What the job spent before this run, on the kind of source this run asks."""
        return self.ledger.spent_for(self.sources.current)


def _afresh() -> str:
    """The way out of a refused resume, for whoever reads."""
    return (
        f"use {option('overwrite', True)} to start afresh, or write to a new output "
        f"({option('output', 'OUT')})"
    )


def _state(record: PriorRecord) -> RowState:
    return state_of(record.status, record.error_type)


class TakenOver(NamedTuple):
    """A claimed output opened for a run (``take_over``): the ``output`` (whose sink journals
    the run's rows), what earlier runs left in it (``prior``) and its check (``resume``)."""

    output: RunOutput
    prior: PriorState
    resume: Resume


def take_over(config: RunConfig, claim: Claim, summary: RunSummary) -> TakenOver:
    """Every driver's first step once the output is its own (``claim``): open the output
    (a remote one pulled first), check what earlier runs left in it (``load_prior``), and
    tell ``summary`` which answers count and what the job spent before."""
    output = RunOutput(
        config.output,
        config.storage,
        overwrite=config.resume.overwrite,
        lease=claim.lease,
        types=claim.types,
    )
    prior = output.open()
    resume = load_prior(config, prior)
    summary.took_over(resume.sources, resume.spent)
    return TakenOver(output, prior, resume)


def load_prior(config: RunConfig, prior: PriorState) -> Resume:
    """What earlier runs answered, checked against the requests the input makes now and
    against the source this run asks (``store.provenance``).

    Returns one ``RowState`` per earlier row and each row's id ("" where nothing was
    recorded), and what the job has spent so far. Before anything is sent, records this
    run's job fingerprint, input stamp, row count, source, the journal's stamp and the size
    of the log of files rows referred to, which lets the next resume skip the row-by-row
    check (see ``store.resume``, ``store.referenced``), and the job's ledger with the
    journal's spending folded in (``store.spend``). The journal is verified, not
    trusted: records for rows the input no longer has are refused (ResumeMismatchError),
    records past any row it had are damage (skipped, their rows sent again, reported once
    with the damaged lines the reader skipped), and records the state does not vouch for
    are checked row by row. Answers from another source than this run's are refused
    (SourceMismatchError), or sent again (--reask-other-source), or kept
    (--keep-other-source; never the simulator's for a run against the API).
    """
    fingerprint = job_fingerprint(config.defaults)
    state = None if config.resume.overwrite else read_state(config.output.path)
    # Rows may embed files: a changed one must send resume down the row-by-row check.
    files = files_path(config.output.path)
    if config.resume.overwrite:
        files.unlink(missing_ok=True)
    media = config.input.media_source or config.input.media_folder
    current = answer_source(config.client.simulate, config.client.base_url)
    rule = SourceRule(
        current,
        state.mixed_sources if state is not None else (),
        reask=config.resume.reask_other_source,
        keep=config.resume.keep_other_source,
    )
    journal = journal_path(config.output.path)
    rows = input_rows(config.input.path, parse=bool(len(prior)), shape=config.input.shape)
    if len(prior):
        _check_rows_exist(config, prior, state, rows)
    if prior.damaged:
        notice(
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
        and unchanged_since(config.input.path, state.input)
        and (not prior.journal or vouches_for(state.journal, journal, config.output.path))
        and unchanged(files, media, state.files_size)
        and _spot_check(config, prior)
    ):
        states, ids = _trusted_prior(config, prior, rule)
    else:
        # The files answered rows use now: the log the next resume checks.
        with rebuilt(files) as log:
            states, ids = _check_prior(config, prior, state, rule, FileCache(on_use=log.record))
    if rule.unrecorded and (state is None or state.source is None):
        notice(
            config,
            f"batchrun: {rule.unrecorded:,} row(s) of {config.output.shown} were recorded by an "
            "older batchrun, which did not record where answers came from; none is the "
            "simulator's (it marks its answers), so they count as answered, as before",
        )
    ledger = at_start(state.ledger if state is not None else None, prior)
    try:
        stamp = stamp_journal(journal, config.output.path)
        settings = job_settings(config.defaults)
        write_state(
            config.output.path,
            RunState(
                fingerprint,
                stamp_input(config.input.path),
                rows,
                stamp,
                settings,
                current,
                tuple(rule.mixed_after()),
                ledger,
                log_size(files),
            ),
        )
    except OSError as exc:
        raise OutputError(f"cannot write {state_path(config.output.path)}: {exc}") from exc
    return Resume(states, KnownIds(ids), rule, ledger, FileCache(on_use=FileLog(files).record))


def _check_sources(config: RunConfig, rule: SourceRule) -> None:
    """Refuse a resume whose output holds answers of another source, unless this run was
    told what to do with them; say what it does with them."""
    refused = rule.refused
    if refused:
        raise SourceMismatchError(source_refusal(config, rule, refused))
    for source, rows in rule.reasked.items():
        notice(
            config,
            f"batchrun: {rows:,} row(s) answered by {describe(source)} are asked again of "
            f"{describe(rule.current)} ({option('reask_other_source', True)}); their answers "
            "are replaced",
        )
    for source, rows in rule.kept.items():
        notice(
            config,
            f"batchrun: {rows:,} row(s) answered by {describe(source)} are kept as they are "
            f"({option('keep_other_source', True)}): {config.output.shown} mixes answers of "
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
    head = f"{config.output.shown} holds {held}, and this run asks {describe(rule.current)}. "
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


def notice(config: RunConfig, message: str) -> None:
    if not config.run.quiet:
        print(message, file=sys.stderr, flush=True)


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
            f"{config.output.shown} holds {prior.final_rows} rows but {config.input.shown} now "
            f"has only {rows}: restore the input, {_afresh()}"
        )
    beyond = prior.journal.from_index(rows)
    if not beyond:
        return
    known = state.rows if state is not None else None
    lost = [i for i in beyond if known is None or i < known]
    if lost:
        shown = ", ".join(prior.journal[i].id for i in lost[:10])
        shown += " ..." if len(lost) > 10 else ""
        where = f"row {lost[0]}" if len(lost) == 1 else f"rows {lost[0]}..{lost[-1]}"
        raise ResumeMismatchError(
            f"{config.output.shown} holds answers for {len(lost)} row(s) that "
            f"{config.input.shown} no longer has ({where}, ids {shown}): it has {rows} "
            f"rows now. Restore the input, {_afresh()}"
        )
    prior.drop(beyond)


def _spot_check(config: RunConfig, prior: PriorState) -> bool:
    """The journal's first and last rows still make the requests recorded for them: a
    cheap guard, beside the journal's stamp, against another job's journal."""
    if not prior.journal:
        return True
    first, last = prior.journal.first(), prior.journal.last()
    settings = RowSettings.of(config)
    # The rows before and between them are passed over a megabyte at a time (``SkipRuns``).
    flags = bytearray(b"\1") * (last + 1)
    flags[first] = flags[last] = 0
    skipped = SkipRuns(lambda i: i > last or flags[i] == 1, bytes(flags))
    for row in read_rows(config.input.path, shape=config.input.shape, skip=skipped):
        if row.index > last:
            break
        record = prior.journal.get(row.index)
        if record is not None and _differs(record, prepare(row, settings), row):
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
    for index in range(prior.final_rows):  # the final file's rows, or their newer records
        record = prior.lookup(index)
        if record is not None:
            if rule.done(record.source):
                states[index] = _state(record)
            ids[index] = record.id

    # The journal's records past the final file's rows, straight from its columns: a
    # million-row journal is taken in a fraction of a second (one state is worked out per
    # distinct status, error type and source).
    def state(status: str | None, error_type: str | None, source: str | None, rows: int) -> int:
        return state_of(status, error_type) if rule.done(source, rows) else RowState.NOTHING

    prior.journal.fill(states, ids, prior.final_rows, state)
    _check_sources(config, rule)
    return states, ids


def _check_prior(
    config: RunConfig,
    prior: PriorState,
    state: RunState | None,
    rule: SourceRule,
    files: FileCache,
) -> tuple[bytearray, list[str]]:
    """Compare each earlier answer's request hash with the request its row makes now, and
    its source with this run's (``rule``). Their files are read through ``files``.

    Rows whose request changed are refused, naming the settings that changed since the
    state was written (or the rows, when no setting did); with ``--resend-changed`` they
    are sent again instead, and nothing else is. Rows answered by another source: see
    ``_check_sources``."""
    states = bytearray(len(prior))
    ids = [""] * len(prior)
    settings = RowSettings.of(config, files)
    mismatched: list[str] = []
    foreign: list[tuple[int, str, str]] = []  # recorded under another id than the row's
    seen = 0
    for row in read_rows(config.input.path, shape=config.input.shape):
        if row.index >= len(states):
            break
        seen += 1
        record = prior.lookup(row.index)
        if record is None:
            continue
        if record.id != row.id:
            foreign.append((row.index, record.id, row.id))
        elif _differs(record, prepare(row, settings), row):
            mismatched.append(row.id)
            if config.resume.resend_changed:
                ids[row.index] = row.id
                continue  # its state stays NOTHING: the plan sends it again
        ids[row.index] = row.id
        if rule.done(record.source):
            states[row.index] = _state(record)  # else NOTHING: sent again, or refused
    if seen < prior.final_rows:
        raise ResumeMismatchError(
            f"{config.output.shown} holds {prior.final_rows} rows but {config.input.shown} now "
            f"has only {seen}: {_afresh()}"
        )
    if foreign:
        shown = "; ".join(f"row {i}: {was!r}, now {now!r}" for i, was, now in foreign[:5])
        shown += " ..." if len(foreign) > 5 else ""
        raise ResumeMismatchError(
            f"{config.output.shown} holds {len(foreign)} row(s) recorded under other ids than "
            f"{config.input.shown} has for them ({shown}): another job's journal or "
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
        if config.resume.resend_changed:
            notice(
                config,
                f"batchrun: {len(mismatched):,} row(s) whose request changed are sent again "
                f"({option('resend_changed', True)}; {why})",
            )
            return states, ids
        raise ResumeMismatchError(
            f"{config.output.shown} was made from different requests for {len(mismatched)} row(s) "
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
