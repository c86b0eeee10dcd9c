"""Credentials out of everything a run shows or writes: the one scrubber, and URLs made safe.

A server or a gateway may quote the credential it refused (``invalid x-api-key sk-ant-...``),
often cut short. ``Scrubber`` masks each of the run's credential values in a text, whole or
quoted in part, so that the text can go to a message, a journal record, an output row, a log
line or a traceback:

>>> scrub = Scrubber(["sk-ant-api03-EXAMPLEexampleEXAMPLE"])
>>> scrub("invalid x-api-key sk-ant-api03-EXAMPLEexam...")
'invalid x-api-key sk-ant-…[redacted]...'

``url_without_secrets`` is how any URL a user gives (a base URL, a Redis store, an object
store's endpoint, an s3:// input) is shown: without the parts gateways and servers put keys in:

>>> url_without_secrets("http://user:KEY@gateway.example:8080/v1?key=KEY")
'http://gateway.example:8080/v1'

A library that fails on such a URL (redis-py, botocore, httpx) may quote it, or its password,
in its message. ``Scrubber`` also shows every URL in a text that way, and ``url_secrets``
gives it a URL's credentials to mask wherever they appear alone; ``Scrubber.cleaned`` then
makes an exception safe to raise (its texts masked, a chained cause that would show a
credential in a traceback cut off), and ``Scrubber.safe_cause`` is what a translated error
may be chained to (``raise error from scrub.safe_cause(exc)``):

>>> scrub = Scrubber(url_secrets("redis://:hunter2-pass@cache:6379/0"))
>>> scrub("AUTH hunter2-pass refused by redis://:hunter2-pass@cache:6379/0")
'AUTH …[redacted] refused by redis://cache:6379/0'
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from batchrun.core.secret import Secret

PARTIAL_MIN = 12
"""A piece of a credential this long or longer is masked wherever it appears (gateways quote
keys cut short); shorter pieces are left alone, or ordinary words would go too."""

MASK = "…[redacted]"
"""What replaces a credential, after the public prefix it starts with (``sk-ant-``), if any."""

# The public scheme a credential may start with ("sk-ant-", "gw-"): lower-case words of two
# to four letters, each ending in "-". Shown in the mask, so one knows which value it was.
_PUBLIC_PREFIX = re.compile(r"(?:[a-z]{2,4}-){1,2}")
# A short credential is masked only as a whole word, not inside other words.
_WORD = r"[A-Za-z0-9_\-]"
# A URL inside a text: a scheme, "://", then anything up to a space or a quote.
_URL_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
# Query parameters whose value is a credential (``?key=``, ``?access_token=``, S3's presigned
# ``X-Amz-Signature``, ``?password=`` of a Redis unix socket ...).
_SECRET_PARAMETER = re.compile(
    r"key|token|secret|pass|pwd|auth|sig|credential|session", re.IGNORECASE
)

E = TypeVar("E", bound=BaseException)


def mask_for(value: str) -> str:
    """The mask shown instead of ``value``: its public prefix, if any, and ``MASK``.

    >>> mask_for("sk-ant-api03-abcdef0123456789")
    'sk-ant-…[redacted]'
    """
    found = _PUBLIC_PREFIX.match(value)
    prefix = found.group() if found and 2 * len(found.group()) <= len(value) else ""
    return prefix + MASK


class _Masked:
    """One credential value, ready to be found in a text (kept private, never shown)."""

    __slots__ = ("forms", "grams", "mask", "value", "word")

    def __init__(self, value: str) -> None:
        self.value = value
        self.mask = mask_for(value)
        # The value as it may appear escaped: in JSON text, in a URL.
        self.forms = sorted({json.dumps(value)[1:-1], quote(value, safe="")} - {value}, key=len)
        self.grams = frozenset(
            value[i : i + PARTIAL_MIN] for i in range(len(value) - PARTIAL_MIN + 1)
        )
        self.word = None if self.grams else re.compile(f"(?<!{_WORD}){re.escape(value)}(?!{_WORD})")

    def apply(self, text: str) -> str:
        for form in reversed(self.forms):
            text = text.replace(form, self.mask)
        if self.word is not None:
            return self.word.sub(self.mask, text) if self.value in text else text
        return self._mask_pieces(text)

    def _mask_pieces(self, text: str) -> str:
        """Every run of ``PARTIAL_MIN`` or more characters of the value, masked."""
        pieces: list[str] = []
        start = i = 0
        last = len(text) - PARTIAL_MIN
        while i <= last:
            if text[i : i + PARTIAL_MIN] not in self.grams:
                i += 1
                continue
            end = i + PARTIAL_MIN
            while end < len(text) and text[i : end + 1] in self.value:
                end += 1
            pieces += [text[start:i], self.mask]
            start = i = end
        if not pieces:
            return text
        pieces.append(text[start:])
        return "".join(pieces)


class Scrubber:
    """Masks a run's credential values in any text, and shows every URL in it without its
    user, password or query: ``scrub(text)``.

    Built from ``Secret``s (or plain strings, blank ones ignored), such as the ones in
    ``client.credentials.Credentials`` and ``url_secrets(url)``. It holds the values, so, like
    ``Secret``, it neither shows them nor can be pickled.
    """

    __slots__ = ("_masked",)

    def __init__(self, secrets: Iterable[Secret | str | None]) -> None:
        values = {
            (secret.reveal() if isinstance(secret, Secret) else secret or "").strip()
            for secret in secrets
        }
        # The longest first: one value may hold another, and its mask must win.
        self._masked = tuple(_Masked(v) for v in sorted(values - {""}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for masked in self._masked:
            text = masked.apply(text)
        return urls_without_secrets(text)

    def reveals(self, text: str) -> bool:
        """True when ``text`` shows any credential, whole or in part."""
        return self(text) != text

    def cleaned(self, error: E) -> E:
        """``error`` made safe to raise, show or log, in place: its own texts (``args``,
        which ``repr`` shows, and every string attribute, such as ``message``) masked, and
        an exception chained to it that would show a credential in a traceback cut off."""
        for name, value in vars(error).items():
            if isinstance(value, str):
                setattr(error, name, self(value))
        error.args = tuple(self(a) if isinstance(a, str) else a for a in error.args)
        for link in (error.__cause__, error.__context__):
            if link is not None and self.chain_reveals(link):
                error.__cause__ = error.__context__ = None
                error.__suppress_context__ = True
        return error

    def safe_cause(self, cause: BaseException) -> BaseException | None:
        """``cause``, to chain a translated error to (``raise error from
        scrub.safe_cause(exc)``); None when a traceback of it would show a credential."""
        return None if self.chain_reveals(cause) else cause

    def chain_reveals(self, error: BaseException) -> bool:
        """True when ``error``, or any exception chained to it, would show a credential
        (or a URL's user, password or query) in a traceback."""
        seen: set[int] = set()
        current: BaseException | None = error
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            if self.reveals(f"{current!s} {current!r}"):
                return True
            current = current.__cause__ or current.__context__
        return False

    def __bool__(self) -> bool:
        return bool(self._masked)

    def __repr__(self) -> str:
        return f"Scrubber({len(self._masked)} secret(s))"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Scrubber cannot be pickled: it holds credentials")


def url_without_secrets(url: str) -> str:
    """``url`` as it may be shown: no user, password, query or fragment (keys go there).

    The one way batchrun shows a URL a user gave: a base URL, a ``--rate-limit-store``, an
    input, output, price or media URL, ``AWS_ENDPOINT_URL`` or ``STORAGE_EMULATOR_HOST``
    (which may come without a scheme: ``user:pw@host:4443``).
    """
    bare = "://" not in url and "@" in url.split("/", 1)[0]
    try:
        parts = urlsplit("//" + url if bare else url)
    except ValueError:  # such as an unclosed IPv6 bracket: cut by hand
        head = re.split(r"[?#]", url, maxsplit=1)[0]
        return re.sub(r"^([^:/?#]*:)?//[^/]*@", r"\1//", head)
    netloc = parts.netloc.rpartition("@")[2]
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return shown[2:] if bare else shown


def urls_without_secrets(text: str) -> str:
    """``text`` with every URL in it shown as ``url_without_secrets`` shows it.

    >>> urls_without_secrets("no answer from 'redis://:pw@cache:6379/0' (refused)")
    "no answer from 'redis://cache:6379/0' (refused)"
    """
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda found: url_without_secrets(found.group()), text)


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The credentials ``url`` carries, for a ``Scrubber``: its user and password (as
    written and decoded) and the values of its secret-looking query parameters
    (``key``, ``token``, ``password``, ``X-Amz-Signature`` ...).

    >>> url_secrets("redis://app:s%40cret@cache:6379/0?prefix=team-a&token=t0k")
    ('app', 's%40cret', 's@cret', 't0k')
    """
    if not url:
        return ()
    bare = "://" not in url and "@" in url.split("/", 1)[0]
    try:
        parts = urlsplit("//" + url if bare else url)
    except ValueError:  # unparseable: whatever sits between "//" and the last "@"
        found = re.match(r"^(?:[^:/?#]*:)?//([^/?#]*)@", url)
        user, _, password = found.group(1).partition(":") if found else ("", "", "")
        return _distinct([user, password, unquote(user), unquote(password)])
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    user, _, password = userinfo.partition(":")
    values = [user, password, unquote(user), unquote(password)]
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAMETER.search(name):
            values.append(value)
    return _distinct(values)


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    """The non-blank ``values``, each once, in order."""
    return tuple(dict.fromkeys(v for v in values if v.strip()))
