"""One job over many processes or machines: shards by the hash of each row's id, each run into
an output of its own, and ``merge_shards`` joining them into the job's output.

A row belongs to shard ``runs.plan.shard_of(id, N)`` (SHA-256 of the id, not Python's salted
``hash``), so every worker agrees without talking to the others. Layout for
``-o out/labels.parquet`` and ``--shard 2/4``::

    out/labels.parquet.shards/2-of-4/labels.parquet             the finished shard
    out/labels.parquet.shards/2-of-4/labels.parquet.shard.json  its proof (``ShardProof``)
    out/labels.parquet.shards/2-of-4/labels.parquet.journal     while it runs
    out/labels.parquet.shards/2-of-4/labels.parquet.state.json, .labels.parquet.lock

A shard runs as any output does (``runs.online``, restricted to its rows with ``only``):
its journal's ``_index`` is the row's input index, so the resume checks compare each record
with the input row it came from, and rows of other shards are simply not this output's. Once
every row of the shard has a record, the shard's file is written from the journal (in input
order, in the output's format, with the input index as an ``_index`` column, atomically) and
the journal removed. A re-run of a finished shard turns that file back into journal lines
first, so ``--retry-errors`` or a changed job is checked and resumed as for any output.

Beside its file a finished shard writes its proof: the job's fingerprint (the request
defaults, ``store.resume.job_fingerprint``), the input as the shard saw it (size and SHA-256,
taken before the first row is read and checked again before the file is written), the
settings that shape the output (kept columns, format), and the file's own size and SHA-256.
So ``merge`` can refuse, before reading a row, shards of another job, of another input, a
file torn or replaced since, and can find the job's settings from the output alone
(``batchrun merge OUTPUT``).

``merge_shards`` reads the input's ids (the only per-row state it keeps in memory), checks
that each input row is in exactly one finished shard under its own id, and streams the
shards, each already in input order, into the job's output a chunk of rows at a time. It
reads at most ``MERGE_FAN_IN`` shards at once: beyond that, groups of them are first merged
into temporary files beside the output, so its memory and open files do not grow with N.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.config.layers import InputSettings, OutputSettings
from batchrun.config.load import RunConfig, check_shard, output_alone
from batchrun.core.disk import fsync_dir
from batchrun.core.errors import ConfigError, OutputError
from batchrun.core.locations import StorageSettings, cached_copy_path
from batchrun.core.scrub import url_without_secrets
from batchrun.core.wording import option
from batchrun.formats.base import WriteOptions
from batchrun.formats.inputs import read_rows
from batchrun.formats.jsonl import JSON_SLICE_BYTES
from batchrun.formats.marks import clear_mark
from batchrun.formats.registry import (
    output_for,
    output_named,
    read_partial,
)
from batchrun.rows.reader import check_input_file
from batchrun.runs.claim import Claim, check_credentials, claim_output, output_types
from batchrun.runs.fetch import fetched
from batchrun.runs.online import run_holding
from batchrun.runs.output import output_format_of, output_lease
from batchrun.runs.plan import in_shard
from batchrun.runs.runtime import DEFAULT, Runtime
from batchrun.runs.summary import RunSummary
from batchrun.shards.layout import (
    ShardError,
    proof_path,
    shard_count_of,
    shard_output,
    shard_url,
    shards_folder,
    unfinished,
)
from batchrun.store.batch_journal import running_batches
from batchrun.store.columns import STATUS_OK
from batchrun.store.commit import Commit, remove_temporary, temporary_path
from batchrun.store.journal import INDEX, journal_line, repair_journal
from batchrun.store.lock import OutputLock
from batchrun.store.resume import (
    InputStamp,
    changed_settings,
    job_fingerprint,
    job_settings,
    stamp_input,
)
from batchrun.store.sink import (
    CHUNK_ROWS,
    TMP_JOURNAL_SUFFIX,
    FinalCounts,
    bucket_rows_for,
    journal_path,
    journal_to_arrow,
    output_batches,
    output_schema,
    remove_stale_temporaries,
)

if TYPE_CHECKING:  # object storage is loaded only by a job whose output is on it
    from batchrun.shards.remote import RemoteShard

# Shards merge reads at once. Each open shard holds one read block (a Parquet row group of
# up to CHUNK_ROWS rows, 2 MiB of JSON lines, 8 MiB of CSV): 16 of them stay within a few
# hundred MiB whatever N is; more shards go through temporary files, 16 at a time.
MERGE_FAN_IN = 16
TMP_MERGE_SUFFIX = ".merge"  # the folder of a merge's temporary files (``temporary_path``)
_SHOWN_IDS = 10
_SHOWN_SHARDS = 10
_PROOF_VERSION = 1
_HASH_CHUNK = 1 << 20


def shard_schema(keep_columns: tuple[str, ...]) -> pa.Schema:
    """A shard file's columns: the output's, then each row's input index."""
    return output_schema(keep_columns).append(pa.field(INDEX, pa.int64()))


class ShardRows:
    """The input indexes of one shard's rows: one byte per input row, for ``only``."""

    def __init__(self, member: bytearray) -> None:
        self._member = member
        self._count = member.count(1)

    def __contains__(self, index: object) -> bool:
        return (
            isinstance(index, int) and 0 <= index < len(self._member) and self._member[index] == 1
        )

    def __len__(self) -> int:
        return self._count

    @property
    def input_rows(self) -> int:
        return len(self._member)


