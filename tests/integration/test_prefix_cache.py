"""Shared-prefix caching (issue 17, item 1): where ``--cache auto`` puts its breakpoints, the
minimum per model, the simulator's cache, and whole runs that read what the first row wrote."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import RecordingTransport, job_config, write_jsonl
from test_conformance import assert_conforms

from batchrun import run
from batchrun.core.errors import InvalidRowError
from batchrun.cost.prices import SAFE_MIN_CACHEABLE_TOKENS, default_prices, min_cacheable_tokens
from batchrun.rows.prefix import (
    MAX_BREAKPOINTS,
    CachePolicy,
    SeenFiles,
    SharedParts,
    count_breakpoints,
    place_breakpoints,
    template_head,
)
from batchrun.rows.request import RequestDefaults, prepare_request, request_hash
from batchrun.rows.tokens import estimate_input_tokens
from batchrun.runs.runtime import Runtime
from batchrun.simulator.cache import PromptCache
from batchrun.simulator.cache import min_cacheable_tokens as sim_minimum
from batchrun.simulator.replies import make_reply
from batchrun.simulator.tokens import count_input_tokens

EPHEMERAL = {"type": "ephemeral"}

HAIKU = "claude-haiku-4-5"

SONNET = "claude-sonnet-4-6"

POLICY = CachePolicy({HAIKU: 4096, SONNET: 1024})


def words(n: int) -> str:
    """About ``n`` tokens (by both counters) of text no other test shares."""
    return f"rubric {uuid.uuid4().hex} " + "lorem " * n


def defaults(**given: Any) -> RequestDefaults:
    return RequestDefaults(**{"model": HAIKU, "max_tokens": 20, "cache": POLICY, **given})


def marks(body: dict[str, Any]) -> list[str]:
    """Where the body's cache marks are, as short paths."""
    found = []
    for i, tool in enumerate(body.get("tools") or ()):
        if "cache_control" in tool:
            found.append(f"tools[{i}]")
    system = body.get("system")
    for i, block in enumerate(system if isinstance(system, list) else ()):
        if "cache_control" in block:
            found.append(f"system[{i}]")
    for i, turn in enumerate(body["messages"]):
        content = turn["content"]
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if "cache_control" in block:
                found.append(f"messages[{i}][{j}]")
    return found


# --- placement: pure --------------------------------------------------------------------------


def test_a_long_job_system_prompt_is_marked_at_its_end() -> None:
    prepared = prepare_request({"prompt": "row 1"}, defaults(system=words(5000)))
    assert marks(prepared.body) == ["system[0]"]
    assert prepared.body["system"][0]["cache_control"] == EPHEMERAL
    assert prepared.prefix_key is not None
    assert_conforms(prepared.body)


@pytest.mark.parametrize(("model", "marked"), [(HAIKU, False), (SONNET, True)])
def test_the_minimum_is_the_models(model: str, marked: bool) -> None:
    """2,000 tokens: below Haiku 4.5's 4,096, above Sonnet 4.5's 1,024."""
    system = words(2000)
    prepared = prepare_request({"prompt": "row"}, defaults(model=model, system=system))
    assert (marks(prepared.body) == ["system[0]"]) is marked
    assert (prepared.prefix_key is not None) is marked
    off = prepare_request({"prompt": "row"}, defaults(model=model, system=system, cache=None))
    assert (prepared.content == off.content) is not marked  # below: what --cache off sends


def test_an_unknown_model_takes_the_highest_minimum() -> None:
    body = prepare_request({"prompt": "r"}, defaults(model="my-gateway/x", system=words(3000)))
    assert marks(body.body) == []
    assert CachePolicy().minimum_tokens("anything") == SAFE_MIN_CACHEABLE_TOKENS == 4096


def test_the_template_head_is_split_off_and_marked() -> None:
    head = words(5000) + "\n\nReview:\n"
    job = defaults(template=head + "{text}\n\nAnswer in one word.")
    a = prepare_request({"text": "great"}, job)
    b = prepare_request({"text": "awful"}, job)
    content = a.body["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": head, "cache_control": EPHEMERAL}
    assert content[1] == {"type": "text", "text": "great\n\nAnswer in one word."}
    assert "".join(block["text"] for block in content) == head + "great\n\nAnswer in one word."
    assert a.prefix_key == b.prefix_key is not None  # one group: the rows share the head
    assert_conforms(a.body)


def test_a_template_without_fields_is_shared_whole() -> None:
    text = words(5000)
    assert template_head(text) == text
    assert template_head("Head {a} tail {b}") == "Head "
    prepared = prepare_request({}, defaults(template=text))
    assert prepared.body["messages"][0]["content"] == [
        {"type": "text", "text": text, "cache_control": EPHEMERAL}
    ]


