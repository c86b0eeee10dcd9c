"""Run configuration: job-file loading, precedence, validation. The only reader of os.environ.

Every setting comes from, in order of precedence::

    command-line flag  >  environment (BATCHRUN_<KEY>, ANTHROPIC_*)  >  job file  >  default

Which settings there are, their flags, variables, job keys, types and defaults is the one
table in ``config/settings.py``; this module resolves a run from it. A job file is TOML whose
keys are the table's job keys; paths in it are relative to the job file itself. Example::

    input = "../sample_data/reviews.jsonl"
    output = "../out/labels.parquet"
    model = "claude-haiku-4-5"
    max_tokens = 5
    system = "Answer positive, negative or neutral."
    concurrency = 64            # or "auto": chosen from the rate limits and the latency

    [limits]                    # per minute; each is also a flag (--rpm ...) and BATCHRUN_RPM ...
    rpm = 1000
    itpm = 400000
    [limits."claude-sonnet-4-6"]  # per model, field by field over the ones above
    otpm = 80000
"""

from __future__ import annotations

import difflib
import os
import posixpath
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit, urlunsplit

from batchrun.client.credentials import API_KEY_ENV, AUTH_TOKEN_ENV, Credentials
from batchrun.config.atfile import ESCAPE, AtFileError, at_file, literal, read_at_file
from batchrun.config.layers import (
    MIB,
    BatchSettings,
    ClientSettings,
    CostSettings,
    EngineSettings,
    InputSettings,
    OutputSettings,
    ResumeSettings,
    RunSettings,
    build,
)
from batchrun.config.settings import (
    BATCH_MAX_MB,
    BATCH_MAX_REQUESTS,
    BY_KEY,
    CACHE_MODES,
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_POLL_INTERVAL,
    ENV_VARS,
    JOB_KEYS,
    SIMULATE_POLL_INTERVAL,
    Setting,
)
from batchrun.core.deadline import DEADLINE_FORMS, deadline_moment
from batchrun.core.errors import ConfigError
from batchrun.core.extras import require_extra
from batchrun.core.locations import (
    StorageSettings,
    cached_copy_path,
    is_remote,
    storage_endpoints,
)
from batchrun.core.scrub import url_without_secrets, urls_without_secrets
from batchrun.core.secret import Secret
from batchrun.core.wording import named, option
from batchrun.cost.models import tokenizer_factor
from batchrun.cost.prices import (
    PriceTable,
    default_prices,
    load_prices,
    min_cacheable_tokens,
)
from batchrun.formats.registry import (
    file_suffixes,
    folder_output,
    names_folder,
    output_by_suffix,
    said,
)
from batchrun.limits.values import AUTO_MAX, Limits, LimitsConfig
from batchrun.rows.files import MediaSource
from batchrun.rows.prefix import CachePolicy
from batchrun.rows.request import RequestDefaults, check_defaults
from batchrun.rows.shape import check_encoding, split_suffix

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "BATCH_MAX_MB",
    "BATCH_MAX_REQUESTS",
    "DEFAULT_BASE_URL",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_POLL_INTERVAL",
    "JOB_KEYS",
    "MIB",
    "SIMULATE_POLL_INTERVAL",
    "SIMULATOR_KEY",
    "RunConfig",
    "did_you_mean",
    "is_job_file",
    "load_config",
]

SIMULATOR_KEY = "sim-local-key"

HttpBackend = Literal["aiohttp", "httpx"]
Via = Literal["online", "batches", "auto"]

_LIMIT_KEYS = ("rpm", "itpm", "otpm")


