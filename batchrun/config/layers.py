"""A job's settings as small frozen objects, one per layer that reads them.

``load_config`` resolves every setting of the table (``config.settings``: flag > environment >
job file > default) and builds these in one place (``build``): each setting names its layer
and its field there (``Setting.layer``, ``Setting.field``), so a setting added to the table
lands in its object without another line here. A few fields are derived from several
settings or from the environment (the credentials, the price table, the rate limits, the
request defaults); each class lists those in ``DERIVED``.

A layer takes its own object, never the whole job: the engine its ``EngineSettings`` and
``CostSettings``, the client its ``ClientSettings``, the output writer its
``OutputSettings`` (as httpx's client takes a ``Timeout`` and ``Limits``). The drivers, which
compose the layers, hold the whole job (``RunConfig``, in ``config.load``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from batchrun.client.credentials import DEFAULT_API_VERSION, Credentials
from batchrun.config.settings import (
    BATCH_MAX_MB,
    BATCH_MAX_REQUESTS,
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_GRACE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    SETTINGS,
)
from batchrun.cost.prices import PriceTable, default_prices
from batchrun.limits.values import LimitsConfig
from batchrun.rows.files import MediaSource
from batchrun.rows.shape import InputShape

MIB = 1024 * 1024  # "MB" as in the API's size limits (and request.MAX_REQUEST_BYTES)
HttpBackend = Literal["aiohttp", "httpx"]


@dataclass(frozen=True)
class InputSettings:
    """Where the rows come from and how to read them (``rows``)."""

    LAYER: ClassVar[str] = "input"
    DERIVED: ClassVar[tuple[str, ...]] = ("url", "media_source")

    path: Path = Path("-")  # the input file; for one on S3 or GCS, its local copy
    url: str | None = None  # the input's s3:// or gs:// URL, when it is remote
    format: str | None = None  # --format: overrides the input's name
    csv_delimiter: str | None = None  # a CSV input's field delimiter; None: "," (TSV: tab)
    encoding: str | None = None  # the text encoding; None: its byte-order mark's, else UTF-8
    media_root: Path | None = None  # where file references resolve; None: the input's folder
    # The media folder when it is on S3 or GCS: what file references are read through.
    media_source: MediaSource | None = None

    @property
    def shape(self) -> InputShape:
        """What, beside its name, tells how to read the input."""
        return InputShape(self.format, self.csv_delimiter, self.encoding)

    @property
    def media_folder(self) -> Path:
        """Where rows' file references resolve, and must stay inside."""
        return self.media_root or self.path.parent

    @property
    def shown(self) -> str:
        """The input's name for a person: its URL for one on object storage (shown without
        credentials), "the rows given to run()" for rows from Python, else its path."""
        from batchrun.core.scrub import url_without_secrets
        from batchrun.core.wording import shown_input

        return url_without_secrets(self.url) if self.url else shown_input(self.path)


@dataclass(frozen=True)
class OutputSettings:
    """Where the answers go and how they are kept (``store``, ``remote``)."""

    LAYER: ClassVar[str] = "output"
    DERIVED: ClassVar[tuple[str, ...]] = ("url", "cache_home", "lease_ttl")

    path: Path = Path("out.parquet")  # the output; for one on S3 or GCS, its local copy
    url: str | None = None  # the output's s3:// or gs:// URL, when it is remote
    # --output-format (a folder format's name: "parquet-dataset"), or the folder format for an
    # output that ends with a slash; None: the output's name says it (formats.registry).
    format: str | None = None
    part_rows: int = 1_000_000  # rows per part of a dataset output (store.dataset)
    keep_columns: tuple[str, ...] = ()
    work_dir: Path | None = None  # a remote output's work folder; None: under cache_home
    cache_home: Path | None = None  # $XDG_CACHE_HOME or ~/.cache, from the environment
    segment_rows: int = 10_000  # a remote output's journal is sealed every N rows ...
    segment_seconds: float = 60.0  # ... or every N seconds
    keep_journal: bool = False
    # Seconds an s3:// or gs:// output's lease lives without renewal (remote.lease); renewed
    # every fifth of it. Not a setting: tests shorten it through BATCHRUN_LEASE_TTL.
    lease_ttl: float = 300.0

    @property
    def shown(self) -> str:
        """The output's name for a person: its URL for one on object storage (never the
        work folder's copy), else its path. URLs are shown without credentials."""
        from batchrun.core.scrub import url_without_secrets

        return url_without_secrets(self.url) if self.url else str(self.path)


@dataclass(frozen=True)
class ClientSettings:
    """How the Messages API is reached (``client``)."""

    LAYER: ClassVar[str] = "client"
    DERIVED: ClassVar[tuple[str, ...]] = ("credentials",)

    base_url: str = DEFAULT_BASE_URL
    api_version: str = DEFAULT_API_VERSION
    betas: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    http_backend: HttpBackend = "aiohttp"
    simulate: bool = False  # an in-process simulator answers instead of the API
    allow_insecure_http: bool = False
    credentials: Credentials = field(default_factory=Credentials)


