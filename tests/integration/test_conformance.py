"""Every kind of request batchrun builds validates against the API's own OpenAPI schema.

The spec is Anthropic's (cut to the schemas used here in ``tests/openapi/``, whose README says
where it comes from; the validators are ``support.openapi``); checking our bodies against its
``CreateMessageParams`` means nothing we send is rejected for its shape.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support import TEST_KEY, RecordingTransport, write_jsonl
from support.openapi import (
    SPEC_PATH,
    SUBSET,
    assert_conforms,
    assert_schema,
    cutter,
    validator,
)

from batchrun import load_config, run
from batchrun.rows.request import RequestDefaults, build_request
from batchrun.rows.structured import (
    FORCED_CHOICE,
    StructuredRequest,
    structured_tool,
    with_format,
)
from batchrun.runs.runtime import Runtime
from batchrun.simulator import BatchSettings, BatchStore, SimulatorThread
from batchrun.simulator.batch_store import check_create_body

DEFAULTS = RequestDefaults(model="claude-haiku-4-5", max_tokens=2048)
PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
PDF_B64 = base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()
TOOL: dict[str, Any] = {
    "name": "record_label",
    "description": "Record the label.",
    "input_schema": {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["positive", "negative"]}},
        "required": ["label"],
    },
}


def user(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


CASES: dict[str, tuple[dict[str, Any], RequestDefaults]] = {
    "text prompt": ({"prompt": "Hello"}, DEFAULTS),
    "template": (
        {"title": "T", "body": "B"},
        RequestDefaults(model="m", max_tokens=5, template="Summarize {title}: {body}"),
    ),
    "multi-turn": (
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello, how can I help?"},
                {"role": "user", "content": [{"type": "text", "text": "Explain LLMs."}]},
            ]
        },
        DEFAULTS,
    ),
    "prefilled assistant": (
        {"messages": [*user("Pick A or B"), {"role": "assistant", "content": "The answer is ("}]},
        DEFAULTS,
    ),
    "system string": ({"prompt": "Hi", "system": "Be brief."}, DEFAULTS),
    "system blocks with cache_control": (
        {
            "prompt": "Hi",
            "system": [
                {"type": "text", "text": "Be brief."},
                {
                    "type": "text",
                    "text": "Long shared context.",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                },
            ],
        },
        DEFAULTS,
    ),
    "image base64 and url": (
        {
            "messages": user(
                [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                    },
                    {"type": "text", "text": "Describe both."},
                ]
            )
        },
        DEFAULTS,
    ),
    "pdf base64, url and text documents": (
        {
            "messages": user(
                [
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": PDF_B64,
                        },
                        "cache_control": {"type": "ephemeral"},
                    },
                    {
                        "type": "document",
                        "source": {"type": "url", "url": "https://example.com/a.pdf"},
                    },
                    {
                        "type": "document",
                        "source": {
                            "type": "text",
                            "media_type": "text/plain",
                            "data": "plain notes",
                        },
                    },
                    {"type": "text", "text": "Summarize."},
                ]
            )
        },
        DEFAULTS,
    ),
    "tools and tool_choice tool": (
        {
            "prompt": "Label: great mug",
            "tools": [TOOL],
            "tool_choice": {"type": "tool", "name": "record_label"},
        },
        DEFAULTS,
    ),
    "tool_choice any, cached tool": (
        {
            "prompt": "x",
            "tools": [{**TOOL, "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        },
        DEFAULTS,
    ),
    "tool_choice none": (
        {"prompt": "x", "tools": [TOOL], "tool_choice": {"type": "none"}},
        DEFAULTS,
    ),
    "tools from JSON text": (
        {"prompt": "x", "tools": json.dumps([TOOL]), "tool_choice": '{"type": "auto"}'},
        DEFAULTS,
    ),
    "tool result turn": (
        {
            "messages": [
                *user("Weather in Paris?"),
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "record_label",
                            "input": {"label": "positive"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}],
                },
            ],
            "tools": [TOOL],
        },
        DEFAULTS,
    ),
    "thinking enabled": (
        {"prompt": "Think", "thinking": {"type": "enabled", "budget_tokens": 1024}},
        DEFAULTS,
    ),
    "thinking adaptive": (  # Haiku 4.5 takes budgeted thinking only: a model that takes it
        {"prompt": "Think", "thinking": {"type": "adaptive"}, "model": "claude-sonnet-4-6"},
        DEFAULTS,
    ),
    "thinking adaptive, shown summarized, on a model that thinks by default": (
        {
            "prompt": "Think",
            "thinking": {"type": "adaptive", "display": "summarized"},
            "model": "claude-opus-5-5",
        },
        DEFAULTS,
    ),
    "effort": (
        {"prompt": "Label this"},
        RequestDefaults(model="claude-haiku-5-5", max_tokens=2048, effort="low"),
    ),
    "effort with adaptive thinking": (
        {"prompt": "Think", "thinking": {"type": "adaptive"}},
        RequestDefaults(model="claude-opus-5-5", max_tokens=4096, effort="xhigh"),
    ),
    "thinking disabled": ({"prompt": "x", "thinking": {"type": "disabled"}}, DEFAULTS),
    "sampling": (  # Haiku 4.5 refuses temperature with top_p: a model that takes all three
        {"prompt": "x", "temperature": 0.2, "top_p": 0.9, "top_k": 5, "model": "claude-sonnet-4-6"},
        DEFAULTS,
    ),
    "stop sequences": ({"prompt": "x", "stop_sequences": ["\n\nHuman:", "END"]}, DEFAULTS),
    "metadata": ({"prompt": "x", "metadata": {"user_id": "u-123"}}, DEFAULTS),
    "service tier": ({"prompt": "x", "service_tier": "standard_only"}, DEFAULTS),
    "cache_system on a string system": (
        {"prompt": "x", "system": "Long shared instructions."},
        RequestDefaults(model="m", max_tokens=5, cache_system={"type": "ephemeral", "ttl": "1h"}),
    ),
    "json_schema's forced tool": (
        {"prompt": "Label: great mug"},
        RequestDefaults(
            model="m",
            max_tokens=200,
            tools=(structured_tool(TOOL["input_schema"]),),
            tool_choice=FORCED_CHOICE,
        ),
    ),
    "json_schema as output_config.format": (
        {"prompt": "Label: great mug"},
        RequestDefaults(
            model="claude-sonnet-5-5",
            max_tokens=200,
            structured=StructuredRequest.of(
                {
                    "type": "object",
                    "properties": {
                        "reasoning": {"type": "string"},
                        "label": {"enum": ["positive", "negative"]},
                        "score": {"type": "number"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "when": {"type": "string", "format": "date"},
                        "author": {"$ref": "#/$defs/person"},
                        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                    },
                    "required": ["reasoning", "label", "score", "tags", "author"],
                    "$defs": {
                        "person": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}},
                            "required": ["name"],
                        }
                    },
                },
                "schema.json",
            ),
        ),
    ),
    "job defaults for everything": (
        {"prompt": "x"},
        RequestDefaults(
            model="claude-sonnet-4-6",
            max_tokens=4096,
            system="You label.",
            temperature=1,
            stop_sequences=("STOP",),
            metadata={"user_id": None},
            tools=(TOOL,),
            tool_choice={"type": "auto"},
            thinking={"type": "enabled", "budget_tokens": 2048},
            service_tier="auto",
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_request_conforms_to_the_openapi_schema(name: str) -> None:
    fields, defaults = CASES[name]
    body = build_request(fields, defaults)
    assert_conforms(body)


def test_output_config_holding_effort_and_format_conforms() -> None:
    """``--json-schema`` puts its format beside whatever ``output_config`` holds already
    (``effort``): the two keys in one object, as the API's schema has them."""
    body = build_request({"prompt": "x"}, RequestDefaults(model="claude-sonnet-5-5", max_tokens=9))
    body["output_config"] = {"effort": "low"}
    with_format(body, TOOL["input_schema"])
    assert body["output_config"] == {
        "effort": "low",
        "format": {"type": "json_schema", "schema": TOOL["input_schema"]},
    }
    assert_conforms(body)


