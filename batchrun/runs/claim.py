"""Before a run sends anything: the credentials check, and the claim on the output
(``claim_output``: one run per output, an output that cannot destroy the input, kept
columns that exist). Shared by the online and the Message Batches drivers."""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.config.layers import ClientSettings
from batchrun.config.load import (
    RunConfig,
    check_keep_columns,
    check_output_is_not_input,
    did_you_mean,
)
from batchrun.core.errors import ConfigError, InputError, OutputError
from batchrun.core.wording import named, option
from batchrun.remote.lease import Lease
from batchrun.rows.formats import InputKind, csv_columns
from batchrun.rows.reader import InputShape, input_kind, read_rows
from batchrun.rows.text import bounded_lines, open_utf8
from batchrun.runs.output import output_lease
from batchrun.store.lock import OutputLock
from batchrun.store.sink import (
    remove_stale_temporaries,
)


def check_credentials(client: ClientSettings, transport: httpx.AsyncBaseTransport | None) -> None:
    """Refuse to start without a key, before anything is read or sent."""
    if not client.simulate and client.credentials == type(client.credentials)() and not transport:
        raise ConfigError(
            "no credentials: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN for a gateway), "
            f"or try the job against the built-in simulator with {option('simulate', True)}"
        )


@dataclass(frozen=True)
class Claim:
    """A run's hold on its output: the file lock, and on object storage the lease."""

    lock: OutputLock
    lease: Lease | None = None


@contextlib.contextmanager
def claim_output(config: RunConfig, held: Claim | None = None) -> Iterator[Claim]:
    """The output, for this run alone, checked before anything is sent; released at the end.

    Refuses (ConfigError) an output that is the input and kept columns the output cannot
    hold, then takes the output's lock (``store.lock``; OutputError naming the run that
    holds it) and, on object storage, its lease (``runs.output.output_lease``), then refuses
    kept columns the input does not have. Holding the lock, it removes the temporary files
    runs killed midway left. ``held`` is the caller's own claim on this output (a batch run
    finishing online): it is used, not taken again.
    """
    output = config.output
    check_output_is_not_input(config.input.path, output.path)
    check_keep_columns(output.keep_columns)
    if held is not None:
        if not held.lock.held or held.lock.output != output.path:
            raise OutputError(f"internal error: the lock given is not held for {output.path}")
        yield held
        return
    with OutputLock(output.path) as lock, output_lease(output, config.storage) as lease:
        check_kept_columns_exist(config.input.path, output.keep_columns, config.input.shape)
        remove_stale_temporaries(output.path)
        yield Claim(lock, lease)


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
