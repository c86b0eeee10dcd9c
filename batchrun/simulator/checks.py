"""What the simulator accepts: request checks as the API applies them, with its statuses.

A body the API would refuse gets the API's 400 (404 for a model it does not serve: see
``models``) and a message in its style, before any rate limit, fault or reply; so a client
that sends what the API refuses fails against the simulator too. Accepting a request is one
job and answering it another (``replies``): these rules follow the API's validation and
change when it does, not when the replies do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchrun.simulator.models import Models, packaged_models
from batchrun.simulator.rules import effort_value_refusal, model_rules_refusal

API_VERSIONS = frozenset({"2023-06-01", "2026-10-21"})
SAMPLING_FREE_VERSION = "2026-10-21"
"""Under this version ``temperature``/``top_p``/``top_k`` are rejected (docs/api-facts.md §3.3)."""

MESSAGES_FIELDS = frozenset(
    {
        "model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k",
        "stop_sequences", "stream", "metadata", "tools", "tool_choice", "thinking",
        "cache_control", "service_tier", "output_config", "container", "inference_geo",
    }
)  # fmt: skip
"""Top-level fields ``/v1/messages`` accepts; the API rejects any other (additionalProperties)."""

COUNT_TOKENS_FIELDS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "cache_control",
     "output_config"}
)  # fmt: skip
"""Top-level fields ``/v1/messages/count_tokens`` accepts (no ``max_tokens``, no ``stream``)."""


THINKING_TYPES = ("enabled", "adaptive", "disabled", "between_tools")
"""``thinking.type``'s values; ``between_tools`` (Sonnet 5.5 only: ``rules``) takes no other
field (docs/api-facts.md §12.2)."""


class InvalidRequest(Exception):
    """The request breaks a rule the API enforces; carries the status and envelope fields."""

    def __init__(
        self, message: str, status: int = 400, error_type: str = "invalid_request_error"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type


def check_version(version: str | None) -> str:
    """Return the ``anthropic-version`` header value, or raise if missing or unknown."""
    if not version:
        raise InvalidRequest("anthropic-version: header is required")
    if version not in API_VERSIONS:
        raise InvalidRequest(f"anthropic-version: {version!r} is not a valid version")
    return version


def check_messages_body(
    body: object, version: str, models: Models | None = None, *, batch: bool = False
) -> dict[str, Any]:
    """Check a ``/v1/messages`` body as the API would; return it as a dict.

    ``models``: the names served (the packaged table's by default), and each one's rules
    (``rules``). ``batch``: a request inside a Message Batch (its larger output limit)."""
    data = _as_object(body)
    _check_fields(data, MESSAGES_FIELDS)
    _check_model(data, models)
    _check_max_tokens(data)
    _check_messages(data)
    _check_sampling(data, version)
    _check_optional_types(data)
    _check_tools(data)
    _check_thinking(data)
    _check_output_config(data, models)
    _check_model_rules(data, models, batch=batch)
    return data


def check_count_tokens_body(
    body: object, version: str, models: Models | None = None
) -> dict[str, Any]:
    """Check a ``/v1/messages/count_tokens`` body as the API would; return it as a dict."""
    data = _as_object(body)
    _check_fields(data, COUNT_TOKENS_FIELDS)
    _check_model(data, models)
    _check_messages(data)
    _check_sampling(data, version)
    _check_optional_types(data)
    _check_tools(data)
    _check_output_config(data, models)
    _check_model_rules(data, models)
    return data


def _check_model_rules(data: Mapping[str, Any], models: Models | None, batch: bool = False) -> None:
    """What the model table says this model refuses (``rules``), as the API's 400."""
    facts = (models or packaged_models()).facts_for(str(data["model"]))
    refusal = effort_value_refusal(data) or model_rules_refusal(data, facts, batch=batch)
    if refusal is not None:
        raise InvalidRequest(refusal)


def _as_object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("Input should be a valid dictionary or object")
    return body


def _check_fields(data: Mapping[str, Any], allowed: frozenset[str]) -> None:
    for name in data:
        if name not in allowed:
            raise InvalidRequest(f"{name}: Extra inputs are not permitted")


def _check_model(data: Mapping[str, Any], models: Models | None) -> None:
    model = _required(data, "model")
    if not isinstance(model, str):
        raise InvalidRequest("model: Input should be a valid string")
    if not (models or packaged_models()).serves(model):
        raise InvalidRequest(f"model: {model}", status=404, error_type="not_found_error")


def _check_max_tokens(data: Mapping[str, Any]) -> None:
    value = _required(data, "max_tokens")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest("max_tokens: Input should be a valid integer")
    if value < 1:
        raise InvalidRequest("max_tokens: Input should be greater than or equal to 1")


def _check_messages(data: Mapping[str, Any]) -> None:
    messages = _required(data, "messages")
    if not isinstance(messages, list):
        raise InvalidRequest("messages: Input should be a valid list")
    if not messages:
        raise InvalidRequest("messages: at least one message is required")
    for index, message in enumerate(messages):
        _check_message(index, message)
    if messages[0]["role"] != "user":
        raise InvalidRequest('messages: first message must use the "user" role')


def _check_message(index: int, message: object) -> None:
    where = f"messages.{index}"
    if not isinstance(message, dict):
        raise InvalidRequest(f"{where}: Input should be a valid dictionary")
    role = message.get("role")
    if role is None:
        raise InvalidRequest(f"{where}.role: Field required")
    if role not in ("user", "assistant"):
        raise InvalidRequest(f"{where}.role: Input should be 'user' or 'assistant'")
    if "content" not in message:
        raise InvalidRequest(f"{where}.content: Field required")
    content = message["content"]
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content: Input should be a valid string or list")
    for block_index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequest(f"{where}.content.{block_index}.type: Field required")
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            raise InvalidRequest(f"{where}.content.{block_index}.text: Field required")


def _check_sampling(data: Mapping[str, Any], version: str) -> None:
    if version == SAMPLING_FREE_VERSION:
        for name in ("temperature", "top_p", "top_k"):
            if name in data:
                raise InvalidRequest(
                    f"{name}: not supported with anthropic-version {SAMPLING_FREE_VERSION}"
                )
    for name in ("temperature", "top_p"):
        if name in data:
            _check_unit_interval(name, data[name])
    if "top_k" in data:
        top_k = data["top_k"]
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise InvalidRequest("top_k: Input should be an integer greater than or equal to 0")


def _check_unit_interval(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{name}: Input should be a valid number")
    if value < 0:
        raise InvalidRequest(f"{name}: Input should be greater than or equal to 0")
    if value > 1:
        raise InvalidRequest(f"{name}: Input should be less than or equal to 1")


def _check_optional_types(data: Mapping[str, Any]) -> None:
    stops = data.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        raise InvalidRequest("stop_sequences: Input should be a valid list of strings")
    if "stream" in data and not isinstance(data["stream"], bool):
        raise InvalidRequest("stream: Input should be a valid boolean")
    system = data.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise InvalidRequest("system: Input should be a valid string or list")


def _check_tools(data: Mapping[str, Any]) -> None:
    tools = data.get("tools")
    if tools is not None and (
        not isinstance(tools, list)
        or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools)
    ):
        raise InvalidRequest("tools: each tool needs a string name")
    choice = data.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise InvalidRequest("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if choice["type"] in ("any", "tool") and not tools:
        raise InvalidRequest(f"tool_choice: type {choice['type']!r} requires tools")
    if choice["type"] == "tool":
        names = [t["name"] for t in tools or ()]
        if choice.get("name") not in names:
            raise InvalidRequest(f"tool_choice.name: no tool named {choice.get('name')!r}")


def _check_thinking(data: Mapping[str, Any]) -> None:
    thinking = data.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict) or thinking.get("type") not in THINKING_TYPES:
        raise InvalidRequest(
            "thinking.type: Input should be 'enabled', 'adaptive', 'disabled' or 'between_tools'"
        )
    if thinking["type"] == "between_tools" and len(thinking) > 1:
        raise InvalidRequest("thinking.between_tools: Extra inputs are not permitted")
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise InvalidRequest("thinking.enabled.budget_tokens: Field required")
        if budget < 1024:
            raise InvalidRequest(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            )
        if budget >= data["max_tokens"]:
            raise InvalidRequest("`max_tokens` must be greater than `thinking.budget_tokens`")
    if thinking["type"] in ("enabled", "adaptive") and forced_tool(data) is not None:
        raise InvalidRequest("Thinking may not be enabled when tool_choice forces tool use.")


# What output_config.format's schema may hold (docs/api-facts.md §13.2); anything else is 400.
FORMAT_SCHEMA_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "enum", "const",
        "anyOf", "allOf", "$ref", "$defs", "definitions", "format", "minItems", "pattern",
        "title", "description", "default",
    }
)  # fmt: skip


