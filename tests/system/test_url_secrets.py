"""A URL a user gives (a Redis store, a base URL, an endpoint) never shows its user, password
or token: not in our messages, not in what a library says about it, not in tracebacks, not
in warnings, not in ``repr(config)``. Redis is a real one that requires a password, and the
command line is a real process."""

from __future__ import annotations

import json
import subprocess
import traceback
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import TEST_KEY, prompts, python_process, write_jsonl
from support.local_server import free_port
from support.mock_api import create_error
from support.redis_server import RedisServer

import batchrun
from batchrun import load_config
from batchrun.client.credentials import Credentials
from batchrun.core.errors import ConfigError
from batchrun.core.scrub import (
    PARTIAL_MIN,
    Scrubber,
    url_secrets,
    url_without_secrets,
    urls_without_secrets,
)
from batchrun.core.secret import Secret
from batchrun.limits.values import Limits

PASSWORD = "PWcanary-7c1e-redis-pass"  # longer than PARTIAL_MIN: masked wherever it appears
MODEL = "claude-haiku-4-5"


def assert_hidden(text: str, *values: str) -> None:
    """No value, whole or as a piece ``PARTIAL_MIN`` long, and none URL-encoded, in ``text``."""
    for value in values:
        for form in (value, quote(value, safe="")):
            for start in range(max(len(form) - PARTIAL_MIN + 1, 1)):
                assert form[start : start + PARTIAL_MIN] not in text, (value, text)


# --- the scrubber, over URL shapes --------------------------------------------------------

# Hosts, paths and names in lower case; credentials start with capitals that nothing else has.
_HOSTS = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,12}(\.[a-z][a-z0-9-]{0,8}){0,2}", fullmatch=True),
    st.sampled_from(["127.0.0.1", "[::1]", "10.0.0.7"]),
)
_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_PASSWORDS = st.text(_CHARS, min_size=0, max_size=20).map(lambda tail: "PW" + tail)
_USERS = st.one_of(st.none(), st.from_regex(r"USR[a-zA-Z0-9._~-]{0,10}", fullmatch=True))
_TOKENS = st.from_regex(r"TK[A-Za-z0-9_\-]{0,20}", fullmatch=True)
_SECRET_NAMES = st.sampled_from(
    ["key", "api_key", "token", "access_token", "password", "X-Amz-Signature", "sig", "secret"]
)


