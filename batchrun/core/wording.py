"""How a message names a setting or the input: for the command line, or for Python.

The same mistake is fixed differently at a terminal and in a program: ``--max-tokens N`` is a
flag, ``max_tokens=N`` a keyword of ``batchrun.run`` (and a key of ``load_config``'s
settings); and the file ``batchrun.run(rows, ...)`` stages its rows in is a temporary one the
caller never named. So messages name settings with ``option`` and the input with
``shown_input`` (``InputError`` places a row with ``place``), and those ask who is reading:

* inside ``command_line(flags)``, which the ``batchrun`` command enters for each command
  (``cli.root``), settings are named by their flags;
* anywhere else it is Python: settings are named as keywords, ``key=VALUE``;
* inside ``rows_given(path)``, which ``batchrun.run(rows, ...)`` enters while its staged file is
  the job's input, that file is "the rows given to run()" and its row ``n`` is ``rows[n-1]``.

Both are context variables: they follow a run into its asyncio tasks and into
``asyncio.to_thread``, and a command line in one thread does not change how another thread's
Python calls are spoken to.

>>> option("max_tokens", "N")
'max_tokens=N'
>>> with command_line({"max_tokens": "--max-tokens"}):
...     option("max_tokens", "N"), option("dedup", False)
('--max-tokens N', '--no-dedup')
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from os import PathLike

ROWS_GIVEN = "the rows given to run()"
"""What the staged input of ``batchrun.run(rows, ...)`` is called in messages."""

# The command line's flag for each setting key; None: Python is reading.
_FLAGS: ContextVar[Mapping[str, str] | None] = ContextVar("batchrun_flags", default=None)
# The file batchrun.run(rows, ...) staged the caller's rows in, while it is the input.
_STAGED: ContextVar[str | None] = ContextVar("batchrun_staged_rows", default=None)


@contextmanager
def command_line(flags: Mapping[str, str]) -> Iterator[None]:
    """Messages made inside name settings by their command-line flags (``flags``: setting
    key -> flag; a key missing there is ``--`` and its name with dashes)."""
    token = _FLAGS.set(flags)
    try:
        yield
    finally:
        _FLAGS.reset(token)


def on_command_line() -> bool:
    """True inside ``command_line``: a person at a terminal reads the messages."""
    return _FLAGS.get() is not None


def option(key: str, value: object = None) -> str:
    """How to set ``key`` to ``value``, for whoever reads.

    ``--max-tokens N`` on the command line, ``max_tokens=N`` from Python. A value in capitals
    is a placeholder (``N``, ``MODEL``, ``FILE``), shown as it is; any other string is a
    literal, shell-quoted on the command line (``--template '{text}'``) and a Python string
    from Python (``template='{text}'``). True names a switch turned on (``--overwrite``,
    ``overwrite=True``), False turned off (``--no-dedup``, ``dedup=False``); None names the
    setting alone (``--max-cost``, ``max_cost``).
    """
    flags = _FLAGS.get()
    literal = isinstance(value, str) and not value.isupper()
    if flags is None:
        if value is None:
            return key
        return f"{key}={value!r}" if literal else f"{key}={value}"
    flag = flags.get(key) or "--" + key.replace("_", "-")
    if value is None or value is True:
        return flag
    if value is False:
        return "--no-" + flag.lstrip("-")
    if literal:  # escapes (a tab) as the command line takes them, then quoted for a shell
        return f"{flag} {shlex.quote(str(value).encode('unicode_escape').decode('ascii'))}"
    return f"{flag} {value}"


def said(cli: str, python: str) -> str:
    """``cli`` to a person at the command line, ``python`` to a Python caller: for advice
    that is a command there and a call here (```batchrun validate``` /
    ```batchrun.validate(config)```)."""
    return python if _FLAGS.get() is None else cli


def named(key: str) -> str:
    """A setting as a message names it beside its job-file key: ``keep_columns
    (--keep-column)`` on the command line, ``keep_columns`` from Python."""
    flags = _FLAGS.get()
    return key if flags is None else f"{key} ({option(key)})"


@contextmanager
def rows_given(path: str | PathLike[str]) -> Iterator[None]:
    """Messages made inside call the file at ``path`` "the rows given to run()", and its
    row (line) ``n`` ``rows[n-1]``: where the caller's own list or frame holds it."""
    token = _STAGED.set(str(path))
    try:
        yield
    finally:
        _STAGED.reset(token)


def shown_input(path: str | PathLike[str]) -> str:
    """The input file as a message names it: its path, or "the rows given to run()"."""
    text = str(path)
    return ROWS_GIVEN if text == _STAGED.get() else text


def place(file: str | None, row: int | None) -> str:
    """Where a problem is, for a message: ``file:row``, ``file``, ``row N``, or "" for
    nowhere; a row of the staged rows is ``rows[N-1]`` (its index in the caller's rows)."""
    if file is not None and file == _STAGED.get():
        return ROWS_GIVEN if row is None else f"rows[{row - 1}]"
    where = file or ""
    if row is not None:
        where = f"{where}:{row}" if where else f"row {row}"
    return where
