"""``@FILE`` values: a setting read from a file (``--system @prompt.txt``, ``--tools @tools.json``).

One reader for every setting that takes a file this way, the text settings (``system``,
``template``: ``load_config``) and the JSON ones (``tools``, ``thinking``, ...: the command
line's JSON flags) alike. A value that starts with ``@`` names a file, and the file's text
(UTF-8, as it is) is the value; a value that starts with ``@@`` is text that starts with one
``@`` (``--system '@@channel: ...'`` sends ``@channel: ...``). A value naming no file it can
read is refused with the reason: sending the name itself as the prompt would be wrong without
a word.

    at_file("@prompt.txt")    # "prompt.txt"
    at_file("@@handle")       # None: a literal, which literal() makes "@handle"
"""

from __future__ import annotations

import difflib
import itertools
from pathlib import Path

from batchrun.core.errors import ConfigError

ESCAPE = "@@"
"""What a text value that starts with ``@`` is written as."""


class AtFileError(ConfigError):
    """An ``@FILE`` value names a file that cannot be read as UTF-8 text."""


def at_file(value: str) -> str | None:
    """The file name ``value`` gives as ``@NAME``; None when ``value`` is a literal."""
    if value.startswith(ESCAPE) or not value.startswith("@"):
        return None
    return value[1:]


def literal(value: str) -> str:
    """A literal value as meant: ``@@x`` is ``@x``; anything else is itself."""
    return value[1:] if value.startswith(ESCAPE) else value


def read_at_file(name: str, path: Path) -> str:
    """The text of ``path``, which ``@name`` named; AtFileError saying why it cannot be read.

    The message starts ``cannot read NAME: ...``; the caller adds which setting asked.
    """
    shown = name if str(path) == name else f"{name} ({path})"
    if not name.strip():
        raise AtFileError("@ must be followed by a file name")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AtFileError(f"cannot read {shown}: no such file{_near(path)}") from None
    except IsADirectoryError:
        raise AtFileError(f"cannot read {shown}: it is a folder, not a file") from None
    except OSError as exc:
        raise AtFileError(f"cannot read {shown}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        byte = data[exc.start]
        raise AtFileError(
            f"cannot read {shown}: not UTF-8 text (byte 0x{byte:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None


def _near(path: Path) -> str:
    """`` (did you mean `prompt.txt`?)`` when a file beside ``path`` has a name close to its."""
    try:
        names = [entry.name for entry in itertools.islice(path.parent.iterdir(), 10_000)]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.75)
    return f" (did you mean `{close[0]}`?)" if close else ""
