"""Rows held in memory, run as a job: the input written to a file, the output read back.

``batchrun.run(rows, model=..., max_tokens=..., **settings)`` takes a list of dicts, a pandas
or polars DataFrame, a pyarrow Table or RecordBatchReader, or a Hugging Face Dataset::

    table = batchrun.run([{"prompt": "Say hi"}], model="claude-haiku-4-5", max_tokens=20)
    batchrun.summary_of(table)["ok"]   # the run's summary travels in the Table's metadata

Why through a file: the run then is exactly a file run (the same reader, the same checks,
the same resume), and nothing of the engine needs to know where rows came from. Dicts are
written as JSON lines; columnar data (everything else) as Parquet, so a ``messages`` column
holding JSON text, structs with absent fields and typed columns mean what they mean in a
Parquet file. Both are written deterministically: the same rows give the same bytes, which
is what lets a second call with the same ``output=`` resume without sending anything again
(``store.resume`` compares the input's bytes, not its name).

pandas, polars and datasets are never imported here: they are recognised by the module their
type comes from and converted through their own methods (``to_arrow``, ``with_format``), or
pyarrow's ``from_pandas``.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import json
import math
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.config.load import RunConfig, did_you_mean, load_config
from batchrun.config.settings import BY_KEY
from batchrun.core.errors import ConfigError, InputError
from batchrun.core.wording import rows_given
from batchrun.formats.registry import output_by_suffix, output_formats, said
from batchrun.runs.claim import output_types
from batchrun.runs.summary import RunSummary
from batchrun.store.sink import output_batches, output_schema

__all__ = ["SUMMARY_KEY", "output_table", "staged_rows", "summary_of"]

SUMMARY_KEY = b"batchrun.summary"  # the returned Table's schema metadata: the run's summary

# Settings that describe the input file; for rows in memory batchrun writes that file itself.
_INPUT_ONLY = ("input", "input_format", "csv_delimiter", "encoding")
# Columns whose values may name local files (rows.request): only then do rows resolve paths
# against the working directory.
_FILE_COLUMNS = frozenset({"image", "images", "document", "messages"})
_BATCH_ROWS = 8_192


@contextlib.contextmanager
def staged_rows(
    rows: object,
    settings: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> Iterator[RunConfig]:
    """The config of a run of ``rows``, whose input is a temporary file (removed after),
    which messages made inside the ``with`` call "the rows given to run()" (``core.wording``).

    ``settings`` are the job's settings by key, as in a job file or ``load_config``'s flags
    (unknown keys are refused, naming the closest one). Without ``output`` the output is
    temporary too; with it, the output and its journal are kept as the command line keeps
    them. ``media_root`` defaults to the working directory when rows may name files.
    """
    flags = _checked_settings(settings)
    output = flags.get("output")
    if output is not None:
        _check_readable(str(output))
    with tempfile.TemporaryDirectory(prefix="batchrun-") as tmp:
        folder = Path(tmp)
        (folder / "input").mkdir()  # the input alone in its folder: no file for rows to name
        path, columns, count = _write_rows(rows, folder / "input")
        if count == 0:  # as an empty input file is refused, before anything is set up
            raise InputError("there are no rows to run (the rows given are empty)")
        if output is None:
            flags["output"] = str(folder / "output.parquet")
        if flags.get("media_root") is None and columns & _FILE_COLUMNS:
            flags["media_root"] = str(Path.cwd())
        schema = given_schema(flags)
        if schema is not None:  # a schema given as a dict or a model: its file is ours
            schema_file = folder / "schema.json"
            schema_file.write_text(json.dumps(schema), encoding="utf-8")
            flags["json_schema"] = str(schema_file)
        # Messages name the staged file as the caller knows it: "the rows given to run()",
        # a row by its index there (rows[2]), never the temporary path.
        with rows_given(path):
            yield load_config(path, flags, environ)


def given_schema(flags: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema given from Python as ``schema=`` (or ``json_schema=``): a dict, or a
    class with ``model_json_schema()`` (a Pydantic model, whose fields the answer's columns
    then have); None for a schema file's path, or none. ``schema`` leaves ``flags``."""
    schema = flags.pop("schema", None)
    if schema is not None and flags.get("json_schema") is not None:
        raise ConfigError("give the answer's schema once: `schema` or `json_schema`, not both")
    if schema is None:
        schema = flags.get("json_schema")
        if schema is None or isinstance(schema, (str, PurePath)):
            return None
    if isinstance(schema, Mapping):
        return dict(schema)
    make = getattr(schema, "model_json_schema", None)
    if isinstance(schema, type) and callable(make):
        made = make()
        if isinstance(made, Mapping):
            return dict(made)
    raise ConfigError(
        f"`schema` must be a JSON Schema (a dict) or a model class with model_json_schema() "
        f"(a Pydantic model), not {type(schema).__name__}"
    )


