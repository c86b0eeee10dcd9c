"""Messages speak to whoever reads them: the command line names flags (``--max-tokens N``),
Python names keywords (``max_tokens=N``); rows given to ``batchrun.run`` are "the rows given to
run()" and ``rows[i]``, never the temporary file they were staged in.

Here the rules themselves: how settings are named, and the staged file of the rows given.
Each message from both front ends (the ``batchrun`` command as a real process, and the Python
calls a notebook makes): tests/system/test_wording_front_ends.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import batchrun
from batchrun.cli.options import flag_names
from batchrun.config.settings import SETTINGS
from batchrun.core.errors import InputError
from batchrun.core.wording import (
    ROWS_GIVEN,
    command_line,
    named,
    on_command_line,
    option,
    place,
    rows_given,
    said,
    shown_input,
)

MODEL = "claude-haiku-4-5"


# --- the mechanism --------------------------------------------------------------------------


def test_a_setting_is_named_as_its_reader_sets_it() -> None:
    cases = [
        (("max_tokens", "N"), "--max-tokens N", "max_tokens=N"),
        (("model", "MODEL"), "--model MODEL", "model=MODEL"),
        (("template", "{text}"), "--template '{text}'", "template='{text}'"),
        (("csv_delimiter", "\t"), "--csv-delimiter '\\t'", "csv_delimiter='\\t'"),
        (("input_format", "jsonl"), "--format jsonl", "input_format='jsonl'"),
        (("overwrite", True), "--overwrite", "overwrite=True"),
        (("dedup", False), "--no-dedup", "dedup=False"),
        (("max_cost",), "--max-cost", "max_cost"),
        (("output", "OUT"), "-o OUT", "output=OUT"),
        (("pilot", "N"), "--pilot N", "pilot=N"),  # estimate's own flag: no setting
    ]
    for args, cli_text, python_text in cases:
        assert option(*args) == python_text
        with command_line(flag_names()):
            assert option(*args) == cli_text and on_command_line()
    assert not on_command_line()
    with command_line(flag_names()):
        assert named("keep_columns") == "keep_columns (--keep-column)"
        assert said("`batchrun validate`", "`batchrun.validate(config)`") == "`batchrun validate`"
    assert named("keep_columns") == "keep_columns"


def test_every_settings_flag_is_the_one_its_messages_name() -> None:
    with command_line(flag_names()):
        for setting in SETTINGS:
            if setting.long_flag is not None:
                assert option(setting.key) == (setting.short or setting.long_flag)


def test_the_staged_file_is_the_rows_given_and_its_lines_their_indexes(tmp_path: Path) -> None:
    staged = str(tmp_path / "rows.jsonl")
    assert place(staged, 3) == f"{staged}:3" and shown_input(staged) == staged
    with rows_given(staged):
        assert place(staged, 3) == "rows[2]" and place(staged, None) == ROWS_GIVEN
        assert shown_input(Path(staged)) == ROWS_GIVEN
        assert place("other.jsonl", 3) == "other.jsonl:3"
        error = InputError("bad", file=staged, row=1, field="prompt")
    assert str(error) == "rows[0]: prompt: bad"  # worded when made: it stays so


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")


def test_no_message_outside_the_command_line_names_a_flag_by_hand() -> None:
    """Messages name flags through ``option`` (or ``said``), never in their own text: the
    string literals of the library, docstrings aside, hold no ``--flag``."""
    root = Path(batchrun.__file__).parent
    # Text for the command line alone: its help and commands, the stand-in API, standard
    # input (only the command reads it), the mechanism itself.
    exempt = ("cli/", "simulator/", "config/settings.py", "rows/spool.py", "core/wording.py")
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(exempt):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        allowed: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Expr):
                allowed.add(id(node.value))  # a docstring (a bare string is never a message)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "said":
                allowed.update(id(n) for n in ast.walk(node.args[0]))  # the command line's half
        found += [
            f"{relative}:{node.lineno}: {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in allowed
            and FLAG.search(node.value)
        ]
    assert found == []
