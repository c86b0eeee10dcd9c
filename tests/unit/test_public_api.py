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
            "auto",
            "batch_factor",
            "count_error",
            "count_failures",
            "counted",
            "duration",
            "exact",
            "input",
            "invalid",
            "job_spent_usd",
            "latency_s",
            "level",
            "max_cost",
            "models",
            "notes",
            "other_sources",
            "output",
            "pending_groups",
            "pilot",
            "projection",
            "projection_source",
            "rows",
            "source",
        ],
    ),
    "FatalRunError": ("class", None),
    "FinalCounts": (
        "class",
        [
            "error",
            "of",
            "ok",
            "rows",
        ],
    ),
    "InputError": (
        "class",
        [
            "field",
            "file",
            "message",
            "row",
        ],
    ),
    "InvalidRowError": (
        "class",
        [
            "file",
            "problems",
            "row",
        ],
    ),
    "OutputError": ("class", None),
    "PriceTable": (
        "class",
        [
            "_by_id",
            "batch_price_factor",
            "compiled",
            "entries",
            "sources",
            "web_search_per_1000",
        ],
    ),
    "Report": (
        "class",
        [
            "attempts",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "cache_saved_usd",
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
            "cache",
            "cache_system",
            "drop_unsupported",
            "effort",
            "max_tokens",
            "metadata",
            "model",
            "service_tier",
            "stop_sequences",
            "structured",  # issue 25: --json-schema's request (rows.structured)
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
    "RunConfig": (  # reshaped in issue 24
        "class",
        [
            "batches",
            "client",
            "cost",
            "defaults",
            "engine",
            "input",
            "job_file",
            "output",
            "resume",
            "run",
            "shard",
            "storage",
            "via",
        ],
    ),
    "RunResult": (  # new in issue 24
        "class",
        [
            "_dict",
            "_table",
            "config",
            "summary",
        ],
    ),
    "RunSummary": (
        "class",
        [
            "agreement_rows",
            "agreement_total",
            "answer_cache_failures",
            "answer_cache_hits",
            "answer_cache_saved_usd",
            "answer_cache_stored",
            "batches_collected",
            "batches_created",
            "batches_running",
            "budget_refused_usd",
            "budget_stop",
            "cache_creation_1h_input_tokens",
            "cache_creation_5m_input_tokens",
            "cache_creation_input_tokens",
            "cache_groups_warmed",
            "cache_read_input_tokens",
            "cache_rewarmed",
            "concurrency_chosen",
            "cost_usd",
            "deadline",
            "dedup_resent",
            "dedup_sampled",
            "dedup_saved_usd",
            "deduplicated",
            "dropped",
            "elapsed_s",
            "error",
            "error_types",
            "final",
            "input",
            "input_tokens",
            "interrupted",
            "invalid",
            "job_cost_before",
            "job_cost_usd",
            "max_cost",
            "mixed_sources",
            "ok",
            "output",
            "output_tokens",
            "partial",
            "rate_429s_retried",
            "rate_limited_429s",
            "rate_limits",
            "rate_pauses",
            "rate_slowdowns",
            "rate_wait_s",
            "retries",
            "sample_requests",
            "skipped",
            "source",
            "sources_kept",
            "sources_reasked",
            "stop_reasons",
            "todo",
            "total_rows",
            "trial",
            "unpriced",
            "via",
        ],
    ),
    "Runtime": (  # new in issue 24
        "class",
        [
            "on_row",  # issue 27: iter_answers
            "progress_stream",
            "show_progress",
            "sleep",
            "transport",
        ],
    ),
    "ValidationReport": (
        "class",
        [
            "counts",
            "invalid",
            "problems",
            "rows",
            "source",
        ],
    ),
    "__version__": ("str", None),
    "cancel_batches": (  # new in issue 24
        "function",
        [
            "config",
            "runtime",
        ],
    ),
    "cancel_batches_async": (  # new in issue 24
        "function",
        [
            "config",
            "runtime",
        ],
    ),
    "estimate": (  # reshaped in issue 24
        "function",
        [
            "config",
            "exact",
            "pilot",
            "seed",
            "count_rpm",
            "runtime",
        ],
    ),
    "estimate_async": (  # new in issue 24
        "function",
        [
            "config",
            "exact",
            "pilot",
            "seed",
            "count_rpm",
            "runtime",
            "clock",
        ],
    ),
    "list_batches": (  # new in issue 24
        "function",
        [
            "config",
            "runtime",
        ],
    ),
    "list_batches_async": (  # new in issue 24
        "function",
        [
            "config",
            "runtime",
        ],
    ),
    "load_config": (
        "function",
        [
            "source",
            "flags",
            "environ",
        ],
    ),
    "load_prices": (
        "function",
        [
            "path",
        ],
    ),
    "merge_shards": (
        "function",
        [
            "config",
        ],
    ),
    "report": (
        "function",
        [
            "paths",
            "prices",
        ],
    ),
    "run": (  # reshaped in issue 24
        "function",
        [
            "source",
            "runtime",
            "model",
            "max_tokens",
            "output",
            "environ",
            "settings",
        ],
    ),
    "run_async": (  # reshaped in issue 24
        "function",
        [
            "source",
            "runtime",
            "model",
            "max_tokens",
            "output",
            "environ",
            "settings",
        ],
    ),
    "iter_answers": (  # new in issue 27
        "function",
        ["source", "runtime", "model", "max_tokens", "output", "environ", "settings"],
    ),
    "run_shard": (  # reshaped in issue 24
        "function",
        [
            "config",
            "index",
            "count",
            "runtime",
        ],
    ),
    "summary_of": (
        "function",
        [
            "table",
        ],
    ),
    "validate": (
        "function",
        [
            "config",
        ],
    ),
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
