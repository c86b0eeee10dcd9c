"""The output a run writes: its ``Sink`` and, for an ``s3://`` or ``gs://`` output, the mirror
that makes it survive the machine (``remote.mirror``).

A remote output is written as a local one is, in its work folder (``--work-dir``): the journal
stays local and fsynced. Before the sink opens, the mirror pulls what earlier runs left on the
store (the final file, every sealed journal segment), so a run on a new machine resumes from
there. While rows land, the journal's new lines are sealed and uploaded as segments (every
``--segment-rows`` rows or ``--segment-seconds`` seconds, off the event loop). The final file
is one upload, made only once it is complete; the segments are removed after it (unless
``--keep-journal``). A stopped run's partial file stays local: the store keeps the segments.

An output that names a folder (``-o out/labels/``, ``s3://b/out/``, ``--output-format
parquet-dataset``) is a Parquet dataset (``formats.parquet_dataset``); on an object store it is
mirrored by ``RemoteDataset``, which uploads the parts, then ``_SUCCESS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from batchrun.config.layers import OutputSettings
from batchrun.core.errors import BatchrunError, OutputError
from batchrun.core.locations import StorageSettings
from batchrun.formats.base import PART_ROWS, OutputFormat
from batchrun.formats.registry import names_folder, output_for, output_named
from batchrun.remote.errors import LeaseLostError, StorageError
from batchrun.store.sink import PriorState, Sink, journal_path
from batchrun.store.typed import OutputTypes

if TYPE_CHECKING:  # object storage is loaded only by a job whose output is on it
    from batchrun.remote.lease import Lease
    from batchrun.remote.mirror import RemoteOutput, Segmenter


class RunOutput:
    """Owns the output of one run: open it, journal into ``sink``, close it, publish it.

    Example::

        output = RunOutput(config.output.path, config.storage, overwrite=True, lease=claim.lease)
        prior = output.open()           # a remote output: pulled first
        output.sink.submit(0, row)      # sealed into segments as rows land
        await output.close()            # the last segment sealed
        output.sink.finalize(rows)
        output.publish()                # the final file uploaded, the segments removed

    A remote output is written under its ``lease`` (``output_lease``, held by the caller,
    who claimed the output): it is the engine's ``send_check`` and is asked before every
    upload. A remote output's journal outlives ``finalize`` until ``publish`` has uploaded
    the final file. ``overwrite``: start afresh (``--overwrite``). ``types``: the final
    output's typed columns (``runs.claim.output_types``).
    """

    def __init__(
        self,
        settings: OutputSettings,
        storage: StorageSettings,
        *,
        overwrite: bool = False,
        lease: Lease | None = None,
        types: OutputTypes | None = None,
    ) -> None:
        self.settings = settings
        self._storage = storage
        self._overwrite = overwrite
        self.format = output_format_of(settings)
        self.sink = Sink(
            settings.path,
            settings.keep_columns,
            output_format=self.format,
            part_rows=settings.part_rows or PART_ROWS,
            types=types,
        )
        self.lease = lease
        if settings.url is not None:
            self.sink.keep_journal = True  # until the final file is uploaded (``publish``)
        self._remote: RemoteOutput | None = None
        self._segmenter: Segmenter | None = None
        self.seal_error: Exception | None = None  # the last segment could not be sealed

    @property
    def shown(self) -> str:
        """The output's name for a person: its URL for one on object storage."""
        return self.settings.shown

    def open(self) -> PriorState:
        """Check the output can be written, pull a remote one's earlier state, open the sink.

        Raises (OutputError, StorageError) before anything is sent when it cannot be written.
        """
        if self.settings.url is not None:
            self._remote = remote_output_of(self.settings, self._storage, self.lease)
            self._remote.pull(overwrite=self._overwrite)
        prior = self.sink.open(overwrite=self._overwrite)
        if self._remote is not None:
            self._segmenter = self._remote.segmenter()
            self.sink.on_append = self._segmenter.noticed
        return prior

    async def close(self) -> None:
        """Close the journal; seal what is left of it into a last segment (off the loop)."""
        await self.sink.close()
        segmenter, self._segmenter = self._segmenter, None
        if segmenter is not None:
            self.sink.on_append = None
            try:
                await asyncio.to_thread(segmenter.close)
            except Exception as exc:  # the store failed: the local journal still has it all
                self.seal_error = exc

    def lease_lost(self, stopped: str | None = None) -> LeaseLostError | None:
        """The error that ends a run whose lease another run took over, or that ``stopped``
        for want of a lease it could renew; None while this run holds it (or has none).
        Nothing of this run is published after that."""
        lease = self.lease
        if lease is None:
            return None
        if lease.lost_to is None:
            if stopped is None:
                return None
            return LeaseLostError(
                f"this run stopped: {stopped}. It sent nothing more and published nothing; "
                f"the rows it answered are kept in its journal on this machine "
                f"({journal_path(self.settings.path)}). Run the same command again once the "
                "store answers: it goes on from there"
            )
        unsent = self._unsealed_rows()
        rows = f"{unsent:,} row(s)" if unsent else "no row"
        journal = journal_path(self.settings.path)
        return LeaseLostError(
            f"this run stopped: {lease.lost_message()}. A lease lapses when its run does not "
            f"renew it for {lease.ttl_s:g} s (this process was paused, suspended or cut off "
            "from the store), and another run may then take the output over: that run owns "
            f"{self.shown} now. This run sent no request after it found out, and uploaded "
            f"and published nothing. It answered {rows} that the store does not have"
            + (
                f"; they are kept in its journal on this machine ({journal}). Once that run "
                "has ended, run this same command again here: if the output is not complete "
                f"by then, it goes on from both runs' rows and does not pay for these "
                f"{unsent:,} again; if it is complete, they are not needed."
                if unsent
                else "."
            )
        )

    def _unsealed_rows(self) -> int:
        """Rows of the local journal no segment on the store holds."""
        sealed = self._remote.sealed_bytes if self._remote is not None else 0
        with contextlib.suppress(OSError), journal_path(self.settings.path).open("rb") as f:
            f.seek(sealed)
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        return 0

    def publish(self) -> None:
        """Upload the final file of a remote output and remove its segments; then the local
        journal goes. A failed upload keeps the journal and the final file here (the next
        run uploads the file, sending nothing): PublishError names the URL and the cause."""
        remote = self._remote
        if remote is None:
            return
        try:
            remote.publish(self.sink.committed)
        except StorageError as exc:
            raise PublishError(
                f"every row of {self.shown} is answered, but the final file could not be "
                f"uploaded there ({exc}). Nothing is lost: the file and its journal are kept "
                f"on this machine, in {self.settings.path.parent}. Run the same command again "
                "here once the store answers: it uploads that file and sends no request"
            ) from exc
        self.sink.drop_journal()


