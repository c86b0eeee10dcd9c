"""Shared JSON encoders and decoders for the per-row hot path.

``json.dumps(x, separators=..., ensure_ascii=False)`` builds a new encoder on every call
whenever any option differs from the defaults; at thousands of rows a second, several per
row, that is measurable. These are built once.
"""

from __future__ import annotations

import json
from typing import Any

_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def compact(value: Any) -> str:
    """Compact JSON text without ASCII escapes: smaller bodies and journal lines."""
    return _COMPACT.encode(value)
