"""A request body as JSON for a person (``batchrun render``): files' base64 shortened."""

from __future__ import annotations

import json
from typing import Any

from batchrun.core.wording import option

KEPT_CHARS = 48  # of a long base64 file: enough to tell files apart at a glance
LONG_BASE64 = 256  # characters past which a file's data is shortened


def request_json(body: dict[str, Any], *, full: bool = False) -> str:
    """``body`` as indented JSON, valid as it is; unless ``full``, each base64 source's data
    past ``LONG_BASE64`` characters is cut to its start and a note of its length."""
    shown = body if full else _shortened(body)
    return json.dumps(shown, indent=2, ensure_ascii=False)


def _shortened(value: Any) -> Any:
    if isinstance(value, list):
        return [_shortened(v) for v in value]
    if not isinstance(value, dict):
        return value
    data = value.get("data")
    if value.get("type") == "base64" and isinstance(data, str) and len(data) > LONG_BASE64:
        note = f"... ({len(data):,} base64 characters in all; {option('full', True)} shows them)"
        return {**value, "data": data[:KEPT_CHARS] + note}
    return {key: _shortened(v) for key, v in value.items()}
