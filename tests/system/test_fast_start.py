"""``import batchrun`` and ``batchrun --help`` / ``--version`` start fast: the public names load
on first use (PEP 562) and each command imports its library code when it runs. Checked by
which modules a fresh interpreter has loaded, never by timing (the machines are shared).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import batchrun

HEAVY = (
    "httpx",
    "aiohttp",
    "pyarrow",
    "tenacity",
    "tqdm",
    "jsonschema",
    "asyncio",
    "batchrun.runs",
    "batchrun.public",
    "batchrun.engine",
    "batchrun.estimation",
    "batchrun.reporting",
    "batchrun.store",
    "batchrun.client.messages",
)


def _loaded_after(code: str, also: tuple[str, ...] = ()) -> list[str]:
    loaded = f"','.join(m for m in {(*HEAVY, *also)!r} if m in sys.modules)"
    probe = f"import sys\n{code}\nprint('loaded:' + {loaded}, file=sys.stderr)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("loaded:"), done.stderr
    return [m for m in line.removeprefix("loaded:").split(",") if m]


@pytest.mark.parametrize(
    "code",
    [
        "import batchrun",
        "import batchrun.cli",
        "from batchrun.cli import main\nsys.argv = ['batchrun', '--version']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass",
        "from batchrun.cli import main\nsys.argv = ['batchrun', 'run', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass",
    ],
    ids=["import", "import-cli", "version", "run-help"],
)
def test_starting_loads_no_http_arrow_or_report_code(code: str) -> None:
    assert _loaded_after(code) == []


def test_a_public_name_loads_its_module_on_first_use() -> None:
    assert _loaded_after("import batchrun\nbatchrun.load_config") == []  # config is light
    assert "batchrun.public" in _loaded_after("import batchrun\nbatchrun.run")


def test_every_public_name_resolves_and_dir_lists_them() -> None:
    for name in batchrun.__all__:
        assert getattr(batchrun, name) is not None
    assert set(batchrun.__all__) <= set(dir(batchrun))
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        batchrun.nonesuch  # noqa: B018


def test_a_job_of_rows_or_files_never_imports_pandas(tmp_path: Path) -> None:
    """pyarrow imports pandas the first time it turns a Python value into Arrow; the run path
    builds its constants from bytes (``store.arrow_values``), so a job that never sees a
    DataFrame never pays for pandas (0.2-0.5 s), from Python or from the command line."""
    rows = "batchrun.run([{'id': 'a', 'prompt': 'hi'}], model='claude-haiku-4-5', max_tokens=20,"
    rows += " simulate=True, quiet=True)"
    assert "pandas" not in _loaded_after(f"import batchrun\n{rows}", also=("pandas",))
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "prompt": "hi"}\n', encoding="utf-8")
    cli = (
        "from batchrun.cli import main\n"
        f"sys.argv = ['batchrun', 'run', {str(inp)!r}, '-o', {str(tmp_path / 'o.parquet')!r},"
        " '--model', 'claude-haiku-4-5', '--max-tokens', '5', '--simulate', '-q']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code"
    )
    assert "pandas" not in _loaded_after(cli, also=("pandas",))
