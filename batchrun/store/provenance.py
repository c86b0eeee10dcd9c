"""Where answers came from: the simulator, or the API at a base URL; and which of an output's
recorded answers a run may count as done.

Every row a run records carries its source in the ``source`` column (``answer_source``):
``simulator`` for ``--simulate``, else the base URL reduced to scheme, host, port and path
prefix (``https://api.anthropic.com``; never its user, password or query, where gateways put
keys). A row never sent (refused before sending, ``invalid_request``) has none.

A resume counts an earlier answer as done only when it came from the source this run asks
(``SourceRule``), or from one the output's owner chose to keep (``--keep-other-source``,
remembered in the run state as the sources the output mixes). The simulator's answers are
placeholders: they never count as done for a run against the API, whatever was chosen.

Records written before sources were recorded have none. The simulator marks every answer and
error it makes (message ids ``msg_sim_...``, request ids ``req_sim_...``), so such a record
from it is still known for the simulator's (``legacy_source``). Any other old record is
``UNRECORDED``: it came from some API, which one nobody can tell any more; a resume counts it
as done, and says so once (``SourceRule.unrecorded``), rather than ask again every row of
every output made before this check.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.core.scrub import url_without_secrets
from batchrun.core.wording import option
from batchrun.store.arrow_values import bool_scalar, bools, string_scalar
from batchrun.store.columns import INVALID_REQUEST

SIMULATOR = "simulator"
"""The source of answers from the built-in simulator (``--simulate``)."""

UNRECORDED = "unrecorded"
"""The source of a record written before sources were recorded, not the simulator's."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SIMULATOR_IDS = (("message_id", "msg_sim_"), ("request_id", "req_sim_"))

# The columns ``effective_sources`` reads.
SOURCE_COLUMNS = ("source", "status", "error_type", "http_status", "message_id", "request_id")


@functools.lru_cache(maxsize=16)  # asked for every row a run records
def answer_source(simulate: bool, base_url: str) -> str:
    """Where a run's answers come from: ``simulator``, or the base URL without credentials.

    >>> answer_source(False, "https://user:KEY@API.example.com:443/v1/?key=KEY")
    'https://api.example.com/v1'
    >>> answer_source(True, "https://api.anthropic.com")
    'simulator'
    """
    if simulate:
        return SIMULATOR
    try:
        parts = urlsplit(base_url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return url_without_secrets(base_url)
    if not host:
        return url_without_secrets(base_url)
    scheme = parts.scheme.lower()
    shown = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        shown += f":{port}"
    return f"{scheme}://{shown}{parts.path.rstrip('/')}"


def is_simulator(source: str | None) -> bool:
    return source == SIMULATOR


def describe(source: str) -> str:
    """A source as a person reads it."""
    if source == SIMULATOR:
        return f"the built-in simulator ({option('simulate', True)})"
    if source == UNRECORDED:
        return "an unrecorded source (written before batchrun recorded sources)"
    return f"the API at {source}"


def legacy_source(message_id: str | None, request_id: str | None) -> str:
    """The source of a record that has none: the simulator's when its ids say so."""
    for value, prefix in ((message_id, "msg_sim_"), (request_id, "req_sim_")):
        if value is not None and value.startswith(prefix):
            return SIMULATOR
    return UNRECORDED


def effective_sources(batch: pa.RecordBatch | pa.Table) -> pa.Array:
    """Each record's source for a resume, as a dictionary array: null for a row never sent,
    the recorded source, else ``legacy_source`` of its ids. ``batch`` has ``SOURCE_COLUMNS``."""
    n = batch.num_rows
    recorded = _column(batch, "source", n)
    never_sent = pc.and_kleene(
        pc.equal(_column(batch, "error_type", n), string_scalar(INVALID_REQUEST)),
        pc.is_null(_column(batch, "http_status", n, pa.int64())),
    )
    simulated = bools([False] * n)
    for name, prefix in _SIMULATOR_IDS:
        ids = _column(batch, name, n)
        starts = pc.fill_null(pc.starts_with(ids, prefix), bool_scalar(False))
        simulated = pc.or_(simulated, starts)
    legacy = pc.if_else(simulated, string_scalar(SIMULATOR), string_scalar(UNRECORDED))
    known = pc.if_else(pc.is_null(recorded), legacy, recorded)
    unsent = pc.fill_null(never_sent, bool_scalar(False))
    sources = pc.if_else(unsent, pa.nulls(n, pa.string()), known)
    return pc.dictionary_encode(sources)


def _column(
    batch: pa.RecordBatch | pa.Table, name: str, n: int, kind: pa.DataType | None = None
) -> pa.Array:
    kind = kind or pa.string()
    i = batch.schema.get_field_index(name)
    if i < 0:
        return pa.nulls(n, kind)
    column = batch.column(i)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column if column.type == kind else column.cast(kind)


class SourceRule:
    """Which earlier answers count as done for a run asking ``current``.

    ``mixed`` are the sources the output's owner chose to keep together (the run state's);
    ``reask`` / ``keep`` are this run's ``--reask-other-source`` / ``--keep-other-source``.
    Feed every earlier record's source to ``done``; ``other`` then counts the rows of each
    other source, ``unrecorded`` those of no recorded source (counted as done).
    """

    def __init__(
        self, current: str, mixed: Collection[str] = (), *, reask: bool, keep: bool
    ) -> None:
        self.current = current
        self.mixed = frozenset(mixed)
        self.reask = reask
        self.keep = keep
        self.other: dict[str, int] = {}  # rows of another source: re-asked, kept or refused
        self.unrecorded = 0

    def accepted(self, source: str | None) -> bool:
        """True when an answer from ``source`` counts as done without asking anybody."""
        if source is None or source == self.current or source == UNRECORDED:
            return True
        if is_simulator(source) and not is_simulator(self.current):
            return False  # placeholders, never a real answer
        return self.current in self.mixed and source in self.mixed

    def keepable(self, source: str) -> bool:
        """True when ``--keep-other-source`` may keep answers of ``source``."""
        return not (is_simulator(source) and not is_simulator(self.current))

    def done(self, source: str | None, rows: int = 1) -> bool:
        """Whether a record from ``source`` counts as done for this run (and count it; or
        ``rows`` records of that source)."""
        if source == UNRECORDED:
            self.unrecorded += rows
        if self.accepted(source):
            return True
        assert source is not None
        self.other[source] = self.other.get(source, 0) + rows
        if self.reask:
            return False
        return self.keep and self.keepable(source)

    @property
    def kept(self) -> dict[str, int]:
        """The rows of other sources this run keeps as done (``--keep-other-source``)."""
        if self.reask or not self.keep:
            return {}
        return {s: n for s, n in self.other.items() if self.keepable(s)}

    @property
    def reasked(self) -> dict[str, int]:
        """The rows of other sources this run sends again (``--reask-other-source``)."""
        return dict(self.other) if self.reask else {}

    @property
    def refused(self) -> dict[str, int]:
        """The rows of other sources this run may neither count nor send: it must refuse."""
        if self.reask:
            return {}
        if self.keep:
            return {s: n for s, n in self.other.items() if not self.keepable(s)}
        return dict(self.other)

    def mixed_after(self) -> list[str]:
        """The sources the output mixes once this run kept others' answers (for the state)."""
        kept = self.kept
        if not kept:
            return sorted(self.mixed)
        return sorted(self.mixed | set(kept) | {self.current})


def intern_sources(values: Iterable[str | None]) -> list[str | None]:
    """One string object per distinct source (a resume holds one per journal record)."""
    seen: dict[str, str] = {}
    return [None if v is None else seen.setdefault(v, v) for v in values]
