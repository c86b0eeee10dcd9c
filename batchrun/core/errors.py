"""The exception tree: every error batchrun raises on purpose.

    BatchrunError                    base class; str() is a message fit for a user
    ├── ConfigError                  job file, flags or environment are wrong (exit 1)
    │   ├── MissingExtraError        an optional extra a setting needs is not installed
    │   └── UnbuildableJobError      every row would be refused alike (runs.preflight; exit 2)
    ├── InputError                   the input file is unusable: names file, row, field
    │   ├── InvalidRowError          one row cannot be sent; the run records it and goes on
    │   └── UndecodableInputError    not text in its encoding from the start (rows.text; exit 2)
    ├── OutputError                  the output location cannot be written (exit 1)
    ├── FatalRunError                the whole run must stop (401/403, spend limit, ...)
    ├── StorageError                 an s3:// / gs:// / local location failed (remote.objects)
    └── ApiError                     one request failed; carries what the API said
        ├── ApiStatusError           a non-2xx response
        ├── ApiConnectionError       connection refused, reset or closed before a response
        ├── ApiTimeoutError          no complete response within the timeout
        ├── ApiResponseError         a 2xx that is unusable: malformed JSON, a cut stream,
        │                            or an ``error`` event inside an SSE stream
        └── ExceedsRateLimitError    one request needs more than a minute's rate limit; never sent

Foreign exceptions (httpx, aiohttp, OSError, json) are translated once, at the module that
meets them, and chained with ``raise ... from``. No message ever contains a credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from batchrun.core.wording import place


class BatchrunError(Exception):
    """Base class for errors batchrun raises on purpose."""


class ConfigError(BatchrunError):
    """The job file, a flag or the environment holds a value batchrun cannot use."""


class MissingExtraError(ConfigError):
    """A setting needs an optional extra that is not installed (``core.extras``): ``module``
    cannot be imported; ``pip install 'batchrun[extra]'`` brings it."""

    def __init__(self, message: str, *, module: str, extra: str) -> None:
        super().__init__(message)
        self.module = module
        self.extra = extra


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a row: the field it concerns (or None) and why."""

    field: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InputError(BatchrunError):
    """A problem with the input, located by file, row (1-based line or row number) and field.

    The place is worded when the error is made (``core.wording.place``): the rows a Python
    caller gave ``batchrun.run`` are named as the caller holds them (``rows[2]``), never by
    the temporary file they were staged in.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.row = row
        self.field = field
        self.where = place(file, row)
        super().__init__(self.__str__())

    @property
    def what(self) -> str:
        """The problem without its place: the same text for the same problem on any row."""
        return f"{self.field}: {self.message}" if self.field else self.message

    def __str__(self) -> str:
        return f"{self.where}: {self.what}" if self.where else self.what


class InvalidRowError(InputError):
    """A row that breaks a rule the API would reject; it is recorded as an error, never sent.

    ``problems`` lists every problem found in the row; ``message`` joins them.
    """

    def __init__(
        self,
        problems: list[Problem],
        *,
        file: str | None = None,
        row: int | None = None,
    ) -> None:
        self.problems = list(problems)
        first_field = problems[0].field if len(problems) == 1 else None
        message = "; ".join(str(p) if len(problems) > 1 else p.message for p in problems)
        super().__init__(message, file=file, row=row, field=first_field)

    def located(self, file: str | None, row: int | None) -> InvalidRowError:
        """The same problems, placed at a file and row (request building knows neither)."""
        return InvalidRowError(self.problems, file=file, row=row)


class OutputError(BatchrunError):
    """The output location cannot be created, written or renamed."""


class FatalRunError(BatchrunError):
    """An error that makes every further request pointless (bad key, spend limit, ...)."""


class ApiError(BatchrunError):
    """One request failed. Carries what the API said, for the output row and the retry policy.

    ``status`` is the HTTP status (None when no response arrived), ``error_type`` the API's
    ``error.type`` (or one of ours: ``connection_error``, ``timeout``, ``malformed_response``,
    ``stream_interrupted``), ``retry_after`` seconds from ``retry-after-ms``/``retry-after``,
    ``should_retry`` the ``x-should-retry`` header when present, ``attempts`` how many sends
    this failure took (set by the retry loop).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str = "api_error",
        request_id: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        error_code: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.error_type = error_type
        self.request_id = request_id
        self.retry_after = retry_after
        self.should_retry = should_retry
        self.error_code = error_code
        self.attempts = 1
        super().__init__(message)

    def __str__(self) -> str:
        status = f"HTTP {self.status} " if self.status is not None else ""
        return f"{status}{self.error_type}: {self.message}"


class ApiStatusError(ApiError):
    """The API answered with a non-2xx status.

    ``rate_limit_headers`` keeps the response's ``anthropic-ratelimit-*`` headers: a 429
    carries the limits and remaining budgets too, and pacing should learn from it.
    """

    rate_limit_headers: Mapping[str, str] = MappingProxyType({})


# The ``error_type`` of the two failures that mean no answer came at all.
CONNECTION_ERROR = "connection_error"
TIMEOUT = "timeout"


class ApiConnectionError(ApiError):
    """No response: the connection was refused, reset or closed."""


class ApiTimeoutError(ApiError):
    """No complete response within the timeout."""


class ApiResponseError(ApiError):
    """A 2xx response that cannot be used: malformed body, cut stream, or an in-stream error."""


class ExceedsRateLimitError(ApiError):
    """One request needs more than a whole minute's rate limit, so it could never be admitted.

    Raised before sending, as a row-level failure: the row is written as an error, the run goes
    on. Never retried: waiting cannot make a minute's budget larger.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, error_type="exceeds_rate_limit")
