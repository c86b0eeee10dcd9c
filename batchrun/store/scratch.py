"""A run's scratch folder: where what would not fit in a bounded memory is spilled.

Made on first use only (most runs never spill), beside the output's journal, so it is on a
disk known to take the run's writes (a system temporary folder may be small, or memory). Its
name is a temporary's (``commit.temporary_path``): a run killed before ``close`` leaves it,
and the next run of the output removes it under the lock (``commit.remove_stale``).

    scratch = Scratch(Path("out/labels.parquet"))
    path = scratch.path / "entries.arrow"   # the folder exists from here on
    scratch.close()                         # removed with what it holds
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from batchrun.core.errors import OutputError
from batchrun.store.commit import TMP_SUFFIX, remove_temporary, temporary_path

SCRATCH_SUFFIX = ".scratch" + TMP_SUFFIX


class Scratch:
    """A private folder beside ``beside`` (an output); None: in the system's temporary folder
    (a caller with no output of its own)."""

    def __init__(self, beside: Path | None = None) -> None:
        self._beside = beside
        self._path: Path | None = None

    @property
    def used(self) -> bool:
        return self._path is not None

    @property
    def path(self) -> Path:
        """The folder, made now if it is not there yet."""
        if self._path is None:
            try:
                if self._beside is None:
                    self._path = Path(tempfile.mkdtemp(prefix="batchrun-scratch-"))
                else:
                    path = temporary_path(self._beside, SCRATCH_SUFFIX)
                    path.mkdir(mode=0o700)
                    self._path = path
            except OSError as exc:
                where = self._beside.parent if self._beside is not None else "the temp folder"
                raise OutputError(
                    f"cannot make a scratch folder in {where}: {exc.strerror or exc}"
                ) from exc
        return self._path

    def close(self) -> None:
        """Remove the folder and what it holds (nothing to do if it was never made)."""
        path, self._path = self._path, None
        if path is not None:
            remove_temporary(path)