@dataclass(frozen=True)
class RunConfig:
    """A job: every setting resolved and validated, one small object per layer that reads
    them (``config.layers``). Build it with ``load_config``. The drivers that compose the
    layers hold it; a layer takes its own part (``config.engine``, ``config.output`` ...)."""

    input: InputSettings
    output: OutputSettings
    defaults: RequestDefaults = field(default_factory=RequestDefaults)  # each request's
    client: ClientSettings = field(default_factory=ClientSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    cost: CostSettings = field(default_factory=CostSettings)
    resume: ResumeSettings = field(default_factory=ResumeSettings)
    batches: BatchSettings = field(default_factory=BatchSettings)
    run: RunSettings = field(default_factory=RunSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    via: Via = "online"  # "batches": through the Message Batches API (batches.run)
    shard: tuple[int, int] | None = None  # (index, count): only the rows of that shard
    job_file: Path | None = None

    def __repr__(self) -> str:
        # The base URL, the Redis store and the endpoints may carry a password or a token.
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return urls_without_secrets(f"RunConfig({shown})")


def output_format_of(text: str, output: Path, declared: str | None, shown: str) -> str | None:
    """The output's format as said: ``declared`` (``--output-format``), or the folder format
    for an output that ends with a slash (``text``, as given: a Path drops the slash); None
    when the name says it (``formats.registry.output_for``). ConfigError for a name that says
    no output format (``shown`` names the output)."""
    if declared is None and names_folder(text):
        return folder_output().name
    if declared is None and output_by_suffix(output) is None:
        folder = folder_output()
        raise ConfigError(
            f"output {shown}: the name must end in {said(file_suffixes())}, or with a / for "
            f"{folder.described} ({option('output_format', folder.name)})"
        )
    return declared


def is_job_file(source: Path) -> bool:
    """A SOURCE ending in .toml is a job file; anything else is a dataset."""
    return source.suffix.lower() == ".toml"


def load_config(
    source: Path | str,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunConfig:
    """Resolve a run's settings from a job file or dataset, flags and the environment.

    ``flags`` holds only the flags the user gave (None means "not given"); ``environ``
    defaults to ``os.environ``. Example::

        cfg = load_config(Path("jobs/label_sentiment.toml"), {"concurrency": 64})
    """
    env = dict(os.environ if environ is None else environ)
    given = {k: v for k, v in (flags or {}).items() if v is not None and v != ()}
    job: dict[str, Any] = {}
    job_file: Path | None = None
    job_url: str | None = None  # a job file on S3 or GCS
    endpoints = storage_endpoints(env)
    if is_remote(source) and str(source).lower().endswith(".toml"):
        job_url = str(source)
        job = _read_remote_job_file(job_url, endpoints)
    elif not is_remote(source) and is_job_file(Path(source)):
        source = job_file = Path(source)
        job = _read_job_file(source)
    else:
        job["input"] = str(source)

    # flag > environment > job file; a default only where the table has one (see _value).
    settings = {**job, **_from_env(env), **given}
    base = job_file.parent if job_file else Path.cwd()

    if job_url is not None:
        # A remote job file's relative input, output and prices are beside it on the store.
        for key in ("input", "output", "prices", "media_root", "answer_cache"):
            if key in job and key not in given and _relative(settings.get(key)):
                settings[key] = _beside(job_url, str(settings[key]))

    def path_of(key: str, named: str | None = None) -> Path | None:
        """The path setting ``key`` gives, or that its value names (``named``: @FILE)."""
        value = settings.get(key) if named is None else named
        if value is None:
            return None
        if job_url is not None and key in job and key not in given and _relative(value):
            raise ConfigError(
                f"{url_without_secrets(job_url)}: `{key}` = {value!r} is relative, and a job "
                "file on S3 or GCS has no local folder to resolve it in: give an absolute path"
            )
        # Job-file paths are relative to the job file; flag/env paths to the working directory.
        origin = base if key in job and key not in given else Path.cwd()
        return (origin / Path(str(value)).expanduser()).resolve()

    def value(key: str) -> Any:
        return _value(BY_KEY[key], settings)

    for setting in BY_KEY.values():  # `system = "@prompt.txt"`: the file's text
        if setting.reads_file and isinstance(settings.get(setting.key), str):
            settings[setting.key] = _file_text(setting.key, settings[setting.key], path_of)

    work_dir = path_of("work_dir")
    cache_home = _cache_home(env)
    input_url = _url(settings.get("input"))
    output_url = _url(settings.get("output"))
    if input_url is not None:
        # Where its local copy goes; the run downloads it (``runs.fetch``), not the config.
        input_path: Path | None = cached_copy_path(input_url, cache_home)
    else:
        input_path = path_of("input")
    if input_path is None:
        raise ConfigError(f"{source}: no input: set `input` in the job file")
    if output_url is not None:
        output = _mirror_of(output_url, work_dir, cache_home)
    else:
        # reviews.jsonl.gz -> reviews.results.parquet: the compression suffix is no part of it
        stem = Path(split_suffix(input_path.name)[0]).stem
        output = path_of("output") or (Path.cwd() / f"{stem}.results.parquet")
    output_format = output_format_of(
        str(settings.get("output") or ""),
        output,
        cast("str | None", value("output_format")),
        url_without_secrets(output_url) if output_url else str(output),
    )
    if input_url is not None and input_url == output_url:
        raise ConfigError(
            f"output {url_without_secrets(output_url)} is the input: write to another one "
            f"({option('output', 'OUT')})"
        )
    check_output_is_not_input(input_path, output)
    keep_columns = tuple(_str_list(settings, "keep_columns"))
    check_keep_columns(keep_columns)

    simulate = bool(value("simulate"))
    base_url = str(settings.get("base_url") or DEFAULT_BASE_URL)
    allow_insecure = bool(value("allow_insecure_http"))
    if not simulate:
        _check_base_url(base_url, allow_insecure)
    concurrency, concurrency_auto = _concurrency(settings)
    rate_limit_store = value("rate_limit_store")
    answer_cache = _url(settings.get("answer_cache")) or _str_or_none(path_of("answer_cache"))
    _check_deadline(value("via"), settings.get("deadline"))
    if rate_limit_store is not None:  # its library, before anything is written or sent
        require_extra("redis", "redis", option("rate_limit_store"))
    schema_path = path_of("json_schema")
    schema = None if schema_path is None else _load_schema(schema_path)
    _check_answer_columns(schema, keep_columns)
    # The built-in simulator ends a batch in half a second: no reason to wait ten.
    poll_default = SIMULATE_POLL_INTERVAL if simulate else DEFAULT_POLL_INTERVAL
    media_url = _url(settings.get("media_root"))
    if media_url is None and input_url is not None and settings.get("media_root") is None:
        media_url = input_url.rsplit("/", 1)[0]  # the remote input's folder
    prices_url = _url(settings.get("prices"))
    # A price file on S3 or GCS is read by the run (``runs.fetch``), which lays it over these.
    prices = load_prices(None if prices_url is not None else path_of("prices"))

    values = {
        **settings,
        "input": input_path,
        "output": output,
        "output_format": output_format,
        "keep_columns": keep_columns,
        "base_url": base_url,
        "concurrency": concurrency,
        "betas": tuple(_str_list(settings, "betas")),
        "json_schema": schema,
        "poll_interval": _value(BY_KEY["poll_interval"], settings, poll_default),
        "csv_delimiter": _delimiter(value("csv_delimiter")),
        "encoding": _encoding(value("encoding")),
        "media_root": None if media_url is not None else _media_root(path_of("media_root")),
        "reask_other_source": _not_both(value, "reask_other_source", "keep_other_source"),
        "work_dir": work_dir,
        "rate_limit_store": rate_limit_store,
        "answer_cache": answer_cache,
        **{key: value(key) for key in _CHECKED},
    }
    return RunConfig(
        input=build(
            InputSettings, values, url=input_url, media_source=_media_source(media_url, endpoints)
        ),
        output=build(
            OutputSettings, values, url=output_url, cache_home=cache_home, lease_ttl=_lease_ttl(env)
        ),
        defaults=_with_schema(_request_defaults(settings, prices), schema, str(schema_path)),
        client=build(ClientSettings, values, credentials=_credentials(env, simulate)),
        engine=build(
            EngineSettings,
            values,
            concurrency_auto=concurrency_auto,
            limits=_limits(settings, job.get("limits") or {}),
        ),
        cost=build(CostSettings, values, prices=prices, prices_url=prices_url),
        resume=build(ResumeSettings, values),
        batches=build(BatchSettings, values, max_bytes=int(value("batch_max_mb") * MIB)),
        run=build(RunSettings, values),
        storage=StorageSettings(*endpoints),
        via=cast(Via, value("via")),
        shard=_shard(value("shard")),
        job_file=job_file,
    )


# Settings checked against the table's bounds and choices as they are resolved (``_value``).
_CHECKED = (
    "max_retries",
    "max_retry_wait",
    "timeout",
    "api_version",
    "http_backend",
    "grace",
    "max_cost",
    "batch_max_requests",
    "input_format",
    "segment_rows",
    "segment_seconds",
    "part_rows",
)


def _file_text(key: str, value: str, path_of: Callable[[str, str], Path | None]) -> str:
    """A text setting's value: the text of the file ``@NAME`` names (relative to the job
    file for a job file's value, else to the working directory), or the text itself with
    ``@@`` read as one ``@`` (``config.atfile``, which the JSON flags read files with too)."""
    name = at_file(value)
    if name is None:
        return literal(value)
    path = path_of(key, name)
    assert path is not None  # a name was given
    try:
        return read_at_file(name, path)
    except AtFileError as exc:
        raise AtFileError(
            f"`{key}` = {value!r}: {exc}. A value that starts with @ names the file to read "
            f"the {key} from; to send text that starts with @, write @@ "
            f"({ESCAPE + name!r} sends {value!r})"
        ) from None


def _lease_ttl(env: Mapping[str, str]) -> float:
    """BATCHRUN_LEASE_TTL (seconds), a seam for tests of a lapsed lease; 300 without it."""
    raw = env.get("BATCHRUN_LEASE_TTL", "")
    if not raw:
        return 300.0
    try:
        ttl = float(raw)
    except ValueError:
        ttl = 0.0
    if not 0 < ttl < float("inf"):
        raise ConfigError(f"BATCHRUN_LEASE_TTL={raw!r}: give a number of seconds above 0")
    return ttl


# The most shards a job is split into. Every shard reads the whole input (its ids, and its
# bytes for the input's stamp) to find its rows, so N shards read the input N times; and
# merge keeps a small record per shard. 10,000 keeps both sane, and is beyond any useful
# number of workers sharing one organisation's rate limit (4,000 RPM over 10,000 workers is
# one request each per 2.5 s).
MAX_SHARDS = 10_000


def _shard(value: str | None) -> tuple[int, int] | None:
    """``"1/4"`` -> (1, 4): shard 1 of 4 (0-based), refused unless 0 <= I < N <= MAX_SHARDS."""
    if value is None:
        return None
    index, _, count = str(value).partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = (-1, 0)
    check_shard(*shard, shown=repr(value))
    return shard


def check_shard(index: int, count: int, shown: str | None = None) -> None:
    """ConfigError unless shard ``index`` of ``count`` is one a job can be split into."""
    shown = shown or repr(f"{index}/{count}")
    if not 0 <= index < count:
        raise ConfigError(f"`shard` must be I/N with 0 <= I < N (0/4 ... 3/4), not {shown}")
    if count > MAX_SHARDS:
        raise ConfigError(
            f"`shard` {shown}: a job is split into at most {MAX_SHARDS:,} shards (each shard "
            "reads the whole input to find its rows, so more shards only multiply that "
            "reading): use a smaller N"
        )


def output_alone(
    output: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> tuple[OutputSettings, StorageSettings]:
    """The settings of an output named alone (``batchrun merge OUTPUT``): a local path made
    absolute, or an ``s3://`` / ``gs://`` URL with its local copy in its work folder and its
    lease, and the store's endpoints; from the environment (``environ``, or ``os.environ``)
    as ``load_config`` takes them."""
    env = dict(os.environ if environ is None else environ)
    storage = StorageSettings(*storage_endpoints(env))
    url = _url(str(output))
    if url is None:
        return OutputSettings(path=Path(output).expanduser().absolute()), storage
    cache_home = _cache_home(env)
    settings = OutputSettings(
        path=_mirror_of(url, None, cache_home),
        url=url,
        cache_home=cache_home,
        lease_ttl=_lease_ttl(env),
    )
    return settings, storage


def _str_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _url(value: Any) -> str | None:
    return value if isinstance(value, str) and is_remote(value) else None


def _cache_home(env: Mapping[str, str]) -> Path:
    """Where batchrun keeps local copies of remote files: the XDG cache folder."""
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def _mirror_of(url: str, work_dir: Path | None, cache_home: Path) -> Path:
    """The local copy of the remote output ``url``, in its work folder (``remote.mirror``)."""
    # Imported here: a job with local files only has no use for the storage layer.
    from batchrun.remote.mirror import RemoteOutput

    return RemoteOutput.local_output_of(url, work_dir, cache_home)


def _read_remote_job_file(url: str, endpoints: tuple[str | None, str | None]) -> dict[str, Any]:
    """The job file at ``url`` (S3 or GCS), read through the storage layer."""
    from batchrun.remote.objects import Storage

    shown = url_without_secrets(url)
    data = Storage(StorageSettings(*endpoints)).read_bytes(url)
    try:
        job: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: a job file must be UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: not valid TOML: {exc}") from exc
    _check_job_keys(shown, job)
    return job


def _media_source(url: str | None, endpoints: tuple[str | None, str | None]) -> MediaSource | None:
    if url is None:
        return None
    from batchrun.remote.objects import Storage, StorageMedia

    return StorageMedia(Storage(StorageSettings(*endpoints)), url)


def _relative(value: Any) -> bool:
    """A job file's value that is a relative local path (not a URL, not absolute)."""
    if not isinstance(value, str) or is_remote(value):
        return False
    return not Path(value).expanduser().is_absolute()


def _beside(job_url: str, relative: str) -> str:
    """``relative`` resolved against the folder of the job file at ``job_url``:
    ``s3://b/jobs/x.toml`` and ``../data/in.jsonl`` give ``s3://b/data/in.jsonl``."""
    parts = urlsplit(job_url)
    folder = posixpath.dirname(parts.path)
    path = posixpath.normpath(posixpath.join(folder, relative))
    if relative.endswith("/") and not path.endswith("/"):
        path += "/"  # a folder output stays one
    if not path.startswith("/") or path == "/":
        raise ConfigError(f"{url_without_secrets(job_url)}: {relative!r} leads out of the bucket")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _delimiter(value: str | None) -> str | None:
    if value is None:
        return None
    if value in ("\\t", "tab"):
        return "\t"
    if len(value) != 1 or value in ('"', "\n", "\r"):
        raise ConfigError(f"`csv_delimiter` must be one character (a tab: \\t), not {value!r}")
    return value


# Encodings to suggest for a misspelt one.
_ENCODINGS = frozenset(
    ("utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252", "iso-8859-15")
)


def _encoding(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_encoding(value)
    except ValueError as exc:
        raise ConfigError(
            f"`encoding`: {exc}{did_you_mean(value.lower(), _ENCODINGS)}; give one Python "
            "reads text in, such as utf-8, utf-16, latin-1 or cp1252"
        ) from None


def _media_root(path: Path | None) -> Path | None:
    if path is not None and not path.is_dir():
        raise ConfigError(f"`media_root` {path}: not a folder")
    return path


def check_output_is_not_input(input_path: Path, output: Path) -> None:
    """ConfigError when the output would be written over the input.

    The same file by path (symbolic links resolved) or, when both exist, by inode (a hard
    link). An input is always a file (``rows.reader.check_input_file``): there is no dataset
    folder an output could sit inside.
    """
    same = input_path.resolve() == output.resolve()
    if not same and input_path.exists() and output.exists():
        try:
            same = os.path.samefile(input_path, output)
        except OSError:
            same = False
    if same:
        raise ConfigError(
            f"output {output} is the input file: the run would replace its input with its "
            f"results. Write to another file ({option('output', 'OUT')})"
        )


def check_keep_columns(columns: Sequence[str]) -> None:
    """ConfigError for a kept column whose name the output already uses.

    A kept input column is written under its own name, so it must not be one of the output
    columns (``store.columns``: it would overwrite the answer's ``text``, null every ``id``)
    nor the journal's ``_index`` (every row's position: resume would lose every row).
    Whether the input has the column at all is checked when the run reads it
    (``runs.claim.claim_output``).
    """
    # Imported here: the store loads pyarrow, which resolving a config does not need.
    from batchrun.store.columns import COLUMN_NAMES
    from batchrun.store.journal import INDEX

    seen: set[str] = set()
    for name in columns:
        if name == "id":
            raise ConfigError(
                "`keep_columns`: `id` is always in the output (each row's id, as the input "
                f"gives it or row-<index>): drop it from {named('keep_columns')}"
            )
        if name in COLUMN_NAMES:
            raise ConfigError(
                f"`keep_columns`: `{name}` is one of the output's own columns, which a kept "
                f"input column would overwrite. Rename the input column (e.g. to "
                f"`input_{name}`) and keep that, or drop `{name}` from keep_columns"
            )
        if name == INDEX:
            raise ConfigError(
                f"`keep_columns`: `{INDEX}` is the name batchrun's journal gives each row's "
                f"position; rename the input column (e.g. to `input{INDEX}`) and keep that, "
                f"or drop `{INDEX}` from keep_columns"
            )
        if name in seen:
            raise ConfigError(f"`keep_columns` names `{name}` twice")
        seen.add(name)


def _value(setting: Setting, settings: Mapping[str, Any], default: Any = None) -> Any:
    """``setting``'s resolved value (else ``default``, else the table's), checked against the
    table's choices and bounds. Messages name the key: the value may come from a flag, a
    variable or the job file."""
    key = setting.key
    value = settings.get(key, setting.default if default is None else default)
    if value is None:
        return None
    if setting.kind == "choice" and value not in setting.choices:
        raise ConfigError(f"`{key}` must be {' or '.join(setting.choices)}, not {value!r}")
    if setting.kind not in ("int", "number"):
        return value
    whole = setting.kind == "int"
    low = setting.low
    op = ">" if setting.low_open else ">="
    what = "a whole number" if whole else "a number"
    if setting.unit:
        what += f" of {setting.unit}"
    if low is not None:
        what += f" {op} {low:g}"
    if (
        isinstance(value, bool)
        or not isinstance(value, (int,) if whole else (int, float))
        or (low is not None and not (value > low if setting.low_open else value >= low))
    ):
        raise ConfigError(f"`{key}` must be {what}, not {value!r}")
    if setting.high is not None and value > setting.high:
        raise ConfigError(f"`{key}` must be at most {setting.high:,g} (the API's limit)")
    return value if whole else float(value)


def _load_schema(path: Path) -> dict[str, Any]:
    # Imported here: rows.structured loads jsonschema, which only a --json-schema job needs.
    from batchrun.rows.structured import load_schema

    return load_schema(path)


def _with_schema(
    defaults: RequestDefaults, schema: Mapping[str, Any] | None, where: str
) -> RequestDefaults:
    """The job's defaults asking every request for an answer that fits ``schema`` (from
    ``where``): by ``output_config.format``, or a forced tool for a model that does not take
    it, as each row's model decides (``rows.structured``)."""
    if schema is None:
        return defaults
    if defaults.tools is not None or defaults.tool_choice is not None:
        raise ConfigError("json_schema defines the job's answer: drop `tools` and `tool_choice`")
    from batchrun.rows.structured import StructuredRequest

    return replace(defaults, structured=StructuredRequest.of(schema, where))


def _check_answer_columns(schema: Mapping[str, Any] | None, keep_columns: Sequence[str]) -> None:
    """ConfigError for a kept column named as one of the answer's (``answer_<field>``)."""
    if schema is None:
        return
    from batchrun.rows.structured import ANSWER_PREFIX, answer_fields

    for answer in answer_fields(schema):
        name = ANSWER_PREFIX + answer.name
        if name in keep_columns:
            raise ConfigError(
                f"`keep_columns`: `{name}` is the column of the answer's `{answer.name}` "
                f"(json_schema): rename the input's column, or drop it from "
                f"{named('keep_columns')}"
            )


def _read_job_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: job file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read job file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    _check_job_keys(path, data)
    return data


def _check_job_keys(path: Path | str, data: Mapping[str, Any]) -> None:
    """ConfigError listing every unknown key (each with its did-you-mean) and every value of
    the wrong type, all at once: fixing a job file one error per run is slow going."""
    problems: list[str] = []
    for key, value in data.items():
        if key not in JOB_KEYS:
            problems.append(_unknown_key(key))
            continue
        allowed = JOB_KEYS[key]
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            names = " or ".join(_TYPE_NAMES[t] for t in allowed)
            problems.append(f"`{key}` must be {names}, not {_TYPE_NAMES.get(type(value), 'that')}")
    if len(problems) == 1:
        raise ConfigError(f"{path}: {problems[0]}")
    if problems:
        listed = "".join(f"\n  - {problem}" for problem in problems)
        raise ConfigError(f"{path}: {len(problems)} problems:{listed}")


def _unknown_key(key: str) -> str:
    """Why a job file may not hold ``key``: a typo, or a setting set elsewhere."""
    if key in _LIMIT_KEYS:
        return f"unknown key `{key}`: it goes in the [limits] table ([limits] {key} = ...)"
    setting = BY_KEY.get(key)
    if setting is not None and setting.long_flag is not None:
        value = True if setting.kind in ("switch", "flag") else setting.metavar or "VALUE"
        return f"unknown key `{key}`: a job file cannot set it; pass {option(key, value)}"
    return f"unknown key `{key}`{did_you_mean(key, JOB_KEYS)}"


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "a table",
    bool: "true or false",
}


def did_you_mean(word: str, choices: Mapping[str, Any] | frozenset[str] | set[str]) -> str:
    """' (did you mean `x`?)' when a known name is close to ``word``, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings the environment gives (an empty variable gives nothing)."""
    out: dict[str, Any] = {}
    for name, setting in ENV_VARS.items():
        text = env.get(name, "")
        if text != "":
            try:
                out[setting.key] = _ENV_PARSERS[setting.kind](text)
            except ValueError:
                raise ConfigError(f"{name}={text!r} is not a valid {setting.key}") from None
    return out


def _int_or_auto(text: str) -> int | str:
    return "auto" if text.strip().lower() == "auto" else int(text)


# How a variable's text becomes a value, by kind (a kind not here cannot come from one).
_ENV_PARSERS: dict[str, Callable[[str], Any]] = {
    "text": str,
    "choice": str,
    "int": int,
    "number": float,
    "int_or_auto": _int_or_auto,
}


def _request_defaults(s: Mapping[str, Any], prices: PriceTable | None = None) -> RequestDefaults:
    mode, control = _cache_mode(s)
    table = prices or default_prices()
    stops = s.get("stop_sequences")
    tools = s.get("tools")
    defaults = RequestDefaults(
        model=s.get("model"),
        max_tokens=s.get("max_tokens"),
        system=s.get("system"),
        temperature=s.get("temperature"),
        top_p=s.get("top_p"),
        top_k=s.get("top_k"),
        stop_sequences=None if stops is None else tuple(_str_list(s, "stop_sequences")),
        metadata=s.get("metadata"),
        tools=None if tools is None else tuple(tools),
        tool_choice=s.get("tool_choice"),
        thinking=s.get("thinking"),
        service_tier=s.get("service_tier"),
        template=s.get("template"),
        cache_system=control if mode == "system" else None,
        cache=(
            CachePolicy(
                _cache_minimums(table, _text_or_none(s.get("model"))),
                control,
                factors=_tokenizer_factors(table, _text_or_none(s.get("model"))),
            )
            if mode == "auto"
            else None
        ),
        effort=s.get("effort"),
        drop_unsupported=bool(s.get("drop_unsupported")),
    )
    # The same rules rows obey: a bad default would otherwise fail every row alike.
    problems = check_defaults(defaults)
    if problems:
        raise ConfigError("; ".join(str(p) for p in problems))
    return defaults


def _cache_minimums(prices: PriceTable, model: str | None) -> dict[str, int]:
    """Every model id the price table knows, and the job's model as written (a gateway's
    decorated name, say), with its minimum cacheable prefix (``rows.prefix.CachePolicy``)."""
    minimums = {
        name: price.min_cacheable_tokens
        for price in prices.models()
        if price.min_cacheable_tokens is not None
        for name in (price.model, *price.ids)
    }
    if model is not None:
        minimums[model] = min_cacheable_tokens(model, prices)
    return minimums


def _tokenizer_factors(prices: PriceTable, model: str | None) -> dict[str, float]:
    """Every model id whose tokenizer counts more than the local estimate's, and the job's
    model as written, with its factor (``rows.prefix.CachePolicy.factors``)."""
    factors = {
        name: price.rules.tokenizer_factor
        for price in prices.models()
        if price.rules is not None and price.rules.tokenizer_factor != 1.0
        for name in (price.model, *price.ids)
    }
    if model is not None:
        factors[model] = tokenizer_factor(model, prices)
    return factors


def _cache_mode(s: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """``cache`` (auto, off, system), with ``cache_system`` its older spelling of ``system``,
    and the cache_control object batchrun's marks carry (``cache_ttl``)."""
    ttl = s.get("cache_ttl")
    choices = BY_KEY["cache_ttl"].choices
    if ttl is not None and ttl not in choices:
        shown = " or ".join(f'"{choice}"' for choice in choices)
        raise ConfigError(f"`cache_ttl` must be {shown}, not {ttl!r}")
    mode = s.get("cache")
    if mode is not None and mode not in CACHE_MODES:
        shown = ", ".join(f'"{choice}"' for choice in CACHE_MODES)
        raise ConfigError(f"`cache` must be one of {shown}, not {mode!r}")
    if s.get("cache_system"):
        if mode not in (None, "system"):
            raise ConfigError(f'`cache_system` means `cache = "system"`, not {mode!r}: drop one')
        mode = "system"
    mode = mode or "auto"
    if mode == "off" and ttl is not None:
        raise ConfigError('`cache_ttl` has no effect with `cache = "off"`')
    control = {"type": "ephemeral"} if ttl is None else {"type": "ephemeral", "ttl": ttl}
    return str(mode), control


def _str_list(s: Mapping[str, Any], key: str) -> list[str]:
    value = s.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"`{key}` must be a list of strings")
    return list(value)


def _check_deadline(via: str, deadline: object) -> None:
    """``--via auto`` and ``--deadline`` go together, the deadline readable (``core.deadline``;
    whether it is past is told when the run starts, which a duration counts from)."""
    if via == "auto" and deadline is None:
        raise ConfigError(
            f"{option('via', 'auto')} sends through batches while a deadline allows: give "
            f"{option('deadline', 'D')} ({DEADLINE_FORMS})"
        )
    if deadline is None:
        return
    if via != "auto":
        raise ConfigError(
            f"{option('deadline', 'D')} is for {option('via', 'auto')}, which chooses between "
            f"batches and online to meet it: add {option('via', 'auto')}, or leave out "
            f"{option('deadline')}"
        )
    try:
        deadline_moment(str(deadline), datetime.now(timezone.utc))
    except ValueError as exc:
        raise ConfigError(f"{option('deadline', 'D')}: {exc}") from None


def _concurrency(s: Mapping[str, Any]) -> tuple[int, bool]:
    """(concurrency, auto): a whole number, or "auto" with the most it may choose."""
    value = s.get("concurrency", DEFAULT_CONCURRENCY)
    if isinstance(value, str):
        if value.strip().lower() != "auto":
            raise ConfigError(f'`concurrency` must be an integer >= 1 or "auto", not {value!r}')
        return AUTO_MAX, True
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"`concurrency` must be a whole number >= 1, not {value!r}")
    return value, False


def _limits(s: Mapping[str, Any], table: Mapping[str, Any]) -> LimitsConfig:
    """``[limits]`` of the job file, under the --rpm/--itpm/--otpm flags and BATCHRUN_RPM...

    A flag or variable sets that limit for every model, per-model tables included.
    """
    default: dict[str, int] = {}
    models: list[tuple[str, dict[str, int]]] = []
    for key, value in table.items():
        if key in _LIMIT_KEYS:
            default[key] = _limit(f"limits.{key}", value)
        elif isinstance(value, dict):
            models.append((key, _model_limits(key, value)))
        else:
            raise ConfigError(
                f"`limits.{key}`: expected rpm, itpm, otpm or a table per model"
                f"{did_you_mean(key, set(_LIMIT_KEYS))}"
            )
    given = {key: _limit(key, s[key]) for key in _LIMIT_KEYS if s.get(key) is not None}
    return LimitsConfig(
        Limits(**{**default, **given}),
        tuple(
            (name, Limits(**{k: v for k, v in fields.items() if k not in given}))
            for name, fields in models
        ),
    )


def _model_limits(model: str, table: Mapping[str, Any]) -> dict[str, int]:
    fields = {}
    for key, value in table.items():
        if key not in _LIMIT_KEYS:
            raise ConfigError(
                f'`limits."{model}".{key}`: expected rpm, itpm or otpm'
                f"{did_you_mean(key, set(_LIMIT_KEYS))}"
            )
        fields[key] = _limit(f'limits."{model}".{key}', value)
    return fields


def _limit(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"`{name}` must be a whole number >= 1 (per minute), not {value!r}")
    return value


def _not_both(value: Callable[[str], Any], first: str, second: str) -> bool:
    """``first``'s value, refused together with ``second``'s: they ask opposite things."""
    if value(first) and value(second):
        raise ConfigError(
            f"--{first.replace('_', '-')} and --{second.replace('_', '-')} ask opposite "
            "things: give one of them"
        )
    return bool(value(first))


def _credentials(env: Mapping[str, str], simulate: bool) -> Credentials:
    if simulate:
        # The built-in simulator takes any key; never send a real one to it.
        return Credentials(api_key=Secret(SIMULATOR_KEY))
    key = env.get(API_KEY_ENV) or None
    token = env.get(AUTH_TOKEN_ENV) or None
    return Credentials(
        api_key=Secret(key) if key else None,
        auth_token=Secret(token) if token else None,
    )


def _check_base_url(url: str, allow_insecure: bool) -> None:
    # Messages show the URL without its user, password and query: gateways put keys there.
    from batchrun.core.scrub import url_without_secrets

    shown = url_without_secrets(url)
    try:
        parts = urlsplit(url)
    except ValueError:  # such as an unclosed IPv6 bracket (its text may quote the URL)
        raise ConfigError(f"base URL {shown!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL {shown!r} must be an http(s) URL")
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1") or parts.hostname.startswith(
        "127."
    )
    if parts.scheme == "http" and not loopback and not allow_insecure:
        raise ConfigError(
            f"base URL {shown!r} is plain http to another machine: the API key would travel "
            f"in clear. Use https, or pass {option('allow_insecure_http', True)} if you mean it."
        )


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def with_prices(config: RunConfig, prices: PriceTable) -> RunConfig:
    """``config`` priced by ``prices`` (a price file read later, from object storage): the
    price table and the automatic cache marks' minimums, which come from it."""
    defaults = config.defaults
    cache = defaults.cache
    if cache is not None:
        cache = replace(cache, minimums=_cache_minimums(prices, defaults.model))
    return replace(
        config,
        cost=replace(config.cost, prices=prices, prices_url=None),
        defaults=replace(defaults, cache=cache),
    )
