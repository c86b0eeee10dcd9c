"""Putting a final output in place: a folder swapped in whole.

A folder output (a Parquet dataset, ``formats.parquet_dataset``) is built in a hidden
sibling folder and swapped into place whole (``replace_folder``: one rename exchange on
Linux), and the old folder removed. Why the whole folder rather than new parts beside the old
ones: a reader that lists the folder would then see both outputs' parts for as long as the
publish takes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import glob
import os
import secrets
import shutil
from pathlib import Path

from batchrun.core.errors import OutputError
from batchrun.formats.registry import folder_output, output_for

ASIDE_SUFFIX = ".old"  # an old folder output moved aside while the new one is swapped in


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


def aside_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.{os.getpid()}.{secrets.token_hex(6)}{ASIDE_SUFFIX}")


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
        aside = aside_path(output)
        os.replace(output, aside)
        os.replace(new, output)
        _remove(aside)
    _fsync_dir(output.parent)


def recover_aside(output: Path) -> None:
    """After a crash between ``replace_folder``'s two renames: the old output back in place
    when none is; leftovers removed. Only under the output's lock."""
    asides = sorted(output.parent.glob(f".{glob.escape(output.name)}.*{ASIDE_SUFFIX}"))
    for aside in asides:
        if not output.exists() and _whole(aside):
            os.replace(aside, output)
        else:
            _remove(aside)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        _fsync_file(path)


def _whole(folder: Path) -> bool:
    """Whether ``folder`` holds a whole output of the folder format."""
    try:
        return folder_output().exists(folder)
    except OutputError:
        return False


def remove_output(path: Path) -> None:
    """Remove an output (``--overwrite``), a file or a folder, as its format removes it: a
    folder holding files but no manifest is refused (``-o ~/work/ --overwrite`` must not
    remove a folder batchrun did not write)."""
    folder = path.is_dir() and not path.is_symlink()
    (folder_output() if folder else output_for(path)).remove(path)
