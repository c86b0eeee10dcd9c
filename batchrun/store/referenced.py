"""The files rows referred to, as they were when requests were built from them: what a resume
checks, and nothing else beside the input, before it trusts earlier answers wholesale.

A request embeds the files its row attaches (their bytes are in the body, so in its hash:
docs/design.md §6.3). A resume that takes earlier answers from their records without building
their requests again (``store.resume``) must know that those files did not change. The folder
rows may refer to (the input's, or ``--media-root``) may hold hundreds of thousands of other
files, on a network file system too; so instead of that folder, each run appends every file a
request is built from (``rows.files.FileUse``: the reference as the row gave it, the real path
it resolved to, and its size, times and inode) to ``OUTPUT.files``, one JSON line each, before
the request is sent. The next resume resolves each reference again and compares
(``unchanged``): its cost is the files the job used, not the folder.

A line is written straight to the file before its request goes, as the journal's are, so a
``kill -9`` loses none that a journaled answer depends on. A run that checks every answered
row's request (the checked path) writes the files those rows use now into a new log, which
replaces the old one once the check passed (``rebuilt``): a file edited, and its rows sent
again, does not keep later resumes on the checked path. The run state records the log's size
before its run sends anything; a log found shorter than that (removed, cut) vouches for nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from batchrun.core.errors import OutputError
from batchrun.rows.files import FileUse, MediaSource, still_same

FILES_SUFFIX = ".files"
# Uses written recently, not written again: a file every row attaches is one line per run.
_RECENT = 65_536


def files_path(output: Path) -> Path:
    return output.with_name(output.name + FILES_SUFFIX)


class FileLog:
    """Appends each file use to the log at ``path`` (``record``: a ``rows.files.FileCache``'s
    ``on_use``), once among the last ``_RECENT`` recorded.

        cache = FileCache(on_use=FileLog(files_path(output)).record)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._recent: set[FileUse] = set()

    def record(self, use: FileUse) -> None:
        """Append ``use`` before the request built from it is sent. OutputError when it
        cannot be written: that row is then not sent (``engine.outcome.prepare``)."""
        if use in self._recent:
            return
        line = json.dumps({"ref": use.ref, "real": use.real, "stamp": use.stamp}) + "\n"
        data = memoryview(line.encode())
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                while data:
                    data = data[os.write(fd, data) :]
            finally:
                os.close(fd)
        except OSError as exc:
            raise OutputError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc
        if len(self._recent) >= _RECENT:
            self._recent.clear()
        self._recent.add(use)


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def unchanged(path: Path, root: Path | MediaSource, size: int) -> bool:
    """Whether every file the log at ``path`` records still is what it was, under ``root``
    (``rows.files.still_same``), and the log holds at least the ``size`` bytes a run saw in
    it. False when a line cannot be read: then the rows are checked one by one."""
    if log_size(path) < size:
        return False
    if size == 0 and not path.exists():
        return True
    checked: set[FileUse] = set()
    try:
        with path.open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                data = json.loads(line)
                real = data["real"]
                use = FileUse(
                    str(data["ref"]), None if real is None else str(real), str(data["stamp"])
                )
                if use not in checked:
                    if not still_same(use, root):
                        return False
                    checked.add(use)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


@contextlib.contextmanager
def rebuilt(path: Path) -> Iterator[FileLog]:
    """A new log for ``path``, written aside and put in its place when the ``with`` ends
    without an error; after an error it is dropped and the old log stays."""
    aside = path.with_name(f".{path.name}.tmp")
    aside.unlink(missing_ok=True)
    try:
        yield FileLog(aside)
        if aside.exists():
            os.replace(aside, path)
        else:
            path.unlink(missing_ok=True)  # no answered row refers to any file now
    finally:
        aside.unlink(missing_ok=True)
