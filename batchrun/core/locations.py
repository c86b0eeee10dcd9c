"""Whether a location is a local path or an object-storage URL: told by its scheme alone, so
that code which only needs to know (config, the CLI) loads no storage library."""

from __future__ import annotations

from pathlib import PurePath

REMOTE_PREFIXES = ("s3://", "gs://")


def is_remote(location: str | PurePath | None) -> bool:
    """True for ``s3://`` and ``gs://`` URLs (``store.storage`` reads them); a ``Path`` is
    always local (and could not hold ``//`` anyway)."""
    return isinstance(location, str) and location.lower().startswith(REMOTE_PREFIXES)
