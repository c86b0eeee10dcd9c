"""Standard input as an input file: ``batchrun run - -o out.parquet``.

A run reads its input more than once (the resume check, the rows, the count at a stop) and
stamps its bytes so that a re-run can trust what it answered; a pipe can be read once. So the
piped bytes are first copied to a hidden file beside the output, named for what they hold::

    out/.labels.parquet.stdin.jsonl       JSON lines piped in
    out/.labels.parquet.stdin.csv.gz      a gzipped CSV file piped in

and the run reads that file like any other. A re-run with the same bytes piped finds the file
unchanged (it is not rewritten) and resumes; different bytes replace it, and the resume check
then tells which earlier answers still hold. The file stays after the run: it is the input the
output was made from.

The format, unless ``--format`` gives it, is told by the first bytes: gzip, bzip2 or zstd's
magic is looked through (the decompressed bytes are looked at), then each input format is
asked in turn (``registry.sniff_format``): Parquet's ``PAR1``; then, as text (decoded as a
byte-order mark says, else as ``--encoding``, else as UTF-8), ``[`` a JSON array; ``{`` JSON
lines; a first line with tabs and no comma TSV; anything else CSV. The copy is named with
the suffix of the format found.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import secrets
from pathlib import Path
from typing import IO

from batchrun.core.errors import InputError
from batchrun.formats.registry import input_named, sniff_input
from batchrun.rows.compressed import SUFFIX_OF, Compression, open_bytes, sniff

STDIN = "-"  # the SOURCE that means standard input
_CHUNK = 1 << 20
_HEAD = 1 << 16  # bytes looked at to tell the format


def spool_path_prefix(output: Path) -> str:
    """The start of the name of every file stdin is copied to for ``output``."""
    return f".{output.name}.stdin"


def spool_stdin(
    stream: IO[bytes], output: Path, input_format: str | None = None, encoding: str | None = None
) -> Path:
    """Copy ``stream`` to a hidden file beside ``output``; return that file.

    ``input_format`` (``--format``) names the file's format when given; otherwise its first
    bytes do (see the module's docstring), read as text in ``encoding`` (``--encoding``) when
    they have no byte-order mark. InputError for empty input.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    # Named like the sink's temporaries, so a run killed while copying leaves nothing for good.
    tmp = output.with_name(f".{output.name}.{os.getpid()}.{secrets.token_hex(6)}.stdin.tmp")
    try:
        digest, size = _copy(stream, tmp)
        if size == 0:
            raise InputError(
                "standard input is empty: pipe the rows in, e.g. "
                "`cat rows.jsonl | batchrun run - -o out.parquet`",
                file=STDIN,
            )
        compression = sniff(_head(tmp, None))
        named = input_named(input_format) if input_format else None
        if named is not None and input_format:
            fmt, said = named, input_format
        else:  # not said, or said wrong (the reader refuses that --format, naming it)
            fmt, said = sniff_input(_head(tmp, compression), encoding)
        name = spool_path_prefix(output) + fmt.suffix_for(said)
        name += SUFFIX_OF[compression] if compression else ""
        spooled = output.with_name(name)
        if _digest(spooled) != digest:
            os.replace(tmp, spooled)
        _remove_other_spools(output, keep=spooled)
        return spooled
    finally:
        tmp.unlink(missing_ok=True)


def _copy(stream: IO[bytes], target: Path) -> tuple[str, int]:
    """Write all of ``stream`` to ``target``, synced; its SHA-256 and size."""
    digest = hashlib.sha256()
    size = 0
    try:
        with target.open("wb") as out:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise InputError(
            f"cannot copy standard input to {target}: {exc.strerror or exc}", file=STDIN
        ) from exc
    return digest.hexdigest(), size


def _head(path: Path, compression: Compression | None) -> bytes:
    """The first bytes of ``path``, decompressed; what could be read of them if it is corrupt
    (the reader says what is wrong with it)."""
    try:
        with open_bytes(path, compression) as stream:
            return stream.read(_HEAD)
    except (OSError, InputError):
        return b""


def _digest(path: Path) -> str | None:
    """``path``'s SHA-256; None when there is no such file."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _remove_other_spools(output: Path, keep: Path) -> None:
    """Earlier copies of other input (another format's name): they are no longer the input."""
    pattern = glob.escape(spool_path_prefix(output)) + ".*"
    for path in output.parent.glob(pattern):
        if path != keep and not path.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                path.unlink()
