"""Putting a final output in place, for every writer of one: the sink's final step, a shard's
file and merge's output (``shards.run``), ``run --engine ray``'s output (``ray.job``) and a
dataset pulled from an object store (``runs.output``)::

    commit = Commit(Path("out/labels.parquet"), output_for(...), types=types)
    commit.check_space(need, needs="...", then="...")  # before anything is written
    with commit.building(partial) as tmp:              # beside the target, unique to the run
        with commit.writer(tmp, schema) as write:      # the format's, typing each chunk
            write(table)
    commit.committed                                   # what is in place now: Committed

A run's rows are text where they are typed in the output (the id, kept columns, the
structured answer: ``store.typed``); ``writer`` puts the types on as each chunk is written,
so every writer of a final output writes the same typed columns.

On leaving the ``with`` cleanly the new output is synced to disk and swapped in whole: a file
with one rename (``os.replace``), a folder with one rename exchange where the system can
(``replace_folder``); the folder holding it is synced after. A partial output of a format
that cannot carry its mark is marked beside it before the rename (``formats.marks``: the
mark names the file by its inode, which the rename keeps); a complete one's old mark goes.
On any failure (in the ``with``, or in the swap) the temporary output is removed and the old
output stands as it was.

Temporary names are ``.labels.parquet.<pid>.<hex>.tmp`` (``temporary_path``): no other run's
can be the same. A run killed midway leaves them; ``remove_stale`` removes them under the
output's lock, first putting back an old folder a crash left aside mid-swap.

Why a folder is swapped whole rather than new parts written beside the old ones: a reader
that lists the folder would then see both outputs' parts for as long as the publish takes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import glob
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchrun.core.disk import fsync_dir, fsync_file
from batchrun.core.errors import OutputError
from batchrun.formats.base import OutputFormat, Write, WriteOptions
from batchrun.formats.marks import Partial, clear_mark, mark_beside
from batchrun.formats.registry import folder_output, output_for
from batchrun.store.typed import OutputTypes

TMP_SUFFIX = ".tmp"  # a temporary output (file or folder), and a partial mark's
ASIDE_SUFFIX = ".old"  # an old folder output moved aside while the new one is swapped in
_TEMPORARY = re.compile(r"\.[0-9]+\.[0-9a-f]{12}(?:\.[\w-]+)?")  # .<pid>.<hex>[.<key>]


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


@dataclass(frozen=True)
class Committed:
    """A final output in place: where, in what format, and its partial mark (None:
    complete)."""

    path: Path
    format: OutputFormat
    partial: Partial | None = None


class Commit:
    """One final output of ``fmt`` built beside ``target`` and swapped in whole (see the
    module's docstring), its columns typed as ``types`` says (none: as written). ``free_space``
    tells the bytes free in a folder (a seam: tests make the disk small)."""

    def __init__(
        self,
        target: Path,
        fmt: OutputFormat,
        *,
        free_space: Callable[[Path], int] = free_bytes,
        types: OutputTypes | None = None,
    ) -> None:
        self.target = target
        self.format = fmt
        self.types = types
        self.temporary = temporary_path(target, TMP_SUFFIX)
        self.committed: Committed | None = None
        self.need: int | None = None  # bytes the output takes while it is built, if known
        self._free_space = free_space

    def check_space(self, need: int, *, needs: str, then: str) -> None:
        """OutputError before anything is written when the target's folder has fewer than
        ``need`` bytes free; silent when that cannot be told. ``needs`` says what the need is
        made of, ``then`` what to do."""
        self.need = need
        try:
            free = self._free_space(self.target.parent)
        except OSError:
            return  # cannot tell: try, and say what it needs if the disk fills
        if free < need:
            raise OutputError(
                f"not enough space to write {self.target}: the final step needs about "
                f"{_mib(need)} free in {self.target.parent} ({needs}), and {_mib(free)} are "
                f"free. {then}"
            )

    def short_of_space(self, exc: OSError) -> str:
        """What a full disk (``exc``) calls for: `` (the final step needs about 12.0 MiB free
        beside it)`` when the need is known; "" for any other error."""
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or self.need is None:
            return ""
        return f" (the final step needs about {_mib(self.need)} free beside it)"

    def writer(
        self, path: Path, schema: Any, options: WriteOptions | None = None
    ) -> AbstractContextManager[Write]:
        """The format's writer of a new output at ``path`` (``building``'s) for chunks of
        ``schema``, a run's text: each chunk is typed as ``types`` says on its way."""
        types = self.types
        if types is None or types.plain:
            return self.format.writer(path, schema, options)
        typed = types.schema(schema)
        return _typing(self.format.writer(path, typed, options), types, typed)

    @contextlib.contextmanager
    def building(self, partial: Partial | None = None) -> Iterator[Path]:
        """The temporary path to build the output at; swapped in on leaving cleanly (marked
        ``partial`` when given), removed on any failure."""
        try:
            yield self.temporary
            self._swap(partial)
        finally:
            remove_temporary(self.temporary)  # nothing is left there after a swap
        self.committed = Committed(self.target, self.format, partial)

    def _swap(self, partial: Partial | None) -> None:
        new, target = self.temporary, self.target
        if self.format.folder:
            _sync_folder(new)
            replace_folder(new, target)  # a partial mark is in the folder's own manifest
        else:
            fsync_file(new)
            if partial is not None and not self.format.marks_itself:
                mark = temporary_path(target, ".mark" + TMP_SUFFIX)
                try:
                    mark_beside(new, target, partial, mark)
                finally:
                    mark.unlink(missing_ok=True)
            os.replace(new, target)
            fsync_dir(target.parent)
        if partial is None:
            clear_mark(target)


