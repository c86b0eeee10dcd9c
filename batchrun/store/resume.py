"""Fast, safe resume: trust earlier answers wholesale when neither the job nor the rows changed.

A row's request is a function of the row, the files it attaches and the job's request
defaults. So when the job's defaults are the same (``job_fingerprint``), the input still begins
with the very bytes an earlier run read (``InputStamp``: size and SHA-256 of the file as that
run saw it) and the files rows referred to are as they were (the log the state vouches for,
``store.referenced``), every row an earlier run answered would be sent again unchanged, and
need not be rebuilt one by one to compare request hashes. Each run records its stamp beside
the output before sending anything; when the stamp is missing or does not match, the runner
falls back to checking every answered row's request hash.

Hashing the input costs about a second per gigabyte; rebuilding a million requests costs tens.

The state also vouches for the journal it was written beside (``JournalStamp``): the same
file (device and inode), still beginning with the bytes it held then, and the final file
unchanged since (a run that finished removed that journal, so one found after it is not the
one vouched for). A journal the state does not vouch for (another job's, put in its place; or
one from before this check) is checked row by row. ``rows`` is the input's row count as the
run saw it: a record past it is damage, one between it and a shorter input's end is a row
the input lost.

The state also keeps where the last run's answers came from (``source``: answers of another
source are never trusted wholesale, ``store.provenance``), the sources the output's owner
chose to mix, and what the job has spent (``ledger``, ``store.spend``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchrun.rows.request import RequestDefaults
from batchrun.store.sink import journal_path, journal_spend
from batchrun.store.spend import Ledger, folded

STATE_SUFFIX = ".state.json"
_CHUNK = 1 << 20
_VERSION = 1


def state_path(output: Path) -> Path:
    return output.with_name(output.name + STATE_SUFFIX)


def job_fingerprint(defaults: RequestDefaults) -> str:
    """What, besides the row itself, shapes every request of the job."""
    text = json.dumps(job_settings(defaults), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"v{_VERSION}:{text}".encode()).hexdigest()


def job_settings(defaults: RequestDefaults) -> dict[str, Any]:
    """The job's request defaults as plain JSON values, as the state records them."""
    plain: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(defaults), default=list))
    # The automatic cache marks are not in the request hash and change no answer: an output
    # made before them (or under another --cache) keeps its fingerprint and its fast resume.
    plain.pop("cache", None)
    # Settings added after outputs were made count only when set, so those outputs keep
    # their fingerprint (and their fast resume) under a newer batchrun.
    for key, unset in _ADDED_SETTINGS.items():
        if plain.get(key) == unset:
            plain.pop(key, None)
    return plain


_ADDED_SETTINGS: dict[str, Any] = {"effort": None, "drop_unsupported": False}


