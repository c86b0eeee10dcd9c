"""An upload killed midway (a real process, killed) leaves no object on S3 (storage:
tests/integration/test_storage.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from support.s3_server import (
    MotoServer,
)

from batchrun.remote.objects import (
    Storage,
)

_KILLED_UPLOAD = """
import sys, time
from batchrun.remote.objects import Storage, StorageSettings
class Slow:
    sent = 0
    def read(self, size=-1):
        if self.sent:
            print("midway", flush=True)
            time.sleep(60)
        self.sent += 1
        return b"x" * (6 << 20)
Storage(StorageSettings(sys.argv[1]), chunk_bytes=6 << 20).upload_from(Slow(), sys.argv[2])
"""


def test_upload_killed_midway_leaves_no_object(moto: MotoServer, s3: Storage, bucket: str) -> None:
    url = f"s3://{bucket}/killed.parquet"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED_UPLOAD), moto.endpoint, url],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"midway\n"  # a first part is uploaded
    child.kill()
    child.wait()
    child.stdout.close()
    assert not s3.exists(url)
    assert s3.list(f"s3://{bucket}/") == []
