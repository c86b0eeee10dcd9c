"""Whether a location is a local path or an object-storage URL: told by its scheme alone, so
that code which only needs to know (config, the CLI) loads no storage library."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath

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


@dataclass(frozen=True)
class StorageSettings:
    """Where the object stores are: an S3 endpoint (``http://127.0.0.1:9000``) or None for
    AWS itself, a GCS endpoint (``http://127.0.0.1:4443``, used anonymously) or None for
    Google itself. Credentials stay with the cloud SDKs."""

    s3_endpoint: str | None = None
    gcs_endpoint: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> StorageSettings:
        """The endpoints from the variables the AWS and Google tools read (never a secret)."""
        return cls(*storage_endpoints(environ))


def cached_copy_path(url: str, cache_home: Path) -> Path:
    """Where the local copy of the remote input ``url`` is kept: a folder per URL (its
    SHA-256, the URL shown without credentials) under ``cache_home/batchrun/inputs``."""
    from batchrun.core.scrub import url_without_secrets

    digest = hashlib.sha256(url_without_secrets(url).encode()).hexdigest()[:16]
    name = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    return cache_home / "batchrun" / "inputs" / digest / name