class PublishError(OutputError):
    """The final file of a remote output is complete here but could not be uploaded."""


def output_format_of(settings: OutputSettings) -> OutputFormat:
    """The output's format: ``--output-format``'s when given, else by the output's name: its
    URL's for an ``s3://`` or ``gs://`` one (a folder when it ends with a slash), else its
    path's (``formats.registry.output_for``)."""
    if settings.format is not None:
        return output_named(settings.format)
    if settings.url is not None and names_folder(settings.url):
        return output_for(settings.url)
    return output_for(settings.path)


def remote_output_of(
    settings: OutputSettings, endpoints: StorageSettings, lease: Lease | None = None
) -> RemoteOutput:
    """The mirror of the remote output ``settings`` name (``remote.mirror``, or
    ``remote.dataset`` for a folder), once a probe showed it can be written."""
    from batchrun.remote.dataset import remote_output
    from batchrun.remote.objects import Storage

    assert settings.url is not None
    storage = Storage(endpoints)
    storage.check_writable(settings.url)
    remote = remote_output(
        settings.url,
        storage,
        dataset=output_format_of(settings).folder,
        work_dir=settings.work_dir,
        cache_home=settings.cache_home,
        keep_journal=settings.keep_journal,
        rows_per_segment=settings.segment_rows,
        seconds_per_segment=settings.segment_seconds,
        lease=lease,
    )
    assert remote.local_output == settings.path  # load_config named the same local copy
    return remote


# -- on an object store -------------------------------------------------------------------


@contextlib.contextmanager
def output_lease(settings: OutputSettings, endpoints: StorageSettings) -> Iterator[Lease | None]:
    """A remote output's lease (``remote.lease``), held for the ``with``: a run on another
    machine is refused while it is held (LeaseHeldError naming this run); renewed in the
    background; asked before each request and upload (``RunOutput.lease``); removed on
    leaving, whether the run ended, stopped or failed. A local output has none (its file
    lock, ``store.lock``, is enough on one machine).

    Removing it can fail (the store out of reach): after an error, that is said after the
    error (it is secondary); after a run that went well, as a warning."""
    if settings.url is None:
        yield None
        return
    from batchrun.remote.lease import Lease
    from batchrun.remote.mirror import new_run_id
    from batchrun.remote.objects import Storage

    storage = Storage(endpoints)
    ttl = settings.lease_ttl
    lease = Lease(storage, settings.url, run_id=new_run_id(), ttl_s=ttl, renew_s=ttl / 5)
    lease.acquire()
    lease.start_renewing()
    try:
        yield lease
    except BaseException as exc:
        failure = _release(lease)
        if failure is not None:
            _add_after(exc, failure)
        raise
    failure = _release(lease)
    if failure is not None:
        print(f"batchrun: warning: {failure}", file=sys.stderr)


def _release(lease: Lease) -> str | None:
    """Give the lease back; what went wrong, in words, or None."""
    from batchrun.remote.lease import LEASE_OBJECT

    try:
        lease.release()
    except StorageError as exc:
        return (
            f"the lease {lease.shown}{LEASE_OBJECT} could not be removed ({exc.reason}): "
            "another machine's run of this output is refused until it lapses, "
            f"{lease.ttl_s:g} s after this run's last renewal (a run on this machine takes "
            "it over at once)"
        )
    return None


def _add_after(exc: BaseException, line: str) -> None:
    """Say ``line`` after ``exc``'s own message: in it, for batchrun's errors (printed whole
    by the CLI), else on stderr now."""
    if isinstance(exc, BatchrunError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]}\nbatchrun: also, {line}",)
    else:
        print(f"batchrun: also, {line}", file=sys.stderr)
