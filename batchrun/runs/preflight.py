"""Mistakes that would fail every row alike, caught once before anything is written or sent.

A job with no ``model`` (none in the job, none in any row) is a usage mistake, not 200 error
rows: ``check_every_row_can_be_built`` says so once, with the flag to pass (the keyword, from
Python: ``core.wording``), and the command
(``run``, ``estimate``, ``validate``) exits 2 before it opens the output. It looks only where
that is cheap and certain enough:

* the input's first row, read by the input's own reader: an input with no row at all (an empty
  file, blank lines, a header alone, ``[]``) is refused as such, before anything else is said
  about it;
* the input format's quick look at its columns (``InputFormat.columns`` asked a
  ``ColumnQuery(quick=True)``): a Parquet schema, a CSV header (a column the file does not have,
  no row has); for JSON lines and JSON arrays one scan of the bytes for each key's JSON text
  (``"model"``), stopped as soon as every question is answered. Text that merely contains
  ``"model"`` makes the key look present; that only leaves the rows to fail one by one, as they
  would without this check. A per-row field whose column has a type no value of it could be sent
  as (a Parquet ``prompt`` of ``list<string>``) is refused from the schema too, before a row is
  read (``InputFormat.mistyped_columns``);
* Anything it cannot read (an unreadable file, a misread CSV header): it cannot tell, and says
  nothing. The reader then rejects the file, saying why.

The checks, each made only when nothing in the job supplies what it needs:

* ``model`` / ``max_tokens`` with no default and no such column;
* no ``prompt`` / ``messages`` column and no ``template``;
* with a template, which always builds the user message: a column it names that the input
  does not have, with a did-you-mean from the header or the first row's fields; and a column
  it would leave unsent (``messages``, or a ``prompt`` it does not use), when the header or the
  first row shows one (``rows.request.template_conflicts``, the rule each row follows too).
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from batchrun.config.load import RunConfig, did_you_mean
from batchrun.config.settings import BY_KEY
from batchrun.core.errors import BatchrunError, ConfigError
from batchrun.core.wording import on_command_line, option
from batchrun.cost.models import OUTPUT_300K_BETA, job_rule_breaks, model_refusal
from batchrun.engine.outcome import structured_mode_for
from batchrun.engine.samples import samples_can_vary
from batchrun.formats.base import ColumnQuery
from batchrun.formats.inputs import check_input_text, format_of, input_kind
from batchrun.rows.compressed import open_bytes
from batchrun.rows.request import template_conflicts, template_fields
from batchrun.rows.shape import InputKind
from batchrun.rows.structured import FORMAT, TOOL

# The keys every request needs, from the row or the job's defaults.
REQUIRED = ("model", "max_tokens")
# The row fields that make a row's prompt without the template.
PROMPT_FIELDS = ("prompt", "messages")

_SCAN_CHUNK = 1 << 20


class UnbuildableJobError(ConfigError):
    """Every row of the job would be refused the same way before sending (no model, no
    such column): a usage error, exit 2, raised before the output is touched."""

    exit_code = 2


def check_samples(config: RunConfig) -> None:
    """UnbuildableJobError when ``--samples K`` cannot be done as asked: its K requests of a
    row would be one answer K times (temperature 0), or the job goes where a row's samples are
    not gathered into one row (Message Batches)."""
    k = config.engine.samples
    if k <= 1:
        return
    asked = option("samples", k)
    if not samples_can_vary(config.defaults.temperature):
        raise UnbuildableJobError(
            f"{asked} asks each row {k} times for independent answers, but at "
            f"{option('temperature', 0)} every sample is (nearly) the same answer: give a "
            f"temperature above 0, or leave it out (the API's default is 1)"
        )
    if config.via == "batches":
        raise UnbuildableJobError(
            f"{asked} gathers a row's samples online: leave out {option('via', 'batches')}"
        )


def check_every_row_can_be_built(config: RunConfig) -> None:
    """UnbuildableJobError listing each mistake that would fail every row; else nothing.

    Cheap: the input's first row, a Parquet footer, a CSV header, or one scan of a JSON
    file's bytes that stops when the answer is known. Never raises anything else: an input
    it cannot read is left to the reader, which says why. An input that does not start as
    text in its encoding is refused first (``rows.text.UndecodableInputError``, exit 2):
    every row would be wrong.
    """
    check_input_text(config.input.path, config.input.shape)
    check_job_model(config)
    check_structured(config)
    check_samples(config)
    start = _input_start(config)
    if start is None:
        return
    if not start.has_rows:
        raise UnbuildableJobError(
            f"{config.input.shown} has no rows (it is empty, or holds only blank lines "
            "or a header): nothing was sent or written. Is it the file you meant?"
        )
    defaults = config.defaults
    used = _template_columns(defaults.template)
    if used is None:
        return  # load_config refuses such a template: this stays silent, not say it twice
    missing = [key for key in REQUIRED if getattr(defaults, key) is None]
    prompt_fields = PROMPT_FIELDS if defaults.template is None else ()
    columns = _input_columns(config, start, [*missing, *prompt_fields, *used])
    problems = list(start.mistyped)
    if columns is not None:
        problems.extend(_missing_setting(key) for key in missing if not columns.has(key))
        if defaults.template is None:
            if not any(columns.has(name) for name in PROMPT_FIELDS):
                problems.append(_no_prompt(columns.known))
        else:
            problems.extend(
                f"template: no column `{name}`{did_you_mean(name, set(columns.known))}"
                for name in sorted(used)
                if not columns.has(name)
            )
            problems.extend(
                f"the input has a `{name}` column: {reason}"
                for name, reason in template_conflicts(defaults.template, sorted(columns.known))
            )
    if problems:
        listed = "".join(f"\n  - {problem}" for problem in problems)
        raise UnbuildableJobError(
            f"{config.input.shown}: every row would be refused, so nothing was sent or "
            f"written:{listed}"
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
    value = "MODEL" if key == "model" else "N"
    # A job file and the environment are the command line's other places for it.
    elsewhere = f" (or set `{key}` in the job file, or {BY_KEY[key].env_var})"
    return (
        f"`{key}`: no row has one and the job sets none: pass {option(key, value)}"
        f"{elsewhere if on_command_line() else ''}"
    )


def _no_prompt(known: Iterable[str]) -> str:
    names = sorted(known)
    shown = ", ".join(f"`{name}`" for name in names[:10]) + (", ..." if len(names) > 10 else "")
    columns = f" (the input's columns: {shown})" if names else ""
    return (
        "no row has `prompt` or `messages` and the job has no template: name the column(s) "
        f"the prompt is made of with a template, e.g. {option('template', '{text}')}"
        f"{columns}"
    )


@dataclass(frozen=True)
class _Start:
    """What the input's first row tells: whether there is one, its fields (None-valued ones
    left out), and each per-row field whose column type cannot be sent (a typed format's)."""

    kind: InputKind
    has_rows: bool
    first: frozenset[str]
    mistyped: tuple[str, ...] = ()


def _input_start(config: RunConfig) -> _Start | None:
    """The input's first row as its own reader reads it, or None when it cannot be read
    (the reader, when the run opens it, says why)."""
    path = config.input.path
    try:
        kind = input_kind(path, config.input.shape)
    except BatchrunError:
        return None
    if not path.is_file():
        return None
    fmt = format_of(kind)
    try:
        raw = fmt.rows(path, kind, 1, lambda index: index > 0)
        with contextlib.closing(raw):
            first = next(raw, None)
    except BatchrunError:
        # An empty or blank file is refused by some readers for its form (no CSV header,
        # no JSON array): it has no rows, and that is what to say.
        return _Start(kind, False, frozenset()) if _blank(path, kind) else None
    except (OSError, ValueError, csv.Error):
        return None
    if first is None:
        return _Start(kind, False, frozenset())
    record = first.record or {}
    fields = frozenset(name for name, value in record.items() if value is not None)
    mistyped = tuple(
        f"column `{name}`: {reason}; convert the column, or rename it if it is not meant "
        f"as the row's `{name}`"
        for name, reason in fmt.mistyped_columns(path).items()
    )
    return _Start(kind, True, fields, mistyped)


def _blank(path: Path, kind: InputKind) -> bool:
    """Whether the file holds nothing but whitespace (decompressed); False if unreadable."""
    try:
        with open_bytes(path, kind.compression) as stream:
            while chunk := stream.read(_SCAN_CHUNK):
                if chunk.strip():
                    return False
    except (BatchrunError, OSError):
        return False
    return True


@dataclass(frozen=True)
class _Columns:
    """What the input tells cheaply about its columns.

    ``has(name)``: some row may have the column (for JSON: its key's text is in the file).
    ``known``: columns the input surely has: the header, or the first row's fields.
    """

    has: Callable[[str], bool]
    known: frozenset[str]


def _input_columns(config: RunConfig, start: _Start, asked: Collection[str]) -> _Columns | None:
    """The input's columns as far as its format's quick look tells, or None when it cannot."""
    kind = start.kind
    try:
        fmt = format_of(kind)
        query = ColumnQuery(config.input.path, kind, asked, quick=True, enough=_enough(asked))
        columns = fmt.columns(query)
    except (BatchrunError, OSError, ValueError, csv.Error):
        return None
    if columns is None:
        return None
    known = frozenset(columns.known) | start.first
    return _Columns(has=lambda name: name in columns.found or name in start.first, known=known)


def _enough(asked: Collection[str]) -> Callable[[set[str]], bool]:
    """Whether the columns found so far settle every check: the quick look may stop there.
    Each name asked is wanted, but one of the prompt fields is enough (asked without a
    template: some row must bring its prompt)."""
    prompts = [name for name in PROMPT_FIELDS if name in asked]
    others = [name for name in asked if name not in PROMPT_FIELDS]

    def settled(found: set[str]) -> bool:
        if prompts and not any(name in found for name in prompts):
            return False
        return all(name in found for name in others)

    return settled


def check_job_model(config: RunConfig) -> None:
    """UnbuildableJobError when the job's model is a Claude id batchrun does not know, or a
    retired one (``cost.models.model_refusal``): the API would answer 404 to each row that
    uses it, so it is reported once, before anything is written or sent. So is each of the
    job's settings its model refuses (``cost.models.job_rule_breaks``: the API's 400 on
    every row that keeps it), each named with its fix."""
    refusal = model_refusal(config.defaults.model, config.cost.prices)
    if refusal is not None:
        raise UnbuildableJobError(
            f"{config.input.shown}: the job's model {refusal}. Nothing was sent or written."
        )
    batch_beta = config.via == "batches" and OUTPUT_300K_BETA in config.client.betas
    breaks = job_rule_breaks(config.defaults, config.cost.prices, batch_beta=batch_beta)
    if breaks:
        listed = "".join(f"\n  - {b.for_job()}" for b in breaks)
        raise UnbuildableJobError(
            f"{config.input.shown}: every row would be refused by the API, so nothing was "
            f"sent or written:{listed}"
        )


def check_structured(config: RunConfig) -> None:
    """UnbuildableJobError when the job's ``--json-schema`` cannot be asked of its model
    (``rows.structured``): the schema holds what ``output_config.format`` refuses (the file
    and the keyword named), the model takes neither way of asking, or takes only a forced
    tool, which the API refuses with thinking. Rows with a model of their own are checked
    one by one; without a job model the schema is checked for the format, every known
    model's way."""
    structured = config.defaults.structured
    if structured is None:
        return
    model = config.defaults.model
    mode = structured_mode_for(model, config.cost.prices) if model else FORMAT
    problem = None
    if mode is None:
        problem = (
            f"the job's model `{model}` takes neither output_config.format nor a forced "
            "tool_choice: json_schema cannot be asked of it"
        )
    elif mode == FORMAT:
        problem = structured.problem
    elif mode == TOOL:
        thinking = config.defaults.thinking
        if thinking is not None and thinking.get("type") != "disabled":
            problem = (
                f"json_schema is asked of `{model}` with a forced tool (it does not take "
                "output_config.format), which the API refuses with `thinking`: drop it"
            )
    if problem is not None:
        raise UnbuildableJobError(f"{config.input.shown}: {problem}. Nothing was sent or written.")
