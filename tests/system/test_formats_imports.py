"""The format registry, asked in a fresh interpreter: it loads no Arrow until a file is read or
written (the registry itself: tests/unit/test_formats.py)."""

from __future__ import annotations

import subprocess
import sys


def test_the_formats_load_no_arrow_until_a_file_is_read_or_written() -> None:
    code = (
        "import sys\n"
        "from batchrun.formats.registry import input_formats, output_formats\n"
        "from batchrun.config.settings import INPUT_FORMATS\n"
        "assert input_formats() and output_formats() and INPUT_FORMATS\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyarrow'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
