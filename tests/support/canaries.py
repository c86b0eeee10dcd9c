"""A secret the tests plant in a run, and where they look for it: it must show nowhere."""

from __future__ import annotations

from pathlib import Path

KEY = "sk-ant-SECRET-canary-7f3a9c"


def everything_written(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