def _check_readable(output: str) -> None:
    """ConfigError unless ``output`` names a format the Table returned is read back from
    (``OutputFormat.from_python``)."""
    fmt = output_by_suffix(Path(output))
    if fmt is None or not fmt.from_python:
        suffixes = [s for f in output_formats() if f.from_python for s in f.suffixes]
        raise ConfigError(
            f"output {output}: from Python the output must end in {said(suffixes)} "
            "(it is read back into the Table returned)"
        )


def _checked_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for key, value in settings.items():
        if key == "schema":  # the answer's schema as a dict or a model (``given_schema``)
            flags[key] = value
            continue
        if key in _INPUT_ONLY:
            raise ConfigError(
                f"`{key}` describes an input file; with rows given from Python batchrun writes "
                "that file itself: drop it (or run the file with load_config)"
            )
        if key not in BY_KEY:
            raise ConfigError(f"unknown setting `{key}`{did_you_mean(key, BY_KEY)}")
        if isinstance(value, PurePath):
            value = str(value)
        flags[key] = value
    return flags


def _write_rows(rows: object, folder: Path) -> tuple[Path, frozenset[str], int]:
    """``rows`` as a file in ``folder``, the names of their columns and how many there are."""
    if isinstance(rows, (str, bytes, PurePath)):
        raise TypeError(
            f"run() got {type(rows).__name__} {str(rows)[:60]!r}: to run a file, "
            "use batchrun.run(batchrun.load_config(Path(...), {...})); rows are a list of "
            "dicts or a table"
        )
    columnar = _as_batches(rows)
    if columnar is not None:
        return _write_parquet(columnar, folder / "rows.parquet")
    if isinstance(rows, Mapping) or not isinstance(rows, Iterable):
        raise TypeError(
            f"rows must be a list of dicts, a pandas or polars DataFrame, a pyarrow Table or "
            f"RecordBatchReader, or a Hugging Face Dataset, not {type(rows).__name__}"
        )
    return _write_jsonl(rows, folder / "rows.jsonl")


# --- dicts -> JSON lines ---------------------------------------------------------------------


def _write_jsonl(rows: Iterable[object], path: Path) -> tuple[Path, frozenset[str], int]:
    columns: set[str] = set()
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InputError(
                    f"each row must be a dict, not {type(row).__name__}", file=f"rows[{index}]"
                )
            record = {}
            for key, value in row.items():
                if not isinstance(key, str):
                    raise InputError(
                        f"has a key {key!r}; keys must be strings", file=f"rows[{index}]"
                    )
                record[key] = _plain(value, index, key)
                columns.add(key)
            # Sorted keys, no spaces: the same rows are the same bytes, whatever order their
            # dicts were built in (a resume compares the input's bytes).
            line = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            out.write(line + "\n")
            count += 1
    return path, frozenset(columns), count


