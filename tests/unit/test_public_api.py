"""The public API, pinned: ``batchrun.__all__``, what kind of thing each name is, and how it
is called. Written before the package was reorganised into subpackages, so that the move (and
any later one) cannot rename, drop or re-sign a name users import without this test failing.
"""

from __future__ import annotations

import inspect

import batchrun

# name -> (kind, the constructor's or function's parameter names). Classes list their
# parameters sorted (dataclass field order may follow a base class); functions in order.
PUBLIC: dict[str, tuple[str, list[str] | None]] = {
    "ApiError": (
        "class",
        [
            "error_code",
            "error_type",
            "message",
            "request_id",
            "retry_after",
            "should_retry",
            "status",
        ],
    ),
    "BatchrunError": ("class", None),
    "ConfigError": ("class", None),
    "Estimate": (
        "class",
        [
            "batch_factor",
            "count_error",
            "count_failures",
            "counted",
            "duration",
            "exact",
            "input",
            "invalid",
            "job_spent_usd",  # the job's budget across runs (issue 23)
            "latency_s",
            "level",
            "max_cost",  # issue 23
            "models",
            "notes",
            "other_sources",  # where answers came from (issue 23)
            "output",
            "pending_groups",
            "pilot",
            "projection",
            "projection_source",
            "rows",
            "source",  # issue 23
        ],
    ),
    "FatalRunError": ("class", None),
    "FinalCounts": ("class", ["error", "of", "ok", "rows"]),
    "InputError": ("class", ["field", "file", "message", "row"]),
    "InvalidRowError": ("class", ["file", "problems", "row"]),
    "OutputError": ("class", None),
    "PriceTable": (
        "class",
        ["_by_id", "batch_price_factor", "compiled", "entries", "sources", "web_search_per_1000"],
    ),
    "Report": (
        "class",
        [
            "attempts",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "cache_saved_usd",  # what caching and dedup saved (issue 17)
            "cost_usd",
            "dedup_saved_usd",
            "duplicates",
            "elapsed",
            "error_per_minute",
            "error_per_second",
            "errors",
            "first_finished",
            "input_tokens",
            "last_finished",
            "latency",
            "models",
            "ok_per_minute",
            "ok_per_second",
            "output_tokens",
            "priced_now",
            "rows",
            "sources",
            "statuses",
            "stop_reasons",
            "unpriced",
            "unpriced_models",
            "vias",
        ],
    ),
    "RequestDefaults": (
        "class",
        [
            "cache",  # --cache auto: rows.prefix.CachePolicy (issue 17)
            "cache_system",
            "max_tokens",
            "metadata",
            "model",
            "service_tier",
            "stop_sequences",
            "system",
            "temperature",
            "template",
            "thinking",
            "tool_choice",
            "tools",
            "top_k",
            "top_p",
        ],
    ),
    "RunConfig": (
        "class",
        [
            "allow_insecure_http",
            "api_version",
            "base_url",
            "batch_max_bytes",
            "batch_max_requests",
            "betas",
            "cache_home",  # object storage (issue 15)
            "concurrency",
            "concurrency_auto",
            "credentials",
            "csv_delimiter",  # added with the file shapes (issue 14)
            "dedup",  # in-run dedup (issue 17)
            "defaults",
            "encoding",  # the input's text encoding (issue 23)
            "finish_online",
            "gcs_endpoint",  # object storage (issue 15)
            "grace",
            "http_backend",
            "input",
            "input_format",  # issue 14
            "input_url",  # object storage (issue 15)
            "job_file",
            "json_schema",
            "json_summary",  # issue 14
            "keep_columns",
            "keep_journal",  # object storage (issue 15)
            "keep_other_source",  # where answers came from (issue 23)
            "lease_ttl",  # the remote output's lease life; BATCHRUN_LEASE_TTL (issue 23)
            "limits",
            "max_cost",
            "max_retries",
            "max_retry_wait",  # added with --max-retry-wait, after the move
            "media_root",  # issue 14
            "media_source",  # row media on object storage (issue 15)
            "output",
            "output_format",  # dataset outputs (issue 15)
            "output_url",  # object storage (issue 15)
            "overwrite",
            "part_rows",  # dataset outputs (issue 15)
            "poll_interval",
            "prices",
            "quiet",
            "rate_limit_store",  # issue 16
            "reask_other_source",  # issue 23
            "resend_changed",  # issue 14
            "resubmit_expired",
            "retry_errors",
            "s3_endpoint",  # object storage (issue 15)
            "segment_rows",  # object storage (issue 15)
            "segment_seconds",  # object storage (issue 15)
            "shard",  # issue 16
            "simulate",
            "stream",
            "timeout",
            "via",
            "work_dir",  # object storage (issue 15)
        ],
    ),
    "RunSummary": (
        "class",
        [
            "batches_collected",
            "batches_created",
            "batches_running",
            "budget_refused_usd",  # the job's budget across runs (issue 23)
            "budget_stop",
            "cache_creation_1h_input_tokens",  # the split by ttl (issue 17)
            "cache_creation_5m_input_tokens",
            "cache_creation_input_tokens",
            "cache_groups_warmed",  # warm before the herd (issue 17)
            "cache_read_input_tokens",
            "cache_rewarmed",
            "concurrency_chosen",
            "cost_usd",
            "dedup_resent",  # in-run dedup (issue 17)
            "dedup_saved_usd",
            "deduplicated",
            "elapsed_s",
            "error",
            "error_types",
            "final",
            "input",
            "input_tokens",
            "interrupted",
            "invalid",
            "job_cost_before",  # the job's budget across runs (issue 23)
            "job_cost_usd",
            "max_cost",
            "mixed_sources",  # where answers came from (issue 23)
            "ok",
            "output",
            "output_tokens",
            "partial",
            "rate_429s_retried",  # issue 18: a 429 retried alone, no pause
            "rate_limited_429s",
            "rate_limits",
            "rate_pauses",
            "rate_slowdowns",  # issue 18
            "rate_wait_s",
            "retries",
            "skipped",
            "source",  # issue 23
            "sources_kept",
            "sources_reasked",
            "stop_reasons",
            "todo",
            "total_rows",
            "unpriced",
            "via",
        ],
    ),
    "ValidationReport": ("class", ["counts", "invalid", "problems", "rows", "source"]),
    "__version__": ("str", None),
    "estimate": (
        "function",
        ["config", "exact", "pilot", "seed", "count_rpm", "transport", "progress_stream"],
    ),
    "load_config": ("function", ["source", "flags", "environ"]),
    "load_prices": ("function", ["path"]),
    "merge_shards": ("function", ["config"]),  # issue 16: the shards into the job's output
    "report": ("function", ["paths", "prices"]),
    # run / run_async also take rows (a list of dicts, a DataFrame, ...): the keywords after
    # `only` / `redo_lapsed` are for rows, added with the in-memory API (public.frames).
    "run": (
        "function",
        [
            "config",
            "transport",
            "progress_stream",
            "retry_sleep",
            "only",
            "model",
            "max_tokens",
            "output",
            "environ",
            "settings",
        ],
    ),
    "run_async": (
        "function",
        [
            "config",
            "transport",
            "progress_stream",
            "retry_sleep",
            "only",
            "redo_lapsed",
            "model",
            "max_tokens",
            "output",
            "environ",
            "settings",
        ],
    ),
    # issue 16: one shard of a job, for any engine that starts a task per shard
    "run_shard": (
        "function",
        ["config", "index", "count", "transport", "progress_stream", "retry_sleep"],
    ),
    "summary_of": ("function", ["table"]),  # the in-memory API's run summary
    "validate": ("function", ["config"]),
}

