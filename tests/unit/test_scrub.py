"""One scrubber for everything shown or written: credentials quoted by a server, whole or cut
short, never reach a message, a journal, an output row or the CLI's stderr; URLs are shown
without their user, password and query. (The command line as a real process:
tests/system/test_scrub_cli.py.)"""

from __future__ import annotations

import json
import pickle
import traceback
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from support import prompts, write_jsonl
from support.canaries import (
    ENV_OF,
    KEY,
    TOKEN,
    VALUE_OF,
    assert_hidden,
    everything_written,
    quoting_envelope,
)
from support.mock_api import (
    STREAM_EVENTS,
    create_error,
    everything_shown,
    json_response,
    sse_response,
)

from batchrun import BatchrunError, load_config, run
from batchrun.client.credentials import Credentials
from batchrun.core.errors import ApiStatusError, ConfigError
from batchrun.core.scrub import MASK, PARTIAL_MIN, Scrubber, mask_for, url_without_secrets
from batchrun.core.secret import Secret
from batchrun.runs.runtime import Runtime

# --- the scrubber --------------------------------------------------------------------------


def test_a_quoted_key_is_masked_and_the_rest_kept() -> None:
    scrub = Scrubber([Secret(KEY)])
    assert scrub(f"invalid x-api-key {KEY}") == "invalid x-api-key sk-ant-…[redacted]"
    assert scrub(f'{{"message": "{KEY}: no", "again": "{KEY}"}}') == (
        '{"message": "sk-ant-…[redacted]: no", "again": "sk-ant-…[redacted]"}'
    )
    assert scrub("nothing to hide here") == "nothing to hide here"
    assert mask_for(KEY) == "sk-ant-" + MASK
    assert mask_for("0123456789abcdef") == MASK  # no public prefix: nothing of it shown


@pytest.mark.parametrize(
    "quoted",
    [
        KEY[:PARTIAL_MIN],  # cut short, as gateways do
        KEY[:20] + "...",
        "..." + KEY[-PARTIAL_MIN:],  # its end only
        KEY[5 : 5 + PARTIAL_MIN + 3],  # a piece from the middle
    ],
    ids=["prefix-12", "prefix-20", "suffix-12", "middle-15"],
)
def test_a_piece_of_the_key_long_enough_to_matter_is_masked(quoted: str) -> None:
    shown = Scrubber([Secret(KEY)])(f"key {quoted} refused")
    assert MASK in shown and shown.startswith("key ") and shown.endswith(" refused")
    assert_hidden(shown, KEY)


def test_short_pieces_and_short_values_leave_ordinary_text_alone() -> None:
    scrub = Scrubber([Secret(KEY), Secret("k1")])
    assert scrub(f"begins {KEY[: PARTIAL_MIN - 1]}") == f"begins {KEY[: PARTIAL_MIN - 1]}"
    # A credential too short for pieces is masked as a whole word only.
    assert scrub("key k1 refused; k10 and ok1 are other words") == (
        "key …[redacted] refused; k10 and ok1 are other words"
    )


def test_every_credential_is_masked_and_escaped_forms_too() -> None:
    odd = 'tok/with"quotes+and=more-0123'
    scrub = Scrubber([Secret(KEY), Secret(f" {TOKEN}\n"), None, "", Secret("  "), odd])
    text = f"x-api-key {KEY}, Authorization: Bearer {TOKEN}, json {json.dumps(odd)}, url {odd}"
    text += f" query ?k={quote(odd, safe='')}"
    shown = scrub(text)
    assert shown.count(MASK) == 5
    assert f"Bearer {mask_for(TOKEN)}," in shown and mask_for(TOKEN) == "gw-tok-" + MASK
    assert_hidden(shown, KEY, TOKEN, odd)
    assert scrub(shown) == shown  # masks are not masked again


def test_no_credentials_means_no_change() -> None:
    scrub = Scrubber([None, Secret("")])
    assert not scrub and scrub(f"{KEY} stays") == f"{KEY} stays"
    assert not Scrubber([]).reveals(KEY)


def test_the_scrubber_never_shows_what_it_holds() -> None:
    scrub = Scrubber([Secret(KEY)])
    assert KEY not in repr(scrub) and KEY not in str(scrub)
    assert scrub.reveals(f"the key {KEY[:14]}") and not scrub.reveals("the key sk-ant-")
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(scrub)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:KEY@gateway.example/v1/?key=KEY#KEY", "http://gateway.example/v1/"),
        ("https://KEY@api.example.com:8443", "https://api.example.com:8443"),
        ("http://u:p@[::1]:8080/x?token=KEY", "http://[::1]:8080/x"),
        ("https://api.anthropic.com", "https://api.anthropic.com"),
        ("http://u:KEY@[::1/x?key=KEY", "http://[::1/x"),  # unparseable: cut by hand
        ("gateway.example?key=KEY", "gateway.example"),
    ],
)
def test_a_url_is_shown_without_userinfo_query_or_fragment(url: str, shown: str) -> None:
    assert url_without_secrets(url) == shown


# --- the client: the one place a response becomes an ApiError -------------------------------


def _credentials(kind: str) -> Credentials:
    if kind == "x-api-key":
        return Credentials(api_key=Secret(KEY))
    return Credentials(auth_token=Secret(TOKEN))


