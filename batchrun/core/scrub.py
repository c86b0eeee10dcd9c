"""Credentials out of everything a run shows or writes: the one scrubber, and URLs made safe.

A server or a gateway may quote the credential it refused (``invalid x-api-key sk-ant-...``),
often cut short. ``Scrubber`` masks each of the run's credential values in a text, whole or
quoted in part, so that the text can go to a message, a journal record, an output row, a log
line or a traceback:

>>> scrub = Scrubber(["sk-ant-api03-EXAMPLEexampleEXAMPLE"])
>>> scrub("invalid x-api-key sk-ant-api03-EXAMPLEexam...")
'invalid x-api-key sk-ant-…[redacted]...'

``url_without_secrets`` shows a URL without the parts gateways put keys in:

>>> url_without_secrets("http://user:KEY@gateway.example:8080/v1?key=KEY")
'http://gateway.example:8080/v1'
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, urlsplit, urlunsplit

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
    """Masks a run's credential values in any text: ``scrub(text)``.

    Built from ``Secret``s (or plain strings, blank ones ignored), such as the ones in
    ``api.credentials.Credentials``. It holds the values, so, like ``Secret``, it neither
    shows them nor can be pickled.
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
        return text

    def reveals(self, text: str) -> bool:
        """True when ``text`` shows any credential, whole or in part."""
        return self(text) != text

    def __bool__(self) -> bool:
        return bool(self._masked)

    def __repr__(self) -> str:
        return f"Scrubber({len(self._masked)} secret(s))"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Scrubber cannot be pickled: it holds credentials")


def url_without_secrets(url: str) -> str:
    """``url`` as it may be shown: no user, password, query or fragment (keys go there)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # such as an unclosed IPv6 bracket: cut by hand
        head = re.split(r"[?#]", url, maxsplit=1)[0]
        return re.sub(r"^([^:/?#]*:)?//[^/]*@", r"\1//", head)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