@pytest.mark.parametrize("name", sorted(CASES))
def test_streamed_request_conforms(name: str) -> None:
    """The client adds ``stream: true`` to the same body."""
    fields, defaults = CASES[name]
    assert_conforms({**build_request(fields, defaults), "stream": True})


def test_the_validator_does_reject_what_the_api_rejects() -> None:
    """A guard against a vacuous check (an unresolved ref or a schema that accepts anything)."""
    good = build_request({"prompt": "x"}, DEFAULTS)
    for bad in (
        {**good, "max_token": 5},
        {**good, "messages": user([{"type": "image", "source": {"type": "path", "path": "a"}}])},
        {**good, "thinking": {"type": "enabled", "budget_tokens": 10}},
        {**good, "output_config": {"format": {"type": "json", "schema": {}}}},
        {**good, "output_config": {"format": {"type": "json_schema"}}},
        {**good, "output_config": {"schema": {"type": "object"}}},
    ):
        assert list(validator().iter_errors(bad))


def test_the_committed_subset_is_the_cut_of_the_spec() -> None:
    """The committed schemas are the spec's own, so the checks here are the API's: the cut of
    the spec the tests read (BATCHRUN_OPENAPI=the full spec compares them with it; by default it
    is the subset itself, which must then be closed: exactly what its roots reach)."""
    cut = cutter()
    committed = json.loads(SUBSET.read_text(encoding="utf-8"))
    spec = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    assert committed["components"] == cut.subset(spec)["components"]
    assert committed["x-source"]["roots"] == list(cut.ROOTS)


