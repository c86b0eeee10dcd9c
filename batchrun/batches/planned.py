"""A round's rows as its first pass prepared them (``PlannedRows``): the batches are built
from these instead of from a second read and build of every row.

A Message Batches round reads its rows twice: once before any batch is built, to find twins
and count the rows of each prompt-cache group (``batches.run._BatchJob._read_ahead``), then
to build the batches. Preparing a row (reading it, building its request, checking it against
its model's rules, hashing it) is the largest part of a batch run's own work, so the first
pass keeps, row by row, what building a batch reads of a prepared row, in a file beside the
output, and the builder reads it back: the row's index, line and id, its request as encoded
(``Work.content``), its hash, the model asked, its cache group, the settings left out for its
model, its kept columns' texts, or why it cannot be sent. That is what ``batches.sent.SentRows``
keeps to collect a batch; no other part of a row is read once its request is built.

Rows come back as light ``Work`` objects: the body holds only the model (all a builder and
an output row read of it), and the kept columns hold their texts (``engine.outcome.kept_texts``
gives them back unchanged). A round that needs more of a row while building -- the answer
cache (which checks the whole body) or the budget of ``--via auto`` (which prices it) --
prepares its rows again, as before.

The file holds at most ``MAX_BYTES``; the rows past it are prepared again when the builder
reaches them (a plan of the rows after the last one kept).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from batchrun.batches.sent import light_work
from batchrun.core.errors import InvalidRowError, OutputError, Problem
from batchrun.engine.outcome import RowSettings, Work, kept_texts

MAX_BYTES = 1 << 30  # of the file beside the output: a 10M-row round keeps its first ~2.5M
ROWS_PER_RECORD = 1024  # rows pickled together: one call per thousand rows, not per row

# One row, as kept: index, line, id, request hash, whether it has a body and the model it
# asks, content, cache group, dropped settings, kept texts, and for a row that cannot be sent
# its problems, file and line.
_Kept = tuple[
    int,
    int,
    str,
    str | None,
    bool,
    str | None,
    bytes | None,
    str | None,
    tuple[str, ...],
    tuple[str | None, ...],
    tuple[list[Problem], str | None, int | None] | None,
]


class PlannedRows:
    """The rows of one round, kept as the first pass prepares them (``keeping``), read back
    by the builder (``works``), then removed (``remove``).

    The file is written and read by this process within one round, never one it did not
    write, which is why ``pickle`` (the fastest way Python has to keep these tuples) is safe
    here. A run killed midway leaves it beside the output; the next run's start removes it
    (``batches.run.PLANNED_SUFFIX``)."""

    def __init__(self, path: Path, rows: RowSettings, max_bytes: int | None = None) -> None:
        self.path = path
        self._rows = rows
        self._keep_columns = rows.keep_columns
        self._max_bytes = MAX_BYTES if max_bytes is None else max_bytes
        self._file: BinaryIO | None = None
        self._pending: list[_Kept] = []
        self._written = 0
        self.kept_rows = 0
        self.last_index = -1  # the last row kept; rows past it are prepared again
        self.complete = False  # every row of the pass is kept (none past the bound)

    def keeping(self, works: Iterable[Work]) -> Iterator[Work]:
        """``works`` as they are, each kept on the way while the file has room."""
        try:
            self._file = self.path.open("wb")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        full = False
        for work in works:
            if not full and work.body is not None and work.content is None:
                # A body not encoded yet (a Work made by hand) would come back without it:
                # this row and the rest are prepared again instead.
                self._flush()
                full = True
            if not full:
                self._pending.append(self._kept(work))
                self.last_index = work.row.index
                self.kept_rows += 1
                if len(self._pending) >= ROWS_PER_RECORD:
                    full = self._flush()
            yield work
        if not full:
            self._flush()
            self.complete = True
        self._close()

    def _kept(self, work: Work) -> _Kept:
        row, body, problem = work.row, work.body, work.problem
        return (
            row.index,
            row.line,
            row.id,
            work.request_hash,
            body is not None,
            body.get("model") if body is not None else None,
            work.content,
            work.prefix_key,
            work.dropped,
            tuple(kept_texts(work, self._rows)) if self._keep_columns else (),
            (problem.problems, problem.file, problem.row) if problem is not None else None,
        )

    def _flush(self) -> bool:
        """Write the rows pending; True once the file is at its bound (nothing more kept)."""
        assert self._file is not None
        if self._pending:
            data = pickle.dumps(self._pending, protocol=pickle.HIGHEST_PROTOCOL)
            self._pending = []
            try:
                self._file.write(data)
            except OSError as exc:
                raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
            self._written += len(data)
        return self._written >= self._max_bytes

    def _close(self) -> None:
        if self._file is not None and not self._file.closed:
            try:
                self._file.close()
            except OSError as exc:
                raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def works(self, rest: Callable[[int], Iterable[Work]]) -> Iterator[Work]:
        """The rows kept, as light ``Work`` objects, in order; then, when the file reached
        its bound, ``rest(last_index)``: the rows past the last one kept, prepared again."""
        self._close()
        try:
            with self.path.open("rb") as f:
                while True:
                    try:
                        record: list[_Kept] = pickle.load(f)
                    except EOFError:
                        break
                    for kept in record:
                        yield _work(kept, self._keep_columns)
        except OSError as exc:
            raise OutputError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        if not self.complete:
            yield from rest(self.last_index)

    def remove(self) -> None:
        self._close()
        self.path.unlink(missing_ok=True)


def _work(kept: _Kept, keep_columns: tuple[str, ...]) -> Work:
    index, line, row_id, request_hash, has_body, model, content, prefix_key, dropped, texts, why = (
        kept
    )
    return light_work(
        index,
        row_id,
        request_hash,
        model,
        texts,
        keep_columns,
        dropped,
        line=line,
        has_body=has_body,
        problem=None if why is None else InvalidRowError(why[0], file=why[1], row=why[2]),
        content=content,
        prefix_key=prefix_key,
    )
