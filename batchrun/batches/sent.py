"""What a batch's output rows need of their input rows, kept from when the batch was built.

An output row takes from its input row only the row's id, the model asked, the request's
hash and the kept columns (``engine.outcome.base_row``); the answer is the result line's. A
batch built by this run keeps those few values per row (``SentRows``), spilled to a file
beside the output once the batch is created, so that collecting it needs no second pass
over the input and no second build of every request, and memory holds one batch's worth at
a time however many batches are running. A batch an earlier run created has no such file:
its rows are read again from the input, and each one's request checked against the hash the
intent recorded (``batches.run``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from batchrun.core.errors import InvalidRowError, OutputError
from batchrun.core.jsoncodec import compact
from batchrun.engine.outcome import Work
from batchrun.rows.reader import InputRow


@dataclass
class SentRows:
    """Per row of one batch, in the intent's order: id, full request hash, model asked and
    kept columns' texts (``engine.outcome.kept_texts``; empty when none are kept); and, for
    the few rows sent without settings their model does not take (``--drop-unsupported``),
    which, so the summary counts them when the batch is collected."""

    keep_columns: tuple[str, ...] = ()
    ids: list[str | None] = field(default_factory=list)  # None: not in the input (``blank``)
    hashes: list[str] = field(default_factory=list)
    models: list[str | None] = field(default_factory=list)
    kept: list[list[str | None]] = field(default_factory=list)
    dropped: dict[int, list[str]] = field(default_factory=dict)  # by position; most have none

    @classmethod
    def blank(cls, count: int, keep_columns: tuple[str, ...]) -> SentRows:
        """``count`` rows to ``put`` in any order; a row never put has no id."""
        kept: list[list[str | None]] = [[] for _ in range(count)] if keep_columns else []
        return cls(keep_columns, [None] * count, [""] * count, [None] * count, kept)

    def put(
        self,
        position: int,
        row_id: str,
        request_hash: str,
        model: str | None,
        kept: list[str | None],
        dropped: tuple[str, ...] = (),
    ) -> None:
        self.ids[position] = row_id
        self.hashes[position] = request_hash
        self.models[position] = model
        if self.keep_columns:
            self.kept[position] = kept
        if dropped:
            self.dropped[position] = list(dropped)

    def add(
        self,
        row_id: str,
        request_hash: str,
        model: str | None,
        kept: list[str | None],
        dropped: tuple[str, ...] = (),
    ) -> None:
        if dropped:
            self.dropped[len(self.ids)] = list(dropped)
        self.ids.append(row_id)
        self.hashes.append(request_hash)
        self.models.append(model)
        if self.keep_columns:
            self.kept.append(kept)

    def __len__(self) -> int:
        return len(self.ids)

    def work(self, position: int, index: int) -> Work:
        """The row at ``position`` as ``engine.outcome`` makes output rows of it: all it reads
        of a ``Work`` (id, kept columns, model asked, request hash) and nothing more."""
        row_id = self.ids[position]
        assert row_id is not None  # the caller skips rows the input no longer has
        return light_work(
            index,
            row_id,
            self.hashes[position],
            self.models[position],
            self.kept[position] if self.keep_columns else (),
            self.keep_columns,
            self.dropped.get(position, ()),
        )

    def save(self, path: Path) -> None:
        """Spill to ``path`` (a run's temporary file: ``store.commit.temporary_path``)."""
        data = compact(
            {
                "keep_columns": list(self.keep_columns),
                "ids": self.ids,
                "hashes": self.hashes,
                "models": self.models,
                "kept": self.kept,
                "dropped": {str(position): names for position, names in self.dropped.items()},
            }
        ).encode()
        try:
            with path.open("wb") as out:
                out.write(data)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc

    @classmethod
    def load(cls, path: Path) -> SentRows:
        try:
            with path.open("rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot read {path}: {exc}") from exc
        dropped = {int(position): names for position, names in data["dropped"].items()}
        return cls(
            tuple(data["keep_columns"]),
            data["ids"],
            data["hashes"],
            data["models"],
            data["kept"],
            dropped,
        )


def light_work(
    index: int,
    row_id: str,
    request_hash: str | None,
    model: str | None,
    kept: Sequence[str | None],
    keep_columns: tuple[str, ...],
    dropped: Sequence[str] = (),
    *,
    line: int = 0,
    has_body: bool = True,
    problem: InvalidRowError | None = None,
    content: bytes | None = None,
    prefix_key: str | None = None,
) -> Work:
    """A row as all that building a batch and making its output rows read of a prepared
    ``Work``: its id, its kept columns' texts (``engine.outcome.kept_texts`` gives them back
    as they are), the model asked as its body, its request hash, the settings dropped for
    its model; for building, its request as encoded and its cache group, or why it cannot
    be sent (``batches.planned``)."""
    fields = dict(zip(keep_columns, kept, strict=True)) if keep_columns else {}
    return Work(
        InputRow(index, line, row_id, fields),
        {"model": model} if has_body else None,
        request_hash,
        problem,
        content=content,
        prefix_key=prefix_key,
        dropped=tuple(dropped),
    )
