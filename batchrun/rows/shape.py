"""How to read an input beyond what its name says (``--format``, ``--csv-delimiter``,
``--encoding``), what a compression suffix says (``reviews.jsonl.gz``), and what a file was
found to be (:class:`InputKind`).

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
    (``--format``), ``delimiter`` is a CSV input's field delimiter (``--csv-delimiter``),
    ``encoding`` the text encoding of a file with no byte-order mark (``--encoding``)."""

    format: str | None = None
    delimiter: str | None = None
    encoding: str | None = None


@dataclass(frozen=True)
class InputKind:
    """What an input file is: its format (the name of its ``batchrun.formats`` input format),
    its compression (None: plain), for CSV the field delimiter, and the text encoding it is
    decoded with (a codec name: its byte-order mark's, else ``--encoding``'s, else UTF-8).
    ``encoding_given`` is whether the encoding was told (a BOM or ``--encoding``) rather than
    assumed; an assumed UTF-8 is checked (``rows.text.check_text``). ``text`` is False for a
    format that is not text (Parquet): no encoding applies to it."""

    format: str
    compression: Compression | None = None
    delimiter: str = ","
    encoding: str = "utf-8"
    encoding_given: bool = False
    text: bool = True


def split_suffix(name: str) -> tuple[str, Compression | None]:
    """``name`` without a compression suffix, and the codec the suffix names (or None):
    ``("reviews.jsonl", "gzip")`` for ``reviews.jsonl.gz``."""
    lowered = name.lower()
    for suffix, codec in SUFFIXES.items():
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], codec
    return name, None


def check_encoding(name: str) -> str:
    """``name``, when Python reads text in that encoding; ValueError saying why not."""
    try:
        "\n".encode(name)  # a codec that is not for text (base64) fails this too
    except LookupError:
        raise ValueError(f"{name!r} is not a text encoding Python knows") from None
    return name