def _check_output_config(data: Mapping[str, Any], models: Models | None) -> None:
    """``output_config.format``: a JSON schema the structured outputs decode, on a model that
    takes them (its rules in the price table: ``models.Models.takes_format``)."""
    config = data.get("output_config")
    if config is None:
        return
    if not isinstance(config, dict):
        raise InvalidRequest("output_config: Input should be a valid dictionary")
    fmt = config.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise InvalidRequest("output_config.format.type: Input should be 'json_schema'")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequest("output_config.format.schema: Input should be a valid dictionary")
    model = str(data["model"])
    if not (models or packaged_models()).takes_format(model):
        raise InvalidRequest(f"'{model}' does not support output_config.format")
    _check_format_schema(schema, "output_config.format.schema")


def _check_format_schema(node: Any, where: str) -> None:
    if isinstance(node, list):
        for index, item in enumerate(node):
            _check_format_schema(item, f"{where}.{index}")
        return
    if not isinstance(node, dict):
        return
    for key in node:
        if key not in FORMAT_SCHEMA_KEYWORDS and key not in ("$schema", "$id", "$comment"):
            raise InvalidRequest(f"{where}: '{key}' is not supported in structured outputs")
    kind = node.get("type")
    if (kind == "object" or (isinstance(kind, list) and "object" in kind)) and node.get(
        "additionalProperties"
    ) is not False:
        raise InvalidRequest(
            f"{where}: For 'object' type, 'additionalProperties' must be explicitly set to false"
        )
    for key in ("properties", "$defs", "definitions"):
        for name, sub in (node.get(key) or {}).items():
            _check_format_schema(sub, f"{where}.{key}.{name}")
    for key in ("anyOf", "allOf"):
        _check_format_schema(node.get(key) or [], f"{where}.{key}")
    if isinstance(node.get("items"), dict):
        _check_format_schema(node["items"], f"{where}.items")


def _required(data: Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise InvalidRequest(f"{name}: Field required")
    return data[name]


def output_format(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The JSON schema ``output_config.format`` asks the answer to fit, or None."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    schema = fmt.get("schema") if isinstance(fmt, dict) else None
    return schema if isinstance(schema, dict) else None


def forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The tool the request forces (``tool_choice`` ``tool`` or ``any``), or None."""
    choice = body.get("tool_choice")
    tools = body.get("tools")
    if not isinstance(choice, dict) or not tools:
        return None
    if choice.get("type") == "tool":
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    if choice.get("type") == "any":
        first: Mapping[str, Any] = tools[0]
        return first
    return None
