"""A dataset output on object storage (``s3://b/out/``): a folder of Parquet parts and a
``_SUCCESS`` manifest, mirrored in a work folder as a single file is (``mirror``), published
parts first, then the manifest."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from batchrun.core.errors import OutputError
from batchrun.formats.parquet_dataset import (
    NAME,
    SUCCESS,
    Manifest,
    is_part_name,
    part_name,
    read_manifest,
    write_manifest,
)
from batchrun.formats.registry import names_folder, output_named
from batchrun.remote.errors import StorageError
from batchrun.remote.mirror import PullReport, RemoteOutput, journal_prefix
from batchrun.remote.objects import Storage
from batchrun.store.commit import Commit, Committed, remove_output


class RemoteDataset(RemoteOutput):
    """A dataset output on an object store (``s3://b/out/``), mirrored in a work folder.

    The same as a remote file (``remote.mirror``), but for the final step: ``pull`` copies
    the dataset a ``_SUCCESS`` lists into the local folder, ``publish`` uploads parts then
    ``_SUCCESS``. The journal segments live beside the folder (``s3://b/out.batchrun/``),
    not in it, so that a reader of the folder sees Parquet parts only.

    Each publish names its parts after its run (``part-00000-<run>.parquet``), so it never
    overwrites a part the ``_SUCCESS`` in place lists: until the new ``_SUCCESS`` replaces
    it (one PUT), the old dataset stands whole, and a publish cut short costs nothing but
    orphan parts, which the next publish deletes. The local copy keeps the store's names
    (as a local dataset, its names are its own: ``formats.parquet_dataset``).
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
        if self._keeps_unpublished(state, remote, _manifest_stamp(self.local_output)):
            return True
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
        its run's own), built beside it and swapped in (``store.commit``)."""
        with Commit(output, output_named(NAME)).building() as tmp:
            tmp.mkdir(parents=True)
            remote = _parse_manifest(self.storage.read_bytes(self._manifest_url()), self.url)
            for name in remote.parts:
                self.storage.download(f"{self.url}{name}", tmp / name)
            write_manifest(tmp, remote)

    def publish(self, committed: Committed | None = None) -> None:
        """Upload the local dataset (``committed``'s, as the sink's final step put it in
        place; the work folder's when None): the parts, ``_SUCCESS`` last, then the parts an
        older run left that it does not list; then the segments."""
        folder = committed.path if committed is not None else self.local_output
        manifest = read_manifest(folder)
        if manifest is None or manifest.partial is not None:
            raise OutputError(f"{folder}: no {SUCCESS}: the dataset is not complete")
        remote = manifest.renamed([part_name(k, self.run_id) for k in range(len(manifest.parts))])
        self._publishing(_manifest_stamp(folder) if folder == self.local_output else None)
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
