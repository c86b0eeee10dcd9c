"""How fast a resumed run sends its first request: a 1,000,000-row job with 1,000 rows left.

    python bench/resume.py [--rows 1000000] [--new 1000] [--kind journal,journal-no-index,final]
    python bench/resume.py --rows 200000 --profile /tmp/prof   # cProfile of each timed run

Builds an input of ``rows + new`` JSONL rows, then lets a real ``batchrun run`` start the job
and stop before sending anything (a ``--max-cost`` too small for one request: it has written
its state, as any run does before it sends). What that run would have answered is then laid
beside the output directly (answering a million requests would take an hour), in one of
these forms (``--kind``):

- ``journal``: the run was killed after answering ``rows`` rows: they are all in the journal
  (JSON lines, as ``store.journal`` writes them), which its state vouches for, and in the
  journal's index (``store.journal_index``), as the run would have noted them;
- ``journal-no-index``: the same journal as an older batchrun left it, with no index: the
  resume parses it whole (the baseline for the index, in the same run);
- ``final``: an earlier run answered ``rows`` rows and wrote them to the final Parquet file
  (the input has ``new`` rows more).

Each is resumed twice by ``batchrun run`` (a subprocess), timed from its start until the
simulator receives the first request (the time to the first answer):

- fast path: the state says the job, the input's first bytes and the files rows refer to are
  unchanged, so answered rows are taken from the records without building their requests;
- checked path: no state, so every answered row's request is rebuilt and its hash compared
  before anything is sent (what happens after a job or input edit).

Both runs then finish the new rows; the output must hold every id once. ``--no-dedup-too``
times the fast path with ``--no-dedup`` too: what the dedup table's reload of every earlier
answer (``runs.twins.remember_prior_answers``) adds. Prints seconds; the target is a first
request within ``TARGET_S`` seconds on the fast path, whatever ``rows``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _harness import API_KEY, MODEL, BenchError, format_table, versions_banner

from batchrun.rows.request import RequestDefaults, prepare_request
from batchrun.simulator import SimulatorConfig, SimulatorThread
from batchrun.store.columns import blank_row
from batchrun.store.journal import journal_line
from batchrun.store.journal_index import JournalIndexWriter, index_path, read_index
from batchrun.store.provenance import answer_source
from batchrun.store.resume import state_path
from batchrun.store.sink import journal_path, output_schema

MAX_TOKENS = 16
TARGET_S = 10.0
RUN_ID = "20260101T000000Z-bench000"
_BATCH = 100_000
# journal: a killed run's journal and its index; journal-no-index: one an older batchrun
# left (no index: parsed whole); final: an earlier run's final file.
_KINDS = ("journal", "journal-no-index", "final")


def prompt(i: int) -> str:
    return f"Review {i}: the product was fine; it came in {i % 9} days."


def row_id(i: int) -> str:
    return f"r{i:07d}"


def request_hash(i: int) -> str:
    """The row's request hash, as ``rows.request.prepare_request`` makes it (checked against
    it in ``_check_hashes``), without building a million request bodies."""
    content = (
        f'{{"max_tokens":{MAX_TOKENS},"messages":[{{"content":{json.dumps(prompt(i))},'
        f'"role":"user"}}],"model":"{MODEL}"}}'
    )
    return hashlib.sha256(content.encode()).hexdigest()


def _check_hashes(rows: int) -> None:
    defaults = RequestDefaults(model=MODEL, max_tokens=MAX_TOKENS)
    for i in (0, 1, rows - 1):
        if prepare_request({"prompt": prompt(i)}, defaults).hash != request_hash(i):
            raise BenchError("request_hash() no longer matches prepare_request: update it")


def answered(i: int, source: str) -> dict[str, object]:
    record = blank_row(row_id(i))
    record.update(
        status="ok",
        model=MODEL,
        stop_reason="end_turn",
        text="answer",
        input_tokens=20,
        output_tokens=5,
        cost_usd=0.000045,
        attempts=1,
        latency_ms=300.0,
        elapsed_ms=300.0,
        request_id=f"req_{i:07d}",
        message_id=f"msg_{i:07d}",
        http_status=200,
        request_hash=request_hash(i),
        via="online",
        source=source,
    )
    return record


def finishing_order(start: int, stop: int, window: int = 64) -> list[int]:
    """Rows ``start``..``stop`` in the order a run at concurrency ``window`` finishes them:
    shuffled within each window (a journal is in finishing order, not input order)."""
    rng = random.Random(start)
    order = []
    for first in range(start, stop, window):
        block = list(range(first, min(first + window, stop)))
        rng.shuffle(block)
        order += block
    return order


def command(inp: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "batchrun",
        "run",
        str(inp),
        "-o",
        str(out),
        "--model",
        MODEL,
        "--max-tokens",
        str(MAX_TOKENS),
        "--base-url",
        base_url,
        "-c",
        "32",
        "-q",
        *extra,
    ]


def _env(before: Path | None = None) -> dict[str, str]:
    """The environment of a batchrun subprocess: this checkout's, or ``before``'s (an older
    checkout of batchrun, imported first)."""
    env = {**os.environ, "ANTHROPIC_API_KEY": API_KEY}
    if before is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(before), env.get("PYTHONPATH")]))
    return env


def build(
    folder: Path, rows: int, new: int, kind: str, base_url: str, indexed: bool = True
) -> tuple[Path, Path]:
    """The input (rows + new), the state a run left, and ``rows`` answered rows in ``kind``."""
    inp, out = folder / "in.jsonl", folder / "out.parquet"
    source = answer_source(False, base_url)
    with inp.open("w", encoding="utf-8") as fh:
        for start in range(0, rows + new, _BATCH):
            stop = min(start + _BATCH, rows + new)
            fh.writelines(
                json.dumps({"id": row_id(i), "prompt": prompt(i)}) + "\n"
                for i in range(start, stop)
            )
    # A run that writes its state (and an empty journal) and stops before its first request.
    started = subprocess.run(
        command(inp, out, base_url, "--max-cost", "0.0000001"),
        env=_env(),
        capture_output=True,
        text=True,
    )
    if started.returncode != 4 or not state_path(out).exists():
        raise BenchError(f"the first run did not stop on its budget:\n{started.stderr}")
    if kind.startswith("journal"):
        # Appended to the journal that run opened: the same file its state vouches for,
        # noted in its index as a run notes its lines (``store.journal_index``).
        journal = journal_path(out)
        index = JournalIndexWriter.start(journal, read_index(journal)) if indexed else None
        with journal.open("ab") as fh:
            for start in range(0, rows, _BATCH):
                stop = min(start + _BATCH, rows)
                for i in finishing_order(start, stop):
                    row = answered(i, source)
                    line = journal_line(i, row, RUN_ID).encode()
                    if index is not None:
                        index.add(fh.tell(), line, i, row, RUN_ID)
                    fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
                if index is not None:
                    index.flush()
        if index is not None:
            index.close()
        elif index_path(journal).exists():
            index_path(journal).unlink()  # a journal as an older batchrun left it
    else:
        schema = output_schema()
        with pq.ParquetWriter(out, schema, compression="zstd") as writer:
            for start in range(0, rows, _BATCH):
                batch = [answered(i, source) for i in range(start, min(start + _BATCH, rows))]
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    return inp, out


def time_to_first_request(
    cmd: Sequence[str], sim: SimulatorThread, profile: Path | None, checkout: Path | None = None
) -> tuple[float, float, float]:
    """Seconds from process start to the first request and to the end of the run (of
    ``checkout``'s batchrun, an older one, when given), and the run's peak RSS in MiB (its
    ``ru_maxrss``, read from the kernel as it is reaped)."""
    before = sim.stats.requests
    if profile is not None:  # python -m cProfile -o FILE -m batchrun run ...
        cmd = [cmd[0], "-m", "cProfile", "-o", str(profile), *cmd[1:]]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=_env(checkout),
        cwd=checkout,  # ``-m batchrun`` imports from the working folder first
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = None
    err_parts: list[str] = []
    stderr = proc.stderr
    assert stderr is not None
    reader = threading.Thread(target=lambda: err_parts.append(stderr.read()), daemon=True)
    reader.start()  # (a full stderr pipe would stall the run)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if first is None and sim.stats.requests > before:
            first = time.perf_counter() - started
        time.sleep(0.002)
    total = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    if proc.returncode != 0:
        raise BenchError(f"batchrun failed ({proc.returncode}):\n{''.join(err_parts)}")
    return (first if first is not None else total), total, usage.ru_maxrss / 1024


def _keep(paths: Sequence[Path], into: Path) -> None:
    """Copies of ``paths``, and a second name for the first (the journal): the run that
    finishes removes it, and the next must find the same file (its state vouches for the
    journal by its inode)."""
    into.mkdir()
    for path in paths:
        if path.exists():
            shutil.copy2(path, into / path.name)
    if paths[0].exists():
        os.link(paths[0], into / (paths[0].name + ".same"))


def _restore(paths: Sequence[Path], kept: Path) -> None:
    """Put the files back as they were: a journal in place (the same file, under its name
    again if a finished run removed it, its bytes as they were), the rest copied."""
    same = kept / (paths[0].name + ".same")
    if not paths[0].exists() and same.exists():
        os.link(same, paths[0])
    for path in paths:
        saved = kept / path.name
        if not saved.exists():
            path.unlink(missing_ok=True)
        elif path == paths[0] and path.exists():
            with saved.open("rb") as src, path.open("r+b") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.truncate()
        else:
            shutil.copy2(saved, path)


def _check_output(out: Path, rows: int, label: str) -> None:
    ids = pq.read_table(out, columns=["id"]).column("id")
    if len(ids) != rows or len(set(ids.to_pylist())) != len(ids):
        raise BenchError(f"{label}: the output does not hold every id exactly once")


def _print_ratios(results: Sequence[tuple[str, float, float, float]]) -> None:
    """Each resume's median time to the first request, this checkout's against the older's."""
    times: dict[str, list[float]] = {}
    for label, first, _, _ in results:
        times.setdefault(label, []).append(first)
    print()
    for label, after in times.items():
        before = times.get(label + ", before")
        if before is None:
            continue
        a, b = statistics.median(after), statistics.median(before)
        print(
            f"{label}: first request after {a:.2f} s, before {b:.2f} s: "
            f"{b / a:.1f}x sooner (medians of {len(after)})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=1_000)
    parser.add_argument(
        "--kind", default="journal,final", help=f"some of {', '.join(_KINDS)}, comma-separated"
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of an older batchrun (git worktree add --detach DIR main): each "
        "resume is timed with it too, alternating, on the same files; ratios printed",
    )
    parser.add_argument("--repeats", type=int, default=1, help="times each resume is timed")
    parser.add_argument("--profile", type=Path, help="a folder for each timed run's cProfile")
    parser.add_argument(
        "--fast-only", action="store_true", help="time the fast path only (not the checked)"
    )
    parser.add_argument(
        "--no-dedup-too",
        action="store_true",
        help="time the fast path with --no-dedup too (what reloading earlier answers for "
        "twins costs)",
    )
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kind.split(",") if k.strip()]
    if not kinds or any(k not in _KINDS for k in kinds):
        parser.error(f"--kind takes some of {', '.join(_KINDS)}, comma-separated")
    print(versions_banner())
    _check_hashes(args.rows)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    results = []
    with SimulatorThread(SimulatorConfig()) as sim:
        for kind in kinds:
            with tempfile.TemporaryDirectory(prefix="batchrun-resume-") as tmp:
                folder = Path(tmp)
                print(
                    f"{kind}: building {args.rows:,} answered rows + {args.new:,} new ...",
                    flush=True,
                )
                t = time.perf_counter()
                indexed = kind != "journal-no-index"
                inp, out = build(folder, args.rows, args.new, kind, sim.base_url, indexed)
                print(f"  built in {time.perf_counter() - t:.1f} s", flush=True)
                files = [journal_path(out), out, state_path(out), index_path(journal_path(out))]
                _keep(files, folder / "kept")
                modes: list[tuple[str, bool, tuple[str, ...]]] = [("fast path", True, ())]
                if args.no_dedup_too:
                    modes.append(("fast path, --no-dedup", True, ("--no-dedup",)))
                if not args.fast_only:
                    modes.append(("checked path", False, ()))
                checkouts: list[Path | None] = (
                    [None] if args.before is None else [None, args.before]
                )
                for path, keep_state, extra in modes:
                    for repeat in range(args.repeats):
                        for before in checkouts:
                            _restore(files, folder / "kept")
                            if not keep_state:
                                state_path(out).unlink()
                            label = f"{kind}, {path}" + (", before" if before else "")
                            prof = None
                            if args.profile is not None:
                                name = label.replace(",", "").replace(" ", "-").replace("--", "")
                                prof = args.profile / f"{name}-{repeat}.prof"
                            cmd = command(inp, out, sim.base_url, *extra)
                            first, total, peak = time_to_first_request(cmd, sim, prof, before)
                            _check_output(out, args.rows + args.new, label)
                            results.append((label, first, total, peak))
                            print(f"  {label}: first request after {first:.2f} s", flush=True)
    print()
    print(
        format_table(
            [
                f"resume of {args.rows:,} rows",
                "first request after (s)",
                "whole run (s)",
                "peak RSS (MiB)",
            ],
            [
                (label, f"{first:.2f}", f"{total:.2f}", f"{peak:.0f}")
                for label, first, total, peak in results
            ],
        )
    )
    if args.before is not None:
        _print_ratios(results)
    fast = [
        first for label, first, _, _ in results if "fast path" in label and "before" not in label
    ]
    verdict = "PASS" if max(fast) <= TARGET_S else "FAIL"
    print(
        f"target: the fast path's first request within {TARGET_S:g} s for {args.rows:,} "
        f"rows: {verdict} (slowest {max(fast):.2f} s)"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