def shard_rows(config: RunConfig, shard: tuple[int, int]) -> ShardRows:
    """Which input rows are in ``shard``: one pass over the input's ids."""
    member = bytearray()
    for row in read_rows(config.input.path, shape=config.input.shape):
        member.append(1 if in_shard(row.id, shard) else 0)
    return ShardRows(member)


# -- a shard's proof --------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardProof:
    """What a finished shard was made from, and the file it wrote; written beside the file."""

    shard: tuple[int, int]
    fingerprint: str  # ``job_fingerprint`` of the job's request defaults
    input: Path  # where the shard read it: for an input on object storage, its local copy
    input_stamp: InputStamp  # the input as the shard read it
    input_format: str | None
    csv_delimiter: str | None
    keep_columns: tuple[str, ...]
    output_format: str | None
    part_rows: int
    rows: int
    file_size: int
    file_sha256: str
    input_url: str | None = None  # an input on object storage: its URL (shown, no secrets)

    def to_json(self, settings: Mapping[str, Any]) -> str:
        data = {
            "version": _PROOF_VERSION,
            "shard": list(self.shard),
            "fingerprint": self.fingerprint,
            "request_defaults": dict(settings),
            "input": str(self.input),
            "input_url": self.input_url,
            "input_size": self.input_stamp.size,
            "input_sha256": self.input_stamp.sha256,
            "input_format": self.input_format,
            "csv_delimiter": self.csv_delimiter,
            "keep_columns": list(self.keep_columns),
            "output_format": self.output_format,
            "part_rows": self.part_rows,
            "rows": self.rows,
            "file_size": self.file_size,
            "file_sha256": self.file_sha256,
        }
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def parse(cls, data: Any) -> ShardProof:
        if data.get("version") != _PROOF_VERSION:
            raise ValueError(f"version {data.get('version')!r}, not {_PROOF_VERSION}")
        index, count = (int(v) for v in data["shard"])
        return cls(
            shard=(index, count),
            fingerprint=str(data["fingerprint"]),
            input=Path(str(data["input"])),
            input_stamp=InputStamp(int(data["input_size"]), str(data["input_sha256"])),
            input_format=_str_or_none(data.get("input_format")),
            csv_delimiter=_str_or_none(data.get("csv_delimiter")),
            keep_columns=tuple(str(c) for c in data["keep_columns"]),
            output_format=_str_or_none(data.get("output_format")),
            part_rows=int(data["part_rows"]),
            rows=int(data["rows"]),
            file_size=int(data["file_size"]),
            file_sha256=str(data["file_sha256"]),
            input_url=_str_or_none(data.get("input_url")),
        )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def read_proof(shard_file: Path) -> ShardProof:
    """The proof beside ``shard_file``: FileNotFoundError when there is none, ValueError when
    it cannot be read as one."""
    text = proof_path(shard_file).read_text(encoding="utf-8")
    try:
        return ShardProof.parse(json.loads(text))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"no {exc}") from exc


