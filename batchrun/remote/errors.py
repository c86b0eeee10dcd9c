"""The errors of object storage, apart from the code that raises them: a caller that only
catches them (a local run's driver) imports this, not pyarrow's filesystems."""

from __future__ import annotations

from batchrun.core.errors import BatchrunError, OutputError


class StorageError(BatchrunError):
    """A file or object could not be read, written, listed or deleted.

    ``url`` is the location as it may be shown, ``action`` what was tried ("read",
    "write", ...), ``reason`` what failed, in words (``NO_SUCH_BUCKET``, ...). A
    BatchrunError, not an OutputError: inputs, price tables and job files are read
    through storage too, and "the output cannot be written" would misname those.
    """

    def __init__(self, url: str, action: str, reason: str, hint: str = "") -> None:
        self.url = url
        self.action = action
        self.reason = reason
        message = f"cannot {action} {url}: {reason}"
        super().__init__(f"{message}; {hint}" if hint else message)


class LeaseLostError(OutputError):
    """Another run took the output's lease over from this one while it ran."""