def test_system_and_template_head_take_one_breakpoint_at_the_deepest() -> None:
    job = defaults(system=words(3000), template=words(3000) + "{text}")
    body = prepare_request({"text": "x"}, job).body
    assert marks(body) == ["messages[0][0]"]  # caches the system prompt too


def test_job_tools_alone_are_marked_on_the_last_tool() -> None:
    tools = tuple(
        {"name": f"t{i}", "description": words(1500), "input_schema": {"type": "object"}}
        for i in range(3)
    )
    body = prepare_request({"prompt": "x"}, defaults(tools=tools)).body
    assert marks(body) == ["tools[2]"]
    assert_conforms(body)


def test_what_a_row_sets_itself_is_not_shared() -> None:
    job = defaults(system=words(5000), template=words(5000) + "{text}")
    own_system = prepare_request({"text": "x", "system": "mine"}, job)
    assert marks(own_system.body) == [] and own_system.prefix_key is None
    own_prompt = prepare_request({"prompt": words(6000)}, defaults(system=job.system))
    assert marks(own_prompt.body) == ["system[0]"]  # the job's system still is


def test_groups_follow_the_prefix() -> None:
    """Rows with different shared heads (a template per category) get a key per group."""
    first, second = defaults(system=words(5000)), defaults(system=words(5000))
    keys = {
        prepare_request({"prompt": f"row {i}"}, job).prefix_key
        for job in (first, second)
        for i in range(3)
    }
    assert len(keys) == 2 and None not in keys


def test_the_users_cache_control_wins() -> None:
    mine = [{"type": "text", "text": words(5000), "cache_control": {"type": "ephemeral"}}]
    row = {"messages": [{"role": "user", "content": [*mine, {"type": "text", "text": "q"}]}]}
    prepared = prepare_request(row, defaults(system=words(5000)))
    assert marks(prepared.body) == ["messages[0][0]"]  # only the user's own, nothing added
    assert prepared.prefix_key is None
    system = [{"type": "text", "text": words(5000), "cache_control": EPHEMERAL}]
    job = defaults(system=system, template=words(5000) + "{text}")
    assert marks(prepare_request({"text": "x"}, job).body) == ["system[0]"]


def test_leading_turns_of_messages_rows_are_marked_before_the_last_user_turn() -> None:
    few_shot = [
        {"role": "user", "content": words(5000)},
        {"role": "assistant", "content": "positive"},
        {"role": "user", "content": "The food was cold."},
    ]
    body = prepare_request({"messages": few_shot}, defaults(system=words(5000))).body
    assert marks(body) == ["system[0]", "messages[1][0]"]
    assert body["messages"][2]["content"] == "The food was cold."  # the row's own turn
    assert count_breakpoints(body) <= MAX_BREAKPOINTS
    assert_conforms(body)
    single = prepare_request({"messages": few_shot[-1:]}, defaults(system=words(5000))).body
    assert marks(single) == ["system[0]"]


def test_a_mark_never_lands_on_a_blank_block_of_a_few_shot_turn() -> None:
    """A few-shot turn ending with a whitespace text block had its mark put there, which the
    API refuses; it moves back to the turn's last block with content."""
    answer = [{"type": "text", "text": "positive"}, {"type": "text", "text": " \n"}]
    few_shot = [
        {"role": "user", "content": words(5000)},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "The food was cold."},
    ]
    body = prepare_request({"messages": few_shot}, defaults(system=words(5000))).body
    assert marks(body) == ["system[0]", "messages[1][0]"]
    assert body["messages"][1]["content"][1] == {"type": "text", "text": " \n"}
    assert_conforms(body)


def test_a_turn_with_nothing_to_mark_is_left_unmarked() -> None:
    """A turn whose last block is a tool result with nothing in it takes no mark."""
    use = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}
    empty_result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": " "}
    turns = [
        {"role": "user", "content": words(5000)},
        {"role": "assistant", "content": [use]},
        {"role": "user", "content": [empty_result]},
        {"role": "user", "content": "And now?"},
    ]
    body = prepare_request({"messages": turns}, defaults(system=words(5000))).body
    assert marks(body) == ["system[0]"]
    assert_conforms(body)


def test_an_empty_text_block_in_a_rows_messages_is_its_problem() -> None:
    """The API refuses it ("text content blocks must be non-empty"), mark or not."""
    turns = [
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "q"}]}
    ]
    with pytest.raises(InvalidRowError) as caught:
        prepare_request({"messages": turns}, defaults())
    assert str(caught.value) == (
        "messages: [0].content[0] is a text block with no text, which the API refuses: drop it"
    )


