"""The final step alone at scale: the journal of a finished job into its Parquet file (issue 26).

A job's answers are journaled as they come; its final step reads the journal back, keeps each
row's newest record and writes the rows in input order. This measures that step alone, on a
journal of ``--small`` rows (default 1,000,000) and of ``--large`` rows (default 10,000,000),
made the way a Message Batches job leaves it: each run of 100,000 input rows journaled in a
shuffled order (a batch's results come in no particular order), and 1 % of the rows recorded
twice (a retried row: the newer record must win).

Each size runs in a child process of its own: ``Sink(OUT).open()``, then ``finalize`` timed,
its peak RSS read from the kernel as the child is reaped (``os.wait4``). The journal is
written beforehand by another child, so its making counts in neither figure. The output is
checked: every row once, in input order, the newer record where there were two.

Printed: seconds and peak RSS at each size, and the ratio large/small of the peak RSS.
Target (issue 26, "flat memory with every default on"): <= 1.3x. ``--before CHECKOUT``
measures another checkout's final step on the same journals. Exit code 0 when it passes.

Run from the repository root (the 10M journal is about 12 GB of JSON lines, written once to
``--work``; a few minutes)::

    python bench/final_step.py
    python bench/final_step.py --small 100000 --large 1000000 --before /tmp/main
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import bytecode_env, peak_rss_mib, print_table, versions_banner

RSS_TARGET = 1.3
BLOCK_ROWS = 100_000  # a Message Batch's rows: its results come back shuffled
TWICE_EVERY = 100  # one row in this many is recorded twice, the second record newer
SEED = 26


def journal_line(index: int, newer: bool) -> str:
    """One record, as the sink journals a batch answer (its columns, its order)."""
    text = f"positive {index}" + (" (newer)" if newer else "")
    content = json.dumps([{"type": "text", "text": text}], separators=(",", ":"))
    return json.dumps(
        {
            "_index": index,
            "_run": "run-bench",
            "id": f"row-{index}",
            "status": "ok",
            "model": "claude-haiku-4-5",
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "text": text,
            "content_json": content,
            "thinking": None,
            "redacted_thinking_blocks": 0,
            "tool_calls_json": None,
            "structured_json": None,
            "input_tokens": 31,
            "output_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_creation_5m_input_tokens": None,
            "cache_creation_1h_input_tokens": None,
            "cache_read_input_tokens": 0,
            "cost_usd": 0.0000205,
            "attempts": 1,
            "latency_ms": None,
            "elapsed_ms": 500.0,
            "request_id": None,
            "message_id": f"msg_row-{index}",
            "http_status": None,
            "error_type": None,
            "error_message": None,
            "request_hash": f"{index:064x}",
            "duplicate_of": None,
            "cached_from": None,
            "samples_json": None,
            "agreement": None,
            "via": "batches",
            "batch_id": f"msgbatch_{index // BLOCK_ROWS:08d}",
            "source": "https://api.anthropic.com",
            "finished_at": "2026-12-07T19:52:34.884Z",
        },
        separators=(",", ":"),
    )


def write_journal(path: Path, rows: int) -> None:
    """The journal a batch job of ``rows`` rows leaves (see the module doc)."""
    rng = random.Random(SEED)
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, rows, BLOCK_ROWS):
            block = list(range(start, min(rows, start + BLOCK_ROWS)))
            rng.shuffle(block)
            lines = [journal_line(i, False) for i in block]
            lines += [journal_line(i, True) for i in block if i % TWICE_EVERY == 0]
            out.write("\n".join(lines) + "\n")


# The sink opens on an empty journal, as a fresh run's does; the journal it then finds at
# its path is the one the job would have left (its own is replaced by a rename).
CHILD = """
import json, os, resource, sys, time
from pathlib import Path
from batchrun.store.sink import Sink
out, rows, journal = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
sink = Sink(out)
sink.open()
os.replace(journal, sink.journal)
opened = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
counts = sink.finalize(rows)
print(json.dumps({"seconds": time.perf_counter() - start, "opened_mb": opened}))
"""


def finalize_in_child(checkout: Path, out: Path, rows: int, journal: Path) -> dict[str, float]:
    """``Sink.finalize`` of ``journal`` as ``out``'s, in a child running ``checkout``: its
    time, its RSS once the sink is open, and its own peak RSS."""
    env = {**bytecode_env(), "PYTHONPATH": str(checkout)}
    command = [sys.executable, "-c", CHILD, str(out), str(rows), str(journal)]
    peak, code, output = peak_rss_mib(command, env=env, cwd=checkout)
    if code != 0:
        raise SystemExit(f"the final step failed ({checkout}):\n{output}")
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    result["peak_mb"] = peak
    return result


def check_output(out: Path, rows: int) -> None:
    import pyarrow.parquet as pq

    seen = 0
    for batch in pq.ParquetFile(out).iter_batches(columns=["id", "text"], batch_size=65_536):
        ids = batch.column(0).to_pylist()
        texts = batch.column(1).to_pylist()
        for k, (row_id, text) in enumerate(zip(ids, texts, strict=True)):
            i = seen + k
            wanted = f"positive {i}" + (" (newer)" if i % TWICE_EVERY == 0 else "")
            if row_id != f"row-{i}" or text != wanted:
                raise SystemExit(f"{out}: row {i} is {row_id!r} {text!r}, not {wanted!r}")
        seen += len(ids)
    if seen != rows:
        raise SystemExit(f"{out}: {seen:,} rows, not {rows:,}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000_000)
    parser.add_argument("--large", type=int, default=10_000_000)
    parser.add_argument("--before", type=Path, help="another checkout to measure as well")
    parser.add_argument("--work", type=Path, help="where the journals go (default: a temp dir)")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    checkouts = {"batchrun": here, **({"before": args.before.resolve()} if args.before else {})}
    print(versions_banner())
    work = args.work or Path(tempfile.mkdtemp(prefix="final-step-"))
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[tuple[str, int], dict[str, float]] = {}
    for rows in (args.small, args.large):
        source = work / f"journal-{rows}.jsonl"
        if not source.exists():
            print(f"writing a journal of {rows:,} rows ...", flush=True)
            write_journal(source.with_suffix(".tmp"), rows)
            source.with_suffix(".tmp").rename(source)
        for name, checkout in checkouts.items():
            out = work / f"{name}-{rows}" / "out.parquet"
            out.parent.mkdir(exist_ok=True)
            out.unlink(missing_ok=True)
            journal = out.parent / "journal.jsonl"
            journal.unlink(missing_ok=True)
            os.link(source, journal)  # the sink removes its journal once the file is written
            figures[(name, rows)] = measured(checkout, out, rows, journal)
            check_output(out, rows)
    table = []
    for (name, rows), f in figures.items():
        table.append(
            [
                name,
                f"{rows:,}",
                f"{f['seconds']:.1f}",
                f"{f['opened_mb']:.0f}",
                f"{f['peak_mb']:.0f}",
            ]
        )
    print_table(["checkout", "rows", "final step s", "RSS after open MB", "peak RSS MB"], table)
    ok = True
    for name in checkouts:
        ratio = figures[(name, args.large)]["peak_mb"] / figures[(name, args.small)]["peak_mb"]
        passed = ratio <= RSS_TARGET
        ok = ok and (passed or name != "batchrun")
        verdict = "PASS" if passed else "FAIL"
        print(f"  [{verdict}] {name}: peak RSS {args.large:,} / {args.small:,} rows: {ratio:.2f}x")
    return 0 if ok else 1


def measured(checkout: Path, out: Path, rows: int, journal: Path) -> dict[str, float]:
    """``finalize_in_child`` from a parent of its own: a child's peak as the kernel counts it
    includes its parent's resident memory when it was forked, and this process has held a
    whole block of journal lines while it wrote them."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import final_step;"
        "from pathlib import Path;"
        "r = final_step.finalize_in_child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]),"
        " Path(sys.argv[5]));"
        "print(json.dumps(r))"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(Path(__file__).parent),
            str(checkout),
            str(out),
            str(rows),
            str(journal),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    raise SystemExit(main())