def test_a_whole_run_sends_only_conforming_bodies(tmp_path: Path, sim: SimulatorThread) -> None:
    """Every body that reached the simulator, per-row overrides and job defaults mixed."""
    rows = [{"id": name, **fields} for name, (fields, d) in CASES.items() if d is DEFAULTS]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    recorder = RecordingTransport()
    config = load_config(
        inp,
        {
            "output": str(tmp_path / "out.jsonl"),
            "model": "claude-haiku-4-5",
            "max_tokens": 2048,
            "system": "You are terse.",
            "stream": True,
            "base_url": sim.base_url,
            "quiet": True,
        },
        environ={"ANTHROPIC_API_KEY": TEST_KEY},
    )
    summary = run(config, runtime=Runtime(transport=recorder))
    assert summary.exit_code == 0
    assert len(recorder.bodies) == len(rows)
    for body in recorder.bodies:
        assert body["stream"] is True
        assert_conforms(body)


def test_a_whole_run_with_effort_sends_conforming_bodies(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    """A Haiku 5.5 job at --effort low: effort in output_config, adaptive thinking on a row;
    every body the simulator (which checks the model's rules) took is the spec's shape."""
    rows = [
        {"id": "plain", "prompt": "Label: great mug"},
        {"id": "adaptive", "prompt": "Think", "thinking": {"type": "adaptive"}},
        {"id": "off", "prompt": "No thinking", "thinking": {"type": "disabled"}},
    ]
    recorder = RecordingTransport()
    settings = {"output": str(tmp_path / "out.jsonl"), "model": "claude-haiku-5-5",
                "max_tokens": 1024, "effort": "low", "base_url": sim.base_url,
                "quiet": True}  # fmt: skip
    config = load_config(
        write_jsonl(tmp_path / "in.jsonl", rows), settings, environ={"ANTHROPIC_API_KEY": TEST_KEY}
    )
    assert run(config, runtime=Runtime(transport=recorder)).exit_code == 0
    assert len(recorder.bodies) == len(rows)
    for body in recorder.bodies:
        assert body["output_config"] == {"effort": "low"}
        assert_conforms(body)


def test_requests_with_local_files_conform() -> None:
    """Path sources and attachment columns, read from the committed sample media."""
    media = Path(__file__).resolve().parents[2] / "sample_data" / "media"
    fields = {
        "images": ["red_square.png", "checker.gif", "https://example.com/x.jpg"],
        "document": ["report.pdf", "notes.txt"],
        "prompt": "Describe all of these.",
    }
    assert_conforms(build_request(fields, DEFAULTS, base_dir=media))
    path_source = {"type": "path", "path": "gradient.png"}
    messages = user([{"type": "image", "source": path_source}, {"type": "text", "text": "?"}])
    assert_conforms(build_request({"messages": messages}, DEFAULTS, base_dir=media))


# ------------------------------------------------------------------------------ Message Batches


def with_spec_nulls(line: dict[str, Any]) -> dict[str, Any]:
    """A succeeded line with the two keys the spec requires (nullable) and replies omit.

    The simulator's Message leaves out ``citations`` on text blocks and ``usage.inference_geo``
    (the SDK defaults both to None); the batch envelope around it is what is checked here.
    """
    message = line["result"]["message"]
    content = [{"citations": None, **b} if b["type"] == "text" else b for b in message["content"]]
    usage = {"inference_geo": None, **message["usage"]}
    return {
        **line,
        "result": {**line["result"], "message": {**message, "content": content, "usage": usage}},
    }


def test_message_batches_conform_to_the_openapi_schemas() -> None:
    """Every object the batch endpoints return, in every state and result kind."""
    clock = [0.0]
    store = BatchStore(
        BatchSettings(processing_s=10, error_rate=0.3, expire_rate=0.3), clock=lambda: clock[0]
    )
    requests: list[dict[str, Any]] = [
        {"custom_id": f"row-{i}", "params": build_request({"prompt": f"Row {i}"}, DEFAULTS)}
        for i in range(20)
    ]
    requests.append({"custom_id": "streams", "params": {**requests[0]["params"], "stream": True}})
    structured = StructuredRequest.of(TOOL["input_schema"], "schema.json")
    requests += [
        {
            "custom_id": f"structured-{i}",
            "params": build_request(
                {"prompt": f"Row {i}"}, replace(DEFAULTS, structured=structured)
            ),
        }
        for i in range(4)
    ]
    body = {"requests": requests}
    assert_schema("CreateMessageBatchParams", body)
    batch = store.create(check_create_body(body), "2023-06-01")
    assert_schema("MessageBatch", batch)
    clock[0] = 5.0
    assert_schema("MessageBatch", store.cancel(batch["id"]))
    clock[0] = 10.0
    assert_schema("MessageBatch", store.retrieve(batch["id"]))
    assert_schema("ListResponse_MessageBatch_", store.list_batches())
    kinds = set()
    for raw in store.results(batch["id"]).splitlines():
        line = json.loads(raw)
        kinds.add(line["result"]["type"])
        if line["result"]["type"] == "succeeded":
            line = with_spec_nulls(line)
        assert_schema("MessageBatchIndividualResponse", line)
    assert kinds == {"succeeded", "errored", "expired", "canceled"}
    assert_schema("DeleteMessageBatchResponse", store.delete(batch["id"]))
