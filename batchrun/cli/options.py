"""What the commands share: their flags, made from the settings table; loading the config;
reporting a failure.

Every job flag comes from ``batchrun.config.settings``: a setting's commands say which
commands take it, its kind and bounds give the click type, so a flag, its job key, its
variable and the precedence text cannot drift apart. Nothing here imports library code that
a ``--help`` would not need: ``load`` and ``fail`` import theirs when called.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from batchrun.config.settings import SETTINGS, Setting, for_command, precedence_text

if TYPE_CHECKING:
    from batchrun.config.load import RunConfig
    from batchrun.core.errors import BatchrunError

F = TypeVar("F", bound=Callable[..., Any])

PRECEDENCE = precedence_text()
"""Where settings come from, every variable named."""


def precedence_epilog(command: str) -> str:
    """The epilog of a command that reads a job: where its settings come from, naming only
    the variables it reads."""
    return precedence_text(command)


# The sections of a command's help, in order, and the settings' layer each takes by default.
INPUT, REQUEST, OUTPUT, LIMITS, COST, SCALE_OUT, DISPLAY = (
    "Input",
    "Request",
    "Output and resume",
    "Limits and retries",
    "Cost",
    "Scale-out",
    "Display",
)
SECTIONS = (INPUT, REQUEST, OUTPUT, LIMITS, COST, SCALE_OUT, DISPLAY)
_LAYER_SECTIONS = {
    "input": INPUT,
    "request": REQUEST,
    "output": OUTPUT,
    "resume": OUTPUT,
    "client": REQUEST,  # where requests go and how (base URL, version, betas, backend)
    "engine": LIMITS,
    "cost": COST,
    "batches": SCALE_OUT,
    "job": SCALE_OUT,
    "run": DISPLAY,
}
_SECTION_OF = {  # where a setting's layer does not say where a person would look for it
    "limit": INPUT,
    "sample": INPUT,
    "seed": INPUT,
    "json_schema": REQUEST,
    "stream": REQUEST,
    "dedup": REQUEST,
    "samples": REQUEST,
    "timeout": LIMITS,
    "grace": LIMITS,
    "rate_limit_store": SCALE_OUT,
    "via": SCALE_OUT,
    "shard": SCALE_OUT,
}


def section_of(setting: Setting) -> str:
    """The section of a command's help that lists ``setting``'s flag."""
    return _SECTION_OF.get(setting.key) or _LAYER_SECTIONS[setting.layer]


Extra = tuple[tuple[str, ...], dict[str, Any]]  # a command's own option: decls, attributes


def setting_options(
    command: str, extra: Mapping[str, Sequence[Extra]] | None = None
) -> Callable[[F], F]:
    """Decorator: the flags of every setting ``command`` takes, in sections (``SECTIONS``,
    each in the table's order), with ``extra``: the command's own options, by section.

    The sections are click-option-group's ``OptionGroup``: a command's help lists its flags
    under their headings, and each command only the flags it uses (``for_command``)."""
    from click_option_group import OptionGroup

    placed: dict[str, list[Extra]] = {title: [] for title in SECTIONS}
    for setting in for_command(command):
        placed[section_of(setting)].append(_option(setting))
    for title, options in (extra or {}).items():
        placed[title].extend(options)

    def decorate(func: F) -> F:
        for title in reversed(SECTIONS):
            if not placed[title]:
                continue
            group = OptionGroup(title)
            for decls, attrs in reversed(placed[title]):
                func = group.option(*decls, **attrs)(func)
        return func

    return decorate


def flag_names() -> dict[str, str]:
    """Each setting's flag, as the commands' messages name it (``core.wording.option``): the
    short one where there is one (``-o``), else the long one."""
    names = {}
    for setting in SETTINGS:
        flag = setting.short or setting.long_flag
        if flag is not None:
            names[setting.key] = flag
    return names


# ``--engine`` and ``--address``: where a run's rows are sent from (``batchrun.ray``).
ENGINE_OPTIONS: tuple[Extra, ...] = (
    (
        ("--engine",),
        {
            "type": click.Choice(["local", "ray"]),
            "default": "local",
            "show_default": True,
            "help": "Send from this process, or spread the rows over a Ray cluster (needs "
            "batchrun[ray]; blocks are committed under OUTPUT.parts, so a re-run resumes).",
        },
    ),
    (
        ("--address",),
        {
            "metavar": "ADDR",
            "default": None,
            "help": "With --engine ray: the Ray cluster to join (as ray.init(address=...)); "
            "default: a local cluster with every CPU of this machine.",
        },
    ),
)


def _option(s: Setting) -> Extra:
    long = s.long_flag
    assert long is not None, s.key  # for_command yields only settings with a flag
    decls = [*([s.short] if s.short else []), long, s.key]
    extra: dict[str, Any] = {}
    if s.kind == "switch":
        decls[decls.index(long)] = f"{long}/--no-{long[2:]}"
        extra["default"] = None
    elif s.kind == "flag":
        extra.update(is_flag=True, default=None)
    elif s.kind == "int":
        bounded = s.low is not None or s.high is not None
        low, high = _shown(s.low), _shown(s.high)
        extra["type"] = click.IntRange(min=low, max=high) if bounded else int
    elif s.kind == "number":
        bounded = s.low is not None or s.high is not None
        extra["type"] = (
            click.FloatRange(min=_shown(s.low), max=_shown(s.high), min_open=s.low_open)
            if bounded
            else float
        )
    elif s.kind == "int_or_auto":
        extra["callback"] = _int_or_auto
    elif s.kind == "choice":
        extra["type"] = click.Choice(list(s.choices))
    elif s.kind == "path":
        # A string, not a Path: an s3:// or gs:// URL must reach load_config whole.
        extra["type"] = click.Path(dir_okay=not s.files_only)
    elif s.kind == "list":
        extra["multiple"] = True
    elif s.kind == "json":
        extra.update(callback=_json_value(s.job_types), metavar="JSON|@FILE")
    elif s.reads_file:
        extra["metavar"] = "TEXT|@FILE"
    if s.metavar is not None:
        extra["metavar"] = s.metavar
    return tuple(decls), {"help": s.flag_help, **extra}


def _shown(bound: float | None) -> Any:
    """A bound as click should show it: 256, not 256.0 (a whole number as an int)."""
    if bound is None or bound != int(bound):
        return bound
    return int(bound)


def _int_or_auto(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--concurrency``: a whole number >= 1, or ``auto``."""
    if value is None or value.strip().lower() == "auto":
        return None if value is None else "auto"
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a whole number nor 'auto'") from None
    if number < 1:
        raise click.BadParameter(f"{number} is not >= 1")
    return number


_JSON_NAMES: dict[type, str] = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "true or false",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def _json_value(types: tuple[type, ...]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """The callback of a JSON flag: its value inline (``'{"type": "any"}'``) or ``@file.json``,
    parsed and of one of ``types``; anything else is a usage error naming the flag."""

    def parse(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if not isinstance(value, str):
            return value  # not given (None), or already a value
        from batchrun.config.atfile import AtFileError, at_file, read_at_file

        text, where = value, ""
        name = at_file(value)
        if name is not None:
            where = f"{name}: "
            try:
                text = read_at_file(name, Path(name).expanduser())
            except AtFileError as exc:
                raise click.BadParameter(str(exc)) from None
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = "" if where else "; give JSON, or @FILE to read it from a file"
            raise click.BadParameter(f"{where}not valid JSON ({exc}){hint}") from None
        if types and not isinstance(parsed, types):
            wanted = " or ".join(_JSON_NAMES[t] for t in types)
            raise click.BadParameter(f"{where}must be {wanted}, not {_JSON_NAMES[type(parsed)]}")
        return parsed

    return parse


# A job's SOURCE argument: a job file, a dataset, - for standard input, or an s3:// / gs://
# URL; a string, since a Path would fold the URL's "//".
SOURCE = click.Path()


def load(source: str | Path, flags: dict[str, Any]) -> RunConfig:
    """The command's config, or exit 1 with the configuration error.

    A SOURCE of ``-`` is standard input: it is copied beside the output first
    (``formats.spool``), and that file is the job's input.
    """
    from batchrun.config.load import load_config
    from batchrun.core.errors import BatchrunError

    try:
        if str(source) == "-":
            source = _spooled_stdin(flags)
        return load_config(source, flags)
    except BatchrunError as exc:
        fail(exc, None)


def _spooled_stdin(flags: dict[str, Any]) -> Path:
    """Standard input copied to a file beside ``-o``'s output, which it needs.

    Copied under the output's lock: a run of that output going on reads the copy, which
    must not be replaced under it (this is refused, naming that run, as the run would be).
    """
    from batchrun.config.load import output_format_of
    from batchrun.core.errors import ConfigError
    from batchrun.formats.registry import file_suffixes
    from batchrun.formats.spool import spool_stdin
    from batchrun.store.lock import OutputLock

    output = flags.get("output")
    if output is None:
        first, *others = file_suffixes()
        raise ConfigError(
            f"SOURCE - (standard input) needs an output: give -o OUT{first} (or "
            f"{', '.join(others)}); the piped rows are kept beside it, so a re-run with the "
            "same input resumes"
        )
    path = Path(output).expanduser().resolve()
    output_format_of(str(output), path, flags.get("output_format"), str(path))
    stdin = sys.stdin
    if stdin is None or stdin.isatty():
        raise ConfigError(
            "SOURCE - reads the rows from standard input, but nothing is piped in: "
            "`cat rows.jsonl | batchrun run - -o out.parquet`"
        )
    with OutputLock(path):
        return spool_stdin(stdin.buffer, path, flags.get("input_format"), flags.get("encoding"))


def fail(exc: BatchrunError, config: RunConfig | None) -> NoReturn:
    """Print the error (and, after a run began, where its finished rows are) and exit 1, or
    the error's own ``exit_code``: 2 for a job whose every row would be refused alike (a
    usage error), or an input that is not text in its encoding."""
    click.echo(f"batchrun: error: {exc}", err=True)
    from batchrun.remote.errors import LeaseLostError
    from batchrun.runs.output import PublishError
    from batchrun.runs.preflight import UnbuildableJobError
    from batchrun.runs.resume import ResumeMismatchError
    from batchrun.store.lock import OutputLockedError

    # No resume hint where resuming is what was refused (the journal belongs to the run that
    # holds the lock, or answers requests the input no longer makes) or nothing began, or
    # where the error says itself where the rows are and what to do (a remote output's).
    quiet_about_rows = (
        OutputLockedError,
        ResumeMismatchError,
        UnbuildableJobError,
        LeaseLostError,
        PublishError,
    )
    if config is not None and not isinstance(exc, quiet_about_rows):
        kept = kept_rows(config)
        if kept:
            click.echo(f"batchrun: {kept}", err=True)
    sys.exit(getattr(exc, "exit_code", 1))


def kept_rows(
    config: RunConfig,
    *,
    stopped: str | None = None,
    then: str = "Re-run the same command to resume.",
) -> str:
    """Where a run that stopped left its finished rows, and how to go on ("" when it left
    none). ``stopped`` names what stopped it, for the line's start; ``then`` what to do."""
    from batchrun.core.scrub import url_without_secrets
    from batchrun.formats.registry import read_partial
    from batchrun.store.sink import journal_path

    journal = journal_path(config.output.path)
    try:
        if journal.stat().st_size == 0:
            return ""
    except OSError:
        return ""
    partial = read_partial(config.output.path)
    shown = (
        f"the rows finished so far are in {config.output.shown} ({partial}) and kept in {journal}"
        if partial is not None
        else f"finished rows are kept in {journal}"
    )
    if config.output.url is not None:  # the work folder's copy is named as the journal's home
        shown = (
            f"the rows of {url_without_secrets(config.output.url)} finished so far are kept "
            f"in this machine's journal, {journal}"
        )
    return (f"{stopped}; " if stopped else "") + f"{shown}. {then}"