@contextlib.contextmanager
def _typing(
    opened: AbstractContextManager[Write], types: OutputTypes, schema: Any
) -> Iterator[Write]:
    with opened as write:
        yield lambda table: write(types.typed(table, schema))


def temporary_path(output: Path, suffix: str) -> Path:
    """A hidden file beside ``output`` for one run's work, named so that no other run's
    (this process's id and a random part) can be the same: ``.labels.parquet.<pid>.<hex>.tmp``.
    """
    return output.with_name(f".{output.name}.{os.getpid()}.{secrets.token_hex(6)}{suffix}")


def remove_temporary(path: Path) -> None:
    """Remove a temporary file, or a temporary folder, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale(output: Path, suffixes: Sequence[str] = ()) -> list[Path]:
    """Remove the temporary files (``temporary_path``, ending with ``.tmp`` or one of
    ``suffixes``) that runs killed midway left beside ``output``; return them. Only for a
    caller holding the output's lock (``store.lock``): then no other run is using any."""
    removed = []
    recover_aside(output)  # a folder swap a crash cut in two: the old output back first
    for suffix in dict.fromkeys((TMP_SUFFIX, *suffixes)):
        for path in output.parent.glob(f".{glob.escape(output.name)}.*{suffix}"):
            if _TEMPORARY.fullmatch(path.name[len(output.name) + 1 : -len(suffix)]):
                with contextlib.suppress(OSError):
                    remove_temporary(path)  # a folder output's is a folder
                    removed.append(path)
    return removed


def remove_output(path: Path) -> None:
    """Remove an output (``--overwrite``), a file or a folder, as its format removes it: a
    folder holding files but no manifest is refused (``-o ~/work/ --overwrite`` must not
    remove a folder batchrun did not write). Its partial mark goes with it."""
    folder = path.is_dir() and not path.is_symlink()
    (folder_output() if folder else output_for(path)).remove(path)
    clear_mark(path)


# -- swapping a folder into place ---------------------------------------------------------


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the
    system has no such call, and the caller swaps in two renames."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    result = renameat2(_AT_FDCWD, bytes(a), _AT_FDCWD, bytes(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # this file system cannot
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_folder(new: Path, output: Path) -> None:
    """Put the complete dataset ``new`` (a sibling of ``output``) in ``output``'s place.

    An existing dataset is swapped out in one step where the system can (Linux), so a
    reader sees the old dataset or the new one, never neither; elsewhere it is renamed
    aside first, and ``recover_aside`` puts it back if a crash came between the renames.
    The old dataset is then removed."""
    if not output.exists():
        os.replace(new, output)
    elif output.is_dir() and _exchange(new, output):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old dataset
    else:
        aside = temporary_path(output, ASIDE_SUFFIX)
        os.replace(output, aside)
        os.replace(new, output)
        with contextlib.suppress(OSError):
            remove_temporary(aside)
    fsync_dir(output.parent)


def recover_aside(output: Path) -> None:
    """After a crash between ``replace_folder``'s two renames: the old output back in place
    when none is; leftovers removed. Only under the output's lock."""
    asides = sorted(output.parent.glob(f".{glob.escape(output.name)}.*{ASIDE_SUFFIX}"))
    for aside in asides:
        if not output.exists() and _whole(aside):
            os.replace(aside, output)
        else:
            with contextlib.suppress(OSError):
                remove_temporary(aside)


def _whole(folder: Path) -> bool:
    """Whether ``folder`` holds a whole output of the folder format."""
    try:
        return folder_output().exists(folder)
    except OutputError:
        return False


# -- syncing ----------------------------------------------------------------------------------


def _sync_folder(folder: Path) -> None:
    """Every file of a new folder output, then the folder, to disk (a folder format's writer
    may have synced them already: then this costs nothing)."""
    for path in folder.iterdir():
        if path.is_file():
            fsync_file(path)
    fsync_dir(folder)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"
