"""``core.memory``: the C heap's free pages go back to the system where glibc can do it."""

from __future__ import annotations

import ctypes.util
import sys

import pytest

from batchrun.core import memory


def test_glibc_is_asked_for_its_free_pages_and_other_libraries_are_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memory._malloc_trim.cache_clear()
    if sys.platform.startswith("linux") and ctypes.util.find_library("c") == "libc.so.6":
        assert memory._malloc_trim() is not None  # glibc: malloc_trim is there
    memory.give_back_freed_memory()  # and returns, whatever the C library
    memory._malloc_trim.cache_clear()
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert memory._malloc_trim() is None  # no C library found: nothing is called
    memory.give_back_freed_memory()
    memory._malloc_trim.cache_clear()
