"""``core.jsoncodec.one_shot``: an encoder's ``encode``, the same text and the same
failures, for the request bodies whose bytes resume's hashes are made of; and
``core.jsoncodec.parse``: ``json.loads``, the same values and the same failures, for a
Message Batch's result lines."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import pytest

from batchrun.core.jsoncodec import compact, one_shot, parse


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


ENCODERS = [
    json.JSONEncoder(ensure_ascii=False, separators=(",", ":")),
    json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default
    ),
    json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default),
    json.JSONEncoder(),  # ASCII escapes, default separators
    json.JSONEncoder(check_circular=False, skipkeys=True),
    json.JSONEncoder(indent=2),  # the stdlib's own path
]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**63, -(2**70), 10**30])
    if kind == 2:
        return rng.choice([0.1, -0.0, 1e16, 2.05e-05, 1e300, 5e-324])
    if kind in (3, 4, 5):
        return rng.choice(["", "plain", 'q"\\', "\n\t\x00\x7f", "é 中文 🙂", "\u2028"])
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return tuple(_random_value(rng, depth + 1) for _ in range(rng.randrange(3)))
    keys = ["model", "b", "a", "é", "messages", "Z"]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def _outcome(encode: Callable[[Any], str], value: Any) -> tuple[str, str]:
    try:
        return "ok", encode(value)
    except Exception as exc:  # the failure, as the caller sees it
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_same_text_as_encode_over_random_values(encoder: json.JSONEncoder) -> None:
    rng = random.Random(26)
    fast = one_shot(encoder)
    for _ in range(3000):
        value = _random_value(rng)
        assert _outcome(fast, value) == _outcome(encoder.encode, value)


def _circular() -> dict[str, Any]:
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = [loop]
    return loop


def _deep() -> list[Any]:
    value: list[Any] = []
    for _ in range(100_000):
        value = [value]
    return value


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize(
    "value",
    [
        {"x": math.nan},
        [math.inf],
        {"when": object()},
        {1: "int key", "a": 2},  # sort_keys with mixed keys: TypeError
        {(1, 2): "tuple key"},
        MappingProxyType({"b": 1, "a": [MappingProxyType({"c": None})]}),
        {"bytes": b"x"},
        "top-level text é",
        12,
        None,
    ],
)
def test_the_same_failures_as_encode(encoder: json.JSONEncoder, value: Any) -> None:
    assert _outcome(one_shot(encoder), value) == _outcome(encoder.encode, value)


@pytest.mark.parametrize("encoder", ENCODERS[:3])
def test_circular_and_deep_values_fail_alike_and_the_encoder_stays_usable(
    encoder: json.JSONEncoder,
) -> None:
    fast = one_shot(encoder)
    for value in (_circular(), _deep()):
        assert _outcome(fast, value) == _outcome(encoder.encode, value)
    # a failure leaves nothing behind: the next value encodes as before
    assert fast({"a": [1, {"b": 2}]}) == encoder.encode({"a": [1, {"b": 2}]})


def test_compact_is_the_stdlib_s_compact_text() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        value = _random_value(rng)
        expected = _outcome(
            lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":")), value
        )
        assert _outcome(compact, value) == expected


def test_without_the_stdlib_s_c_encoder_it_is_encode_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    assert one_shot(encoder) == encoder.encode

    def other(*args: Any) -> Any:  # a Python whose C encoder takes other arguments
        raise TypeError("other arguments")

    monkeypatch.setattr(json.encoder, "c_make_encoder", other)
    assert one_shot(encoder) == encoder.encode


def _read(reader: Callable[[bytes], Any], data: bytes) -> tuple[str, Any]:
    try:
        return "ok", reader(data)
    except ValueError:  # what the results reader turns into a malformed response
        return "ValueError", None


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0 here), NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_parse_reads_random_lines_as_json_loads_does() -> None:
    rng = random.Random(32)
    for _ in range(3000):
        data = json.dumps(_random_value(rng), ensure_ascii=rng.random() < 0.5).encode()
        fast, slow = _read(parse, data), _read(json.loads, data)
        assert fast[0] == slow[0] and _same(fast[1], slow[1]), data


@pytest.mark.parametrize(
    "data",
    [
        b'{"n": 123456789012345678901234567890}',  # beyond 64 bits: orjson reads a float
        b'{"n": -9223372036854775809}',
        b'{"n": 18446744073709551616}',
        b'{"n": 9223372036854775807, "m": -9223372036854775808}',
        b'{"x": 0.12345678901234567891}',
        b'{"n": NaN, "i": Infinity, "j": -Infinity}',  # orjson refuses these
        b'{"x": 1e400}',
        b'{"s": "\\ud83d half an emoji"}',  # a lone surrogate's escape
        b'\xef\xbb\xbf{"a": 1}',  # a byte-order mark
        b'{"a": 1, "a": 2}',  # the last wins, both ways
        b'{"s": "\xff"}',  # not UTF-8: both fail
        b'{"a": ',  # cut short: both fail
        b'[1, 2.0, -0.0, true, null, "\\u00e9"]',
    ],
)
def test_parse_reads_what_orjson_reads_otherwise_as_json_loads_does(data: bytes) -> None:
    fast, slow = _read(parse, data), _read(json.loads, data)
    assert fast[0] == slow[0] and _same(fast[1], slow[1])
