"""The lazy plan of the rows a run sends (``plan``): those earlier runs left undone, of this
shard, of the pilot's sample; and how many rows the input has, for the display and the
resume check (``count_hint``, ``input_rows``). Shard membership is by the id's hash
(``shard_of``)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container, Iterable, Iterator
from itertools import compress
from pathlib import Path

from batchrun.config.load import (
    RunConfig,
)
from batchrun.core.errors import InputError
from batchrun.engine.outcome import RowSettings, Work, prepare
from batchrun.formats.inputs import InputShape, count_rows, read_rows
from batchrun.rows.files import FileCache
from batchrun.rows.prefix import SeenFiles
from batchrun.store.row_state import count_done, done_flags


def redo_lapsed(config: RunConfig) -> bool:
    """Whether this job sends again the rows a Message Batch expired or cancelled: in a new
    batch (--resubmit-expired) or online (--finish-online), both only with --via batches."""
    return config.via == "batches" and (
        config.batches.resubmit_expired or config.batches.finish_online
    )


class RowCounter:
    """How many rows the input has, as far as it has been read."""

    rows = 0
    skipped = 0  # done by an earlier run, not read again


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


def plan(
    config: RunConfig,
    states: bytearray,
    known_ids: list[str],
    counter: RowCounter,
    only: Container[int] | None,
    *,
    redo_lapsed: bool = False,
    pending: bytearray | None = None,
    files: FileCache | None = None,
    past: int = -1,
) -> Iterator[Work]:
    """The rows this run must process, read lazily.

    Rows earlier runs finished are skipped by the reader itself, unparsed: a resumed
    million-row job starts sending as soon as it reaches the first row left to do.
    ``redo_lapsed`` sends again the rows a Message Batch expired or cancelled before
    answering; ``pending`` flags rows that sit in a batch still running (not sent again).
    ``files`` reads the files rows attach: the run's own (``runs.resume.Resume.files``)
    records which, for its resume. Rows up to index ``past`` are read (an id they use is
    used) but not prepared: a batch round's first pass kept them (``batches.planned``).
    """
    waiting = pending or bytearray()
    # 1 for each row an earlier run finished (a row past them all is not).
    done = done_flags(states, retry_errors=config.resume.retry_errors, redo_lapsed=redo_lapsed)
    known_rows = len(done)

    def in_batch(index: int) -> bool:
        return index < len(waiting) and waiting[index] == 1

    skipped = list(compress(range(known_rows), done))  # at C speed: a resume has millions
    if waiting:
        skipped = [i for i in skipped if not in_batch(i)]
    counter.skipped = len(skipped)
    counter.rows = known_rows

    def skip(index: int) -> bool:
        # Called for every row, read or not: the only place that sees them all. Rows out of
        # a pilot's or a trial's few are passed over unparsed too.
        if index < known_rows:
            passed = done[index] == 1 or in_batch(index)
        else:
            if index >= counter.rows:  # (the reader may read the rows again: never less)
                counter.rows = index + 1
            passed = in_batch(index)
        return passed or (only is not None and index not in only)

    if only is None and not waiting:
        skip = SkipRuns(skip, done)

    # Ids of rows skipped here that an earlier run recorded, to catch a read row reusing one.
    # ``known_ids`` may be shorter than ``states`` (or empty): a later round of a batch run
    # reads again rows whose ids were all checked in its first round.
    known: Iterable[str]
    if isinstance(known_ids, KnownIds):
        known = known_ids.of(skipped, bytes(done) + b"/" + bytes(waiting))
    else:
        known = (known_ids[i] for i in skipped if i < len(known_ids))
    rows = read_rows(config.input.path, shape=config.input.shape, skip=skip, known_ids=known)
    seen_files = SeenFiles()  # files rows attach alike are cached (``rows.prefix``)
    settings = RowSettings.of(config, files)
    for row in rows:
        counter.rows = max(counter.rows, row.index + 1)
        if only is not None and row.index not in only:
            continue
        if config.shard is not None and not in_shard(row.id, config.shard):
            continue  # another shard's row (``shards.run``): never sent by this run
        if row.index <= past:
            continue
        yield prepare(row, settings, seen_files)


class KnownIds(list[str]):
    """The ids earlier runs recorded, by input index (``runs.resume.Resume.ids``), which also
    keeps the set of those a plan skips (``of``): a run plans twice (its twin pass, then
    its run), and a million ids make a set in about half a second."""

    _made: tuple[bytes, frozenset[str]] | None = None

    def of(self, skipped: list[int], key: bytes) -> frozenset[str]:
        """The ids of rows ``skipped`` (made once for each ``key``: which rows those are)."""
        if self._made is None or self._made[0] != key:
            self._made = (key, frozenset(self[i] for i in skipped if i < len(self)))
        return self._made[1]


class SkipRuns:
    """A reader's ``skip`` that also tells how many rows from an index on are skipped one
    after another (``run``): those an earlier run finished, flagged 1 in ``done``. The
    JSON-lines reader then passes over them a megabyte at a time (``formats.jsonl``),
    without a step per row: a resume skips millions before its first row to send."""

    def __init__(self, skip: Callable[[int], bool], done: bytes) -> None:
        self._skip = skip
        self._done = done

    def __call__(self, index: int) -> bool:
        return self._skip(index)

    def run(self, index: int) -> int:
        if index >= len(self._done) or self._done[index] != 1:
            return 0
        end = self._done.find(0, index)
        return (len(self._done) if end < 0 else end) - index


def count_hint(config: RunConfig, states: bytearray, redo_lapsed: bool = False) -> int | None:
    """Rows left to do, for the progress bar's total; None when it cannot be told cheaply."""
    total = cheap_row_count(config.input.path, config.input.shape)
    if total is None:
        return None
    skip = count_done(states, retry_errors=config.resume.retry_errors, redo_lapsed=redo_lapsed)
    return max(total - skip, 0)


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
