"""The per-row boundary: no input row and no reply can stop a run or ``validate``.

Whatever is wrong with one row (a lone surrogate, JSON nested 200,000 deep, a NUL byte in a
file path, numbers no column holds) becomes that row's error row, and the job goes on: every
input row gets exactly one output row, and a re-run pays for nothing already recorded.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import TEST_KEY, job_config, no_wait, prompts

from batchrun import load_config, run
from batchrun.cli import cli
from batchrun.core.errors import InvalidRowError
from batchrun.engine import outcome
from batchrun.engine.outcome import RowSettings, Work, error_row, ok_row, prepare
from batchrun.formats.inputs import InputRow, read_rows
from batchrun.runs.runtime import Runtime
from batchrun.runs.validate import validate
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.simulator.events import encode_event, stream_events
from batchrun.simulator.replies import make_reply
from batchrun.store.journal import journal_line

NOWHERE = "http://127.0.0.1:9"  # validate and prepare send nothing

# One bad row each, as a JSONL line: what used to raise instead of becoming an error row.
BAD_LINES: dict[str, str] = {
    # A truncated emoji: UnicodeEncodeError when the body was encoded.
    "lone_surrogate": '{"id": "b", "prompt": "x \\ud83d"}',
    # RecursionError in the JSON decoder.
    "nested_200k_deep": '{"id": "b", "prompt": "x", "extra": '
    + "[" * 200_000
    + "]" * 200_000
    + "}",
    # ValueError ("embedded null byte") from pathlib, deep in reading the file.
    "nul_in_image_path": json.dumps(
        {
            "id": "b",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "path", "path": "a\u0000.png"}},
                        {"type": "text", "text": "What is in the picture?"},
                    ],
                }
            ],
        }
    ),
}
# The field each problem names (None: the line as a whole).
BAD_FIELDS = {"lone_surrogate": "prompt", "nested_200k_deep": None, "nul_in_image_path": "messages"}


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _with_bad_line(path: Path, case: str, rows: int, at: int) -> Path:
    lines = [json.dumps(row) for row in prompts(rows)]
    lines[at] = BAD_LINES[case]
    return _jsonl(path, lines)


# --- reproductions: input rows ------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_one_bad_row_among_500_is_its_error_row_and_a_rerun_sends_nothing(
    tmp_path: Path, sim: SimulatorThread, case: str
) -> None:
    inp = _with_bad_line(tmp_path / "in.jsonl", case, rows=500, at=300)
    out = tmp_path / "out.parquet"
    config = job_config(inp, out, sim.base_url, concurrency=64)

    summary = run(config)
    assert summary.exit_code == 3
    assert summary.final is not None and (summary.final.ok, summary.final.error) == (499, 1)
    got = pq.read_table(out).to_pylist()
    assert len(got) == 500
    bad = got[300]
    assert (bad["status"], bad["error_type"]) == ("error", "invalid_request")
    assert bad["error_message"].startswith(f"{inp}:301: ")
    assert bad["attempts"] == 0 and bad["input_tokens"] is None  # never sent, never paid
    assert all(row["status"] == "ok" for i, row in enumerate(got) if i != 300)
    assert sim.stats.requests == 499

    again = run(config)  # the bad row is checked again (it may have been fixed), not sent
    assert sim.stats.requests == 499
    assert again.final is not None and again.final.rows == 500
    assert pq.read_table(out).column("status").to_pylist() == [r["status"] for r in got]


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_validate_names_file_line_and_field_of_the_bad_row(tmp_path: Path, case: str) -> None:
    inp = _with_bad_line(tmp_path / "in.jsonl", case, rows=6, at=3)
    report = validate(job_config(inp, tmp_path / "out.parquet", NOWHERE))
    assert (report.rows, report.invalid) == (6, 1)
    [problem] = report.problems
    assert (problem.file, problem.row, problem.field) == (str(inp), 4, BAD_FIELDS[case])
    str(problem).encode("utf-8")  # fit to print


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_the_validate_command_reports_the_bad_row(tmp_path: Path, case: str) -> None:
    from click.testing import CliRunner

    inp = _with_bad_line(tmp_path / "in.jsonl", case, rows=3, at=1)
    args = ["validate", str(inp), "--model", "claude-haiku-4-5", "--max-tokens", "5"]
    result = CliRunner().invoke(cli, args, env={"ANTHROPIC_API_KEY": TEST_KEY})
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 3  # rows in error, listed; not a crash (1)
    assert f"{inp}:2" in result.output


def test_an_unforeseen_failure_while_preparing_a_row_is_that_rows_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp = _jsonl(tmp_path / "in.jsonl", [json.dumps(row) for row in prompts(3)])
    config = job_config(inp, tmp_path / "out.parquet", NOWHERE)
    real = outcome.prepare_request

    def flaky(fields: Any, *args: Any, **kwargs: Any) -> Any:
        if fields["prompt"].startswith("Question number 1:"):
            raise RuntimeError("something nobody foresaw \ud83d")
        return real(fields, *args, **kwargs)

    monkeypatch.setattr(outcome, "prepare_request", flaky)
    works = [prepare(row, RowSettings.of(config)) for row in read_rows(inp)]
    assert [w.problem is None for w in works] == [True, False, True]
    problem = works[1].problem
    assert isinstance(problem, InvalidRowError)
    assert (problem.file, problem.row) == (str(inp), 2)
    assert "RuntimeError: something nobody foresaw" in str(problem)
    str(problem).encode("utf-8")
    report = validate(config)
    assert report.invalid == 1 and report.problems[0].row == 2


def test_output_rows_never_hold_text_the_journal_cannot_encode(tmp_path: Path) -> None:
    inp = _jsonl(tmp_path / "in.jsonl", ['{"prompt": "hi"}'])
    config = job_config(inp, tmp_path / "out.parquet", NOWHERE, keep_columns=("note",))
    row = InputRow(index=0, line=1, id="r\ud83d", fields={"note": "x \ud83d", "prompt": "hi"})
    work = Work(row, None, None, None)
    failed = error_row(work, RowSettings.of(config), "api_error", "said \udc80", 500, 1)
    asked = {
        "model": "claude-haiku-4-5",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    message = dict(make_reply(asked).message)
    message["content"] = [{"type": "text", "text": "half \ud83d"}]
    message["stop_reason"] = "end_turn\udfff"
    answered = ok_row(work, RowSettings.of(config), message)
    for got in (failed, answered):
        journal_line(0, got).encode("utf-8")
        assert got["id"] == "r\ufffd" and got["note"] == "x \ufffd"
    assert failed["error_message"] == "said \ufffd"
    assert answered["status"] == "ok" and answered["text"] == "half \ufffd"


# --- reproductions: replies -------------------------------------------------------------------

Mutate = Callable[[dict[str, Any]], None]


def _huge_output_tokens(message: dict[str, Any]) -> None:
    message["usage"] = {**message["usage"], "output_tokens": 10**30}


def _stop_reason_object(message: dict[str, Any]) -> None:
    message["stop_reason"] = {"type": "end_turn"}


def _scripted(mutate: Mutate) -> Callable[[httpx.Request], httpx.Response]:
    """The simulator's replies, ``mutate``d for prompts that say "bad"."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        message: dict[str, Any] = dict(make_reply(body).message)
        if "bad" in body["messages"][0]["content"]:
            mutate(message)
        headers = {"request-id": "req_test"}
        if body.get("stream"):
            stream = b"".join(encode_event(name, data) for name, data in stream_events(message))
            headers["content-type"] = "text/event-stream"
            return httpx.Response(200, content=stream, headers=headers)
        headers["content-type"] = "application/json"
        return httpx.Response(200, content=json.dumps(message).encode(), headers=headers)

    return handler


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mutate", [_huge_output_tokens, _stop_reason_object])
def test_a_reply_whose_values_fit_no_column_is_a_malformed_response_row(
    tmp_path: Path, mutate: Mutate, stream: bool
) -> None:
    rows = [{"id": f"r{i}", "prompt": "bad one" if i == 3 else f"good {i}"} for i in range(8)]
    inp = _jsonl(tmp_path / "in.jsonl", [json.dumps(row) for row in rows])
    out = tmp_path / "out.parquet"
    settings_ = {"output": str(out), "model": "claude-haiku-4-5", "max_tokens": 30,
                 "stream": stream, "quiet": True, "concurrency": 4}  # fmt: skip
    config = load_config(inp, settings_, environ={"ANTHROPIC_API_KEY": TEST_KEY})
    summary = run(
        config,
        runtime=Runtime(transport=httpx.MockTransport(_scripted(mutate)), sleep=no_wait),
    )
    assert summary.exit_code == 3
    got = pq.read_table(out).to_pylist()
    assert [row["id"] for row in got] == [row["id"] for row in rows]
    bad = got[3]
    assert (bad["status"], bad["error_type"]) == ("error", "malformed_response")
    assert bad["output_tokens"] is None and bad["stop_reason"] is None
    assert all(row["status"] == "ok" for i, row in enumerate(got) if i != 3)


