"""How to read an input beyond what its name says (``--format``, ``--csv-delimiter``), and
what a compression suffix says (``reviews.jsonl.gz``).

Its own module, importing nothing heavy, so that loading a config (``config.load``) loads no
reader and no Arrow: ``import batchrun; batchrun.load_config`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Compression = Literal["gzip", "bz2", "zstd"]

# The suffixes that say a file is compressed, and with what (compared lowercased).
SUFFIXES: dict[str, Compression] = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".bz2": "bz2",
    ".zst": "zstd",
    ".zstd": "zstd",
}


@dataclass(frozen=True)
class InputShape:
    """How to read an input beyond what its name says: ``format`` overrides the extension
    (``--format``), ``delimiter`` is a CSV input's field delimiter (``--csv-delimiter``)."""

    format: str | None = None
    delimiter: str | None = None


def split_suffix(name: str) -> tuple[str, Compression | None]:
    """``name`` without a compression suffix, and the codec the suffix names (or None):
    ``("reviews.jsonl", "gzip")`` for ``reviews.jsonl.gz``."""
    lowered = name.lower()
    for suffix, codec in SUFFIXES.items():
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], codec
    return name, None
