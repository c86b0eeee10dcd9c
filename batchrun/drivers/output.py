"""The output a run writes: its ``Sink`` and, for an ``s3://`` or ``gs://`` output, the mirror
that makes it survive the machine (``store.remote``).

A remote output is written as a local one is, in its work folder (``--work-dir``): the journal
stays local and fsynced. Before the sink opens, the mirror pulls what earlier runs left on the
store (the final file, every sealed journal segment), so a run on a new machine resumes from
there. While rows land, the journal's new lines are sealed and uploaded as segments (every
``--segment-rows`` rows or ``--segment-seconds`` seconds, off the event loop). The final file
is one upload, made only once it is complete; the segments are removed after it (unless
``--keep-journal``). A stopped run's partial file stays local: the store keeps the segments.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from batchrun.config.load import RunConfig
from batchrun.store.sink import PriorState, Sink

if TYPE_CHECKING:
    from batchrun.store.remote import RemoteOutput, Segmenter


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
        self.sink = Sink(config.output, config.keep_columns)
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


def _remote_output(config: RunConfig) -> RemoteOutput:
    # Imported here: a local output has no use for the storage layer (pyarrow.fs).
    from batchrun.store.remote import RemoteOutput
    from batchrun.store.storage import Storage, StorageSettings

    assert config.output_url is not None
    storage = Storage(StorageSettings(config.s3_endpoint, config.gcs_endpoint))
    storage.check_writable(config.output_url)
    remote = RemoteOutput(
        config.output_url,
        storage,
        work_dir=config.work_dir,
        cache_home=config.cache_home,
        keep_journal=config.keep_journal,
        rows_per_segment=config.segment_rows,
        seconds_per_segment=config.segment_seconds,
    )
    assert remote.local_output == config.output  # load_config named the same local copy
    return remote
