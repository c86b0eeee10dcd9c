"""``--samples K``: each row asked K times, independently, and answered by one output row.

A row's K requests are the same body; each carries its sample index in what dedup keys on
(``request_hash`` + ``#sample-i``), so dedup never folds a row's samples into one answer (the
i-th samples of two identical rows still fold, as identical rows always do). When a row's K
outcome rows are in, they become its one output row (``vote``): the answer given most often
(structured answers compared as canonical JSON, text as it is; a tie goes to the earliest
sample), ``samples_json`` with every sample, ``agreement`` (the share of the K samples equal to
the chosen one) and the usage and cost of all K summed. Only that row is journaled and counted.
A run stopped with some of a row's samples in records the row as cut off (``Samples.cut``):
its samples' cost is journaled, so the job's spend and ``--max-cost`` count it, and the next
run asks the row again whole.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from batchrun.engine.outcome import Work
from batchrun.engine.tally import RowTally
from batchrun.store.columns import SAMPLES_CUT, STATUS_ERROR, STATUS_OK, USAGE_COLUMNS

OnRow = Callable[[Work, dict[str, Any]], None]
SAMPLE_MARK = "#sample-"  # what follows a request's hash in its samples' dedup key


def samples_can_vary(temperature: float | None) -> bool:
    """Whether K samples of a request may differ: a temperature above 0, or none (the API's
    default is 1: docs/api-facts.md §1.1)."""
    return temperature is None or temperature > 0


def sample_requests(work: Work, k: int) -> Iterator[Work]:
    """``work``'s K sample requests, each keyed for dedup by the row's request hash and its
    sample index (so the i-th samples of identical rows are twins, a row's own never are);
    a row that cannot be sent, or ``k`` of 1, as it is. The engine sends these, and the online
    run's twin pass (``runs.twins.find_twins``) reads these same keys."""
    if k <= 1 or work.body is None or work.request_hash is None:
        yield work
        return
    for i in range(k):
        yield replace(work, request_hash=f"{work.request_hash}{SAMPLE_MARK}{i}", sample=i)


def plan_index(work: Work, k: int) -> int:
    """Where a twin plan (``engine.twin_plan``) knows ``work``: its row's index, or with K
    samples a row's requests one after another (row × K + sample), in input order both."""
    return work.row.index if work.sample is None else work.row.index * k + work.sample


class Samples:
    """Expands each row into its K sample requests and folds their K rows into one."""

    def __init__(self, k: int, on_row: OnRow, tally: RowTally) -> None:
        self.k = k
        self._on_row = on_row
        self._tally = tally
        self._waiting: dict[int, list[dict[str, Any] | None]] = {}  # row index -> its samples
        self._works: dict[int, Work] = {}

    def expand(self, works: Iterable[Work]) -> Iterator[Work]:
        """Each row's K sample requests (``sample_requests``); a row that cannot be sent
        passes as it is (its one error row says why)."""
        for work in works:
            if work.body is not None and work.request_hash is not None:
                self._works[work.row.index] = work
                self._waiting[work.row.index] = [None] * self.k
            yield from sample_requests(work, self.k)

    def record(self, work: Work, row: dict[str, Any]) -> None:
        """One sample's row; the row's output row once all K are in."""
        if work.sample is None:  # not sampled (a row that cannot be sent): the engine counts it
            self._on_row(work, row)
            return
        index = work.row.index
        rows = self._waiting[index]
        rows[work.sample] = row
        self._tally.sample_requests += 1
        if any(r is None for r in rows):
            return
        del self._waiting[index]
        original = self._works.pop(index)
        voted = vote([r for r in rows if r is not None])
        voted["request_hash"] = original.request_hash  # the row's request, as resume knows it
        self._on_row(original, voted)
        self._tally.count(voted, original.dropped)
        if voted["agreement"] is not None:
            self._tally.agreement_total += voted["agreement"]
            self._tally.agreement_rows += 1

    def cut(self) -> None:
        """At the end of a run: each row some of whose samples were answered but not all (a
        stop, a budget) is recorded as cut off, with what its samples cost, so the spend is
        the job's whatever happens; its state leaves it to the next run (``SAMPLES_CUT``)."""
        for index, rows in list(self._waiting.items()):
            finished = [r for r in rows if r is not None]
            if not finished:
                continue  # nothing of it sent: the next run sends it, as any row
            del self._waiting[index]
            original = self._works.pop(index)
            row = vote(finished)
            row.update(
                status=STATUS_ERROR,
                error_type=SAMPLES_CUT,
                error_message=(
                    f"the run stopped after {len(finished)} of its {self.k} samples (paid, and "
                    "counted in the job's spend); the next run asks this row again whole"
                ),
                agreement=None,
                request_hash=original.request_hash,
            )
            self._on_row(original, row)
            self._tally.add_usage(row)  # spent, though the row is not finished


def request_samples(body: Mapping[str, Any]) -> bool:
    """Whether ``body``'s answer is drawn at random, so may differ from one request to the
    next: a temperature above 0, or none (``samples_can_vary``); a value that is no number
    (never built so) counts as one that samples."""
    temperature = body.get("temperature")
    if temperature is not None and not isinstance(temperature, (int, float)):
        return True
    return samples_can_vary(temperature)


def answer_key(row: dict[str, Any]) -> str:
    """What two samples are compared by: a structured answer as canonical JSON (key order and
    spacing aside), else the text."""
    structured = row.get("structured_json")
    if structured is not None:
        try:
            value = json.loads(structured)
        except ValueError:
            return str(structured)
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(row.get("text") or "")


def vote(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The output row of one input row's samples (``rows``, in sample order): the most
    frequent answer's row (ties to the earliest), with every sample, the agreement, and the
    usage, cost and attempts of all of them. No sample answered: the first one's error row."""
    answered = [r for r in rows if r["status"] == STATUS_OK]
    if answered:
        keys = [answer_key(r) for r in answered]
        counts = Counter(keys)
        best = max(counts.values())
        chosen_key = next(key for key in keys if counts[key] == best)  # ties: the earliest
        out = dict(answered[keys.index(chosen_key)])
        out["agreement"] = best / len(rows)
    else:
        out = dict(rows[0])
        out["agreement"] = None
    out["samples_json"] = json.dumps([_sample(r) for r in rows], ensure_ascii=False)
    for column in (*USAGE_COLUMNS, "attempts"):
        values = [r.get(column) for r in rows]
        known = [v for v in values if v is not None]
        # A cost is known only when every sample's is (an unpriced model stays unpriced).
        if column == "cost_usd" and len(known) < len(values):
            out[column] = None
        else:
            out[column] = sum(known) if known else None
    return out


def _sample(row: dict[str, Any]) -> dict[str, Any]:
    """One sample in ``samples_json``: its answer, how it ended, what it cost."""
    structured = row.get("structured_json")
    return {
        "status": row["status"],
        "text": row.get("text"),
        "structured": json.loads(structured) if structured is not None else None,
        "stop_reason": row.get("stop_reason"),
        "error_type": row.get("error_type"),
        "cost_usd": row.get("cost_usd"),
    }
