"""Secrets the tests plant (an API key, a gateway's token), and how they look for them: a
secret must show nowhere, whole or in part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchrun.core.scrub import PARTIAL_MIN

KEY = "sk-ant-SECRET-canary-7f3a9c"  # a run's API key


def everything_written(folder: Path) -> bytes:
    """Every byte of every file under ``folder``: where a run's secrets must not be."""
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


TOKEN = "gw-tok-1f2e3d4c5b6a-canary-0099"  # a gateway's bearer token
ENV_OF = {"x-api-key": "ANTHROPIC_API_KEY", "bearer": "ANTHROPIC_AUTH_TOKEN"}
VALUE_OF = {"x-api-key": KEY, "bearer": TOKEN}


def assert_hidden(text: str, *values: str) -> None:
    """No value, and no piece of one ``PARTIAL_MIN`` long, is in ``text``."""
    for value in values:
        for start in range(len(value) - PARTIAL_MIN + 1):
            assert value[start : start + PARTIAL_MIN] not in text, (value, text)


def quoting_envelope(kind: str, status: int) -> dict[str, Any]:
    """An API error envelope that quotes the ``kind`` of credential it was sent, whole and cut."""
    value = VALUE_OF[kind]
    where = "x-api-key" if kind == "x-api-key" else "Authorization: Bearer"
    error_type = "authentication_error" if status == 401 else "invalid_request_error"
    return {
        "type": "error",
        "error": {
            "type": error_type,
            "message": f"invalid {where} {value} (seen as {value[:16]}...)",
            "details": {"error_code": f"bad_credential:{value}"},
        },
        "request_id": f"req_{value}",
    }
