"""Shards of a job whose output is on object storage (``-o s3://...`` or ``gs://...``).

Layout for ``-o s3://b/out/labels.parquet`` and ``--shard 2/4`` (``layout.shard_url``)::

    s3://b/out/labels.parquet.shards/2-of-4/labels.parquet             the finished shard
    s3://b/out/labels.parquet.shards/2-of-4/labels.parquet.shard.json  its proof
    s3://b/out/labels.parquet.shards/2-of-4/labels.parquet.batchrun/   while it runs: its
        lease, its sealed journal segments, its batch journal (``remote.mirror``)

Each shard is a remote output of its own: its URL is its file's, it runs under its own lease
(one machine per shard, any number of shards at once), its journal is sealed in segments as
any remote output's, and its work folder is ``OUTPUT.shards/2-of-4/`` in the output's work
folder, so its local files are a local shard's (``shards.run``). What differs from a remote
file output is the finished file: it is no positional output (only the shard's rows, with
their ``_index``), so a re-run turns it back into journal lines (``RemoteShard.pull``, then
``shards.run._reopen``), seals those lines on the store as a segment, and only then removes
the file there (``RemoteShard.seal``): the rows are always on the store, as a file or as
segments, and in journal order before anything the re-run adds.

``merge`` of such an output (``RemoteShards``) takes the output's lease, checks on the store
that every shard finished and none is running, brings the shard files and proofs into a
folder of its own beside the output's local copy, merges them there as local shards, checks
that no shard changed on the store meanwhile, and uploads the output in one piece.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from batchrun.config.layers import OutputSettings
from batchrun.core.locations import StorageSettings
from batchrun.core.scrub import url_without_secrets
from batchrun.core.wording import option
from batchrun.formats.registry import output_for
from batchrun.remote.lease import LEASE_OBJECT, Lease, LeaseRecord
from batchrun.remote.mirror import JOURNAL_FOLDER, RemoteOutput, journal_prefix
from batchrun.remote.objects import ObjectInfo, Storage
from batchrun.runs.output import output_format_of, remote_output_of
from batchrun.shards.layout import (
    PROOF_SUFFIX,
    SHARDS_SUFFIX,
    ShardError,
    proof_path,
    shard_count_of,
    shard_output,
    shard_url,
    unfinished,
)
from batchrun.store.commit import Committed

STAGING_SUFFIX = ".merge-shards"  # merge's folder of shards brought from the store


class RemoteShard:
    """The store's side of one shard's run, under its lease (``settings`` is the shard's own
    output: ``shards.run.shard_config``)."""

    def __init__(
        self, settings: OutputSettings, endpoints: StorageSettings, lease: Lease | None
    ) -> None:
        if settings.url is None:
            raise ValueError("a remote shard needs the URL of its output")
        self.settings = settings
        self.url = settings.url
        self.endpoints = endpoints
        self.storage = Storage(endpoints)
        self.lease = lease
        self._pulled: RemoteOutput | None = None

    def _mirror(self) -> RemoteOutput:
        return remote_output_of(self.settings, self.endpoints, self.lease)

    def pull(self, *, overwrite: bool = False) -> None:
        """The shard as the store has it, in its work folder: the journal rebuilt from its
        segments, its file downloaded if it finished. Its proof on the store goes first:
        the file is about to change, and a proof stands only beside the file it names. With
        ``overwrite``, the shard starts afresh: its file and segments there go too."""
        mirror = self._mirror()
        mirror.check_lease()
        self.storage.delete(self.url + PROOF_SUFFIX)
        if overwrite:
            self.storage.delete(self.url)
        mirror.pull(overwrite=overwrite)
        self._pulled = mirror

    def seal(self) -> None:
        """After ``pull`` and the file turned into journal lines here: those lines sealed on
        the store as a segment, then the file there removed (its rows are in the segments,
        for a re-run on any machine, and before what this run adds)."""
        if self._pulled is None:
            raise RuntimeError("RemoteShard.seal() before pull()")
        self._pulled.segmenter().close()  # raises the StorageError of a seal that failed
        self._pulled.check_lease()
        self.storage.delete(self.url)

    def publish(self, file: Path, proof: Path) -> None:
        """The shard's finished file, then its proof, uploaded beside each other; then the
        journal segments removed (``RemoteOutput.publish``: the lease asked first)."""
        mirror = self._mirror()
        mirror.publish(Committed(file, output_for(file)))
        mirror.check_lease()
        self.storage.upload(proof, self.url + PROOF_SUFFIX)


# -- merge ------------------------------------------------------------------------------------


Stamps = Mapping[str, str | None]  # URL -> the object's stamp when merge brought it here


class RemoteShards:
    """The shards of the output ``settings`` names on object storage, for ``merge``."""

    def __init__(self, settings: OutputSettings, endpoints: StorageSettings) -> None:
        if settings.url is None:
            raise ValueError("remote shards need the URL of their output")
        self.settings = settings
        self.url = settings.url
        self.shown = settings.shown
        self.endpoints = endpoints
        self.storage = Storage(endpoints)
        self.folder = f"{self.url.rstrip('/')}{SHARDS_SUFFIX}/"
        self._objects: dict[str, ObjectInfo] | None = None

    def _listing(self) -> dict[str, ObjectInfo]:
        """Every object under the shards' folder, by its path in the folder (one listing)."""
        if self._objects is None:
            self._objects = {
                info.url[len(self.folder) :]: info for info in self.storage.list(self.folder)
            }
        return self._objects

    def count(self) -> int:
        """N, from the shard folders on the store (ShardError when none, or several Ns)."""
        names = {path.split("/", 1)[0] for path in self._listing() if "/" in path}
        return shard_count_of(names, url_without_secrets(self.folder), self.shown)

    def shard_url(self, index: int, count: int) -> str:
        name = shard_output(self.settings.path, index, count).name
        return shard_url(self.url, name, index, count)

    def survey(self, count: int) -> None:
        """ShardError naming every shard not finished on the store (no file, journal
        segments left, a live lease: running now), and an unsharded run's journal there."""
        listing = self._listing()
        problems = []
        for index in range(count):
            url = self.shard_url(index, count)
            relative = url[len(self.folder) :]
            segments = f"{relative}{JOURNAL_FOLDER}/"
            journaled = any(path.startswith(segments) for path in listing)
            holder = self._live_lease(url) if relative + LEASE_OBJECT in listing else None
            if holder is not None:
                problems.append(
                    f"shard {index}/{count} is running ({holder.holder()}): wait for it to end "
                    "(a run lost with its machine holds its shard until its lease lapses)"
                )
            elif relative not in listing:
                what = "is not finished (only its journal)" if journaled else "has not run"
                problems.append(f"shard {index}/{count} {what}")
            elif journaled:
                problems.append(f"shard {index}/{count} is not finished")
        if problems:
            raise unfinished(self.shown, problems, count)
        journal = journal_prefix(self.url.rstrip("/"))
        if self.storage.list(journal):
            raise ShardError(
                f"{url_without_secrets(journal)} is the journal of an unsharded run of "
                f"{self.shown}: finish that run, or start the output afresh with "
                f"{option('overwrite', True)}, before merging shards into it"
            )

    def _live_lease(self, url: str) -> LeaseRecord | None:
        """The lease on the shard ``url`` when it is live (its run is running, or was lost
        less than a lease's life ago); None when there is none, or it lapsed."""
        info = self.storage.stat_or_none(url + LEASE_OBJECT)
        if info is None:
            return None
        record = LeaseRecord.from_bytes(self.storage.read_bytes(info.url))
        return record if record is not None and not record.expired(time.time()) else None

    def stage(self, count: int, paths: Sequence[Path]) -> Stamps:
        """Each shard's file and proof brought from the store to ``paths`` (laid out as
        local shards: ``shards.run`` merges them); their stamps, for ``check_unchanged``."""
        stamps: dict[str, str | None] = {}
        for index, path in enumerate(paths):
            url = self.shard_url(index, count)
            for source, local in ((url, path), (url + PROOF_SUFFIX, proof_path(path))):
                info = self.storage.stat_or_none(source)
                stamps[source] = None if info is None else info.stamp
                if info is not None:
                    self.storage.download(source, local)
        return stamps

    def check_unchanged(self, stamps: Stamps) -> None:
        """ShardError when a shard's file or proof on the store is not what merge brought
        here (a run of that shard started since)."""
        changed = sorted(
            {
                url.removesuffix(PROOF_SUFFIX)
                for url, stamp in stamps.items()
                if _stamp(self.storage.stat_or_none(url)) != stamp
            }
        )
        if changed:
            shown = ", ".join(url_without_secrets(url) for url in changed[:10])
            raise ShardError(
                f"cannot merge the shards of {self.shown}, nothing was written: {shown} "
                f"changed on the store while merge read {'it' if len(changed) == 1 else 'them'}"
                " (a run of that shard started). Merge again once it has finished"
            )

    def publish(self, merged: Path, lease: Lease | None) -> None:
        """The merged output (a file, or a folder of parts) uploaded as the output, in one
        piece (``runs.output.remote_output_of``: the lease asked first)."""
        mirror = remote_output_of(self.settings, self.endpoints, lease)
        mirror.publish(Committed(merged, output_format_of(self.settings)))


def _stamp(info: ObjectInfo | None) -> str | None:
    return None if info is None else info.stamp
