"""Arrow constants made straight from bytes, for the run path's compute calls.

pyarrow imports pandas (0.2-0.5 s) the first time it converts a Python value to Arrow
(``pa.scalar(0)``, ``pa.array([...])``, a Python int given to a compute function), to ask
whether the value is a pandas object. A run over files never holds one, so the constants its
compute calls need are built here from their bytes, which asks nothing of pandas: a job that
never sees a DataFrame never imports pandas.
"""

from __future__ import annotations

import functools
import struct
from array import array
from collections.abc import Sequence

import pyarrow as pa


@functools.lru_cache(maxsize=64)
def int64_scalar(value: int) -> pa.Scalar:
    """``value`` as an Arrow int64 scalar."""
    data = pa.py_buffer(struct.pack("<q", value))
    return pa.Array.from_buffers(pa.int64(), 1, [None, data])[0]


def strings(values: Sequence[str]) -> pa.Array:
    """``values`` as an Arrow string array (no nulls)."""
    encoded = [v.encode("utf-8") for v in values]
    offsets = [0]
    for item in encoded:
        offsets.append(offsets[-1] + len(item))
    offset_buffer = pa.py_buffer(struct.pack(f"<{len(offsets)}i", *offsets))
    return pa.Array.from_buffers(
        pa.string(), len(values), [None, offset_buffer, pa.py_buffer(b"".join(encoded))]
    )


@functools.lru_cache(maxsize=64)
def string_scalar(value: str) -> pa.Scalar:
    """``value`` as an Arrow string scalar."""
    return strings([value])[0]


@functools.lru_cache(maxsize=2)
def bool_scalar(value: bool) -> pa.Scalar:
    """``value`` as an Arrow boolean scalar."""
    data = pa.py_buffer(bytes([1 if value else 0]))
    return pa.Array.from_buffers(pa.bool_(), 1, [None, data])[0]


def int64_array(values: Sequence[int] | array[int]) -> pa.Array:
    """``values`` as an Arrow int64 array (no nulls)."""
    data = values if isinstance(values, array) and values.typecode == "q" else array("q", values)
    return int64_array_of(data)


def int64_array_of(data: bytes | array[int]) -> pa.Array:
    """Native int64s, packed in ``data``, as an Arrow int64 array (no nulls), without a copy."""
    count = memoryview(data).nbytes // 8
    return pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(data)])


def bools(values: Sequence[bool]) -> pa.Array:
    """``values`` as an Arrow boolean array (no nulls)."""
    bits = bytearray((len(values) + 7) // 8)
    for i, value in enumerate(values):
        if value:
            bits[i // 8] |= 1 << (i % 8)
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bytes(bits))])


def whole(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``values`` as one array: a lone chunk as it is, several combined (no chunk at all is
    an empty array of its type: combining none would import pandas)."""
    if isinstance(values, pa.ChunkedArray):
        if values.num_chunks == 0:
            return pa.nulls(0, values.type)
        return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    return values
