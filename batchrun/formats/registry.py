"""The registry: every format of this package, found by looking at its modules, and the
questions callers ask of them.

The package's modules are imported on the first question (each module whose name does not
start with ``_``; ``FORMATS`` lists its formats), so a format is known by being a module
here. Two formats claiming one name or suffix is a mistake said at once, naming both.

Lists shown to people (``--format`` choices, the suffixes an output may have) follow the
formats' ``rank``.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from batchrun.formats.base import Head, InputFormat, OutputFormat
from batchrun.formats.marks import Partial

_PACKAGE = __name__.rpartition(".")[0]


@dataclass(frozen=True)
class _Known:
    inputs: tuple[InputFormat, ...]
    outputs: tuple[OutputFormat, ...]


@functools.cache
def _known() -> _Known:
    """Every format the package's modules list, checked for clashes, in ``rank`` order."""
    package = importlib.import_module(_PACKAGE)
    inputs: list[tuple[InputFormat, str]] = []
    outputs: list[tuple[OutputFormat, str]] = []
    for found in pkgutil.iter_modules(package.__path__):
        if found.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_PACKAGE}.{found.name}")
        for fmt in getattr(module, "FORMATS", ()):
            if isinstance(fmt, InputFormat):
                inputs.append((fmt, module.__name__))
            elif isinstance(fmt, OutputFormat):
                outputs.append((fmt, module.__name__))
            else:
                raise TypeError(f"{module.__name__}.FORMATS holds {fmt!r}, which is no format")
    _unclashed((name, where) for fmt, where in inputs for name in (*fmt.names, *fmt.suffixes))
    _unclashed((fmt.name, where) for fmt, where in outputs)
    _unclashed((suffix, where) for fmt, where in outputs for suffix in fmt.suffixes)
    inputs.sort(key=lambda pair: (pair[0].rank, pair[0].name))
    outputs.sort(key=lambda pair: (pair[0].rank, pair[0].name))
    return _Known(tuple(f for f, _ in inputs), tuple(f for f, _ in outputs))


def _unclashed(claims: Iterable[tuple[str, str]]) -> None:
    seen: dict[str, str] = {}
    for claim, where in claims:
        if claim in seen:
            raise RuntimeError(f"formats of {seen[claim]} and {where} both claim {claim!r}")
        seen[claim] = where


def said(items: Sequence[str], conjunction: str = "or") -> str:
    """``.parquet, .jsonl or .csv``: a list as a sentence says it."""
    if len(items) < 2:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


# -- inputs -----------------------------------------------------------------------------------


def input_formats() -> tuple[InputFormat, ...]:
    return _known().inputs


def input_names() -> tuple[str, ...]:
    """What ``--format`` takes: every input format's names."""
    return tuple(name for fmt in input_formats() for name in fmt.names)


def input_name_suffixes() -> tuple[str, ...]:
    """A suffix for each ``--format`` name (``.jsonl, .json, .csv, .tsv, .parquet``)."""
    return tuple(fmt.suffix_for(name) for fmt in input_formats() for name in fmt.names)


def input_suffixes() -> tuple[str, ...]:
    """Every name ending an input format claims."""
    return tuple(suffix for fmt in input_formats() for suffix in fmt.suffixes)


def input_named(name: str) -> InputFormat | None:
    """The input format ``--format NAME`` (or ``InputKind.format``) means; None: none."""
    for fmt in input_formats():
        if name in fmt.names:
            return fmt
    return None


def input_by_suffix(name: str) -> tuple[InputFormat, str] | None:
    """The input format a file name (its compression suffix already taken off) says, and the
    suffix that says it (the longest that fits); None when no format claims it."""
    lowered = name.lower()
    best: tuple[InputFormat, str] | None = None
    for fmt in input_formats():
        for suffix in fmt.suffixes:
            if lowered.endswith(suffix) and (best is None or len(suffix) > len(best[1])):
                best = (fmt, suffix)
    return best


def sniff_format(head: bytes, encoding: str | None = None) -> str:
    """The name of the format a file starting with ``head`` (decompressed) is in
    (``sniff_input``)."""
    return sniff_input(head, encoding)[1]


def sniff_input(head: bytes, encoding: str | None = None) -> tuple[InputFormat, str]:
    """The format a file starting with ``head`` (decompressed) is in, and the name its
    ``sniff`` gives it: binary formats look at the bytes, text formats at the text (decoded
    as a byte-order mark says, else as ``encoding``, else as UTF-8), each in ``sniff_rank``
    order. The last format asked (CSV) takes whatever no other did."""
    start = Head(head, encoding)
    for fmt in sorted(input_formats(), key=lambda f: (f.sniff_rank, f.rank)):
        name = fmt.sniff(start)
        if name is not None:
            return fmt, name
    raise LookupError("no input format takes this file's start (none is the fallback)")


# -- outputs ----------------------------------------------------------------------------------


def output_formats() -> tuple[OutputFormat, ...]:
    return _known().outputs


def output_named(name: str) -> OutputFormat:
    """The output format ``--output-format NAME`` means; KeyError naming the known ones."""
    for fmt in output_formats():
        if fmt.name == name:
            return fmt
    known = said([fmt.name for fmt in output_formats()])
    raise KeyError(f"no output format {name!r} (there are {known})")


def file_suffixes() -> tuple[str, ...]:
    """The suffixes that say a single-file output format, in ``rank`` order."""
    return tuple(suffix for fmt in output_formats() for suffix in fmt.suffixes)


def output_by_suffix(path: Path) -> OutputFormat | None:
    """The single-file format ``path``'s suffix says; None when none claims it."""
    suffix = path.suffix.lower()
    for fmt in output_formats():
        if suffix in fmt.suffixes:
            return fmt
    return None


def folder_output() -> OutputFormat:
    """The folder format a name that ends with a slash says (the first in ``rank`` order)."""
    for fmt in output_formats():
        if fmt.folder:
            return fmt
    raise LookupError("no output format writes a folder")


def names_folder(text: str) -> bool:
    """Whether an output as the user wrote it names a folder: it ends with a slash."""
    return text.endswith("/") or text.endswith(os.sep)


def output_for(path: Path | str) -> OutputFormat:
    """The output's format, by its name: a name that ends with a slash (as given as text),
    and a folder on disk whose suffix says no file format (or is one its folder format
    takes, ``labels.parquet/``), or a name with no suffix, are the folder format; else the
    suffix's format. A ``pathlib.Path`` loses a trailing slash: a folder not written yet
    whose name has a suffix must be said (``--output-format``). A suffix no format claims is
    read as the ``fallback`` format's (JSON lines)."""
    if isinstance(path, str):
        if names_folder(path):
            return folder_output()
        path = Path(path)
    suffix = path.suffix.lower()
    by_suffix = output_by_suffix(path)
    if path.is_dir():
        folder = folder_output()
        if by_suffix is None or suffix in folder.folder_suffixes:
            return folder
    if by_suffix is not None:
        return by_suffix
    if not suffix:
        return folder_output()
    return next(fmt for fmt in output_formats() if fmt.fallback)


def read_partial(path: Path) -> Partial | None:
    """The partial mark of the output at ``path`` (``formats.marks``), by its format; None
    for a complete output, or none."""
    return output_for(path).read_mark(path)