def test_a_whole_run_of_few_shot_rows_marks_only_blocks_with_content(
    tmp_path: Path, sim: Any
) -> None:
    shots = words(5000)
    rows = [
        {
            "id": f"r{i}",
            "messages": [
                {"role": "user", "content": shots},
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": "  "}],
                },
                {"role": "user", "content": f"Review {i}: cold soup."},
            ],
        }
        for i in range(3)
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    recorder = RecordingTransport()
    summary = run(
        job_config(inp, tmp_path / "out.jsonl", sim.base_url, concurrency=1),
        runtime=Runtime(transport=recorder),
    )
    assert summary.exit_code == 0 and len(recorder.bodies) == 3
    for body in recorder.bodies:
        assert marks(body) == ["messages[1][0]"]
        assert_conforms(body)


def test_never_more_than_four_breakpoints() -> None:
    blocks = [{"type": "text", "text": f"part {i}", "cache_control": EPHEMERAL} for i in range(4)]
    row = {"messages": [{"role": "user", "content": blocks}]}
    body = prepare_request(row, defaults(system=words(5000))).body
    assert count_breakpoints(body) == MAX_BREAKPOINTS  # the user's four, none added
    for case in ({"prompt": "x"}, {"messages": [{"role": "user", "content": "x"}]}):
        job = defaults(system=words(5000), tools=({"name": "t", "input_schema": {}},))
        assert count_breakpoints(prepare_request(case, job).body) <= 2


def test_rows_attaching_files_keep_the_system_breakpoint_only(tmp_path: Path) -> None:
    """The files come before the template's text and usually differ per row (module doc)."""
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    job = defaults(system=words(5000), template=words(5000) + "{text}")
    prepared = prepare_request({"text": "x", "image": "a.png"}, job, base_dir=tmp_path)
    assert marks(prepared.body) == ["system[0]"]


def test_a_file_every_row_attaches_is_marked_from_its_second_row(tmp_path: Path) -> None:
    """A reference document each row attaches is shared: marked once an earlier row of the
    run led with it (the first pays plain input); a file only one row sends is never marked."""
    (tmp_path / "ref.txt").write_text(words(6000), encoding="utf-8")
    (tmp_path / "own.txt").write_text(words(6000) + " own", encoding="utf-8")
    job = defaults(template="Answer from the document: {text}")
    seen = SeenFiles()

    def prepared(document: str, text: str) -> Any:
        fields = {"text": text, "document": document}
        return prepare_request(fields, job, base_dir=tmp_path, seen_files=seen)

    first, second, third = (prepared("ref.txt", f"q{i}") for i in range(3))
    assert marks(first.body) == [] and first.prefix_key is None
    assert marks(second.body) == ["messages[0][0]"] and second.prefix_key is not None
    assert third.prefix_key == second.prefix_key
    assert second.hash != third.hash and first.hash == request_hash(first.body)
    assert_conforms(second.body)
    lone = prepared("own.txt", "q")
    assert marks(lone.body) == [] and lone.prefix_key is None
    # Without a run's memory of files (validate, a single request), files are never marked.
    alone = prepare_request({"text": "x", "document": "ref.txt"}, job, base_dir=tmp_path)
    assert marks(alone.body) == []


def test_the_request_hash_ignores_the_marks_batchrun_places() -> None:
    """Resume of an output made before --cache auto (or with --cache off) finds its rows
    unchanged; the bytes sent carry the marks."""
    job = defaults(system=words(5000))
    auto = prepare_request({"prompt": "row"}, job)
    off = prepare_request({"prompt": "row"}, defaults(system=job.system, cache=None))
    assert auto.hash == off.hash == request_hash(off.body)
    assert auto.content != off.content
    assert json.loads(auto.content) == auto.body
    assert auto.size == len(auto.content)


def test_place_breakpoints_leaves_unshared_bodies_alone() -> None:
    body = {"model": HAIKU, "max_tokens": 5, "system": words(5000),
            "messages": [{"role": "user", "content": "q"}]}  # fmt: skip
    before = copy.deepcopy(body)
    assert place_breakpoints(body, SharedParts(), POLICY) is None
    assert body == before


# --- the minimum per model: price table data --------------------------------------------------


