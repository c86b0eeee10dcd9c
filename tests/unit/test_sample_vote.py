"""How K samples of a row become its one output row (``engine.samples.vote``)."""

from __future__ import annotations

import json
from typing import Any

from batchrun.engine.samples import answer_key, vote
from batchrun.store.columns import blank_row


def _sample(
    text: str | None, *, status: str = "ok", structured: Any = None, cost: Any = 0.5
) -> Any:
    row = blank_row("r1")
    row.update(status=status, text=text, cost_usd=cost, input_tokens=10, output_tokens=2)
    row.update(attempts=1, stop_reason="end_turn" if status == "ok" else None)
    if structured is not None:
        row["structured_json"] = json.dumps(structured)
    if status != "ok":
        row["error_type"] = "overloaded_error"
    return row


def test_the_most_frequent_answer_is_chosen_ties_to_the_earliest() -> None:
    out = vote([_sample("neg"), _sample("pos"), _sample("pos")])
    assert out["text"] == "pos" and out["agreement"] == 2 / 3
    tie = vote([_sample("neg"), _sample("pos")])
    assert tie["text"] == "neg" and tie["agreement"] == 1 / 2


def test_usage_and_cost_are_summed_and_every_sample_kept() -> None:
    out = vote([_sample("a"), _sample("b"), _sample("a")])
    assert out["cost_usd"] == 1.5 and out["input_tokens"] == 30 and out["attempts"] == 3
    kept = json.loads(out["samples_json"])
    assert [s["text"] for s in kept] == ["a", "b", "a"]
    assert vote([_sample("a"), _sample("a", cost=None)])["cost_usd"] is None  # unpriced


def test_structured_answers_are_compared_as_canonical_json() -> None:
    one = _sample("x", structured={"label": "pos", "score": 1})
    two = _sample("y", structured={"score": 1, "label": "pos"})
    three = _sample("z", structured={"label": "neg", "score": 1})
    out = vote([three, one, two])
    assert json.loads(out["structured_json"]) == {"label": "pos", "score": 1}
    assert out["agreement"] == 2 / 3
    assert answer_key(one) == answer_key(two) == '{"label":"pos","score":1}'


def test_samples_in_error_count_against_agreement_and_all_errors_is_an_error_row() -> None:
    out = vote([_sample(None, status="error"), _sample("a"), _sample("b")])
    assert out["status"] == "ok" and out["text"] == "a" and out["agreement"] == 1 / 3
    failed = vote([_sample(None, status="error"), _sample(None, status="error")])
    assert failed["status"] == "error" and failed["agreement"] is None
    assert len(json.loads(failed["samples_json"])) == 2


def test_a_row_stopped_between_its_samples_keeps_their_cost_and_is_asked_again() -> None:
    # A run that stops (Ctrl-C, a budget) after some of a row's samples were paid for: the row
    # is recorded as cut off with what they cost, so the job's spend counts them, and its
    # state leaves it to the next run, which asks it whole.
    from batchrun.engine.outcome import Work
    from batchrun.engine.samples import Samples
    from batchrun.engine.tally import RowTally
    from batchrun.rows.reader import InputRow
    from batchrun.store.columns import SAMPLES_CUT
    from batchrun.store.row_state import RowState, state_of

    handed: list[tuple[Work, dict[str, Any]]] = []
    tally = RowTally()
    samples = Samples(3, lambda work, row: handed.append((work, row)), tally)
    works = [Work(InputRow(i, i + 1, f"r{i}", {}), {"model": "m"}, f"h{i}", None) for i in (0, 1)]
    sent = list(samples.expand(works))
    assert [w.request_hash for w in sent][:3] == ["h0#sample-0", "h0#sample-1", "h0#sample-2"]
    for work in sent[3:]:  # every sample of r1
        samples.record(work, _sample("yes", cost=0.25))
    samples.record(sent[0], _sample("no", cost=0.5))  # one sample of r0; then the stop
    samples.record(sent[1], _sample("no", cost=0.5))
    samples.cut()
    assert [(w.row.id, r["status"], r["error_type"]) for w, r in handed] == [
        ("r1", "ok", None),
        ("r0", "error", SAMPLES_CUT),
    ]
    cut = handed[1][1]
    assert cut["cost_usd"] == 1.0 and len(json.loads(cut["samples_json"])) == 2
    assert cut["request_hash"] == "h0" and cut["agreement"] is None
    assert "2 of its 3 samples" in cut["error_message"]
    assert tally.cost_usd == 0.75 + 1.0  # the summary's spend counts the cut row's samples
    assert state_of(cut["status"], cut["error_type"]) == RowState.NOTHING  # asked again
    samples.cut()
    assert len(handed) == 2  # once