def changed_settings(before: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """Each request default that differs between an earlier run's state and now, as
    ``max_tokens 50 -> 60`` (values shortened); empty when unknown or unchanged."""
    if before is None:
        return []
    changes = []
    for key in sorted(before.keys() | now.keys()):
        was, is_now = before.get(key), now.get(key)
        if was != is_now:
            changes.append(f"{key} {_short(was)} -> {_short(is_now)}")
    return changes


def _short(value: Any) -> str:
    text = "unset" if value is None else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class InputStamp:
    """The input file as one run saw it: its size and the SHA-256 of its bytes."""

    size: int
    sha256: str


def stamp_input(path: Path, size: int | None = None) -> InputStamp:
    """Stamp the first ``size`` bytes of ``path`` (all of it by default)."""
    digest = hashlib.sha256()
    remaining = path.stat().st_size if size is None else size
    total = remaining
    with path.open("rb") as fh:
        while remaining > 0:
            chunk = fh.read(min(_CHUNK, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return InputStamp(total - remaining, digest.hexdigest())


def unchanged_since(path: Path, stamp: InputStamp) -> bool:
    """True when ``path`` still begins with exactly the bytes ``stamp`` recorded."""
    try:
        if path.stat().st_size < stamp.size:
            return False
        return stamp_input(path, stamp.size) == stamp
    except OSError:
        return False


@dataclass(frozen=True)
class JournalStamp:
    """The journal as a run saw it before sending, and the final file beside it."""

    device: int
    inode: int
    size: int
    head_sha256: str  # of its first ``min(size, _JOURNAL_HEAD)`` bytes
    final: tuple[int, int, int] | None  # the final file's (inode, size, mtime_ns); None: none


_JOURNAL_HEAD = 1 << 20


def _file_id(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def stamp_journal(journal: Path, final: Path) -> JournalStamp | None:
    """Stamp ``journal`` (None when it cannot be read) and the final file ``final``."""
    try:
        st = journal.stat()
        with journal.open("rb") as fh:
            head = hashlib.sha256(fh.read(min(st.st_size, _JOURNAL_HEAD))).hexdigest()
    except OSError:
        return None
    return JournalStamp(st.st_dev, st.st_ino, st.st_size, head, _file_id(final))


def vouches_for(stamp: JournalStamp | None, journal: Path, final: Path) -> bool:
    """True when ``journal`` is the journal ``stamp`` recorded, only grown since (appended
    to), and the final file is as it was then."""
    if stamp is None or _file_id(final) != stamp.final:
        return False
    try:
        st = journal.stat()
        if (st.st_dev, st.st_ino) != (stamp.device, stamp.inode) or st.st_size < stamp.size:
            return False
        with journal.open("rb") as fh:
            head = fh.read(min(stamp.size, _JOURNAL_HEAD))
    except OSError:
        return False
    return hashlib.sha256(head).hexdigest() == stamp.head_sha256


@dataclass(frozen=True)
class RunState:
    fingerprint: str
    input: InputStamp
    rows: int | None = None  # the input's row count, where known
    journal: JournalStamp | None = None
    settings: Mapping[str, Any] | None = None  # the job's request defaults (``job_settings``)
    # Where the last run's answers came from (``store.provenance``); None: not recorded.
    source: str | None = None
    # The sources whose answers the output's owner chose to keep together (--keep-other-source)
    mixed_sources: tuple[str, ...] = ()
    # What the job has spent (``store.spend``); None: not recorded (an older state).
    ledger: Ledger | None = None
    # The size of the log of files rows referred to (``store.referenced``) before the run
    # sent anything: a log found shorter vouches for nothing.
    files_size: int = 0


def read_state(output: Path) -> RunState | None:
    """The state an earlier run left, or None when absent or unreadable (then: check rows)."""
    try:
        data: Any = json.loads(state_path(output).read_text(encoding="utf-8"))
        if data.get("version") != _VERSION:
            return None
        stamp = InputStamp(int(data["input_size"]), str(data["input_sha256"]))
        rows = data.get("input_rows")
        journal = data.get("journal")
        settings = data.get("request_defaults")
        source = data.get("source")
        spent = data.get("spent_usd")
        return RunState(
            str(data["fingerprint"]),
            stamp,
            int(rows) if rows is not None else None,
            _journal_stamp(journal) if journal is not None else None,
            dict(settings) if isinstance(settings, dict) else None,
            str(source) if source is not None else None,
            tuple(str(s) for s in data.get("mixed_sources") or ()),
            Ledger.from_json(spent) if spent is not None else None,
            int(data.get("files_size") or 0),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _journal_stamp(data: Any) -> JournalStamp:
    final = data["final"]
    return JournalStamp(
        int(data["device"]),
        int(data["inode"]),
        int(data["size"]),
        str(data["head_sha256"]),
        (int(final[0]), int(final[1]), int(final[2])) if final is not None else None,
    )


def write_state(output: Path, state: RunState) -> None:
    """Record the run's state atomically (temporary file, then rename)."""
    path = state_path(output)
    tmp = path.with_name(f".{path.name}.tmp")
    data = {
        "version": _VERSION,
        "fingerprint": state.fingerprint,
        "input_size": state.input.size,
        "input_sha256": state.input.sha256,
        "input_rows": state.rows,
        "journal": dataclasses.asdict(state.journal) if state.journal is not None else None,
        "request_defaults": dict(state.settings) if state.settings is not None else None,
        "source": state.source,
        "mixed_sources": list(state.mixed_sources),
        "spent_usd": state.ledger.as_json() if state.ledger is not None else None,
        "files_size": state.files_size,
    }
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def record_run_spend(output: Path, run: str, costs: Mapping[str, float]) -> Ledger | None:
    """Write what ``run`` spent into the state's ledger (before its journal may go); the
    ledger after, or None when there is no state to write it in."""
    state = read_state(output)
    if state is None:
        return None
    ledger = (state.ledger or Ledger()).with_run(run, costs)
    write_state(output, dataclasses.replace(state, ledger=ledger))
    return ledger


def job_ledger(output: Path) -> Ledger | None:
    """What the job writing ``output`` has spent, as a run starting now would count it
    (``store.spend``); None when no run recorded it (an older output, or none yet)."""
    state = read_state(output)
    if state is None or state.ledger is None:
        return None
    return folded(state.ledger, journal_spend(journal_path(output)).by_run)


def restamp_journal(output: Path, journal: Path) -> None:
    """Vouch again for ``journal`` after this run rewrote the output beside it (a partial
    output): the stamp recorded before sending names the output as it was then."""
    state = read_state(output)
    if state is not None:
        write_state(output, dataclasses.replace(state, journal=stamp_journal(journal, output)))