def test_every_packaged_model_has_a_minimum_and_its_source() -> None:
    for price in default_prices().models():
        assert price.min_cacheable_tokens in (512, 1024, 2048, 4096), price.model
        assert price.min_cacheable_source, price.model
    assert min_cacheable_tokens("claude-haiku-4-5-20251001") == 4096
    assert min_cacheable_tokens("claude-sonnet-4-6") == 1024
    assert min_cacheable_tokens("claude-opus-4-7") == 2048
    assert min_cacheable_tokens("claude-fable-5-2") == 4096  # not found: the highest there is
    assert min_cacheable_tokens("not-a-model") == SAFE_MIN_CACHEABLE_TOKENS


# --- the simulator's cache ----------------------------------------------------------------------


def marked(system: str, prompt: str, model: str = SONNET, ttl: str | None = None) -> Any:
    control = EPHEMERAL if ttl is None else {"type": "ephemeral", "ttl": ttl}
    return {"model": model, "max_tokens": 5,
            "system": [{"type": "text", "text": system, "cache_control": control}],
            "messages": [{"role": "user", "content": prompt}]}  # fmt: skip


def test_the_simulator_knows_each_models_minimum() -> None:
    assert sim_minimum(HAIKU) == 4096 and sim_minimum("claude-haiku-4-5-20251001") == 4096
    assert sim_minimum(SONNET) == 1024 and sim_minimum("claude-opus-5") == 512
    assert sim_minimum("claude-opus-5-5") == 512 and sim_minimum("claude-sonnet-5-5") == 512
    assert sim_minimum("claude-opus-4-7") == 2048 and sim_minimum("claude-haiku-5.5") == 512
    cache = PromptCache()
    shared = words(2000)
    for model, writes in ((HAIKU, False), (SONNET, True)):
        usage = cache.apply(marked(shared, "q", model), count_input_tokens)
        assert (usage.written > 0) is writes


def test_an_entry_is_readable_only_once_its_writers_answer_starts() -> None:
    cache = PromptCache()
    shared = words(3000)
    herd = [cache.lookup(marked(shared, f"q{i}"), count_input_tokens) for i in range(3)]
    assert all(found.usage.written > 0 and found.usage.read == 0 for found in herd)
    cache.commit(herd[0])
    later = cache.lookup(marked(shared, "q9"), count_input_tokens)
    assert later.usage.read == herd[0].usage.written and later.usage.written == 0


def test_entries_expire_by_their_ttl_and_reads_refresh_them() -> None:
    now = [0.0]
    cache = PromptCache(clock=lambda: now[0])
    five, hour = words(3000), words(3000)
    cache.apply(marked(five, "q"), count_input_tokens)
    cache.apply(marked(hour, "q", ttl="1h"), count_input_tokens)
    now[0] = 200.0
    assert cache.apply(marked(five, "q"), count_input_tokens).read > 0  # refreshed to 500
    now[0] = 450.0
    assert cache.apply(marked(five, "q"), count_input_tokens).read > 0
    now[0] = 451.0 + 300
    assert cache.apply(marked(five, "q"), count_input_tokens).read == 0  # expired
    assert cache.apply(marked(hour, "q", ttl="1h"), count_input_tokens).read > 0
    now[0] += 3601
    assert cache.apply(marked(hour, "q", ttl="1h"), count_input_tokens).read == 0


def test_reads_need_an_exact_prefix_match_not_the_same_marks() -> None:
    cache = PromptCache()
    shared = words(3000)
    cache.apply(marked(shared, "q"), count_input_tokens)
    assert cache.apply(marked(shared + ".", "q"), count_input_tokens).read == 0
    assert cache.apply(marked(shared, "q", model="claude-opus-4-1"), count_input_tokens).read == 0
    again = marked(shared, "other question")
    again["system"][0]["cache_control"] = {"type": "ephemeral", "ttl": "5m"}
    assert cache.apply(again, count_input_tokens).read > 0


def test_usage_reports_the_split_as_the_api_does() -> None:
    cache = PromptCache()
    body = marked(words(3000), "q", ttl="1h")
    first = make_reply(body, cache=cache).message["usage"]
    second = make_reply(body, cache=cache).message["usage"]
    assert first["cache_creation"] == {
        "ephemeral_5m_input_tokens": 0,
        "ephemeral_1h_input_tokens": first["cache_creation_input_tokens"],
    }
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
    total = count_input_tokens(body)
    assert first["input_tokens"] + first["cache_creation_input_tokens"] == total
    assert second["input_tokens"] + second["cache_read_input_tokens"] == total


# --- whole runs against the simulator ---------------------------------------------------------


