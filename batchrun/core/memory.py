"""Giving the heap's freed pages back to the system between a run's phases.

CPython keeps the memory its objects free (its own arenas, and glibc's heap under them), and
glibc gives back only what lies at the top of its heap. After a phase that made and dropped
millions of small objects (a million rows' results collected), tens of megabytes can stay
resident though free, and the next phase's peak stacks on them: a 1M-row batch job held
230 MB before its final step, 190 MB once glibc was asked to return its free pages
(``malloc_trim``), and the final step's peak came down by as much.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library is another (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def give_back_freed_memory() -> None:
    """Return the C heap's free pages to the system, where the C library can (glibc); a
    few milliseconds, and nothing in use is touched."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
