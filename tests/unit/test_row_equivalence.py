"""The lean per-row path gives the same output rows and journal bytes as the code it replaced.

``message_fields`` now fills a row in one pass over the content, ``as_message`` tests plain
dicts by exact type first, an online reply is checked once (``ok_row(checked=True)``), and
``Sink.holding`` writes many journal lines at once. The reference below is the earlier
``message_fields`` (and the checks it ran), kept verbatim as the specification: on a few
thousand varied replies (text, tool use, thinking, redacted thinking, refusals, odd blocks,
bad values of every kind) both give the same columns in the same order, or the same error.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from batchrun.client.response import MALFORMED, message_fields
from batchrun.core.errors import ApiResponseError
from batchrun.core.jsoncodec import compact
from batchrun.cost.prices import default_prices
from batchrun.engine.outcome import VIA_BATCHES, RowSettings, Work, ok_row, prepare
from batchrun.rows.reader import InputRow
from batchrun.rows.request import RequestDefaults
from batchrun.store.columns import COLUMN_NAMES, blank_row
from batchrun.store.sink import HELD_BYTES, Sink

# -- the reference: message_fields as it was -----------------------------------------------

_STRING_FIELDS = ("id", "model", "stop_reason", "stop_sequence")
_USAGE_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
_SPLIT_COUNTS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")


def _reference_malformed(message: str) -> ApiResponseError:
    return ApiResponseError(message, error_type=MALFORMED)


def _reference_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _reference_unfit(message: Mapping[str, Any]) -> str | None:
    for key in _STRING_FIELDS:
        value = message.get(key)
        if value is not None and not isinstance(value, str):
            return f"the message's {key} is {_reference_kind(value)}, not a string"
    usage: Mapping[str, Any] = message["usage"]
    split = usage.get("cache_creation")
    counts = [(f"usage.{key}", usage.get(key)) for key in _USAGE_COUNTS]
    if isinstance(split, Mapping):
        counts += [(f"usage.cache_creation.{key}", split.get(key)) for key in _SPLIT_COUNTS]
    for where, value in counts:
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{where} is {_reference_kind(value)}, not an integer"
        if not -(2**63) <= value <= 2**63 - 1:
            return f"{where} is beyond"  # (the digits are the same helper's: not compared)
    return None


def _reference_as_message(data: object) -> dict[str, Any]:
    if isinstance(data, Mapping) and data.get("type") == "error":
        raise ApiResponseError("envelope", error_type="envelope")
    if not isinstance(data, Mapping):
        raise _reference_malformed("the response is not a JSON object")
    if not isinstance(data.get("content"), list):
        raise _reference_malformed("the message has no content array")
    if not isinstance(data.get("usage"), Mapping):
        raise _reference_malformed("the message has no usage object")
    unfit = _reference_unfit(data)
    if unfit is not None:
        raise _reference_malformed(unfit)
    return data if isinstance(data, dict) else dict(data)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _strings(blocks: list[Mapping[str, Any]], block_type: str, key: str) -> list[str]:
    return [
        block[key]
        for block in blocks
        if block.get("type") == block_type and isinstance(block.get(key), str)
    ]


def reference_message_fields(message: Mapping[str, Any]) -> dict[str, Any]:
    checked = _reference_as_message(message)
    content: list[Any] = checked["content"]
    usage: Mapping[str, Any] = checked["usage"]
    blocks = [block for block in content if isinstance(block, Mapping)]
    try:
        content_json = compact(content)
        calls = [
            {"id": block.get("id"), "name": block.get("name"), "input": block.get("input")}
            for block in blocks
            if block.get("type") == "tool_use"
        ]
        tool_calls_json = compact(calls) if calls else None
    except (ValueError, TypeError, RecursionError) as exc:
        raise _reference_malformed(f"the message's content cannot be recorded ({exc})") from exc
    split = usage.get("cache_creation")
    got = split if isinstance(split, Mapping) else {}
    thinking = _strings(blocks, "thinking", "thinking")
    return {
        "model": checked.get("model"),
        "stop_reason": checked.get("stop_reason"),
        "stop_sequence": checked.get("stop_sequence"),
        "text": "".join(_strings(blocks, "text", "text")),
        "content_json": content_json,
        "thinking": "\n\n".join(thinking) if thinking else None,
        "redacted_thinking_blocks": sum(b.get("type") == "redacted_thinking" for b in blocks),
        "tool_calls_json": tool_calls_json,
        "input_tokens": _int_or_none(usage.get("input_tokens")),
        "output_tokens": _int_or_none(usage.get("output_tokens")),
        "cache_creation_input_tokens": _int_or_none(usage.get("cache_creation_input_tokens")) or 0,
        "cache_read_input_tokens": _int_or_none(usage.get("cache_read_input_tokens")) or 0,
        "cache_creation_5m_input_tokens": _int_or_none(got.get("ephemeral_5m_input_tokens")),
        "cache_creation_1h_input_tokens": _int_or_none(got.get("ephemeral_1h_input_tokens")),
        "message_id": checked.get("id"),
    }


# -- varied replies ---------------------------------------------------------------------------


class _Frozen(Mapping[str, Any]):
    """A Mapping that is no dict (a reply assembled by other code may be one)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Any:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


