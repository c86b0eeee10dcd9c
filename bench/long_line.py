"""Memory: peak RSS of ``batchrun validate`` over a gzipped JSONL input holding one huge line.

The input is a row, then one line of ``--size-mib`` MiB (2,048 by default: a prompt of that
many ``x``), then a row, gzipped (a few MB on disk). The huge line is longer than any request
can be (32 MiB), so batchrun reports it as that row's problem, by its size, and reads on; the
point is how much memory that takes. ``python -m batchrun validate`` runs in a subprocess and
its peak resident set size is read from the kernel when it exits (``os.wait4``).

Run from the repository root, by hand (it writes the input under ``--folder``, default a
temporary folder, and takes about a minute at 2 GiB)::

    python bench/long_line.py
    python bench/long_line.py --size-mib 256
    /usr/bin/time -v python -m batchrun validate FILE --model m --max-tokens 5   # the same figure

``--checkout DIR`` runs the ``batchrun`` package under DIR instead of the installed one (an
editable install's finder is set aside in the child), to compare with another commit::

    mkdir /tmp/old && git archive COMMIT batchrun | tar -x -C /tmp/old
    python bench/long_line.py --checkout /tmp/old
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

from _harness import peak_rss_mib

_MIB = 1 << 20
# The child's start with --checkout: that folder's package, not the installed one.
_RUN_FROM = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
sys.path.insert(0, {folder!r})
import batchrun
print("batchrun from", batchrun.__file__, file=sys.stderr)
runpy.run_module("batchrun", run_name="__main__", alter_sys=True)
"""


def write_input(path: Path, size_mib: int) -> None:
    """A row, a line of ``size_mib`` MiB, a row; gzipped a MiB at a time."""
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(json.dumps({"id": "before", "prompt": "hello"}).encode() + b"\n")
        out.write(b'{"id": "huge", "prompt": "')
        chunk = b"x" * _MIB
        for _ in range(size_mib):
            out.write(chunk)
        out.write(b'"}\n')
        out.write(json.dumps({"id": "after", "prompt": "bye"}).encode() + b"\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--checkout", type=Path, default=None)
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="batchrun-long-line-"))
    path = folder / f"long-{args.size_mib}mib.jsonl.gz"
    if not path.exists():
        write_input(path, args.size_mib)
    cmd = [sys.executable, "-m", "batchrun"]
    if args.checkout is not None:
        cmd = [sys.executable, "-c", _RUN_FROM.format(folder=str(args.checkout.resolve()))]
    cmd += ["validate", str(path)]
    cmd += ["--model", "claude-haiku-4-5", "--max-tokens", "5"]
    rss, code, output = peak_rss_mib(cmd)
    print(output.rstrip())
    print(
        f"input: {path} ({path.stat().st_size / _MIB:.1f} MiB gzipped, one line of "
        f"{args.size_mib:,} MiB)"
    )
    print(f"validate exit code {code}; peak RSS {rss:,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
