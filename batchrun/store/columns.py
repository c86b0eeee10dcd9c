"""The output row contract (docs/design.md §3.3): column names and kinds, in order; pure.

Every run writes exactly these columns, then the kept input columns (as strings), so the
outputs of many runs concatenate. ``sink`` turns the kinds into one explicit Arrow schema.
"""

from __future__ import annotations

from typing import Any, Literal

Kind = Literal["string", "int", "float", "timestamp"]

COLUMNS: tuple[tuple[str, Kind], ...] = (
    ("id", "string"),
    ("status", "string"),  # "ok" | "error"
    ("model", "string"),  # as served (dated id), or as requested when nothing was served
    ("stop_reason", "string"),
    ("stop_sequence", "string"),
    ("text", "string"),  # all text blocks joined
    ("content_json", "string"),  # the whole content array, as JSON
    ("thinking", "string"),  # thinking blocks' text joined; redacted ones are only counted:
    ("redacted_thinking_blocks", "int"),  # their content is encrypted, useless in a dataset
    ("tool_calls_json", "string"),  # [{id, name, input}] for every tool_use block, as JSON
    ("structured_json", "string"),  # --json-schema: the answer (the tool's input), as JSON
    ("input_tokens", "int"),
    ("output_tokens", "int"),
    ("cache_creation_input_tokens", "int"),
    ("cache_creation_5m_input_tokens", "int"),  # the split of the above by ttl, where the
    ("cache_creation_1h_input_tokens", "int"),  # API gives it (usage.cache_creation)
    ("cache_read_input_tokens", "int"),
    ("cost_usd", "float"),
    ("attempts", "int"),
    ("latency_ms", "float"),  # the last attempt
    ("elapsed_ms", "float"),  # first send to final answer
    ("request_id", "string"),
    ("message_id", "string"),
    ("http_status", "int"),
    ("error_type", "string"),
    ("error_message", "string"),
    ("request_hash", "string"),
    ("duplicate_of", "string"),  # the id of the row whose identical request was sent for this one
    # --answer-cache: "OUTPUT#ID", the output and row that paid for this answer in an earlier
    # job (engine.answer_cache); null for a row answered by this job
    ("cached_from", "string"),
    # --samples K: every sample's answer, as JSON, and the share of them equal to the chosen
    # (most frequent) answer (engine.samples); null for a row asked once
    ("samples_json", "string"),
    ("agreement", "float"),
    ("via", "string"),  # "online" | "batches": how the row was sent (Message Batches: half price)
    ("batch_id", "string"),  # the Message Batch that answered the row
    # Where the answer came from: "simulator", or the API's base URL without credentials
    # ("https://api.anthropic.com"); null for a row never sent (store.provenance)
    ("source", "string"),
    ("finished_at", "timestamp"),  # UTC, millisecond precision
)

COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)

# A row's usage and what it cost: its token counts (cache writes also split by ttl), then
# cost_usd. A duplicate's are all 0 (engine.dedup); a report sums them.
USAGE_COLUMNS: tuple[str, ...] = COLUMN_NAMES[
    COLUMN_NAMES.index("input_tokens") : COLUMN_NAMES.index("cost_usd") + 1
]

STATUS_OK = "ok"
STATUS_ERROR = "error"

# error_type for a row that was never sent because it breaks a rule the API would reject.
INVALID_REQUEST = "invalid_request"
# --samples K: a row whose run stopped after some of its samples were paid for. Its record
# carries what they cost, so the job's spend (store.spend) counts them; the row itself is
# not settled, and the next run asks it again whole (store.row_state).
SAMPLES_CUT = "samples_cut"


_BLANK: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)


def blank_row(row_id: str) -> dict[str, Any]:
    """A row with every column present and empty, so writers never meet a missing key."""
    row = _BLANK.copy()  # (copying a made dict is quicker than making one, once a row)
    row["id"] = row_id
    return row