@dataclass(frozen=True)
class EngineSettings:
    """How rows are sent (``engine``): the pool, retries, limits, dedup, the replies' schema."""

    LAYER: ClassVar[str] = "engine"
    DERIVED: ClassVar[tuple[str, ...]] = ("concurrency_auto", "limits")

    concurrency: int = DEFAULT_CONCURRENCY  # with concurrency_auto: the most it may choose
    concurrency_auto: bool = False  # --concurrency auto (limits.tuner.ConcurrencyTuner)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    max_retries: int = DEFAULT_MAX_RETRIES
    max_retry_wait: float | None = None  # seconds; None: honour the API's retry-after in full
    stream: bool = False
    dedup: bool = True  # identical requests are sent once (engine.dedup)
    rate_limit_store: str | None = None  # redis://...: limits shared by many processes
    json_schema: Mapping[str, Any] | None = None  # replies must satisfy it (rows.structured)
    # --answer-cache: an absolute folder or an s3:// / gs:// prefix (engine.answer_cache)
    answer_cache: str | None = None
    answer_cache_samples: bool = False  # reuse sampled answers even with --no-dedup
    samples: int = 1  # requests per row, folded into one output row (engine.samples)


@dataclass(frozen=True)
class CostSettings:
    """What answers cost and how much the job may spend (``cost``)."""

    LAYER: ClassVar[str] = "cost"
    DERIVED: ClassVar[tuple[str, ...]] = ("prices", "prices_url")

    max_cost: float | None = None  # USD, the job's across its runs (store.spend)
    prices: PriceTable = field(default_factory=default_prices)
    prices_url: str | None = None  # a price file on S3 or GCS, read by the run (runs.fetch)


@dataclass(frozen=True)
class ResumeSettings:
    """What a run does with what earlier runs left (``runs.resume``, ``runs.plan``)."""

    LAYER: ClassVar[str] = "resume"
    DERIVED: ClassVar[tuple[str, ...]] = ()

    overwrite: bool = False  # start afresh
    retry_errors: bool = False  # send again the rows that ended in an error
    resend_changed: bool = False  # send again rows whose request changed
    reask_other_source: bool = False  # send again rows another source answered
    keep_other_source: bool = False  # ... or keep them as done (store.provenance)


@dataclass(frozen=True)
class BatchSettings:
    """How a job goes through the Message Batches API (``batches``)."""

    LAYER: ClassVar[str] = "batches"
    DERIVED: ClassVar[tuple[str, ...]] = ("max_bytes",)

    max_requests: int = BATCH_MAX_REQUESTS
    max_bytes: int = int(BATCH_MAX_MB * MIB)
    poll_interval: float = DEFAULT_POLL_INTERVAL  # the first wait; it grows while nothing moves
    resubmit_expired: bool = False  # send expired / canceled batch rows again, in a new batch
    finish_online: bool = False  # ... or online instead
    deadline: str | None = None  # --via auto: a duration from the run's start, or a time


@dataclass(frozen=True)
class RunSettings:
    """How the run speaks and stops (``runs``, ``cli``)."""

    LAYER: ClassVar[str] = "run"
    DERIVED: ClassVar[tuple[str, ...]] = ()

    quiet: bool = False
    grace: float = DEFAULT_GRACE  # seconds in-flight requests may take after Ctrl-C
    json_summary: bool = False  # run --json: the summary as JSON on stdout
    limit: int | None = None  # a trial of the job's first rows (``public.trial``)
    sample: int | None = None  # ... or of rows drawn at random with ``seed``
    seed: int = 0


LAYERS: tuple[type[Any], ...] = (
    InputSettings,
    OutputSettings,
    ClientSettings,
    EngineSettings,
    CostSettings,
    ResumeSettings,
    BatchSettings,
    RunSettings,
)


class _Layer(Protocol):
    LAYER: ClassVar[str]
    DERIVED: ClassVar[tuple[str, ...]]


T = TypeVar("T", bound=_Layer)


def build(cls: type[T], values: Mapping[str, Any], **derived: Any) -> T:
    """``cls``'s object from the resolved settings ``values`` (by key): each setting of its
    layer goes to its field (``Setting.field``, else its key), a value of None leaving the
    field's default; ``derived`` gives the fields ``cls.DERIVED`` names."""
    layer = cls.LAYER
    wanted = set(cls.DERIVED)
    if set(derived) != wanted:
        raise TypeError(f"{cls.__name__} is built with {sorted(wanted)}, not {sorted(derived)}")
    given: dict[str, Any] = dict(derived)
    for setting in SETTINGS:
        if setting.layer != layer or setting.feeds is not None:
            continue
        value = values.get(setting.key)
        if value is not None:
            given[setting.field or setting.key] = value
    return cls(**given)


def fields_of(cls: type[Any]) -> set[str]:
    """The fields of a settings class (for the table's own test)."""
    return {f.name for f in dataclasses.fields(cls)}