_ODD_VALUES: list[Any] = [None, True, 1.5, "7", [], {}, 2**70, -1, 0]


def _block(rng: random.Random) -> Any:
    kind = rng.choice(
        ["text", "text", "thinking", "redacted_thinking", "tool_use", "server", "odd", "bare"]
    )
    if kind == "text":
        text = rng.choice(["positive", "négatif ✓", "", "a\nb", 5, None, "\ud83d half"])
        block: dict[str, Any] = {"type": "text", "text": text}
        if rng.random() < 0.2:
            block["citations"] = [{"type": "char_location", "cited_text": "x"}]
        return block
    if kind == "thinking":
        return {"type": "thinking", "thinking": rng.choice(["hm", "", 3]), "signature": "s"}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": "xyz"}
    if kind == "tool_use":
        tool_input = rng.choice([{"a": 1}, {"deep": {"list": [1, "ü", None]}}, {}, "raw", None])
        return {"type": "tool_use", "id": "toolu_1", "name": "answer", "input": tool_input}
    if kind == "server":
        return {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search"}
    if kind == "odd":
        return rng.choice(["a string block", 7, None, ["x"], {"no": "type"}])
    return _Frozen({"type": "text", "text": "from a mapping"})


def _usage(rng: random.Random, odd: float) -> Any:
    usage: dict[str, Any] = {}
    for key in (*_USAGE_COUNTS, "service_tier"):
        if rng.random() < 0.8:
            usage[key] = rng.randint(0, 5000) if rng.random() > odd else rng.choice(_ODD_VALUES)
    if rng.random() < 0.5:
        split: Any = {
            key: rng.randint(0, 900) if rng.random() > odd else rng.choice(_ODD_VALUES)
            for key in _SPLIT_COUNTS
            if rng.random() < 0.8
        }
        usage["cache_creation"] = rng.choice([split, split, None, [], _Frozen(dict(split))])
    if rng.random() < odd / 3:
        return rng.choice([None, [], "usage"])
    return _Frozen(usage) if rng.random() < 0.1 else usage


def _reply(rng: random.Random) -> Any:
    """A reply; one in four may hold values no column takes."""
    odd = 0.15 if rng.random() < 0.25 else 0.0
    if rng.random() < odd / 5:
        return rng.choice(["text", None, [1], 3])
    message: dict[str, Any] = {
        "id": "msg_1" if rng.random() >= odd else rng.choice(_ODD_VALUES),
        "type": "message",
        "role": "assistant",
        "model": rng.choice(["claude-haiku-4-5", "claude-sonnet-4-5-20250929", None])
        if rng.random() >= odd
        else 3,
        "stop_reason": rng.choice(
            ["end_turn", "max_tokens", "refusal", "tool_use", "stop_sequence", None]
        )
        if rng.random() >= odd
        else {},
        "stop_sequence": rng.choice([None, "END"]) if rng.random() >= odd else 4,
        "content": [_block(rng) for _ in range(rng.choice([0, 1, 1, 2, 3, 5]))],
        "usage": _usage(rng, odd),
    }
    if rng.random() < odd / 5:
        message["content"] = rng.choice([None, "text", {}])
    if rng.random() < 0.1:
        del message[rng.choice(["id", "model", "stop_reason", "stop_sequence"])]
    return _Frozen(message) if rng.random() < 0.05 else message


def _outcome(fields: Any, message: Any) -> Any:
    try:
        return ("fields", list(fields(message).items()))
    except ApiResponseError as exc:
        # (A count beyond 64 bits is compared by where it is: the digits are one helper's.)
        text = exc.message.split(" is ")[0] if "beyond" in exc.message else exc.message
        return ("error", exc.error_type, text)


REPLIES = 3_000


def test_message_fields_matches_the_earlier_code_on_varied_replies() -> None:
    rng = random.Random(26)
    kinds = {"fields": 0, "error": 0}
    for _ in range(REPLIES):
        message = _reply(rng)
        expected = _outcome(reference_message_fields, message)
        got = _outcome(message_fields, message)
        if expected[0] == "error" and expected[1] == "envelope":
            continue  # (the reference does not spell the envelope's error out)
        assert got == expected, message
        kinds[got[0]] += 1
    assert kinds["fields"] > REPLIES // 2 and kinds["error"] > REPLIES // 20  # both were met


def test_a_checked_reply_gives_the_same_row_as_one_checked_again(tmp_path: Path) -> None:
    """Online, the client checked the reply (``as_message``); the row made without a second
    check is the same, keeping columns, structured answers and empty answers included."""
    rows = RowSettings(
        file="in.jsonl",
        defaults=RequestDefaults(model="claude-haiku-4-5", max_tokens=16),
        media=tmp_path,
        prices=default_prices(),
        keep_columns=("topic",),
        json_schema={"type": "object", "properties": {"label": {"type": "string"}}},
        source="https://api.anthropic.com",
    )
    rng = random.Random(7)
    made = 0
    for k in range(REPLIES // 3):
        message = _reply(rng)
        try:
            reference_message_fields(message)
        except ApiResponseError:
            continue  # the client would have refused it: never a Reply
        fields = {"prompt": "hi", "topic": rng.choice(["rivers", "ü", None, 3])}
        body = {"model": "claude-haiku-4-5", "max_tokens": 16}
        work = Work(InputRow(k, k + 1, f"row-{k}", fields), body, f"{k:064x}", None)
        via = rng.choice(["online", VIA_BATCHES])
        once = ok_row(work, rows, dict(message), via, checked=True)
        twice = ok_row(work, rows, dict(message), via)
        for row in (once, twice):
            assert list(row) == [*COLUMN_NAMES, "topic"]
            row.pop("finished_at")
        assert once == twice
        made += 1
    assert made > REPLIES // 6


# -- the journal, held ------------------------------------------------------------------------

WHEN = datetime(2026, 12, 7, 14, 0, 0, 5000, tzinfo=timezone.utc)


def _rows(count: int) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        row = blank_row(f"r{i}")
        row.update(
            status="ok" if i % 7 else "error",
            text=f"answer {i} ✓" * (i % 5),
            cost_usd=(i % 3) * 0.001,
            source=None if i % 11 == 0 else "https://api.anthropic.com",
            finished_at=WHEN,
        )
        out.append(row)
    return out


def _journal(tmp_path: Path, name: str, held: bool, rows: list[dict[str, Any]]) -> Sink:
    sink = Sink(tmp_path / name / "out.parquet")
    sink.open()
    sink.run_id = "20261207T140000Z-00000000"
    appended: list[int] = []
    sink.on_append = lambda: appended.append(1)
    if held:
        with sink.holding():
            for i, row in enumerate(rows):
                sink.submit(i, dict(row))
    else:
        for i, row in enumerate(rows):
            sink.submit(i, dict(row))
    assert len(appended) == len(rows)  # each row told once, written or held
    return sink


def test_held_rows_are_the_same_journal_bytes_and_costs(tmp_path: Path) -> None:
    rows = _rows(2_000)  # more than HELD_BYTES: written in several pieces
    plain = _journal(tmp_path, "plain", False, rows)
    held = _journal(tmp_path, "held", True, rows)
    assert plain.journal.stat().st_size > HELD_BYTES
    assert held.journal.read_bytes() == plain.journal.read_bytes()
    assert held.spent == plain.spent


def test_held_rows_are_written_when_the_holder_fails_and_at_sync(tmp_path: Path) -> None:
    rows = _rows(3)
    sink = Sink(tmp_path / "out.parquet")
    sink.open()
    with pytest.raises(RuntimeError), sink.holding():
        sink.submit(0, rows[0])
        assert sink.journal.stat().st_size == 0  # held
        raise RuntimeError("a download broke")
    assert sink.journal.read_bytes().count(b"\n") == 1
    with sink.holding():
        sink.submit(1, rows[1])
        sink.sync()
        assert sink.journal.read_bytes().count(b"\n") == 2
        sink.submit(2, rows[2])
    assert sink.journal.read_bytes().count(b"\n") == 3


# -- a misspelt column, once a column ---------------------------------------------------------


def test_a_misspelt_column_is_reported_for_every_row_that_has_it(tmp_path: Path) -> None:
    """The typo check is worked out once a column name (``request._field_like``): each
    row holding the column is still refused the same way, and a fine column is fine."""
    rows = RowSettings(
        file="in.jsonl",
        defaults=RequestDefaults(model="claude-haiku-4-5", max_tokens=16),
        media=tmp_path,
        prices=default_prices(),
    )
    for k in range(3):
        fields = {"prompt": "hi", "temperatur": 0.5, "label": "x"}
        work = prepare(InputRow(k, k + 1, f"row-{k}", fields), rows)
        assert work.problem is not None
        assert [(p.field, p.message) for p in work.problem.problems] == [
            ("temperatur", "unknown field (did you mean `temperature`?)")
        ]