# --- property: random and adversarial rows ------------------------------------------------------

ODD_TEXT = st.sampled_from(
    [
        "x \ud83d",
        "\udc80",
        "\ud83d\ude00",
        "a\x00b",
        "",
        "   ",
        "é✓😀",
        "[1, 2",
        "[[[[[[",
        '[{"type": "text", "text": "hi"}]',
        '{"type": "auto"}',
        "null",
        "1e400",
        "x" * 3000,
    ]
)
TEXT = st.one_of(st.text(max_size=12), ODD_TEXT)
NUMBERS = st.one_of(
    st.integers(-3, 3000),
    st.sampled_from([10**30, -(10**30), 2**63, 2**63 - 1, 10**400, 0, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
PATHS = st.sampled_from(
    [
        "cat.png",
        "a\x00.png",
        "\ud83d.png",
        "../outside.png",
        "/etc/passwd",
        "missing.png",
        "x" * 5000,
    ]
)
SOURCE = st.fixed_dictionaries(
    {
        "type": st.just("image"),
        "source": st.fixed_dictionaries({"type": st.just("path"), "path": PATHS}),
    }
)
CONTENT = st.one_of(
    TEXT,
    st.lists(
        st.one_of(SOURCE, st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), VALUES),
        max_size=3,
    ),
    VALUES,
)
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", 3]), "content": CONTENT}
    ),
    min_size=0,
    max_size=3,
)


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(
        TEXT, NUMBERS, st.booleans(), VALUES, st.sampled_from(["row-0", "row-1", "dup"])
    ),
    "prompt": st.one_of(TEXT, VALUES),
    "messages": st.one_of(MESSAGES, TEXT, VALUES),
    "system": st.one_of(TEXT, VALUES),
    "model": st.one_of(st.just("claude-haiku-4-5"), TEXT, VALUES),
    "max_tokens": st.one_of(NUMBERS, VALUES),
    "temperature": NUMBERS,
    "top_p": NUMBERS,
    "top_k": NUMBERS,
    "stop_sequences": st.one_of(st.lists(TEXT, max_size=2), VALUES),
    "metadata": st.one_of(st.fixed_dictionaries({"user_id": TEXT}), VALUES),
    "tools": st.one_of(
        st.lists(st.fixed_dictionaries({"name": TEXT, "input_schema": VALUES}), max_size=2), VALUES
    ),
    "tool_choice": st.one_of(
        st.fixed_dictionaries({"type": st.sampled_from(["auto", "any", "tool", "x"])}), VALUES
    ),
    "thinking": st.one_of(
        st.fixed_dictionaries({"type": st.just("enabled"), "budget_tokens": NUMBERS}), VALUES
    ),
    "service_tier": st.one_of(st.sampled_from(["auto", "standard_only"]), VALUES),
    "image": st.one_of(PATHS, st.lists(PATHS, max_size=2), VALUES),
    "document": st.one_of(PATHS, VALUES),
    "note": st.one_of(VALUES, st.integers(0, 300).map(_nested)),
    "max_token": NUMBERS,  # a typo of a field
}


