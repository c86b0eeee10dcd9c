"""Every setting of a job, declared once: its flag, environment variable, job-file key, type,
default, help text and the commands that take it.

``load_config`` (config/load.py) checks job files, reads the environment and resolves values
from this table; the command line (cli/options.py) makes its flags and the precedence text
from it. A setting added here is a flag, a job key and (if it says so) a variable at once.

The table is plain data: no click, no HTTP. The command line turns ``kind``, ``low``,
``high`` and ``choices`` into click types; ``load_config`` checks the same bounds with its
own messages, because a job file or the environment has no click in front of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from batchrun.client.credentials import API_KEY_ENV, AUTH_TOKEN_ENV, DEFAULT_API_VERSION
from batchrun.formats.registry import (
    file_suffixes,
    folder_output,
    input_names,
    output_formats,
    said,
)
from batchrun.rows.checks import EFFORT_LEVELS

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_CONCURRENCY = 16
DEFAULT_MAX_RETRIES = 8
DEFAULT_TIMEOUT = 600.0
DEFAULT_GRACE = 30.0
DEFAULT_POLL_INTERVAL = 10.0
SIMULATE_POLL_INTERVAL = 0.25
BATCH_MAX_REQUESTS = 100_000  # per Message Batch (docs/api-facts.md §8.2)
BATCH_MAX_MB = 256.0
CACHE_MODES = ("auto", "off", "system")  # --cache; auto is the default

# The formats an input may be in (``--format``: ``batchrun.formats``); compressed inputs
# (.gz, .bz2, .zst) are any of these, told by the name under the compression suffix.
INPUT_FORMATS = input_names()
# The output formats a name does not tell (``--output-format``): those that write a folder.
FOLDER_FORMATS = tuple(fmt.name for fmt in output_formats() if fmt.folder)

# Which commands take a setting's flag: each command lists only the flags it uses.
# The commands that read a job (SOURCE, its output, where the API is):
JOB_COMMANDS = ("run", "validate", "batches list", "batches cancel", "estimate")
# ... those that read its rows and build its requests:
REQUEST_COMMANDS = ("run", "validate", "estimate", "render")
# ... those that send it (estimate's --pilot is a run, --exact calls count_tokens):
RUN_COMMANDS = ("run", "estimate")
# ... and those that talk to the API, the batch commands included.
CLIENT_COMMANDS = (*RUN_COMMANDS, "batches list", "batches cancel")

Kind = Literal[
    "text",  # a string
    "int",  # a whole number (within low..high when given)
    "number",  # a float (within low..high, low excluded with low_open)
    "int_or_auto",  # a whole number >= 1, or "auto" (concurrency)
    "choice",  # one of `choices`
    "path",  # a file path: relative to the job file in a job, to the working directory else
    "list",  # strings: a repeatable flag, a TOML list
    "json",  # a JSON value: `--flag '{...}'` or `--flag @file.json`, a TOML table or list
    "switch",  # true/false: --x / --no-x
    "flag",  # on when given: --x
]

_KIND_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,),
    "int": (int,),
    "number": (int, float),
    "int_or_auto": (int, str),
    "choice": (str,),
    "path": (str,),
    "list": (list,),
    "switch": (bool,),
    "flag": (bool,),
}


@dataclass(frozen=True)
class Setting:
    """One setting. ``key`` is its name everywhere: the job-file key, the ``flags`` key of
    ``load_config``, the click parameter and, with ``env=True``, ``BATCHRUN_<KEY>``."""

    key: str
    kind: Kind
    help: str  # the flag's help; "{default}" is replaced by the default as shown
    default: Any = None  # None: not set (the API's default, or the row's value)
    commands: tuple[str, ...] = JOB_COMMANDS  # () : no flag
    flag: str | None = None  # the long flag; None: "--" + key with dashes
    short: str | None = None  # e.g. "-o"
    env: bool | str = False  # True: BATCHRUN_<KEY>; a string: that variable
    job: bool = True  # whether a job file may set it (False: flags only)
    types: tuple[type, ...] = ()  # the types a job-file value may have; () : from kind
    choices: tuple[str, ...] = ()
    low: float | None = None
    low_open: bool = False  # low itself is not allowed
    high: float | None = None
    metavar: str | None = None
    unit: str = ""  # what a number counts, for messages: "a number of dollars >= 0"
    files_only: bool = False  # a path that may not name a directory
    reads_file: bool = False  # a text that may be given as @FILE (config.atfile)
    # Which settings object holds it (``config.layers``: "input", "engine", ...; "request" is
    # the rows' ``RequestDefaults``, "job" the job's own fields), under which field (None: its
    # key); ``feeds``: the derived field it is one of the sources of (the rate limits from
    # rpm, itpm, otpm and [limits]), which the loader makes, instead of a field of its own.
    layer: str = "job"
    field: str | None = None
    feeds: str | None = None

    @property
    def long_flag(self) -> str | None:
        if not self.commands:
            return None
        return self.flag or "--" + self.key.replace("_", "-")

    @property
    def env_var(self) -> str | None:
        if self.env is True:
            return f"BATCHRUN_{self.key.upper()}"
        return self.env or None

    @property
    def job_types(self) -> tuple[type, ...]:
        """What a job-file value may be (empty for flags-only settings)."""
        if not self.job:
            return ()
        return self.types or _KIND_TYPES[self.kind]

    @property
    def flag_help(self) -> str:
        return self.help.replace("{default}", _shown(self.default))


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


_JSON_HELP = "JSON, or @FILE to read it from a file."
_TEXT_HELP = "text, or @FILE to read it from a UTF-8 file (@@ for text that starts with @)."

SETTINGS: tuple[Setting, ...] = (
    # --- what every command that reads a job takes (request defaults first) ------------
    Setting(
        "input",
        "path",
        "The dataset to read (the SOURCE argument).",
        commands=(),
        layer="input",
        field="path",
    ),
    Setting(
        "output",
        "path",
        f"Output dataset ({said(file_suffixes())}) [default: INPUT-STEM.results.parquet in "
        "the working directory]. Re-running with the same output resumes.",
        short="-o",
        layer="output",
        field="path",
    ),
    Setting(
        "output_format",
        "choice",
        " ".join(
            f"{fmt.name}: write the output as {fmt.described}, whatever its name"
            + (" (an output ending with / is one too)." if fmt is folder_output() else ".")
            for fmt in output_formats()
            if fmt.folder
        )
        + f" Other formats are told by the name: {', '.join(file_suffixes())}.",
        choices=FOLDER_FORMATS,
        commands=RUN_COMMANDS,
        layer="output",
        field="format",
    ),
    Setting(
        "part_rows",
        "int",
        "Rows per Parquet part of a dataset output (a folder) [default: {default}].",
        default=1_000_000,
        commands=RUN_COMMANDS,
        low=1,
        layer="output",
    ),
    Setting(
        "input_format",
        "choice",
        "The input's format, when its name does not say it (or says it wrong); stdin (-) "
        "is sniffed when not given.",
        flag="--format",
        choices=INPUT_FORMATS,
        commands=REQUEST_COMMANDS,
        layer="input",
        field="format",
    ),
    Setting(
        "csv_delimiter",
        "text",
        "Field delimiter of a CSV input, one character [default: , (TSV: tab)].",
        metavar="CHAR",
        commands=REQUEST_COMMANDS,
        layer="input",
    ),
    Setting(
        "encoding",
        "text",
        "Text encoding of the input (latin-1, cp1252, utf-16, ...) when it has no byte-order "
        "mark [default: UTF-8; a file that does not start as UTF-8 is refused].",
        metavar="NAME",
        commands=REQUEST_COMMANDS,
        layer="input",
    ),
    Setting(
        "media_root",
        "path",
        "Folder that rows' file references (image, document) resolve against and must stay "
        "inside [default: the input file's folder].",
        commands=REQUEST_COMMANDS,
        layer="input",
    ),
    Setting(
        "model",
        "text",
        "Model for rows that do not name one.",
        env=True,
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "max_tokens",
        "int",
        "Output token limit per request.",
        env=True,
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "system",
        "text",
        "System prompt for every row: " + _TEXT_HELP,
        types=(str, list),
        commands=REQUEST_COMMANDS,
        reads_file=True,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "template",
        "text",
        "Builds every row's user message from its columns, e.g. 'Summarize {title}: {body}'; "
        "a row's prompt is {prompt} ('Classify: {prompt}'), and rows may not also give "
        "messages. A column no row has is refused before sending. " + _TEXT_HELP,
        commands=REQUEST_COMMANDS,
        reads_file=True,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "temperature",
        "number",
        "Sampling temperature, 0 to 1.",
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "top_p",
        "number",
        "Nucleus sampling, 0 to 1.",
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "top_k",
        "int",
        "Top-k sampling.",
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "stop_sequences",
        "list",
        "A stop sequence (repeatable).",
        flag="--stop-sequence",
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "tools",
        "json",
        "Tools every row may use: " + _JSON_HELP,
        types=(list,),
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "tool_choice",
        "json",
        'How the model uses the tools, e.g. \'{"type": "any"}\': ' + _JSON_HELP,
        types=(dict,),
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "thinking",
        "json",
        'Extended thinking, e.g. \'{"type": "enabled", "budget_tokens": 2048}\': ' + _JSON_HELP,
        types=(dict,),
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "effort",
        "choice",
        "How much the model thinks and writes (output_config.effort), if its model takes it; "
        "the model's own default otherwise. A 5.x model thinks by default, and its thinking "
        "counts toward max_tokens: low leaves the answer most of them.",
        choices=EFFORT_LEVELS,
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "drop_unsupported",
        "flag",
        "Send without the sampling settings (temperature, top_p, top_k) a row's model does not "
        "take, instead of refusing the job or the row; the summary says what was dropped.",
        default=False,
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "metadata",
        "json",
        'Request metadata, e.g. \'{"user_id": "job-7"}\': ' + _JSON_HELP,
        types=(dict,),
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "service_tier",
        "text",
        "service_tier of every request, e.g. auto or standard_only.",
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "keep_columns",
        "list",
        "Input column to copy to the output, under its own name (repeatable). Given as "
        "flags, the columns replace the job file's keep_columns list, they do not add to it.",
        flag="--keep-column",
        commands=REQUEST_COMMANDS,
        layer="output",
    ),
    Setting(
        "json_schema",
        "path",
        "Structured output: answers must satisfy this JSON Schema (structured_json).",
        files_only=True,
        commands=REQUEST_COMMANDS,
        layer="engine",
    ),
    Setting(
        "cache",
        "choice",
        "Prompt caching: auto marks the end of the prefix the rows share (system, tools, "
        "the template's head) when it reaches the model's minimum; system marks the system "
        "prompt only; off adds no mark (a row's own cache_control is always sent) "
        "[default: auto].",
        choices=CACHE_MODES,
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "cache_system",
        "switch",
        "Same as --cache system (kept for existing jobs).",
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "dedup",
        "switch",
        "Send identical requests once: each duplicate row gets the answer, with "
        "duplicate_of naming the row that was sent and cost 0 (at any temperature) "
        "[default: on].",
        default=True,
        commands=RUN_COMMANDS,
        layer="engine",
    ),
    Setting(
        "answer_cache",
        "text",
        "Reuse answers across jobs: a folder, or an s3:// or gs:// prefix, shared by every job "
        "that names it. A row whose request (model, every field, attached files) an earlier job "
        "already had answered by the same source is filled from that answer (cached_from names "
        "the output and row that paid; cost 0) instead of being sent; every ok answer is added.",
        commands=RUN_COMMANDS,
        env=True,
        metavar="DIR",
        layer="engine",
    ),
    Setting(
        "answer_cache_samples",
        "flag",
        "With --no-dedup, reuse cached answers of sampled requests too (temperature above 0, "
        "the API's default); without it they are sent again.",
        default=False,
        commands=RUN_COMMANDS,
        layer="engine",
    ),
    Setting(
        "samples",
        "int",
        "Ask each row K times, independently (dedup never folds a row's samples): its output "
        "row holds the most frequent answer, every sample (samples_json), their agreement "
        "and the cost of all K; an estimate and --max-cost count K requests a row "
        "[default: {default}].",
        default=1,
        commands=RUN_COMMANDS,
        low=1,
        metavar="K",
        layer="engine",
    ),
    Setting(
        "cache_ttl",
        "choice",
        "The ttl of the cache marks batchrun places (1h suits Message Batches) [default: 5m].",
        choices=("5m", "1h"),
        commands=REQUEST_COMMANDS,
        layer="request",
        feeds="defaults",
    ),
    Setting(
        "base_url",
        "text",
        "API base URL [default: {default}].",
        default=DEFAULT_BASE_URL,
        env="ANTHROPIC_BASE_URL",
        layer="client",
    ),
    Setting(
        "allow_insecure_http",
        "flag",
        "Allow a plain-http base URL that is not on this machine.",
        default=False,
        layer="client",
    ),
    # --- sending: run, estimate (its pilot is a run), and the API client for batches -------
    Setting(
        "concurrency",
        "int_or_auto",
        "Requests in flight at once, or 'auto' (from the rate limits and the latency seen) "
        "[default: {default}].",
        default=DEFAULT_CONCURRENCY,
        commands=RUN_COMMANDS,
        short="-c",
        env=True,
        metavar="N|auto",
        layer="engine",
    ),
    # rpm / itpm / otpm: in a job file, the fields of its [limits] table (below).
    Setting(
        "rpm",
        "int",
        "Requests per minute to stay under [default: the API's, from its headers].",
        commands=RUN_COMMANDS,
        env=True,
        job=False,
        low=1,
        layer="engine",
        feeds="limits",
    ),
    Setting(
        "itpm",
        "int",
        "Input tokens per minute to stay under (cache reads do not count).",
        commands=RUN_COMMANDS,
        env=True,
        job=False,
        low=1,
        layer="engine",
        feeds="limits",
    ),
    Setting(
        "otpm",
        "int",
        "Output tokens per minute to stay under (max_tokens is reserved up front).",
        commands=RUN_COMMANDS,
        env=True,
        job=False,
        low=1,
        layer="engine",
        feeds="limits",
    ),
    Setting(
        "limits",
        "json",
        "Rate limits per minute: rpm, itpm, otpm, and a table of them per model.",
        commands=(),
        types=(dict,),
        layer="engine",
        feeds="limits",
    ),
    Setting(
        "max_retries",
        "int",
        "Retries per row for retryable failures [default: {default}].",
        default=DEFAULT_MAX_RETRIES,
        commands=CLIENT_COMMANDS,
        env=True,
        low=0,
        layer="engine",
    ),
    Setting(
        "max_retry_wait",
        "number",
        "Longest wait before one retry, in seconds, whatever the API's retry-after asks "
        "(a 429 may ask for an hour) [default: the API's].",
        commands=RUN_COMMANDS,
        env=True,
        low=0,
        metavar="SECONDS",
        layer="engine",
    ),
    Setting(
        "timeout",
        "number",
        "Seconds one attempt may take [default: {default}].",
        default=DEFAULT_TIMEOUT,
        commands=CLIENT_COMMANDS,
        env=True,
        low=0,
        low_open=True,
        layer="client",
    ),
    Setting(
        "api_version",
        "text",
        "anthropic-version header [default: {default}].",
        default=DEFAULT_API_VERSION,
        commands=CLIENT_COMMANDS,
        env=True,
        layer="client",
    ),
    Setting(
        "betas",
        "list",
        "anthropic-beta feature (repeatable).",
        commands=CLIENT_COMMANDS,
        flag="--beta",
        layer="client",
    ),
    Setting(
        "http_backend",
        "choice",
        "HTTP transport [default: {default}, which holds up at high concurrency].",
        default="aiohttp",
        commands=CLIENT_COMMANDS,
        env=True,
        choices=("aiohttp", "httpx"),
        layer="client",
    ),
    Setting(
        "stream",
        "switch",
        "Send with stream: true (automatic above 21,333 max_tokens).",
        default=False,
        commands=(*RUN_COMMANDS, "render"),
        layer="engine",
    ),
    Setting(
        "simulate",
        "flag",
        "Run against the built-in simulator: no key needed, nothing is paid (batches "
        "list/cancel: contact nothing, show what the batch journal recorded).",
        default=False,
        commands=CLIENT_COMMANDS,
        job=False,
        layer="client",
    ),
    Setting(
        "retry_errors",
        "flag",
        "Re-send rows an earlier run left in error.",
        default=False,
        commands=RUN_COMMANDS,
        job=False,
        layer="resume",
    ),
    Setting(
        "overwrite",
        "flag",
        "Start afresh: discard the existing output and its journal.",
        default=False,
        commands=("run",),
        job=False,
        layer="resume",
    ),
    Setting(
        "grace",
        "number",
        "After Ctrl-C/SIGTERM, seconds in-flight requests may take [default: {default}].",
        default=DEFAULT_GRACE,
        commands=("run",),
        env=True,
        low=0,
        low_open=True,
        layer="run",
    ),
    Setting(
        "max_cost",
        "number",
        "Budget for the job, across its runs: stop admitting rows before its spending could "
        "pass it; finish what is in flight and exit 4. A re-run spends only what is left: "
        "raise it to go on.",
        commands=RUN_COMMANDS,
        env=True,
        low=0,
        metavar="USD",
        unit="dollars",
        layer="cost",
    ),
    Setting(
        "prices",
        "path",
        "Price file (TOML) over the packaged table, in its layout (batchrun/cost/prices.toml): "
        "changes or adds models.",
        commands=(*RUN_COMMANDS, "render"),
        files_only=True,
        layer="cost",
        feeds="prices",
    ),
    Setting(
        "via",
        "choice",
        "online: requests one by one; batches: the Message Batches API, half the price, "
        "answers within 24 h; auto: batches while --deadline allows, online for the rest "
        "[default: {default}].",
        default="online",
        commands=RUN_COMMANDS,
        env=True,
        choices=("online", "batches", "auto"),
        layer="job",
    ),
    Setting(
        "deadline",
        "text",
        "With --via auto: when every row must be answered, a duration counted from this run's "
        "start (90s, 45m, 6h, 1d) or an RFC 3339 time (2026-12-08T09:00:00Z).",
        commands=RUN_COMMANDS,
        metavar="D",
        layer="batches",
    ),
    Setting(
        "batch_max_requests",
        "int",
        "Requests per batch at most [default: {default}, the API's limit]; a job goes out "
        "in batches of a quarter of its rows, or 10,000, whichever is more, up to this.",
        default=BATCH_MAX_REQUESTS,
        commands=("run",),
        low=1,
        high=BATCH_MAX_REQUESTS,
        layer="batches",
        field="max_requests",
    ),
    Setting(
        "batch_max_mb",
        "number",
        "MB of requests per batch [default: {default}, the API's limit].",
        default=BATCH_MAX_MB,
        commands=("run",),
        low=0,
        low_open=True,
        high=BATCH_MAX_MB,
        layer="batches",
        feeds="max_bytes",
    ),
    Setting(
        "poll_interval",
        "number",
        "Seconds between batch status checks at first; grows while nothing changes "
        "[default: {default}].",
        default=DEFAULT_POLL_INTERVAL,  # SIMULATE_POLL_INTERVAL with --simulate
        commands=("run",),
        low=0,
        low_open=True,
        layer="batches",
    ),
    Setting(
        "resubmit_expired",
        "flag",
        "Send rows a batch left expired or cancelled again, in a new batch.",
        default=False,
        commands=("run",),
        job=False,
        layer="batches",
    ),
    Setting(
        "finish_online",
        "flag",
        "Send rows a batch left expired or cancelled again, online.",
        default=False,
        commands=("run",),
        job=False,
        layer="batches",
    ),
    Setting(
        "resend_changed",
        "flag",
        "On resume, send again the rows whose request changed (the input or the job's "
        "settings) instead of refusing to resume; nothing else is sent again.",
        default=False,
        commands=("run",),
        job=False,
        layer="resume",
    ),
    Setting(
        "reask_other_source",
        "flag",
        "On resume, send again the rows another source answered (the simulator, or the API "
        "at another base URL) and replace their answers; nothing else is sent again.",
        default=False,
        commands=RUN_COMMANDS,
        layer="resume",
    ),
    Setting(
        "keep_other_source",
        "flag",
        "On resume, keep the answers another API base URL gave as done (the output then "
        "mixes sources; its source column tells them apart). Never the simulator's.",
        default=False,
        commands=RUN_COMMANDS,
        job=False,
        layer="resume",
    ),
    Setting(
        "json_summary",
        "flag",
        "Print the run's summary as JSON on stdout, for scripts.",
        default=False,
        commands=("run",),
        flag="--json",
        job=False,
        layer="run",
    ),
    # --- a trial: a few rows into the job's own output, the rest by the run without it -------
    Setting(
        "limit",
        "int",
        "A trial: send only the first N rows of the job, into its own output (the run "
        "without it later sends only the rest); the summary projects the whole job's cost.",
        commands=("run",),
        low=1,
        metavar="N",
        layer="run",
    ),
    Setting(
        "sample",
        "int",
        "A trial: send N rows drawn at random (the same ones for the same --seed), into the "
        "job's own output; the summary projects the whole job's cost.",
        commands=("run",),
        low=1,
        metavar="N",
        layer="run",
    ),
    Setting(
        "seed",
        "int",
        "The seed the random rows of --sample (run) or --pilot (estimate) are drawn with: "
        "the same seed, the same rows [default: {default}].",
        default=0,
        commands=("run", "estimate"),
        metavar="S",
        layer="run",
    ),
    # --- an output on object storage (s3://, gs://: remote.mirror) ---------------------------
    Setting(
        "work_dir",
        "path",
        "Local folder for an s3:// or gs:// output's journal and copy [default: under "
        "$XDG_CACHE_HOME/batchrun or ~/.cache/batchrun].",
        commands=RUN_COMMANDS,
        layer="output",
    ),
    Setting(
        "segment_rows",
        "int",
        "An s3:// or gs:// output's journal is uploaded in sealed segments of at most this "
        "many rows [default: {default}].",
        default=10_000,
        commands=RUN_COMMANDS,
        low=1,
        layer="output",
    ),
    Setting(
        "segment_seconds",
        "number",
        "... or of at most this many seconds of work [default: {default}].",
        default=60.0,
        commands=RUN_COMMANDS,
        low=0,
        low_open=True,
        layer="output",
    ),
    Setting(
        "keep_journal",
        "flag",
        "Keep an s3:// or gs:// output's journal segments once the final file is in place.",
        default=False,
        commands=RUN_COMMANDS,
        job=False,
        layer="output",
    ),
    # --- past one machine ------------------------------------------------------------------
    Setting(
        "shard",
        "text",
        "Process only shard I of N (rows whose id hashes to I; N at most 10,000), e.g. 0/4; "
        "`batchrun merge` joins the shards' outputs.",
        commands=("run",),
        job=False,
        metavar="I/N",
        layer="job",
    ),
    Setting(
        "rate_limit_store",
        "text",
        "Share the rate limits (and --max-cost) with every process using the same store: "
        "redis://HOST:PORT/DB.",
        commands=RUN_COMMANDS,
        env=True,
        metavar="URL",
        layer="engine",
    ),
    Setting(
        "quiet",
        "flag",
        "No progress display (with --json or --shard, no summary either: errors only).",
        default=False,
        commands=RUN_COMMANDS,
        short="-q",
        job=False,
        layer="run",
    ),
)

BY_KEY: Mapping[str, Setting] = {s.key: s for s in SETTINGS}

JOB_KEYS: Mapping[str, tuple[type, ...]] = {s.key: s.job_types for s in SETTINGS if s.job}
"""key -> the Python types a job-file value may have (lists are checked element-wise later)."""

ENV_VARS: Mapping[str, Setting] = {s.env_var: s for s in SETTINGS if s.env_var is not None}
"""environment variable -> its setting (the credentials are read by ``load_config``)."""


def for_command(command: str) -> tuple[Setting, ...]:
    """The settings ``command`` ("run", "batches list", ...) takes as flags, in table order."""
    return tuple(s for s in SETTINGS if command in s.commands)


def precedence_text(command: str | None = None) -> str:
    """The "where settings come from" paragraph of the job commands' help: the variables
    ``command`` reads (None: every one), the key only where it talks to the API."""
    talks = command is None or command in CLIENT_COMMANDS
    names = [f"{API_KEY_ENV} / {AUTH_TOKEN_ENV}"] if talks else []
    names += sorted(
        (name for name, s in ENV_VARS.items() if command is None or command in s.commands),
        key=lambda name: not name.startswith("ANTHROPIC_"),
    )
    return (
        "Settings come from, highest first: command-line flags, the environment "
        f"({', '.join(names)}), the job file, then defaults."
    )
