"""Mistakes that would fail every row alike, caught once before anything is written or sent.

A job with no ``model`` (none in the job, none in any row) is a usage mistake, not 200 error
rows: ``check_every_row_can_be_built`` says so once, with the flag to pass, and the command
exits 2 before it opens the output. It looks only where that is cheap and certain enough:

* Parquet: the schema in the footer; CSV: the header row. A column the file does not have,
  no row has.
* JSONL: one byte scan of the file for the key's JSON text (``"model"``), stopped as soon as
  every question is answered. Text that merely contains ``"model"`` makes the key look
  present; that only leaves the rows to fail one by one, as they would without this check.
* Anything else (a compressed file, a format this module does not read itself, a file it
  cannot open): it cannot tell, and says nothing. The run then reports whatever is wrong
  row by row, or the reader rejects the file, as before.

The checks, each made only when nothing in the job supplies what it needs:

* ``model`` / ``max_tokens`` with no default and no such column;
* no ``prompt`` / ``messages`` column and no ``template``;
* a template naming a column the input does not have (when no row can bring its own
  ``prompt`` or ``messages``, every row goes through the template), with a did-you-mean
  from the header or, for JSONL, the first row's fields.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from batchrun.config.load import RunConfig, did_you_mean
from batchrun.config.settings import BY_KEY
from batchrun.core.errors import BatchrunError, ConfigError
from batchrun.rows.formats import InputKind, csv_columns
from batchrun.rows.reader import check_input_text, input_kind, read_rows
from batchrun.rows.request import template_fields
from batchrun.rows.text import is_ascii_compatible

# The keys every request needs, from the row or the job's defaults.
REQUIRED = ("model", "max_tokens")
# The row fields that make a row's prompt without the template.
PROMPT_FIELDS = ("prompt", "messages")

# A header of one column whose name holds one of these was likely split with the wrong
# delimiter: its real columns are unknown.
_OTHER_DELIMITERS = (",", ";", "\t", "|")
_SCAN_CHUNK = 1 << 20


class UnbuildableJobError(ConfigError):
    """Every row of the job would be refused the same way before sending (no model, no
    such column): a usage error, exit 2, raised before the output is touched."""

    exit_code = 2


def check_every_row_can_be_built(config: RunConfig) -> None:
    """UnbuildableJobError listing each mistake that would fail every row; else nothing.

    Cheap: a Parquet footer, a CSV header, or one byte scan of a JSONL file that stops when
    the answer is known. Never raises anything else: an input it cannot read is left to
    the reader, which says why. An input that does not start as text in its encoding is
    refused first (``rows.text.UndecodableInputError``, exit 2): every row would be wrong.
    """
    check_input_text(config.input, config.input_shape)
    defaults = config.defaults
    missing = [key for key in REQUIRED if getattr(defaults, key) is None]
    used = _template_columns(defaults.template)
    if not missing and defaults.template is not None and not used:
        return  # the job sets what rows need, and its template names no column
    columns = _input_columns(config, [*missing, *PROMPT_FIELDS, *(used or ())])
    if columns is None:
        return
    problems = [_missing_setting(key) for key in missing if not columns.has(key)]
    rows_bring_prompts = any(columns.has(name) for name in PROMPT_FIELDS)
    if defaults.template is None and not rows_bring_prompts:
        problems.append(_no_prompt(columns.known))
    elif used and not rows_bring_prompts:
        problems.extend(
            f"template: no column `{name}`{did_you_mean(name, set(columns.known))}"
            for name in sorted(used)
            if not columns.has(name)
        )
    if problems:
        listed = "".join(f"\n  - {problem}" for problem in problems)
        raise UnbuildableJobError(
            f"{config.input}: every row would be refused, so nothing was sent or written:{listed}"
        )


def _template_columns(template: str | None) -> frozenset[str] | None:
    """The columns the template uses (none without a template); None when the template is
    not acceptable (load_config refuses such a template: this stays silent, not say it twice)."""
    if template is None:
        return frozenset()
    try:
        return template_fields(template)
    except ValueError:
        return None


def _missing_setting(key: str) -> str:
    setting = BY_KEY[key]
    value = "MODEL" if key == "model" else "N"
    return (
        f"`{key}`: no row has one and the job sets none: pass {setting.long_flag} {value} "
        f"(or set `{key}` in the job file, or {setting.env_var})"
    )


def _no_prompt(known: Iterable[str]) -> str:
    names = sorted(known)
    shown = ", ".join(f"`{name}`" for name in names[:10]) + (", ..." if len(names) > 10 else "")
    columns = f" (the input's columns: {shown})" if names else ""
    return (
        "no row has `prompt` or `messages` and the job has no template: name the column(s) "
        f"the prompt is made of with --template, e.g. --template '{{text}}'{columns}"
    )


@dataclass(frozen=True)
class _Columns:
    """What the input tells cheaply about its columns.

    ``has(name)``: some row may have the column (for JSONL: its key's text is in the file).
    ``known``: names to suggest: the header, or the first JSONL row's fields.
    """

    has: Callable[[str], bool]
    known: frozenset[str]


def _input_columns(config: RunConfig, asked: Collection[str]) -> _Columns | None:
    """The input's columns as far as told cheaply, or None when that cannot be told."""
    path = config.input
    try:
        kind = input_kind(path, config.input_shape)
        if not path.is_file() or kind.compression is not None:
            return None  # the byte scan below reads plain files only
        if kind.format == "jsonl" and not is_ascii_compatible(kind.encoding):
            return None  # nor keys written in UTF-16 or UTF-32
        if kind.format == "parquet":
            names = _parquet_columns(path)
        elif kind.format in ("csv", "tsv"):
            names = _csv_columns(path, kind)
        elif kind.format == "jsonl":
            return _jsonl_columns(config, asked)
        else:
            return None  # a JSON array: its keys are not told without parsing it
    except (BatchrunError, OSError, ValueError, csv.Error):
        return None
    if names is None:
        return None
    return _Columns(has=names.__contains__, known=names)


def _parquet_columns(path: Path) -> frozenset[str] | None:
    # Imported here: a check of a JSONL or CSV input has no use for Arrow.
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return frozenset(pq.read_schema(path).names)
    except pa.ArrowException:
        return None


def _csv_columns(path: Path, kind: InputKind) -> frozenset[str] | None:
    """The header's names, as the CSV reader reads them; None if it looks misread."""
    header = csv_columns(path, kind)
    if not header:
        return None
    delimiter = kind.delimiter
    if len(header) == 1 and any(d in header[0] for d in _OTHER_DELIMITERS if d != delimiter):
        return None  # one column named "id;prompt;model": the wrong delimiter, most likely
    return frozenset(header)


def _jsonl_columns(config: RunConfig, asked: Collection[str]) -> _Columns | None:
    """Which of ``asked`` some line may hold (one byte scan) and the first row's fields."""
    needles = {name: _json_key(name) for name in asked}
    if any(needle is None for needle in needles.values()):
        return None  # a key whose JSON text may be written several ways
    wanted = {needle for needle in needles.values() if needle is not None}
    found = scan_for(config.input, wanted, _enough(needles))
    first = _first_fields(config)
    return _Columns(
        has=lambda name: needles.get(name) in found or name in first,
        known=first,
    )


def _enough(needles: dict[str, bytes | None]) -> Callable[[set[bytes]], bool]:
    """Whether the keys found so far settle every check: the scan may stop."""

    def present(found: set[bytes], name: str) -> bool:
        return name not in needles or needles[name] in found

    def settled(found: set[bytes]) -> bool:
        if not all(present(found, key) for key in REQUIRED):
            return False
        if any(name in needles and present(found, name) for name in PROMPT_FIELDS):
            return True  # rows bring their own prompts: the template's columns do not matter
        others = set(needles) - set(REQUIRED) - set(PROMPT_FIELDS)
        return bool(others) and all(present(found, name) for name in others)

    return settled


def _json_key(name: str) -> bytes | None:
    """``"name"`` as JSON writes it; None unless that is its only likely spelling (plain
    printable ASCII: other characters may come escaped as \\uXXXX)."""
    if not name.isascii() or not name.isprintable() or '"' in name or "\\" in name:
        return None
    return json.dumps(name).encode("ascii")


def scan_for(
    path: Path,
    needles: set[bytes],
    enough: Callable[[set[bytes]], bool] = lambda found: False,
    chunk_size: int = _SCAN_CHUNK,
) -> set[bytes]:
    """The ``needles`` that occur in the file, read in chunks until ``enough`` says stop.

    A needle split across two chunks is found: each chunk is searched with the end of the
    one before."""
    found: set[bytes] = set()
    if not needles:
        return found
    overlap = max(len(needle) for needle in needles) - 1
    tail = b""
    with path.open("rb") as stream:
        while not enough(found):
            chunk = stream.read(chunk_size)
            if not chunk:
                break
            window = tail + chunk
            found.update(needle for needle in needles - found if needle in window)
            tail = window[-overlap:] if overlap else b""
    return found


def _first_fields(config: RunConfig) -> frozenset[str]:
    """The first row's field names, for suggestions (empty when it cannot be read)."""
    try:
        rows = read_rows(config.input, shape=config.input_shape)
    except BatchrunError:
        return frozenset()
    try:
        first = next(rows, None)
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
    return frozenset(first.fields) if first is not None else frozenset()
