"""Before a run sends anything: the credentials check, and the claim on the output
(``claim_output``: one run per output, an output that cannot destroy the input, kept
columns that exist). Shared by the online and the Message Batches drivers."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pyarrow as pa

from batchrun.config.layers import ClientSettings
from batchrun.config.load import (
    RunConfig,
    check_keep_columns,
    check_output_is_not_input,
    did_you_mean,
)
from batchrun.core.errors import ConfigError, InputError, OutputError
from batchrun.core.wording import named, option
from batchrun.formats.base import ColumnQuery
from batchrun.formats.inputs import InputShape, column_types, format_of, input_kind
from batchrun.rows.structured import answer_fields
from batchrun.runs.output import output_lease
from batchrun.store.lock import OutputLock
from batchrun.store.sink import (
    remove_stale_temporaries,
)
from batchrun.store.typed import OutputTypes

if TYPE_CHECKING:  # object storage is loaded only by a job whose output is on it
    from batchrun.remote.lease import Lease


def check_credentials(client: ClientSettings, transport: httpx.AsyncBaseTransport | None) -> None:
    """Refuse to start without a key, before anything is read or sent."""
    if not client.simulate and client.credentials == type(client.credentials)() and not transport:
        raise ConfigError(
            "no credentials: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN for a gateway), "
            f"or try the job against the built-in simulator with {option('simulate', True)}"
        )


@dataclass(frozen=True)
class Claim:
    """A run's hold on its output: the file lock, and on object storage the lease; and the
    types its final output gives its columns (``output_types``)."""

    lock: OutputLock
    lease: Lease | None = None
    types: OutputTypes | None = None


@contextlib.contextmanager
def claim_output(config: RunConfig, held: Claim | None = None) -> Iterator[Claim]:
    """The output, for this run alone, checked before anything is sent; released at the end.

    Refuses (ConfigError) an output that is the input and kept columns the output cannot
    hold, then takes the output's lock (``store.lock``; OutputError naming the run that
    holds it) and, on object storage, its lease (``runs.output.output_lease``), then refuses
    kept columns the input does not have. Holding the lock, it removes the temporary files a
    run killed midway left, when one was (``OutputLock.after_kill``). ``held`` is the
    caller's own claim on this output (a batch run finishing online): it is used, not taken
    again.
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
        if lock.after_kill:  # else there are none, and the folder may hold 100,000 files
            remove_stale_temporaries(output.path)
        yield Claim(lock, lease, output_types(config))


def output_types(config: RunConfig) -> OutputTypes:
    """The types the job's final output gives its columns (``store.typed``): the answer's
    fields from ``--json-schema``, the id and kept columns as the input gives them
    (``formats.inputs.column_types``: a Parquet file's schema; the values of a JSON one)."""
    schema = config.engine.json_schema
    answer = answer_fields(schema) if schema is not None else ()
    names = ["id", *config.output.keep_columns]
    given = column_types(config.input.path, names, config.input.shape)
    return OutputTypes(
        id_type=given.pop("id", pa.string()),
        kept={name: kind for name, kind in given.items() if name in config.output.keep_columns},
        answer=answer,
    )


def check_kept_columns_exist(
    path: Path, columns: Iterable[str], shape: InputShape | None = None
) -> None:
    """ConfigError unless every kept column is a column of the input, before anything is sent.

    The input's format tells (``InputFormat.columns``): Parquet and CSV declare their columns
    (the footer's schema, the header row); JSON lines and JSON arrays have none, and a column
    is a field of at least one row, so rows are read until every kept column has been seen:
    the first row, as a rule. Only a name that no row has costs a pass over the file, which
    is then an error. An input that cannot be read is left to the reader, which says why.
    """
    wanted = list(dict.fromkeys(columns))
    if not wanted:
        return
    try:
        kind = input_kind(path, shape)
        input_columns = format_of(kind).columns(ColumnQuery(path, kind, wanted))
    except (InputError, OSError, ValueError, csv.Error, pa.ArrowException):
        return  # the reader reports what is wrong with the file
    if input_columns is None:
        return
    missing = [name for name in wanted if name not in input_columns.found]
    if not missing:
        return
    known = input_columns.known
    names = ", ".join(f"`{m}`{did_you_mean(m, set(known))}" for m in missing)
    shown = ", ".join(f"`{k}`" for k in known[:12]) + (", ..." if len(known) > 12 else "")
    if input_columns.declared:
        what = f"{path} has no column {names}"
        has = f" (its columns: {shown})" if known else ""
    else:
        what = f"no row of {path} has the field {names}"
        has = f" (the first row has {shown})" if known else ""
    raise ConfigError(
        f"`keep_columns`: {what}{has}. Kept columns are copied from the input: fix the "
        f"name, or drop it from {named('keep_columns')}"
    )
