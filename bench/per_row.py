"""Per-row CPU of the shared row path: read + prepare, ok_row, journal_line (issue 26).

Times, in microseconds per row, what every row of a run goes through whichever way it is
sent, on the rows ``batches_scale.py`` sends and the answer its stand-in gives:

* ``read``     ``formats.inputs.read_rows`` (JSONL parse, ids, duplicate check);
* ``prepare``  ``engine.outcome.prepare`` (the request body, its checks, hash, model rules);
* ``ok_row``   ``engine.outcome.ok_row`` on the batch result's message (columns, cost);
* ``journal``  ``store.journal.journal_line`` of that output row, encoded.

With ``--before DIR`` the same is timed for another checkout's batchrun, in a child process
of its own, and the ratios are printed (interleaved repeats of 3 passes each; the best of
each stage is compared).
Nothing is judged: this is the measuring stick for per-row work, not a target.

    python bench/per_row.py                        # 20,000 rows, 5 repeats
    python bench/per_row.py --before /tmp/main     # ... and another checkout, with ratios
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import CANNED_MESSAGE as MESSAGE
from _harness import MODEL, bytecode_env

STAGES = ("read", "prepare", "ok_row", "journal")


def measure(path: Path, passes: int = 3) -> dict[str, float]:
    """Seconds per row of each stage, over the rows of ``path``: the best of ``passes``
    passes in this process (the machine's other work makes single passes noisy)."""
    best = _measure_once(path)
    for _ in range(passes - 1):
        again = _measure_once(path)
        best = {stage: min(best[stage], again[stage]) for stage in STAGES}
    return best


def _measure_once(path: Path) -> dict[str, float]:
    from batchrun.config.load import load_config
    from batchrun.engine.outcome import VIA_BATCHES, RowSettings, ok_row, prepare
    from batchrun.formats.inputs import read_rows
    from batchrun.rows.prefix import SeenFiles
    from batchrun.store.journal import journal_line

    # The settings ``batchrun run IN --via batches --model M --max-tokens 16`` makes.
    flags = {"model": MODEL, "max_tokens": 16, "via": "batches"}
    config = load_config(path, flags, {"ANTHROPIC_API_KEY": "bench-key"})
    settings = RowSettings.of(config)
    seen = SeenFiles() if config.defaults.cache is not None else None
    clock = time.perf_counter
    t0 = clock()
    rows = list(read_rows(path))
    t1 = clock()
    works = [prepare(row, settings, seen) for row in rows]
    t2 = clock()
    messages = [
        {**MESSAGE, "id": f"msg_{w.row.id}", "usage": dict(MESSAGE["usage"])}  # type: ignore[arg-type]
        for w in works
    ]
    t3 = clock()
    outs = [ok_row(w, settings, m, VIA_BATCHES) for w, m in zip(works, messages, strict=True)]
    t4 = clock()
    lines = [journal_line(i, r, "run-1").encode() for i, r in enumerate(outs)]
    t5 = clock()
    assert all(w.problem is None for w in works) and len(lines) == len(rows)
    n = len(rows)
    return {
        "read": (t1 - t0) / n,
        "prepare": (t2 - t1) / n,
        "ok_row": (t4 - t3) / n,
        "journal": (t5 - t4) / n,
    }


def child(checkout: Path, path: Path) -> dict[str, float]:
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]);"
        "import per_row, pathlib;"
        "print(json.dumps(per_row.measure(pathlib.Path(sys.argv[3]))))"
    )
    env = bytecode_env()
    out = subprocess.run(
        [sys.executable, "-c", code, str(checkout), str(Path(__file__).parent), str(path)],
        cwd=checkout,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another checkout to compare with")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    contenders = {"batchrun": here, **({"before": args.before} if args.before else {})}
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for i in range(args.rows):
                text = f"Classify the sentiment of review {i}: the product was fine."
                f.write(json.dumps({"id": f"r{i}", "prompt": text}) + "\n")
        for _ in range(args.repeats):
            for name, checkout in contenders.items():
                got = child(checkout, path)
                mine = best.setdefault(name, got)
                for stage in STAGES:
                    mine[stage] = min(mine[stage], got[stage])
    print(f"per-row microseconds, best of {args.repeats}, {args.rows:,} rows; {os.getloadavg()=}")
    print(f"{'':>10}" + "".join(f"{s:>10}" for s in (*STAGES, "total")))
    for name, stages in best.items():
        total = sum(stages.values())
        figures = "".join(f"{stages[s] * 1e6:10.2f}" for s in STAGES)
        print(f"{name:>10}{figures}{total * 1e6:10.2f}")
    if "before" in best:
        new, old = best["batchrun"], best["before"]
        ratios = [old[s] / new[s] for s in STAGES] + [sum(old.values()) / sum(new.values())]
        print(f"{'before/now':>10}" + "".join(f"{r:9.2f}x" for r in ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
