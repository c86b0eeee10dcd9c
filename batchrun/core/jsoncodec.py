"""Shared JSON encoders and decoders for the per-row hot path.

``json.dumps(x, separators=..., ensure_ascii=False)`` builds a new encoder on every call
whenever any option differs from the defaults; at thousands of rows a second, several per
row, that is measurable. These are built once.

``flat_line`` writes a journal line with orjson, about ten times quicker than the stdlib's
encoder on an output row (~0.7 us, not ~7). Only there: request bodies and their hashes,
and every text that lands in an output column (``content_json``), keep the stdlib's bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from json import encoder as _stdlib
from math import isfinite
from typing import Any

import orjson


def one_shot(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """``encoder.encode``, the same text and the same failures, without what ``encode``
    builds again on every call (a float formatter, the C encoder's set-up): ~1 us of the
    ~2.5 a small request body's JSON takes, and each row has one or two.

    What ``JSONEncoder.iterencode(_one_shot=True)`` does, spelled out once: a C encoder
    made with the encoder's own options and a fresh ``markers`` table per call (so a
    circular value fails as it does there). Where the stdlib has no C encoder, or would not
    use it (``indent``), ``encoder.encode`` itself."""
    make: Any = getattr(_stdlib, "c_make_encoder", None)  # not in typeshed: private
    if make is None or encoder.indent is not None:
        return encoder.encode
    escape = _stdlib.encode_basestring_ascii if encoder.ensure_ascii else _stdlib.encode_basestring
    options = (
        encoder.default,
        escape,
        None,
        encoder.key_separator,
        encoder.item_separator,
        encoder.sort_keys,
        encoder.skipkeys,
        encoder.allow_nan,
    )
    circular = encoder.check_circular

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return encoder.encode(value)  # its own short way
        return "".join(make({} if circular else None, *options)(value, 0))

    # The C encoder is the stdlib's own, not a public API: should a Python make it otherwise,
    # this is encode() again rather than other bytes.
    probe = {"b": [1, 2.5, "é\n", None, True], "a": {}}
    try:
        same = encode(probe) == encoder.encode(probe)
    except Exception:
        same = False
    return encode if same else encoder.encode


_COMPACT = one_shot(json.JSONEncoder(ensure_ascii=False, separators=(",", ":")))


def compact(value: Any) -> str:
    """Compact JSON text without ASCII escapes: smaller bodies and journal lines."""
    return _COMPACT(value)


# orjson writes a str, int, bool, None or finite float as ``compact`` does, up to the
# spelling of a float's exponent (``2.05e-5``, not ``2.05e-05``: the same number read
# back). Exact types only: a subclass (an IntEnum, numpy's float64) is written by the
# stdlib encoder, as it always was.
_FLAT = (
    orjson.OPT_APPEND_NEWLINE
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def flat_line(record: Mapping[str, Any]) -> bytes | None:
    """``compact(record) + "\n"`` as UTF-8, the same values read back, for a flat record
    (every value a str, int, float, bool or None), which every journal line is; None where
    orjson would not write the same values, for the stdlib's encoder to write as it always
    did (and fail as it always did): a nested or odd value, NaN and the infinities (orjson
    writes null), an integer beyond 64 bits, a key that is no string, a lone surrogate."""
    for value in record.values():  # most are None, text or ints: decided first
        if value is None:
            continue
        kind = value.__class__
        if kind is str or kind is int:
            continue
        if kind is float:
            if not isfinite(value):
                return None
        elif kind is not bool:
            return None
    try:
        return orjson.dumps(record, option=_FLAT)
    except orjson.JSONEncodeError:  # a big int, a lone surrogate, a key that is no str
        return None


# A run of 19 digits: an integer orjson might read as a float (it reads those beyond 64 bits
# so), or a long decimal: either way, the stdlib reads the line. Found by turning every
# digit into 0 and looking for 19 of them (a tenth of a regular expression's time).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


def parse(data: bytes) -> Any:
    """``json.loads(data)``, the same values, read by orjson where it reads them the same
    (about three times quicker): a Message Batch's result lines, 100,000 to a batch. What
    orjson refuses (NaN and the infinities, a lone surrogate's escape, a byte-order mark,
    bytes that are not UTF-8) and any line with a number it might read otherwise are read by
    the stdlib, which succeeds or fails as it always did."""
    if data.translate(_DIGITS_AS_ZERO).find(_LONG_NUMBER) < 0:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)