@pytest.mark.parametrize("kind", ["x-api-key", "bearer"])
@pytest.mark.parametrize("status", [401, 400])
def test_an_error_body_quoting_the_credential_becomes_an_error_without_it(
    status: int, kind: str
) -> None:
    body = quoting_envelope(kind, status)

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)  # no request-id header: the body's is kept

    error = create_error(handler, credentials=_credentials(kind))
    assert isinstance(error, ApiStatusError) and error.status == status
    assert f"HTTP {status} {body['error']['type']}: invalid" in str(error)
    assert mask_for(VALUE_OF[kind]) in error.message
    assert error.request_id == f"req_{mask_for(VALUE_OF[kind])}"
    assert error.error_code == f"bad_credential:{mask_for(VALUE_OF[kind])}"
    for text in [
        *everything_shown(error),
        *(str(v) for v in vars(error).values()),
        *map(str, error.args),
    ]:
        assert_hidden(text, VALUE_OF[kind])


@pytest.mark.parametrize("stream", [False, True], ids=["200-envelope", "stream-error-event"])
def test_an_error_inside_a_success_quoting_the_key_is_scrubbed(stream: bool) -> None:
    error = {"type": "overloaded_error", "message": f"gateway: key {KEY} over quota"}

    async def handler(request: httpx.Request) -> httpx.Response:
        if not stream:
            return json_response({"type": "error", "error": error})
        return sse_response([STREAM_EVENTS[0], ("error", {"type": "error", "error": error})])

    got = create_error(handler, stream=stream, credentials=_credentials("x-api-key"))
    assert got.error_type == "overloaded_error" and MASK in got.message
    for text in everything_shown(got):
        assert_hidden(text, KEY)


# --- whole runs: journal, output and stderr -------------------------------------------------


def _quoting_transport(status: int) -> httpx.MockTransport:
    """A stand-in API refusing every request with ``status``, quoting the credential it got."""

    def handler(request: httpx.Request) -> httpx.Response:
        kind = "x-api-key" if "x-api-key" in request.headers else "bearer"
        return httpx.Response(status, json=quoting_envelope(kind, status))

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("kind", ["x-api-key", "bearer"])
@pytest.mark.parametrize("rows", [3, 6], ids=["finished", "stopped-early"])
def test_a_run_whose_400s_quote_the_key_writes_and_raises_nothing_of_it(
    tmp_path: Path, kind: str, rows: int
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(rows))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    config = load_config(
        inp,
        {
            "output": str(out_dir / "o.jsonl"),
            "model": "claude-haiku-4-5",
            "max_tokens": 9,
            "base_url": "https://api.example.test",
            "quiet": True,
            "max_retries": 0,
            "concurrency": 1,
        },
        environ={ENV_OF[kind]: VALUE_OF[kind]},
    )
    shown: list[str] = []
    try:
        summary = run(config, runtime=Runtime(transport=_quoting_transport(400)))
        assert rows < 5 and summary.exit_code != 0
    except BatchrunError as exc:  # five rows failing alike stop the run (FailFast)
        assert rows >= 5, exc
        shown += ["".join(traceback.format_exception(exc)), repr(exc)]
        assert "invalid_request_error: invalid" in str(exc) and MASK in str(exc)
    written = everything_written(out_dir)
    kept = "o.jsonl" if rows < 5 else "o.jsonl.journal"  # the output, or the journal
    records = [json.loads(line) for line in (out_dir / kept).read_text().splitlines()]
    assert records and all(r["status"] == "error" for r in records)
    assert all(mask_for(VALUE_OF[kind]) in r["error_message"] for r in records)
    assert_hidden(written.decode("utf-8", "replace") + "".join(shown), VALUE_OF[kind])


# --- the configuration's refusal of plain http ------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown", "match"),
    [
        (
            f"http://gateway-user:{KEY}@api.example.com/v1/?key={KEY}",
            "http://api.example.com/v1/",
            "in clear",
        ),
        (f"ftp://user:{KEY}@files.example.com/?key={KEY}", "ftp://files.example.com/", "http"),
        (f"http://user:{KEY}@[::1/?key={KEY}", "http://[::1/", "not a valid URL"),
    ],
    ids=["plain-http", "not-http", "unparseable"],
)
def test_a_refused_base_url_is_shown_without_userinfo_or_query(
    tmp_path: Path, url: str, shown: str, match: str
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    with pytest.raises(ConfigError, match=match) as info:
        load_config(
            inp,
            {"base_url": url, "model": "claude-haiku-4-5", "max_tokens": 9},
            environ={"ANTHROPIC_API_KEY": KEY},
        )
    text = "".join(traceback.format_exception(info.value))
    assert repr(shown) in str(info.value)
    assert KEY not in text and "gateway-user" not in text and "user:" not in text


def test_an_errored_batch_result_quoting_the_key_is_recorded_without_it(tmp_path: Path) -> None:
    """Batch results come from the API's results file, not through the client's boundary."""
    from batchrun.batches.results import result_row
    from batchrun.engine.outcome import RowSettings, prepare
    from batchrun.formats.inputs import read_rows

    inp = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    config = load_config(
        inp,
        {"model": "claude-haiku-4-5", "max_tokens": 5},
        environ={"ANTHROPIC_API_KEY": KEY},
    )
    work = prepare(next(iter(read_rows(inp))), RowSettings.of(config))
    record = {
        "custom_id": "r0",
        "result": {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": f"bad key {KEY}"},
            },
        },
    }
    row = result_row(work, RowSettings.of(config), record, "msgbatch_1", None)
    assert row["status"] == "error" and row["error_type"] == "invalid_request_error"
    assert KEY not in row["error_message"] and "bad key" in row["error_message"]
    assert KEY[:PARTIAL_MIN] not in json.dumps(row, default=str)
