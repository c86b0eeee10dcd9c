"""Written files made durable: a file's data and a folder's entries synced to disk."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_file(path: Path) -> None:
    """A file's data to disk (OSError when it cannot be opened or synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """A folder's entries to disk (a rename in it is durable after this); a system that
    cannot sync a folder is let be."""
    with contextlib.suppress(OSError):
        fsync_file(path)
