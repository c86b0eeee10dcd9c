"""The output a run writes: its ``Sink`` and, for an ``s3://`` or ``gs://`` output, the mirror
that makes it survive the machine (``store.remote``).

A remote output is written as a local one is, in its work folder (``--work-dir``): the journal
stays local and fsynced. Before the sink opens, the mirror pulls what earlier runs left on the
store (the final file, every sealed journal segment), so a run on a new machine resumes from
there. While rows land, the journal's new lines are sealed and uploaded as segments (every
``--segment-rows`` rows or ``--segment-seconds`` seconds, off the event loop). The final file
is one upload, made only once it is complete; the segments are removed after it (unless
``--keep-journal``). A stopped run's partial file stays local: the store keeps the segments.

An output that names a folder (``-o out/labels/``, ``s3://b/out/``, ``--output-format
parquet-dataset``) is a Parquet dataset (``store.dataset``); on an object store it is
mirrored by ``RemoteDataset``, which uploads the parts, then ``_SUCCESS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrun.config.load import RunConfig
from batchrun.core.errors import OutputError
from batchrun.store.dataset import (
    DATASET,
    PART_ROWS,
    Manifest,
    is_part_name,
    names_folder,
    part_name,
    read_manifest,
    remove_output,
    replace_folder,
    write_manifest,
)
from batchrun.store.partial import SUCCESS
from batchrun.store.remote import PullReport, RemoteOutput, journal_prefix
from batchrun.store.sink import (
    TMP_OUTPUT_SUFFIX,
    OutputKind,
    PriorState,
    Sink,
    output_kind,
    remove_temporary,
    temporary_path,
)
from batchrun.store.storage import Storage, StorageError, StorageSettings

if TYPE_CHECKING:
    from batchrun.store.remote import Segmenter


class RunOutput:
    """Owns the output of one run: open it, journal into ``sink``, close it, publish it.

    Example::

        output = RunOutput(config)
        prior = output.open()           # a remote output: pulled first
        output.sink.submit(0, row)      # sealed into segments as rows land
        await output.close()            # the last segment sealed
        output.sink.finalize(rows)
        output.publish()                # the final file uploaded, the segments removed
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.kind = config_output_kind(config)
        part_rows = int(getattr(config, "part_rows", None) or PART_ROWS)
        self.sink = Sink(config.output, config.keep_columns, kind=self.kind, part_rows=part_rows)
        self._remote: RemoteOutput | None = None
        self._segmenter: Segmenter | None = None
        self.seal_error: Exception | None = None  # the last segment could not be sealed

    def open(self) -> PriorState:
        """Check the output can be written, pull a remote one's earlier state, open the sink.

        Raises (OutputError, StorageError) before anything is sent when it cannot be written.
        """
        config = self.config
        if config.output_url is not None:
            self._remote = _remote_output(config)
            self._remote.pull(overwrite=config.overwrite)
        prior = self.sink.open(overwrite=config.overwrite)
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

    def publish(self) -> None:
        """Upload the final file of a remote output and remove its segments."""
        if self._remote is not None:
            self._remote.publish()


def config_output_kind(config: RunConfig) -> OutputKind:
    """The output's format: ``--output-format`` when given, a dataset for an ``s3://`` or
    ``gs://`` URL that ends with a slash, else by the output's name (``output_kind``)."""
    # getattr: RunConfig.output_format comes with the --output-format setting.
    declared: OutputKind | None = getattr(config, "output_format", None)
    if declared is not None:
        return declared
    if config.output_url is not None and names_folder(config.output_url):
        return DATASET
    return output_kind(config.output)


def _remote_output(config: RunConfig) -> RemoteOutput:
    assert config.output_url is not None
    storage = Storage(StorageSettings(config.s3_endpoint, config.gcs_endpoint))
    storage.check_writable(config.output_url)
    remote = remote_output(
        config.output_url,
        storage,
        dataset=config_output_kind(config) == DATASET,
        work_dir=config.work_dir,
        cache_home=config.cache_home,
        keep_journal=config.keep_journal,
        rows_per_segment=config.segment_rows,
        seconds_per_segment=config.segment_seconds,
    )
    assert remote.local_output == config.output  # load_config named the same local copy
    return remote


# -- on an object store -------------------------------------------------------------------