# The exception tree users catch by (errors.py draws it).
SUBCLASSES = {
    "ApiError": "BatchrunError",
    "ConfigError": "BatchrunError",
    "FatalRunError": "BatchrunError",
    "InputError": "BatchrunError",
    "InvalidRowError": "InputError",
    "OutputError": "BatchrunError",
}


def _shape(value: object) -> tuple[str, list[str] | None]:
    if inspect.isclass(value):
        try:
            params: list[str] | None = sorted(inspect.signature(value).parameters)
        except ValueError:  # an exception class with the builtin constructor
            params = None
        return "class", params
    if callable(value):
        return "function", list(inspect.signature(value).parameters)
    return type(value).__name__, None


def test_all_lists_exactly_the_public_names() -> None:
    assert sorted(batchrun.__all__) == sorted(PUBLIC)


def test_each_public_name_keeps_its_kind_and_parameters() -> None:
    for name, expected in PUBLIC.items():
        assert _shape(getattr(batchrun, name)) == expected, name


def test_exception_tree() -> None:
    for child, parent in SUBCLASSES.items():
        assert issubclass(getattr(batchrun, child), getattr(batchrun, parent)), child


def test_version_is_the_packaged_one() -> None:
    from importlib.metadata import version

    assert batchrun.__version__ == version("batchrun")


def test_dir_lists_the_public_names() -> None:
    assert set(batchrun.__all__) <= set(dir(batchrun))