def _proof_settings(shard_file: Path) -> Mapping[str, Any] | None:
    """The request defaults a shard's proof records (for messages); None when unreadable."""
    try:
        data = json.loads(proof_path(shard_file).read_text(encoding="utf-8"))
        settings = data["request_defaults"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return settings if isinstance(settings, dict) else None


def _write_proof(shard_file: Path, proof: ShardProof, settings: Mapping[str, Any]) -> None:
    path = proof_path(shard_file)
    # Named as the shard's temporaries are, so the next run's claim removes a stale one.
    tmp = temporary_path(shard_file, ".proof.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(proof.to_json(settings))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _forget_proof(shard_file: Path) -> None:
    """Remove a shard's proof before its file changes: a proof stands only beside the file
    it was written with."""
    path = proof_path(shard_file)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot remove {path}: {exc.strerror or exc}") from exc
    fsync_dir(shard_file.parent)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- one shard ------------------------------------------------------------------------------


class ShardDriver(Protocol):
    """A driver that runs the rows ``only`` of a job into its output, under the caller's
    claim on it, and leaves their answers in the journal: ``runs.online.run_holding``, or
    ``batches.run.run_batches_holding`` for ``--via batches`` (chosen by ``public.run``,
    above both: shards and batches are siblings)."""

    def __call__(
        self, config: RunConfig, claim: Claim | None, runtime: Runtime, *, only: ShardRows
    ) -> Awaitable[RunSummary]: ...


def shard_config(config: RunConfig, shard: tuple[int, int]) -> RunConfig:
    """The config of shard ``(index, count)``'s own output (``shard_output``). On object
    storage the shard is an output of its own there too (``shards.layout.shard_url``), with
    its own lease and journal segments, mirrored in ``OUTPUT.shards/I-of-N/`` of the
    output's work folder: its local files are laid out as a local shard's."""
    path = shard_output(config.output.path, *shard)
    output = replace(config.output, path=path, format=None)
    if config.output.url is not None:
        url = shard_url(config.output.url, path.name, *shard)
        output = replace(output, url=url, work_dir=path.parent)
    return replace(config, output=output)


async def run_shard_async(
    config: RunConfig, runtime: Runtime = DEFAULT, driver: ShardDriver = run_holding
) -> RunSummary:
    """Run the rows of shard ``config.shard`` into the shard's own output (``shard_config``).

    Resumes as any run does; once every row of the shard is done, writes the shard's file
    (``summary.final``; ``summary.output`` is its path) and its proof, and for an output on
    object storage uploads both there. ``driver`` sends the rows (online by default; see
    ``ShardDriver``). Errors as in ``online.run_async``; OutputError when the input changed
    while the shard ran.
    """
    if config.shard is None:
        raise ConfigError("internal error: a shard run needs config.shard")
    check_shard(*config.shard)
    shard = config.shard
    own = shard_config(config, shard)
    check_credentials(own.client, runtime.transport)
    check_input_file(own.input.path)
    with claim_output(own) as claim:
        remote = _remote_shard(own, claim)
        if remote is not None:
            # The shard as the store has it, here: its journal, and its file if it finished.
            remote.pull(overwrite=own.resume.overwrite)
        _forget_proof(own.output.path)
        if _reopen(own) and remote is not None:
            remote.seal()  # the file's rows are on the store as journal lines: it may go
        try:
            stamp = stamp_input(own.input.path)
        except OSError as exc:
            raise ConfigError(f"cannot read input {own.input.path}: {exc.strerror or exc}") from exc
        rows = shard_rows(own, shard)
        summary = await driver(own, claim, runtime, only=rows)
        summary.total_rows = len(rows)
        if (
            summary.interrupted is None
            and summary.budget_stop is None
            and not summary.batches_running
        ):
            # Every input row in this one shard: the online driver wrote a whole output.
            # Made a shard file like any other, with its ``_index``.
            _reopen(own)
            job = _JobRecord(config, stamp)
            summary.final = _finish(own, rows, job)
            if summary.final is not None and remote is not None:
                remote.publish(own.output.path, proof_path(own.output.path))
    return summary


def _remote_shard(config: RunConfig, claim: Claim) -> RemoteShard | None:
    """The store's side of a shard whose output is on object storage; None for a local one."""
    if config.output.url is None:
        return None
    from batchrun.shards.remote import RemoteShard  # object storage: only jobs on it

    return RemoteShard(config.output, config.storage, claim.lease)


@dataclass(frozen=True)
class _JobRecord:
    """What a shard's proof says of its job: the job's config (its own output, not the
    shard's) and the input's stamp when the shard began."""

    config: RunConfig
    stamp: InputStamp


def _reopen(config: RunConfig) -> bool:
    """A finished shard's file back into journal lines (the journal fsynced before the
    file goes), so the run resumes from the journal: a shard file is no positional output.
    Whether there was one."""
    output = config.output.path
    if not output.exists() or read_partial(output) is not None:
        return False  # nothing finished, or a partial output the sink itself resumes from
    journal = journal_path(output)
    repair_journal(journal)
    try:
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            position = 0
            for batch in output_batches(output, shard_schema(config.output.keep_columns)):
                lines = []
                for row in batch.to_pylist():
                    index = row.pop(INDEX)
                    # A whole output (no ``_index``) holds every input row, by position.
                    lines.append(journal_line(position if index is None else index, row))
                    position += 1
                data = memoryview("".join(lines).encode())
                while data:
                    data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        output.unlink()
        clear_mark(output)
        fsync_dir(output.parent)
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(
            f"cannot resume shard output {output}: {exc}. If the file is torn, start this "
            f"shard afresh with {option('overwrite', True)}"
        ) from exc
    return True


@contextlib.contextmanager
def _gathered(
    write: Callable[[pa.Table], None], rows: int = CHUNK_ROWS
) -> Iterator[Callable[[pa.Table], None]]:
    """``write`` called with at least ``rows`` rows at a time (the last call excepted): a
    shard gets a few rows of each input chunk, and a Parquet row group per few rows would
    make its footer grow with the input, not the shard."""
    pending: list[pa.Table] = []
    count = 0

    def add(table: pa.Table) -> None:
        nonlocal count
        pending.append(table)
        count += table.num_rows
        if count >= rows:
            write(pa.concat_tables(pending))
            pending.clear()
            count = 0

    yield add
    if count:
        write(pa.concat_tables(pending))


def _finish(config: RunConfig, rows: ShardRows, job: _JobRecord) -> FinalCounts | None:
    """The shard's file from its journal, when every row of the shard has a record (None,
    writing nothing, while some have none), with its proof. Streams the journal as the sink
    does, and is put in place by the same committer (``store.commit``)."""
    output = config.output.path
    journal = journal_path(output)
    fmt = output_for(output)
    commit = Commit(output, fmt)
    commit.check_space(
        2 * _size(journal),
        needs="twice the shard's journal: as Arrow, and the shard's file",
        then="Free some space and re-run the same command: the journal is kept",
    )
    try:
        schema = output_schema(config.output.keep_columns)
        tmp_arrow = temporary_path(output, TMP_JOURNAL_SUFFIX)
        buckets = bucket_rows_for(rows.input_rows)
        records = journal_to_arrow(journal, schema, tmp_arrow, JSON_SLICE_BYTES, buckets)
        try:
            if len(records) != len(rows):
                return None
            with commit.building() as tmp_out:
                with fmt.writer(tmp_out, shard_schema(config.output.keep_columns)) as write:
                    ok, error = _write_shard_rows(write, records, rows, journal, schema)
                _check_input_unchanged(config, job.stamp)
                # The proof first: it names this file by its bytes, so it cannot vouch for
                # another.
                proof = _proof(config, job, ok + error, tmp_out)
                _write_proof(output, proof, job_settings(config.defaults))
        finally:
            records.close()
        journal.unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot write {output}: {exc.strerror or exc}{commit.short_of_space(exc)}; the "
            "journal is kept: re-run the same command to write it"
        ) from exc
    return FinalCounts(ok + error, ok, error)


def _write_shard_rows(
    write: Callable[[pa.Table], None],
    records: Any,
    rows: ShardRows,
    journal: Path,
    schema: pa.Schema,
) -> tuple[int, int]:
    """The shard's rows from its journal's ``records`` (``sink.journal_to_arrow``), in input
    order, with their ``_index``, to ``write``; how many are ok and how many not."""
    ok = error = 0
    with _gathered(write) as gathered:
        for p0 in range(0, rows.input_rows, CHUNK_ROWS):
            table, indexes = records.between(p0, p0 + CHUNK_ROWS, schema)
            foreign = [i for i in indexes if i not in rows]
            if foreign:
                raise OutputError(
                    f"{journal} holds records of rows of other shards (input rows "
                    f"{', '.join(map(str, foreign[:_SHOWN_IDS]))}): it is not this "
                    f"shard's journal. Use {option('overwrite', True)} to start this "
                    "shard afresh"
                )
            table = table.append_column(pa.field(INDEX, pa.int64()), pa.array(indexes, pa.int64()))
            n_ok = pc.sum(pc.equal(table.column("status"), STATUS_OK)).as_py() or 0
            ok += n_ok
            error += table.num_rows - n_ok
            if table.num_rows:
                gathered(table)
    return ok, error


def _proof(config: RunConfig, job: _JobRecord, rows: int, file: Path) -> ShardProof:
    """The proof of a shard's ``file`` of ``rows`` rows (``ShardProof``)."""
    return ShardProof(
        shard=config.shard or (0, 1),
        fingerprint=job_fingerprint(config.defaults),
        input=config.input.path,
        input_stamp=job.stamp,
        input_format=config.input.format,
        csv_delimiter=config.input.csv_delimiter,
        keep_columns=config.output.keep_columns,
        output_format=job.config.output.format,
        part_rows=job.config.output.part_rows,
        rows=rows,
        file_size=file.stat().st_size,
        file_sha256=file_sha256(file),
        # Never a credential on disk: a URL is kept as it is shown.
        input_url=None if config.input.url is None else url_without_secrets(config.input.url),
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _check_input_unchanged(config: RunConfig, stamp: InputStamp) -> None:
    """OutputError when the input is not, byte for byte, what it was when the shard began:
    its rows may have been read from either."""
    with contextlib.suppress(OSError):  # unreadable now: not the input it was
        if stamp_input(config.input.path) == stamp:
            return
    index, count = config.shard or (0, 1)
    raise OutputError(
        f"the input {config.input.path} changed while shard {index}/{count} ran, so its rows may "
        "have been read before or after the change. The journal is kept: re-run the same "
        "command, which checks every answered row against the input as it is now (rows "
        f"whose request changed are named; {option('resend_changed', True)} sends them again)"
    )


# -- merge ----------------------------------------------------------------------------------


def shard_count(output: Path) -> int:
    """N, from the shard folders beside ``output`` (ShardError when none, or several Ns)."""
    folder = shards_folder(output)
    names = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        names = [entry.name for entry in folder.iterdir() if entry.is_dir()]
    return shard_count_of(names, str(folder), str(output))


def merge_shards(config: RunConfig | str | os.PathLike[str]) -> FinalCounts:
    """Join the finished shards of a job into its output, in input order.

    ``config`` is the job's config (the SOURCE and -o given to the shard runs), or the
    output alone: its shards' proofs then give the input and the settings. Refuses
    (ShardError), writing nothing, when a shard has not run or not finished, ran another job
    (its request defaults differ from the job's, or from the other shards'), read another
    input than the input is now, kept other columns, or its file is torn or was replaced
    since it was written; or when an input row is in no shard or in more than one, naming
    the rows' ids. The output is written under a temporary name and renamed into place, in
    its own format; the shards are kept.

    Example::

        batchrun.merge_shards(batchrun.load_config("jobs/label_sentiment.toml"))
        batchrun.merge_shards("out/labels.parquet")
    """
    return merge(config)


def merge(job: RunConfig | str | os.PathLike[str], *, check_job: bool = True) -> FinalCounts:
    """``merge_shards``; with ``check_job`` False, the config's request defaults and kept
    columns are not the job's (``batchrun merge DATASET -o OUT`` has no flags for them):
    the shards' own are taken, and must agree among themselves. An output on object
    storage (its config's, or an ``s3://`` / ``gs://`` URL) is merged from the shards there
    (``shards.remote``)."""
    if isinstance(job, RunConfig):
        given: RunConfig | None = fetched(job)  # a remote input, here
        output, storage = job.output, job.storage
    else:
        given = None
        output, storage = output_alone(str(job))
    if output.url is not None:
        return _merge_on_store(given, output, storage, check_job)
    count = shard_count(output.path)
    with OutputLock(output.path):
        return _merge_held(given, output, storage, count, check_job)


def _merge_held(
    given: RunConfig | None,
    output: OutputSettings,
    storage: StorageSettings,
    count: int,
    check_job: bool,
) -> FinalCounts:
    """``merge`` of the ``count`` shards beside ``output.path``, under its lock."""
    paths = [shard_output(output.path, i, count) for i in range(count)]
    proofs = _survey(output, paths, count)
    if given is None:
        config = fetched(_recorded_config(output, storage, proofs))
    elif not check_job:
        # ``merge DATASET -o OUT`` has no --keep-column either: the shards' own.
        kept = _most_common(proofs, lambda p: p.keep_columns)[0]
        config = replace(given, output=replace(output, keep_columns=kept))
    else:
        config = replace(given, output=output)
    if given is None or not check_job:
        config = _with_recorded_schema(config, paths, proofs)
    identities = _check_proofs(config, given is not None and check_job, paths, proofs)
    try:
        ids = [row.id for row in read_rows(config.input.path, shape=config.input.shape)]
    except OSError as exc:
        raise ShardError(f"cannot read input {config.input.path}: {exc.strerror or exc}") from exc
    _check_each_row_once(config, paths, ids)
    remove_stale_temporaries(output.path, (TMP_MERGE_SUFFIX,))
    return _write_merged(config, paths, proofs, identities, len(ids))


def _merge_on_store(
    given: RunConfig | None, output: OutputSettings, storage: StorageSettings, check_job: bool
) -> FinalCounts:
    """``merge`` of shards on object storage: under the output's lock and lease, the shards
    there are checked (finished, none running: ``RemoteShards.survey``), brought into a
    folder of this merge's own beside the output's local copy, merged there as local shards
    are, then, if none changed on the store meanwhile, the output is uploaded in one piece
    (``runs.output``: a file, or a folder's parts then ``_SUCCESS``)."""
    from batchrun.shards.remote import STAGING_SUFFIX, RemoteShards  # only jobs on a store

    shards = RemoteShards(output, storage)
    count = shards.count()
    with OutputLock(output.path), output_lease(output, storage) as lease:
        remove_stale_temporaries(output.path, (STAGING_SUFFIX,))
        shards.survey(count)
        staging = temporary_path(output.path, STAGING_SUFFIX)
        try:
            # The shards as a local output's, in a folder of this merge's own: messages name
            # them by their URLs (``_shown``).
            staged = replace(output, path=staging / output.path.name)
            paths = [shard_output(staged.path, i, count) for i in range(count)]
            stamps = shards.stage(count, paths)
            counts = _merge_held(given, staged, storage, count, check_job)
            shards.check_unchanged(stamps)
            shards.publish(staged.path, lease)
        finally:
            remove_temporary(staging)
    return counts


def _survey(settings: OutputSettings, paths: list[Path], count: int) -> list[ShardProof]:
    """Each shard finished, and its proof; ShardError naming every shard that is not."""
    output = settings.path
    problems = []
    proofs: list[ShardProof | str | None] = []
    for index, path in enumerate(paths):
        # One shard's lock at a time (a run of it is refused, naming it): N locks held at
        # once would be N open files. A run started later is caught before the output is
        # replaced (``_check_unchanged``).
        with OutputLock(path):
            journal = journal_path(path)
            has_journal = journal.exists() and journal.stat().st_size > 0
            batches = running_batches(path)  # --via batches: rows still in batches
            if not path.exists():
                what = "has not run"
                if batches:
                    what = (
                        f"is not finished ({len(batches):,} of its Message Batches still run: "
                        "run it again to collect them)"
                    )
                elif has_journal:
                    what = "is not finished (only its journal)"
                problems.append(f"shard {index}/{count} {what}")
            elif has_journal or batches or read_partial(path) is not None:
                problems.append(f"shard {index}/{count} is not finished")
            elif not problems:
                proofs.append(_proof_or_why(path, index, count))
    if problems:
        raise unfinished(settings.shown, problems, count)
    journal = journal_path(output)
    if journal.exists() and journal.stat().st_size > 0:
        raise ShardError(
            f"{journal} is the journal of an unsharded run of this output: finish that run, "
            "or remove the journal, before merging shards into it"
        )
    return _proven(settings.shown, paths, proofs)


def _names(indexes: Sequence[int], count: int) -> str:
    """``shard 2/4`` or ``shards 0/4, 1/4 and 3/4`` (the first few of many)."""
    shown = [f"{i}/{count}" for i in indexes[:_SHOWN_SHARDS]]
    more = len(indexes) - len(shown)
    if len(shown) == 1:
        return f"shard {shown[0]}"
    if more:
        return f"shards {', '.join(shown)} and {more:,} more"
    return f"shards {', '.join(shown[:-1])} and {shown[-1]}"


def _refuse(output: str, problems: list[str]) -> None:
    if problems:
        raise ShardError(
            f"cannot merge the shards of {output}, nothing was written: {'; '.join(problems)}"
        )


def _proof_or_why(path: Path, index: int, count: int) -> ShardProof | str | None:
    """The proof of shard ``index``; None when it has none, or why it cannot be read."""
    try:
        proof = read_proof(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return f"{proof_path(path)} ({exc})"
    if proof.shard != (index, count):
        return (
            f"{proof_path(path)} is the proof of shard {proof.shard[0]}/{proof.shard[1]} "
            f"(a shard folder copied over shard {index}/{count}'s)"
        )
    return proof


def _proven(
    output: str, paths: list[Path], found: list[ShardProof | str | None]
) -> list[ShardProof]:
    """The proofs, ShardError naming the shards that have none or an unreadable one."""
    count = len(paths)
    proofs = [p for p in found if isinstance(p, ShardProof)]
    unproved = [i for i, p in enumerate(found) if p is None]
    unreadable = [p for p in found if isinstance(p, str)]
    problems = []
    if unproved:
        problems.append(
            f"{_names(unproved, count)} {'has' if len(unproved) == 1 else 'have'} no record of "
            f"the job and input {'it' if len(unproved) == 1 else 'they'} ran (no "
            f"{proof_path(paths[unproved[0]]).name} beside the file: finished by an older "
            "batchrun, or the record was removed). Re-run "
            f"{'it' if len(unproved) == 1 else 'them'} as before, without "
            f"{option('overwrite', True)}: nothing is sent again, and the record is written"
        )
    if unreadable:
        problems.append(
            f"cannot read the record of a shard: {', '.join(unreadable[:_SHOWN_SHARDS])}. "
            f"Re-run those shards with {option('overwrite', True)}"
        )
    _refuse(output, problems)
    return proofs


def _recorded_config(
    output: OutputSettings, storage: StorageSettings, proofs: list[ShardProof]
) -> RunConfig:
    """The config of ``batchrun merge OUTPUT``: the input and output settings the shards
    recorded (those most of them share; ``_check_proofs`` names any that differ). An input
    on object storage is read from its local copy in this machine's cache folder."""
    first = _most_common(proofs, lambda p: p.fingerprint)[0]
    proof = next(p for p in proofs if p.fingerprint == first)
    path, url = proof.input, proof.input_url
    if url is not None and output.cache_home is not None:
        path = cached_copy_path(url, output.cache_home)
    return RunConfig(
        input=InputSettings(
            path=path, url=url, format=proof.input_format, csv_delimiter=proof.csv_delimiter
        ),
        output=replace(
            output,
            keep_columns=proof.keep_columns,
            format=proof.output_format,
            part_rows=proof.part_rows,
        ),
        storage=storage,
    )


def _with_recorded_schema(
    config: RunConfig, paths: list[Path], proofs: list[ShardProof]
) -> RunConfig:
    """``config`` with the answer's schema (``--json-schema``) its shards ran with, which
    gives the merged output its ``answer_*`` columns (``store.typed``): ``merge OUTPUT`` and
    ``merge INPUT -o OUTPUT`` are not told it. The shards' request defaults hold it; those of
    the job most of them ran (``_check_proofs`` refuses shards of another)."""
    first = _most_common(proofs, lambda p: p.fingerprint)[0]
    proof = next(p for p in proofs if p.fingerprint == first)
    settings = _proof_settings(paths[proof.shard[0]])
    structured = settings.get("structured") if settings is not None else None
    schema = structured.get("schema") if isinstance(structured, Mapping) else None
    if not isinstance(schema, Mapping):
        return config
    return replace(config, engine=replace(config.engine, json_schema=dict(schema)))


def _most_common(proofs: list[ShardProof], key: Callable[[ShardProof], Any]) -> list[Any]:
    """The values of ``key`` from the most shared to the least (ties: the lowest shard)."""
    counts = Counter(key(p) for p in proofs)
    first_shard: dict[Any, int] = {}
    for p in proofs:
        first_shard.setdefault(key(p), p.shard[0])
    return sorted(counts, key=lambda v: (-counts[v], first_shard[v]))


def _check_proofs(
    config: RunConfig, job_given: bool, paths: list[Path], proofs: list[ShardProof]
) -> list[_Identity]:
    """Every shard of the job merge is given (or, from the output alone, of the job most
    shards ran), of the input as it is now, with the kept columns of the output, and its
    file the one it wrote. Returns each file's identity as it was checked."""
    output = config.output.shown
    count = len(paths)
    problems = []

    # The job: the request defaults every request was made from.
    if job_given:
        expected = job_fingerprint(config.defaults)
        expected_settings: Mapping[str, Any] | None = job_settings(config.defaults)
        whose = "the job merge was given"
    else:
        expected = _most_common(proofs, lambda p: p.fingerprint)[0]
        majority = [p.shard[0] for p in proofs if p.fingerprint == expected]
        expected_settings = _proof_settings(paths[majority[0]])
        whose = f"{_names(majority, count)}"
    for fingerprint in _most_common(proofs, lambda p: p.fingerprint):
        if fingerprint == expected:
            continue
        others = [p.shard[0] for p in proofs if p.fingerprint == fingerprint]
        changes = changed_settings(_proof_settings(paths[others[0]]), expected_settings or {})
        what = ", ".join(changes[:4]) if changes else "request settings differ"
        problems.append(
            f"{_names(others, count)} ran another job than {whose} ({what}: "
            f"{'the shard' if len(others) == 1 else 'these shards'} -> "
            f"{'the job' if job_given else 'the others'}). Re-run "
            f"{'it' if len(others) == 1 else 'them'} with the job's settings and "
            f"{option('overwrite', True)}"
            + (
                " (if the shards ran with flags on top of the job file, merge OUTPUT merges "
                "them as they ran)"
                if job_given
                else ", or merge the job file (SOURCE) to say which job is right"
            )
        )

    # The input, as it is now.
    try:
        now = stamp_input(config.input.path)
    except OSError as exc:
        raise ShardError(
            f"cannot merge the shards of {output}: cannot read their input {config.input.path}: "
            f"{exc.strerror or exc}"
            + ("" if job_given else ". Give merge the job (SOURCE) if the input has moved")
        ) from exc
    for stamp in _most_common(proofs, lambda p: p.input_stamp):
        if stamp == now:
            continue
        others = [p.shard[0] for p in proofs if p.input_stamp == stamp]
        problems.append(
            f"{_names(others, count)} read another input than {config.input.path} is now (then "
            f"{stamp.size:,} bytes, SHA-256 {stamp.sha256[:12]}...; now {now.size:,} bytes, "
            f"SHA-256 {now.sha256[:12]}...). Restore the input they ran on, or re-run "
            f"{'it' if len(others) == 1 else 'them'} with {option('overwrite', True)}"
        )

    # The columns the output keeps.
    for kept in _most_common(proofs, lambda p: p.keep_columns):
        if kept == config.output.keep_columns:
            continue
        others = [p.shard[0] for p in proofs if p.keep_columns == kept]
        problems.append(
            f"{_names(others, count)} kept the columns [{', '.join(kept)}] and the job keeps "
            f"[{', '.join(config.output.keep_columns)}]. Merge OUTPUT, which keeps the shards' "
            "columns, or give merge the job file they ran with"
        )

    # Each file, byte for byte what its shard wrote.
    identities: list[_Identity] = []
    for proof, path in zip(proofs, paths, strict=True):
        damage = _file_damage(path, proof, identities)
        if damage:
            problems.append(
                f"shard {proof.shard[0]}/{count}'s file {_shown(config.output, path)} "
                f"{damage}. Re-run that shard "
                f"with {option('overwrite', True)}"
            )
    _refuse(output, problems)
    return identities


_Identity = tuple[int, int, int, int]


def _identity(path: Path) -> _Identity:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _file_damage(path: Path, proof: ShardProof, identities: list[_Identity]) -> str:
    """How ``path`` differs from the file its proof recorded ("" when it does not); its
    identity (before it is read) appended to ``identities``."""
    try:
        identity = _identity(path)
        identities.append(identity)
        size = identity[2]
        if size != proof.file_size:
            return (
                f"is {size:,} bytes and the shard wrote {proof.file_size:,}: it is torn or "
                "was replaced"
            )
        if file_sha256(path) != proof.file_sha256:
            return "is not the file the shard wrote (its SHA-256 differs): it was changed"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return ""


def _unreadable(what: str, exc: BaseException) -> OutputError:
    """The error of a file merge cannot read: ``what`` names it (``_file_named``)."""
    if what.endswith(_STEP_FILE):
        return OutputError(f"cannot read {what}: {exc}; the shards are kept")
    return ShardError(
        f"cannot read {what}: {exc}. It is torn or damaged: re-run that shard with "
        f"{option('overwrite', True)}, then merge"
    )


def _file_named(output: OutputSettings, number: int, count: int, path: Path) -> str:
    """Shard ``number``'s file as messages name it: ``shard 1/4's file, PATH``."""
    return f"shard {number}/{count}'s file, {_shown(output, path)}"


def _shown(output: OutputSettings, path: Path) -> str:
    """``path`` as a person knows it: a shard file of an output on object storage (a copy
    merge brought here, laid out beside ``output.path`` as on the store) by its URL."""
    here, text = str(output.path), str(path)
    if output.url is None or not text.startswith(here):
        return text
    return url_without_secrets(output.url).rstrip("/") + text[len(here) :]


_STEP_FILE = "a merge step's temporary file"


_READ_ERRORS = (OSError, pa.ArrowException, ValueError)


def _id_batches(path: Path, keep: tuple[str, ...]) -> Iterator[pa.RecordBatch]:
    return output_batches(path, shard_schema(keep), columns=[INDEX, "id"])


def _check_each_row_once(config: RunConfig, paths: list[Path], ids: list[str]) -> None:
    """Every input row in exactly one shard, under its own id, each shard in input order."""
    seen = bytearray(len(ids))
    strays: list[str] = []  # ids that are no input row's at the recorded index
    count = len(paths)
    for number, path in enumerate(paths):
        last = -1
        try:
            for batch in _id_batches(path, config.output.keep_columns):
                for index, row_id in zip(
                    batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True
                ):
                    if index is None or not 0 <= index < len(ids) or ids[index] != row_id:
                        strays.append(f"{row_id} (shard {number})")
                        continue
                    if index <= last:
                        raise ShardError(
                            f"{_shown(config.output, path)} is not in input order (row "
                            f"{index}): re-run the shard"
                        )
                    last = index
                    seen[index] = min(seen[index] + 1, 2)
        except _READ_ERRORS as exc:
            raise _unreadable(_file_named(config.output, number, count, path), exc) from exc
    missing = [ids[i] for i, times in enumerate(seen) if times == 0]
    doubled = [ids[i] for i, times in enumerate(seen) if times > 1]
    problems = []
    for what, found in (
        ("in no shard", missing),
        ("in more than one shard", doubled),
        ("in a shard but not in the input at that row", strays),
    ):
        if found:
            shown = ", ".join(found[:_SHOWN_IDS]) + (" ..." if len(found) > _SHOWN_IDS else "")
            problems.append(f"{len(found)} row(s) {what} (ids {shown})")
    if problems:
        raise ShardError(
            f"cannot merge the shards of {config.output.shown}: {'; '.join(problems)}. Re-run the "
            f"shards concerned with {option('overwrite', True)} (a shard folder copied or left "
            "from another job or input), then merge"
        )


class _ShardStream:
    """One sorted file's rows (a shard's, or a merge step's), read in input order, handed
    out up to a given input index."""

    def __init__(self, path: Path, schema: pa.Schema, what: str) -> None:
        self._path = path
        self._what = what
        self._batches = output_batches(path, schema)
        self._schema = schema
        self._pending = schema.empty_table()

    def until(self, end: int) -> pa.Table:
        """The rows whose ``_index`` is below ``end`` not handed out yet."""
        try:
            return self._until(end)
        except _READ_ERRORS as exc:
            raise _unreadable(self._what, exc) from exc

    def _until(self, end: int) -> pa.Table:
        parts = []
        while True:
            if not self._pending.num_rows:
                batch = next(self._batches, None)
                if batch is None:
                    break
                self._pending = pa.Table.from_batches([batch], schema=self._schema)
            below = pc.sum(pc.less(self._pending.column(INDEX), end)).as_py() or 0
            parts.append(self._pending.slice(0, below))
            self._pending = self._pending.slice(below)
            if self._pending.num_rows:
                break
        return pa.concat_tables(parts) if parts else self._schema.empty_table()


_Source = tuple[Path, str, int]  # a file sorted by ``_index``, what to call it, its rows


def _merge_sorted(
    sources: Sequence[_Source],
    rows: int,
    schema: pa.Schema,
    write: Callable[[pa.Table], None],
) -> int:
    """The rows of ``sources`` in ``_index`` order, to ``write`` about CHUNK_ROWS rows at a
    time; how many are ok. ``rows`` is the input's: sources that hold a share of them (a
    group of shards) are read a window of input rows as much wider (ids hash evenly)."""
    streams = [_ShardStream(path, schema, what) for path, what, _ in sources]
    held = max(1, sum(n for _, _, n in sources))
    window = max(CHUNK_ROWS, -(-CHUNK_ROWS * rows // held))
    ok = 0
    for p0 in range(0, rows, window):
        chunk = pa.concat_tables([s.until(p0 + window) for s in streams])
        chunk = chunk.take(pc.sort_indices(chunk.column(INDEX)))
        ok += pc.sum(pc.equal(chunk.column("status"), STATUS_OK)).as_py() or 0
        if chunk.num_rows:
            write(chunk)
    return ok


def _fewer_sources(
    sources: list[_Source], rows: int, schema: pa.Schema, folder: Path
) -> list[_Source]:
    """While there are more than MERGE_FAN_IN sources, merge them MERGE_FAN_IN at a time
    into sorted Parquet files in ``folder`` (each step's files removed after the next)."""
    step = 0
    while len(sources) > MERGE_FAN_IN:
        merged = []
        for group in range(0, len(sources), MERGE_FAN_IN):
            path = folder / f"step-{step}-{group // MERGE_FAN_IN}.parquet"
            some = sources[group : group + MERGE_FAN_IN]
            with output_named("parquet").writer(path, schema) as w, _gathered(w) as write:
                _merge_sorted(some, rows, schema, write)
            merged.append((path, f"{path}, {_STEP_FILE}", sum(n for _, _, n in some)))
        for path, _, _ in sources:
            if path.parent == folder:
                path.unlink()
        sources = merged
        step += 1
    return sources


def _write_merged(
    config: RunConfig,
    paths: list[Path],
    proofs: list[ShardProof],
    identities: list[_Identity],
    rows: int,
) -> FinalCounts:
    """The job's output from its shards, in input order, put in place by the committer
    (``store.commit``); with more than ``MERGE_FAN_IN`` shards, through merge steps."""
    output = config.output.path
    schema = output_schema(config.output.keep_columns)
    with_index = shard_schema(config.output.keep_columns)
    count = len(paths)
    tmp_steps = temporary_path(output, TMP_MERGE_SUFFIX)
    fmt = output_format_of(config.output)
    commit = Commit(output, fmt, types=output_types(config))  # the shards hold text
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        # The output is about the shards' size (in its format; a folder's parts are the
        # shards' Parquet), and the merge steps as much again.
        steps = count > MERGE_FAN_IN
        commit.check_space(
            sum(proof.file_size for proof in proofs) * (2 if steps else 1),
            needs="the shards' size" + (", twice: merge steps first" if steps else ""),
            then="Free some space and merge again: the shards are kept",
        )
        sources = [
            (p, _file_named(config.output, i, count, p), proof.rows)
            for i, (p, proof) in enumerate(zip(paths, proofs, strict=True))
        ]
        if steps:
            tmp_steps.mkdir()
            sources = _fewer_sources(sources, rows, with_index, tmp_steps)
        with commit.building() as tmp_out:
            options = WriteOptions(part_rows=config.output.part_rows)
            with commit.writer(tmp_out, schema, options) as write:
                ok = _merge_sorted(
                    sources,
                    rows,
                    with_index,
                    lambda t: write(t.drop_columns([INDEX]).cast(schema)),
                )
            _check_unchanged(config.output.shown, paths, identities)
    except (OSError, pa.ArrowException) as exc:
        hint = commit.short_of_space(exc) if isinstance(exc, OSError) else ""
        raise OutputError(f"cannot write {output}: {exc}{hint}; the shards are kept") from exc
    finally:
        remove_temporary(tmp_steps)
    return FinalCounts(rows, ok, rows - ok)


def _check_unchanged(output: str, paths: list[Path], identities: list[_Identity]) -> None:
    """ShardError when a shard's file changed while merge read it (a run of that shard
    started: merge holds one shard's lock at a time)."""
    changed = []
    for index, (path, before) in enumerate(zip(paths, identities, strict=True)):
        try:
            if _identity(path) != before:
                changed.append(index)
        except FileNotFoundError:
            changed.append(index)
    if changed:
        raise ShardError(
            f"cannot merge the shards of {output}, nothing was written: "
            f"{_names(changed, len(paths))} changed while merge read "
            f"{'it' if len(changed) == 1 else 'them'} (a run of "
            f"{'it' if len(changed) == 1 else 'them'} started). Merge again once "
            f"{'it has' if len(changed) == 1 else 'they have'} finished"
        )