class RemoteDataset(RemoteOutput):
    """A dataset output on an object store (``s3://b/out/``), mirrored in a work folder.

    The same as a remote file (``store.remote``), but for the final step: ``pull`` copies
    the dataset a ``_SUCCESS`` lists into the local folder, ``publish`` uploads parts then
    ``_SUCCESS``. The journal segments live beside the folder (``s3://b/out.batchrun/``),
    not in it, so that a reader of the folder sees Parquet parts only.

    Each publish names its parts after its run (``part-00000-<run>.parquet``), so it never
    overwrites a part the ``_SUCCESS`` in place lists: until the new ``_SUCCESS`` replaces
    it (one PUT), the old dataset stands whole, and a publish cut short costs nothing but
    orphan parts, which the next publish deletes. The local copy keeps the store's names
    (as a local dataset, its names are its own: ``store.dataset``).
    """

    def __init__(self, url: str, storage: Storage, **options: Any) -> None:
        if not names_folder(url):
            url += "/"
        super().__init__(url, storage, **options)
        self.prefix = journal_prefix(url.rstrip("/"))

    def pull(self, *, overwrite: bool = False) -> PullReport:
        if overwrite:  # the base class removes a file: the local folder goes first
            remove_output(self.local_output)
        return super().pull(overwrite=overwrite)

    def _manifest_url(self, name: str = SUCCESS) -> str:
        return f"{self.url}{name}"

    def _pull_final(self, state: Any) -> bool:
        remote = self.storage.stat_or_none(self._manifest_url())
        if remote is None:
            remove_output(self.local_output)
            state.final_stamp = state.local_stamp = None
            return False
        local_stamp = _manifest_stamp(self.local_output)
        if remote.stamp != state.final_stamp or local_stamp != state.local_stamp:
            self._download(self.local_output)
            state.final_stamp = remote.stamp
            state.local_stamp = _manifest_stamp(self.local_output)
        return True

    def _download(self, output: Path) -> None:
        """The remote dataset into ``output`` (its parts under the store's names, which are
        its run's own), built beside it and swapped in."""
        tmp = temporary_path(output, TMP_OUTPUT_SUFFIX)
        try:
            tmp.mkdir(parents=True)
            remote = _parse_manifest(self.storage.read_bytes(self._manifest_url()), self.url)
            for name in remote.parts:
                self.storage.download(f"{self.url}{name}", tmp / name)
            write_manifest(tmp, remote)
            replace_folder(tmp, output)
        finally:
            remove_temporary(tmp)

    def publish(self, local_final: Path | None = None) -> None:
        """Upload the local dataset: the old ``_SUCCESS`` removed, the parts, ``_SUCCESS``
        last, then the parts an older run left that it does not list; then the segments."""
        folder = local_final or self.local_output
        manifest = read_manifest(folder)
        if manifest is None or manifest.partial is not None:
            raise OutputError(f"{folder}: no {SUCCESS}: the dataset is not complete")
        remote = manifest.renamed([part_name(k, self.run_id) for k in range(len(manifest.parts))])
        done: list[str] = []
        try:
            for name, uploaded in zip(manifest.parts, remote.parts, strict=True):
                self.storage.upload(folder / name, f"{self.url}{uploaded}")
                done.append(uploaded)
            self.storage.write_bytes(self._manifest_url(), remote.to_json().encode())
        except BaseException:
            # The old dataset stands: take back this publish's parts, so that a reader of
            # the whole folder does not see them either (what fails to go, the next deletes).
            for uploaded in done:
                with contextlib.suppress(StorageError):
                    self.storage.delete(f"{self.url}{uploaded}")
            raise
        listed = set(remote.parts)
        for info in self.storage.list(self.url):
            relative = info.url[len(self.url) :]
            if is_part_name(relative) and relative not in listed:
                self.storage.delete(info.url)
        local_stamp = _manifest_stamp(folder) if folder == self.local_output else None
        self._published(self.storage.stat(self._manifest_url()).stamp, local_stamp)


def _parse_manifest(data: bytes, url: str) -> Manifest:
    try:
        return Manifest.parse(data.decode("utf-8"))
    except (ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"{url}{SUCCESS} is not a batchrun dataset manifest: {exc}") from exc


def _manifest_stamp(folder: Path) -> str | None:
    with contextlib.suppress(OSError):
        info = (folder / SUCCESS).stat()
        return f"{info.st_size}:{info.st_mtime_ns}"
    return None


def remote_output(
    url: str, storage: Storage, *, dataset: bool = False, **options: Any
) -> RemoteOutput:
    """The mirror of the remote output ``url``: a dataset for a folder (a URL that ends
    with a slash, or ``dataset``), else a single file. ``options`` are RemoteOutput's."""
    if dataset or names_folder(url):
        return RemoteDataset(url, storage, **options)
    return RemoteOutput(url, storage, **options)


@contextlib.contextmanager
def output_lease(config: RunConfig) -> Iterator[None]:
    """A remote output's lease (``store.lease``), held for the ``with``: a run on another
    machine is refused while it is held (LeaseHeldError naming this run); renewed in the
    background; removed on leaving, whether the run ended, stopped or failed. A local
    output has none (its file lock, ``store.lock``, is enough on one machine)."""
    if config.output_url is None:
        yield
        return
    from batchrun.store.lease import Lease
    from batchrun.store.remote import new_run_id
    from batchrun.store.storage import Storage, StorageSettings

    def lost(message: str) -> None:
        print(f"{message}; this run's rows are still journaled here", file=sys.stderr)

    storage = Storage(StorageSettings(config.s3_endpoint, config.gcs_endpoint))
    with Lease(storage, config.output_url, run_id=new_run_id(), on_lost=lost):
        yield
