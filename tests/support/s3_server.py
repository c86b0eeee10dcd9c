"""Real object-store servers for tests, on 127.0.0.1: moto's S3 server and a GCS emulator.

Each is a subprocess started on a free port, waited for until it answers, and stopped
(terminated, then killed if it lingers) on leaving::

    with MotoServer() as moto:
        moto.endpoint            # "http://127.0.0.1:PORT", for AWS_ENDPOINT_URL
        moto.create_bucket("b")

``MotoServer(auth=True)`` checks credentials (moto's ``INITIAL_NO_AUTH_ACTION_COUNT=0``):
made-up keys are refused, as AWS refuses them.
"""

from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.fs as pafs

from support.local_server import LocalServer, free_port

# Credentials for tests: moto accepts any; SECRET_KEY is what no message may show.
ACCESS_KEY = "AKIATESTBATCHRUN0001"
SECRET_KEY = "batchrunTESTsecretKEY/do+not+show0123456789"
REGION = "us-east-1"


def tool(name: str) -> Path | None:
    """A console script of this Python's environment (or on PATH), or None."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def aws_environment(endpoint: str, home: Path) -> dict[str, str]:
    """Environment variables that point the AWS SDK at ``endpoint`` with test credentials,
    and away from the user's own config files and the instance metadata service."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class _Server(LocalServer):
    """A server that answers HTTP once started."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str] | None = None) -> None:
        super().__init__(argv, port, env)
        self.endpoint = f"http://127.0.0.1:{port}"

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # an HTTP error is an answer
        except OSError:
            return False


class MotoServer(_Server):
    """``moto_server -H 127.0.0.1 -p PORT``; with ``auth``, credentials are checked."""

    def __init__(self, *, auth: bool = False) -> None:
        binary = tool("moto_server")
        if binary is None:
            raise RuntimeError("moto_server is not installed: pip install 'moto[server]'")
        port = free_port()
        env = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if auth else {}
        super().__init__([str(binary), "-H", "127.0.0.1", "-p", str(port)], port, env)

    def __enter__(self) -> MotoServer:
        super().__enter__()
        return self

    def filesystem(self, **options: object) -> pafs.S3FileSystem:
        """A pyarrow S3 filesystem on this server, with the test credentials."""
        return pafs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            endpoint_override=f"127.0.0.1:{self.port}",
            scheme="http",
            **options,
        )

    def create_bucket(self, name: str) -> None:
        self.filesystem(allow_bucket_creation=True).create_dir(name)


class GcsEmulator(_Server):
    """``gcp-storage-emulator start`` in memory, with one bucket: ``bucket``."""

    def __init__(self, bucket: str) -> None:
        binary = tool("gcp-storage-emulator")
        if binary is None:
            raise RuntimeError("gcp-storage-emulator is not installed")
        port = free_port()
        argv = [str(binary), "start", "-H", "127.0.0.1", "--port", str(port)]
        super().__init__([*argv, "--default-bucket", bucket, "-M"], port)
        self.bucket = bucket

    def __enter__(self) -> GcsEmulator:
        super().__enter__()
        return self


def gcs_emulator_available() -> bool:
    return tool("gcp-storage-emulator") is not None
