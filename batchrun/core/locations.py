"""Whether a location is a local path or an object-storage URL: told by its scheme alone, so
that code which only needs to know (config, the CLI) loads no storage library."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath

REMOTE_PREFIXES = ("s3://", "gs://")


def is_remote(location: str | PurePath | None) -> bool:
    """True for ``s3://`` and ``gs://`` URLs (``remote.objects`` reads them); a ``Path`` is
    always local (and could not hold ``//`` anyway)."""
    return isinstance(location, str) and location.lower().startswith(REMOTE_PREFIXES)


def storage_endpoints(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The S3 and GCS endpoints the AWS and Google tools would use from ``environ``
    (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``; ``STORAGE_EMULATOR_HOST``), None for
    the clouds themselves. Never a secret: credentials stay with the SDKs."""
    s3 = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None
    return s3, environ.get("STORAGE_EMULATOR_HOST") or None