@st.composite
def urls(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A URL with credentials in it, and those credentials as they were before encoding."""
    scheme = draw(st.sampled_from(["redis", "rediss", "http", "https", "s3", "gs"]))
    user, password = draw(_USERS), draw(_PASSWORDS)
    host = draw(_HOSTS)
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    path = draw(st.from_regex(r"(/[a-z0-9._-]{1,8}){0,3}/?", fullmatch=True))
    secrets = [password] + ([user] if user else [])
    query = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            token = draw(_TOKENS)
            query.append(f"{draw(_SECRET_NAMES)}={quote(token, safe='')}")
            secrets.append(token)
        else:
            query.append("prefix=team-a")
    userinfo = f"{quote(user, safe='') if user else ''}:{quote(password, safe='')}@"
    url = f"{scheme}://{userinfo}{host}{'' if port is None else f':{port}'}{path}"
    return url + (f"?{'&'.join(query)}" if query else ""), secrets


@settings(max_examples=300, deadline=None)
@given(urls())
def test_a_url_is_shown_without_anything_secret_in_it(made: tuple[str, list[str]]) -> None:
    url, _ = made
    shown = url_without_secrets(url)
    assert "@" not in shown and "?" not in shown
    assert "PW" not in shown and "USR" not in shown and "TK" not in shown
    assert url_without_secrets(shown) == shown  # showing twice changes nothing


@settings(max_examples=300, deadline=None)
@given(urls())
def test_a_library_message_quoting_the_url_or_its_password_shows_neither(
    made: tuple[str, list[str]],
) -> None:
    url, secrets = made
    scrub = Scrubber(url_secrets(url))
    for said in (
        f"Error connecting to {url}. Connection refused.",
        f"could not reach '{url}'",
        f"AUTH {secrets[0]} was refused",
        f"<Connection url={url!r}>",
    ):
        shown = scrub(said)
        assert "PW" not in shown and "USR" not in shown and "TK" not in shown, (url, shown)


def test_a_url_without_a_scheme_loses_its_userinfo_too() -> None:
    # STORAGE_EMULATOR_HOST is often host:port, and may carry user:password@.
    assert url_without_secrets(f"gcs-user:{PASSWORD}@127.0.0.1:4443") == "127.0.0.1:4443"
    assert url_without_secrets("127.0.0.1:4443") == "127.0.0.1:4443"
    assert url_secrets(f"gcs-user:{PASSWORD}@127.0.0.1:4443") == ("gcs-user", PASSWORD)


def test_urls_in_a_text_are_shown_without_credentials_and_the_rest_is_kept() -> None:
    text = f"POST https://u:{PASSWORD}@gw.example/v1?key=k and 'redis://:{PASSWORD}@r:1/0'."
    assert urls_without_secrets(text) == "POST https://gw.example/v1 and 'redis://r:1/0'."
    assert urls_without_secrets("nothing here") == "nothing here"


def test_a_chained_cause_that_would_show_a_password_is_cut_off() -> None:
    scrub = Scrubber(url_secrets(f"redis://:{PASSWORD}@cache:6379/0"))
    for said, kept in ((f"AUTH {PASSWORD} refused", False), ("connection refused", True)):
        try:
            try:
                raise OSError(said)
            except OSError as exc:
                error = scrub.cleaned(ConfigError(f"Redis said: {said}"))
                raise error from scrub.safe_cause(exc)
        except ConfigError as caught:
            shown = "".join(traceback.format_exception(caught))
            assert (caught.__cause__ is not None) is kept and PASSWORD not in shown
            assert "refused" in str(caught)


# --- Redis: a real one that requires a password ------------------------------------------------


@pytest.fixture(scope="module")
def guarded() -> RedisServer:
    with RedisServer(password=PASSWORD) as server:
        yield server


def _store_urls(server: RedisServer) -> dict[str, str]:
    """A wrong password, none at all, and a port where nothing listens."""
    return {
        "wrong": f"redis://:{PASSWORD}-wrong@127.0.0.1:{server.port}/0",
        "user": f"redis://USRalice:{PASSWORD}-x@127.0.0.1:{server.port}/0?prefix=t",
        "down": f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0",
    }


REFUSED = {
    "wrong": "Redis refused the credentials",
    "user": "Redis refused the credentials",
    "down": "Redis does not answer",
}


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return python_process("-m", "batchrun", *args, env={"ANTHROPIC_API_KEY": TEST_KEY}, cwd=cwd)


@pytest.mark.parametrize("case", ["wrong", "user", "down"])
def test_the_cli_never_prints_the_stores_password(
    tmp_path: Path, guarded: RedisServer, case: str
) -> None:
    url = _store_urls(guarded)[case]
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.parquet"
    args = ["run", str(inp), "-o", str(out), "--model", MODEL, "--max-tokens", "5"]
    args += ["--simulate", "-q", "--rate-limit-store", url]
    for extra in ([], ["--json"]):
        proc = _cli([*args, *extra], tmp_path)
        shown = proc.stdout + proc.stderr
        assert proc.returncode == 1, shown
        port = url.rsplit(":", 1)[1].split("/")[0]
        assert f"batchrun: error: --rate-limit-store redis://127.0.0.1:{port}/0: " in proc.stderr
        assert REFUSED[case] in proc.stderr and "Traceback" not in shown
        assert_hidden(shown, PASSWORD, "USRalice")
        if extra:
            assert json.loads(proc.stdout)["outcome"] == "failed"


@pytest.mark.parametrize("case", ["wrong", "down"])
def test_python_gets_the_same_refusal_without_the_password_in_its_traceback(
    tmp_path: Path, guarded: RedisServer, case: str
) -> None:
    url = _store_urls(guarded)[case]
    with pytest.raises(ConfigError) as caught:
        batchrun.run(
            prompts(2),
            model=MODEL,
            max_tokens=5,
            simulate=True,
            quiet=True,
            rate_limit_store=url,
            environ={"ANTHROPIC_API_KEY": TEST_KEY},
        )
    message = str(caught.value)
    assert message.startswith(f"rate_limit_store='{url_without_secrets(url)}': {REFUSED[case]}")
    shown = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
    assert_hidden(shown, PASSWORD)


def test_the_right_password_is_let_in_and_a_lost_redis_is_told_without_it(
    guarded: RedisServer,
) -> None:
    from batchrun.limits.shared import RedisBuckets

    warnings: list[str] = []
    with RedisServer(password=PASSWORD) as doomed:
        store = RedisBuckets(doomed.url, worker="a", warn=warnings.append)
        assert store.take(MODEL, Limits(rpm=60), (0, 0, 0), 0.0).wait == 0
        assert PASSWORD not in repr(store.budget("job"))
    assert store.take(MODEL, Limits(rpm=60), (1, 0, 0), 0.0).wait > 0  # gone: local share
    (warning,) = warnings
    assert "stopped answering" in warning
    assert_hidden(warning, PASSWORD)


# --- the base URL and the config ----------------------------------------------------------------


def test_an_error_that_quotes_the_gateways_url_is_kept_without_its_credentials() -> None:
    base = f"https://gw-user:{PASSWORD}@gateway.example/anthropic?key=TKgatewaytoken123"

    async def handler(request: httpx.Request) -> httpx.Response:
        said = f"upstream {base} refused {PASSWORD} (token TKgatewaytoken123)"
        body = {"type": "error", "error": {"type": "api_error", "message": said}}
        return httpx.Response(400, json=body)

    error = create_error(handler, base_url=base, credentials=Credentials(api_key=Secret(TEST_KEY)))
    shown = f"{error} {error!r} {error.message}"
    assert "upstream https://gateway.example/anthropic refused" in shown
    assert_hidden(shown, PASSWORD, "TKgatewaytoken123")


def test_a_configs_repr_shows_no_password_of_its_urls(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    config = load_config(
        inp,
        {
            "rate_limit_store": f"redis://:{PASSWORD}@cache:6379/0",
            "base_url": f"https://u:{PASSWORD}@gw.example/v1?key=TKrepr0123456789",
        },
        environ={"AWS_ENDPOINT_URL": f"http://minio:{PASSWORD}@127.0.0.1:9000"},
    )
    shown = repr(config)
    assert "redis://cache:6379/0" in shown and "https://gw.example/v1" in shown
    assert_hidden(shown, PASSWORD, "TKrepr0123456789")


def test_an_object_store_url_with_credentials_is_refused_without_them(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    output = f"s3://AKIAEXAMPLE:{PASSWORD}@labels/out.txt"  # pyarrow's form of a key in a URL
    with pytest.raises(ConfigError) as caught:
        load_config(
            inp,
            {"output": output, "model": MODEL, "max_tokens": 5},
            {"XDG_CACHE_HOME": str(tmp_path / "cache")},
        )
    assert str(caught.value).startswith("output s3://labels/out.txt: the name must end in")
    shown = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
    assert_hidden(shown, PASSWORD, "AKIAEXAMPLE")
