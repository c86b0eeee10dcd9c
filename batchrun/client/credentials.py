"""Who a run is to the API, and which API version it speaks: plain data, no HTTP library.

``config`` builds these from the environment and ``client.messages`` turns them into headers; both
import them from here, so reading a configuration loads no HTTP code.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchrun.core.secret import Secret

DEFAULT_API_VERSION = "2023-06-01"
"""The ``anthropic-version`` header a run sends unless told otherwise."""

API_KEY_ENV = "ANTHROPIC_API_KEY"  # sent as x-api-key
AUTH_TOKEN_ENV = "ANTHROPIC_AUTH_TOKEN"  # sent as Authorization: Bearer (gateways)


@dataclass(frozen=True)
class Credentials:
    """Who we are: an API key (``x-api-key``) and/or a bearer token (gateways)."""

    api_key: Secret | None = None
    auth_token: Secret | None = None

    def secrets(self) -> tuple[tuple[str, Secret], ...]:
        """(environment variable, value) of each credential present: what must never show."""
        found = ((API_KEY_ENV, self.api_key), (AUTH_TOKEN_ENV, self.auth_token))
        return tuple((name, secret) for name, secret in found if secret is not None)