@st.composite
def _rows(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=5, unique=True))
    row = {name: draw(FIELD_VALUES[name]) for name in names}
    if draw(st.booleans()):
        row[draw(TEXT)] = draw(VALUES)  # any other column: a template variable, or nothing
    return row


@st.composite
def _plausible_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A row with a prompt and one field drawn as above: often sent, sometimes refused."""
    prompt = draw(st.one_of(st.text(min_size=1, max_size=20).filter(str.strip), ODD_TEXT))
    row: dict[str, Any] = {"id": draw(st.one_of(st.none(), TEXT, NUMBERS)), "prompt": prompt}
    name = draw(st.sampled_from(sorted(FIELD_VALUES)))
    row[name] = draw(FIELD_VALUES[name])
    return row


RAW_LINES = st.sampled_from(
    [
        b"not json",
        b"[1, 2]",
        b'{"prompt": 1e400}',
        b'{"prompt": NaN}',
        b'{"prompt": "x", "n": ' + b"9" * 5000 + b"}",
        b'{"prompt": "x", "deep": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        b'{"prompt": "x", "deep": ' + b"[" * 500 + b"]" * 500 + b"}",
        b'{"prompt": "\xff\xfe"}',
        b'{"\\ud83d": "x", "prompt": "y"}',
        b'{"id": "\\udc80", "prompt": "y"}',
        b'{"prompt": "ok \\ud83d\\ude00"}',
    ]
)


def _dumped(row: dict[str, Any]) -> bytes:
    return json.dumps(row).encode()  # ASCII: a lone surrogate is written as a \u escape


LINES = st.lists(
    st.one_of(st.one_of(_rows(), _plausible_rows()).map(_dumped), RAW_LINES), min_size=1, max_size=7
)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def _input(folder: Path, lines: list[bytes]) -> Path:
    (folder / "cat.png").write_bytes(PNG)
    path = folder / "in.jsonl"
    # A plain, valid first row: the run's early stop (five alike failures first) stays out.
    # It has the kept column, which a job checks the input's first row for.
    first = json.dumps({"id": "first", "prompt": "hello", "note": "kept"}).encode()
    path.write_bytes(b"".join(line + b"\n" for line in [first, *lines]))
    return path


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig()) as simulator:
        yield simulator


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=LINES)
def test_validate_survives_any_rows(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        inp = _input(Path(folder), lines)
        # Declared UTF-8, so a line that is not is its row's problem; undeclared, a file that
        # does not start as UTF-8 is refused whole (tests/integration/test_input_text.py).
        config = job_config(inp, Path(folder) / "out.parquet", NOWHERE, encoding="utf-8")
        report = validate(config)
        assert report.rows == len(lines) + 1
        for problem in report.problems:
            str(problem).encode("utf-8")


@pytest.mark.slow
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(lines=LINES)
def test_run_survives_any_rows(shared_sim: SimulatorThread, lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        inp = _input(Path(folder), lines)
        out = Path(folder) / "out.parquet"
        config = job_config(
            inp,
            out,
            shared_sim.base_url,
            concurrency=1,
            max_retries=0,
            keep_columns=("note",),
            encoding="utf-8",  # as in test_validate_survives_any_rows
        )
        summary = run(config, runtime=Runtime(sleep=no_wait))
        assert summary.final is not None and summary.final.rows == len(lines) + 1
        got = pq.read_table(out).to_pylist()
        assert len(got) == len(lines) + 1
        assert got[0]["status"] == "ok"
        for row in got:
            assert row["status"] in ("ok", "error")
            assert (row["status"] == "error") == (row["error_type"] is not None)