def _plain(value: object, index: int, column: str) -> Any:
    """``value`` as a JSON value: the scalars notebooks hold (numpy, dates, Decimal) become
    JSON ones; NaN, pandas' "missing", becomes null; anything else is refused by name."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise _not_json(value, index, column, "infinity: give None or a number instead")
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, index, column) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, index, column) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)  # exact, as written
    if isinstance(value, PurePath):
        return str(value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return _plain(value.tolist(), index, column)  # a numpy scalar or array: as Python
    if isinstance(value, (bytes, bytearray)):
        raise _not_json(value, index, column, "give a file's path or URL instead of its bytes")
    raise _not_json(value, index, column, "convert it (to str, a number, a list or a dict)")


def _not_json(value: object, index: int, column: str, hint: str) -> InputError:
    return InputError(
        f"a {type(value).__name__} value has no JSON form: {hint}",
        file=f"rows[{index}]",
        field=column,
    )


# --- tables -> Parquet -----------------------------------------------------------------------


def _as_batches(rows: object) -> tuple[pa.Schema, Iterator[pa.RecordBatch]] | None:
    """Columnar ``rows`` as Arrow batches; None when ``rows`` is not columnar."""
    if isinstance(rows, pa.RecordBatchReader):
        return rows.schema, iter(rows)
    if isinstance(rows, pa.Table):
        return rows.schema, iter(rows.to_batches(_BATCH_ROWS))
    if isinstance(rows, pa.RecordBatch):
        return rows.schema, iter([rows])
    library = type(rows).__module__.partition(".")[0]
    if library == "pandas" and hasattr(rows, "columns"):
        return _as_batches(_from_pandas(rows))
    if library == "polars":
        if hasattr(rows, "collect"):  # a LazyFrame: the frame it describes
            rows = rows.collect()
        return _as_batches(rows.to_arrow())  # type: ignore[attr-defined]
    if library == "datasets":
        return _dataset_batches(rows)
    return None


def _from_pandas(frame: Any) -> pa.Table:
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # says which column
        raise InputError(f"the DataFrame cannot be converted to Arrow: {exc}") from exc


def _dataset_batches(dataset: Any) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    if isinstance(dataset, Mapping):  # a DatasetDict: which split is meant?
        splits = [repr(name) for name in dataset] or ["'train'"]
        raise TypeError(
            f"give one split of the dataset, e.g. rows[{splits[0]}] (it has {', '.join(splits)})"
        )
    # In the dataset's order, indices (select, shuffle, filter) applied.
    tables = iter(dataset.with_format("arrow").iter(batch_size=_BATCH_ROWS))
    first = next(tables, None)
    if first is None:
        return pa.schema([]), iter([])
    schema = first.schema

    def batches() -> Iterator[pa.RecordBatch]:
        for table in (first, *tables):
            yield from table.cast(schema).to_batches()

    return schema, batches()


def _write_parquet(
    columnar: tuple[pa.Schema, Iterator[pa.RecordBatch]], path: Path
) -> tuple[Path, frozenset[str], int]:
    schema, batches = columnar
    count = 0
    # No Arrow schema or pandas metadata in the file: both may differ between library
    # versions for the same rows, and a resume compares the input's bytes. Read back, the
    # columns take Parquet's plain types (a polars string_view is a string).
    plain = schema.remove_metadata()
    with pq.ParquetWriter(path, plain, store_schema=False) as writer:
        for batch in batches:
            writer.write_batch(batch.replace_schema_metadata(None))
            count += batch.num_rows
    return path, frozenset(schema.names), count


# --- the output, back as a Table --------------------------------------------------------------


def output_table(config: RunConfig, summary: RunSummary, as_json: Mapping[str, Any]) -> pa.Table:
    """The run's output as one Table (the file's typed schema, ``store.typed``; input order),
    its summary's JSON (``RunResult.to_dict``: ``run --json``'s object) in the schema
    metadata under ``SUMMARY_KEY``. An output a stopped run left partial holds the rows it
    finished; one no run wrote yet holds none."""
    schema = output_types(config).schema(output_schema(config.output.keep_columns))
    if config.output.path.exists():
        table = pa.Table.from_batches(list(output_batches(config.output.path, schema)), schema)
    else:
        table = schema.empty_table()
    return table.replace_schema_metadata({SUMMARY_KEY: json.dumps(as_json)})


def summary_of(table: pa.Table) -> dict[str, Any]:
    """The summary of the run that made ``table`` (``RunResult.table``), as ``batchrun run
    --json`` prints it: ``outcome`` (``complete`` when every row has its answer or error;
    ``partial`` after a budget stop or an interrupt, when the table holds the rows finished
    so far), ``exit_code``, ``rows``, ``tokens``, ``cost_usd`` ...::

        table = batchrun.run(rows, model="claude-haiku-4-5", max_tokens=50).table
        print(batchrun.summary_of(table)["cost_usd"])

    Take it before converting the table (``to_pandas`` drops Arrow metadata).
    """
    metadata = table.schema.metadata or {}
    text = metadata.get(SUMMARY_KEY)
    if text is None:
        raise ValueError(
            "this table carries no batchrun summary: it is not one batchrun.run returned, or "
            "an operation since dropped its schema metadata"
        )
    record: dict[str, Any] = json.loads(text)
    return record