def run_job(tmp_path: Path, sim: Any, cache: str, instruction: str) -> list[dict[str, Any]]:
    rows = [{"id": f"r{i}", "text": f"Review {i}: the soup was fine."} for i in range(6)]
    inp = write_jsonl(tmp_path / f"in-{cache}.jsonl", rows)
    out = tmp_path / f"out-{cache}.jsonl"
    flags = {"template": instruction + "{text}", "cache": cache, "concurrency": 1}
    recorder = RecordingTransport()
    summary = run(job_config(inp, out, sim.base_url, **flags), runtime=Runtime(transport=recorder))
    assert summary.exit_code == 0
    for body in recorder.bodies:
        assert_conforms(body)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_a_whole_run_reads_the_shared_head_after_the_first_row(tmp_path: Path, sim: Any) -> None:
    instruction = words(5000) + "\n\nLabel the review:\n"
    auto = run_job(tmp_path, sim, "auto", instruction)
    off = run_job(tmp_path, sim, "off", instruction)
    written = auto[0]["cache_creation_input_tokens"]
    assert written >= 4096 and auto[0]["cache_read_input_tokens"] == 0
    for row in auto[1:]:  # one at a time: every later row reads what the first wrote
        assert row["cache_read_input_tokens"] == written
        assert row["cache_creation_input_tokens"] == 0
    assert all(r["cache_read_input_tokens"] == r["cache_creation_input_tokens"] == 0 for r in off)
    assert all(r["status"] == "ok" for r in auto + off)
    assert sum(r["cost_usd"] for r in auto) < 0.5 * sum(r["cost_usd"] for r in off)


def test_an_output_made_without_breakpoints_resumes_under_cache_auto(
    tmp_path: Path, sim: Any
) -> None:
    """The marks --cache auto adds are not in request_hash: no row counts as changed."""
    rows = [{"id": f"r{i}", "text": f"Review {i}"} for i in range(4)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    flags = {"template": words(5000) + "{text}", "concurrency": 1}
    first = run(job_config(inp, out, sim.base_url, cache="off", **flags))
    assert first.exit_code == 0
    recorder = RecordingTransport()
    again = run(
        job_config(inp, out, sim.base_url, cache="auto", **flags),
        runtime=Runtime(transport=recorder),
    )
    assert again.exit_code == 0
    assert recorder.bodies == []  # every row answered before is kept, none sent again


def test_a_whole_run_caches_the_document_every_row_attaches(tmp_path: Path, sim: Any) -> None:
    (tmp_path / "ref.txt").write_text(words(6000), encoding="utf-8")
    rows = [{"id": f"r{i}", "text": f"Question {i}?", "document": "ref.txt"} for i in range(30)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    flags = {"template": "Answer from the document: {text}", "concurrency": 16}
    recorder = RecordingTransport()
    summary = run(job_config(inp, out, sim.base_url, **flags), runtime=Runtime(transport=recorder))
    assert summary.exit_code == 0 and summary.ok == 30
    for body in recorder.bodies:
        assert_conforms(body)
    table = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    writes = [r["id"] for r in table if r["cache_creation_input_tokens"]]
    reads = [r["id"] for r in table if r["cache_read_input_tokens"]]
    assert writes == ["r1"]  # the first row is unmarked; the second writes; the rest read
    assert len(reads) == 28 and "r0" not in reads


def test_the_minimum_is_reached_on_the_model_s_own_tokenizer(tmp_path: Path) -> None:
    """Haiku 5.5 caches from 512 tokens of its own tokenizer, which counts about 1.3x what the
    local estimate (calibrated on the older one) counts: a prefix the estimate puts at about
    500 tokens is about 650 of Haiku 5.5's, so it is marked, and the simulator caches it."""
    model = "claude-haiku-5-5"
    system = words(415)
    local = estimate_input_tokens({"messages": [], "system": system})
    assert 512 / 1.3 < local < 512  # below the minimum by the estimate alone
    config = job_config(
        write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}]),
        tmp_path / "out.jsonl",
        "http://127.0.0.1:9",  # never sent
        model=model,
        system=system,
    )
    policy = config.defaults.cache
    assert policy is not None and policy.factors[model] == pytest.approx(1.3)
    marked = prepare_request({"prompt": "row"}, defaults(model=model, system=system, cache=policy))
    assert marks(marked.body) == ["system[0]"]
    unscaled = CachePolicy(dict(policy.minimums))  # the same minimums without the factor
    plain = prepare_request({"prompt": "row"}, defaults(model=model, system=system, cache=unscaled))
    assert marks(plain.body) == []
    cache = PromptCache()
    cache.apply(marked.body, count_input_tokens)
    assert cache.lookup(marked.body, count_input_tokens).usage.read > 0  # the API side caches it
