"""The Message Batches journal of an output on object storage, kept on the store beside it
(``OUTPUT.batchrun/batches.jsonl``), so that a run on another machine collects the batches an
earlier run created instead of creating them again (``store.batch_journal`` keeps it
locally; ``BatchJournal`` takes this mirror's ``push`` as its seam)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from batchrun.core.errors import OutputError
from batchrun.core.scrub import url_without_secrets
from batchrun.remote.errors import StorageError
from batchrun.remote.objects import Storage
from batchrun.store.batch_journal import REMOTE_OBJECT, STALE_SUFFIX


def remote_batch_journal_url(output_url: str) -> str:
    return f"{output_url}{REMOTE_OBJECT}"


class BatchJournalMirror:
    """The batch journal of a remote output, kept on the store beside it::

        mirror = BatchJournalMirror(storage, "s3://b/out/labels.parquet")
        mirror.pull(local_path)                          # before BatchJournal.load
        journal = BatchJournal.load(local_path, mirror.push)

    One run writes it at a time (the output's lease, ``remote.lease``), so the newest copy
    is the longer one: ``pull`` takes the store's copy when the local one is missing or a
    prefix of it, keeps the local one when the store's is a prefix of it (uploads that
    failed: pushed again now), and sets a local copy that disagrees aside (renamed, not
    deleted) for the store's. ``push`` uploads the whole file; a failed upload that is not
    ``required`` is kept in ``last_error`` and made good by the next push.
    """

    def __init__(self, storage: Storage, output_url: str) -> None:
        self.storage = storage
        self.url = remote_batch_journal_url(output_url)
        self.shown = url_without_secrets(self.url)
        self.last_error: StorageError | None = None
        self.set_aside: Path | None = None

    def pull(self, local: Path) -> None:
        found = self.storage.stat_or_none(self.url)
        if found is None:
            if local.exists():
                self.push(local, True)  # this machine's journal, not on the store yet
            return
        remote = self.storage.read_bytes(self.url)
        try:
            mine = local.read_bytes()
        except FileNotFoundError:
            mine = b""
        except OSError as exc:
            raise OutputError(f"cannot read batch journal {local}: {exc.strerror}") from exc
        if remote.startswith(mine):
            if remote != mine:
                self.storage.download(self.url, local)
            return
        if mine.startswith(remote):
            self.push(local, True)
            return
        self.set_aside = local.with_name(f"{local.name}{STALE_SUFFIX}-{int(time.time())}")
        os.replace(local, self.set_aside)
        self.storage.download(self.url, local)

    def push(self, local: Path, required: bool) -> None:
        try:
            self.storage.upload(local, self.url)
        except StorageError as exc:
            if required:
                raise StorageError(
                    self.shown,
                    "write",
                    exc.reason,
                    "no batch was created: re-run once the store can be written",
                ) from exc
            self.last_error = exc
            return
        self.last_error = None

    def remove(self) -> None:
        self.storage.delete(self.url)
