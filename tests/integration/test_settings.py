"""The settings table (config/settings.py) is the one declaration of every setting: each entry
is a flag on the commands it names, a job key and a variable where it says so, and the help's
precedence text lists every variable. Nothing here names a flag by hand except as a sample."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from support import write_jsonl

from batchrun.cli import cli
from batchrun.cli.options import PRECEDENCE
from batchrun.config.layers import LAYERS, fields_of
from batchrun.config.load import RunConfig, load_config
from batchrun.config.settings import BY_KEY, ENV_VARS, JOB_KEYS, SETTINGS, precedence_text
from batchrun.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TOOL = {"name": "lookup", "description": "Look a word up.", "input_schema": {"type": "object"}}
THINKING = {"type": "enabled", "budget_tokens": 1024}


def command(path: str) -> click.Command:
    found: click.Command = cli
    for name in path.split():
        assert isinstance(found, click.Group)
        found = found.commands[name]
    return found


LAYER_CLASSES = {cls.LAYER: cls for cls in LAYERS}


def resolved(config: RunConfig, key: str) -> Any:
    """Where ``key`` ends up in a RunConfig: the field of its layer's settings object."""
    if key in ("rpm", "itpm", "otpm"):
        return getattr(config.engine.limits.default, key)
    if key == "batch_max_mb":
        return config.batches.max_bytes / (1024 * 1024)
    setting = BY_KEY[key]
    if setting.layer == "request":
        return getattr(config.defaults, key)
    if setting.layer == "job":
        return getattr(config, key)
    return getattr(getattr(config, setting.layer), setting.field or key)


# --- the table itself ---------------------------------------------------------------------


def test_keys_and_flags_are_unique() -> None:
    assert len(BY_KEY) == len(SETTINGS)
    flags = [f for s in SETTINGS for f in (s.long_flag, s.short) if f is not None]
    assert len(flags) == len(set(flags))


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.commands], ids=lambda s: s.key)
def test_every_setting_is_a_flag_on_the_commands_it_names(setting: Any) -> None:
    for path in setting.commands:
        params = {p.name: p for p in command(path).params}
        assert setting.key in params, (path, setting.key)
        option = params[setting.key]
        assert isinstance(option, click.Option)
        assert setting.long_flag in option.opts, (path, option.opts)
        if setting.short:
            assert setting.short in option.opts
        if setting.kind == "switch":
            assert option.secondary_opts == [f"--no-{setting.long_flag[2:]}"]
        result = CliRunner().invoke(cli, [*path.split(), "--help"])
        assert setting.long_flag in result.output


def test_commands_take_no_job_flag_the_table_does_not_give_them() -> None:
    for path in ("run", "validate", "batches list", "batches cancel", "estimate"):
        keys = {p.name for p in command(path).params if p.name in BY_KEY}
        assert keys == {s.key for s in SETTINGS if path in s.commands}, path


def test_every_job_key_is_also_a_flag() -> None:
    # input is the SOURCE argument; [limits] holds rpm / itpm / otpm, which are flags.
    without = {key for key in JOB_KEYS if BY_KEY[key].long_flag is None}
    assert without == {"input", "limits"}
    assert all(BY_KEY[key].long_flag for key in ("rpm", "itpm", "otpm"))


def test_runconfig_defaults_are_the_table_defaults() -> None:
    for setting in SETTINGS:
        cls = LAYER_CLASSES.get(setting.layer)
        if cls is None or setting.feeds is not None or setting.default is None:
            continue
        fields = {f.name: f for f in dataclasses.fields(cls)}
        name = setting.field or setting.key
        assert fields[name].default == setting.default, setting.key
    bare = load_config(Path("in.jsonl"), environ={})
    for setting in SETTINGS:
        if setting.default is not None and setting.key != "input":
            assert resolved(bare, setting.key) == setting.default, setting.key


def test_each_layer_holds_exactly_its_settings_and_what_it_derives() -> None:
    """The per-layer settings objects are made from the table (``config.layers.build``):
    every setting names a field of its layer's object, and every field of an object is a
    setting's or one it declares derived."""
    for layer, cls in LAYER_CLASSES.items():
        own = {s.field or s.key for s in SETTINGS if s.layer == layer and s.feeds is None}
        fed = {s.feeds for s in SETTINGS if s.layer == layer and s.feeds is not None}
        assert own <= fields_of(cls), (layer, own - fields_of(cls))
        assert fed <= set(cls.DERIVED), (layer, fed - set(cls.DERIVED))
        assert fields_of(cls) == own | set(cls.DERIVED), (layer, fields_of(cls) ^ own)
    for setting in SETTINGS:
        assert setting.layer in {*LAYER_CLASSES, "request", "job"}, setting.key
        if setting.layer == "job":
            assert setting.key in {f.name for f in dataclasses.fields(RunConfig)}


def test_the_precedence_text_lists_every_variable() -> None:
    assert precedence_text() == PRECEDENCE
    assert "BATCHRUN_GRACE" in ENV_VARS and "ANTHROPIC_BASE_URL" in ENV_VARS
    result = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200)
    for name in [*ENV_VARS, "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"]:
        assert name in PRECEDENCE and name in result.output, name


# --- the environment ----------------------------------------------------------------------

ENV_SAMPLES = {
    "model": ("claude-env", "claude-env"),
    "max_tokens": ("7", 7),
    "rate_limit_store": ("redis://127.0.0.1:6390/1", "redis://127.0.0.1:6390/1"),
    "base_url": ("https://gateway.example", "https://gateway.example"),
    "concurrency": ("5", 5),
    "rpm": ("100", 100),
    "itpm": ("2000", 2000),
    "otpm": ("300", 300),
    "max_retries": ("2", 2),
    "timeout": ("12.5", 12.5),
    "api_version": ("2030-01-01", "2030-01-01"),
    "http_backend": ("httpx", "httpx"),
    "grace": ("3", 3.0),
    "max_retry_wait": ("45", 45.0),
    "max_cost": ("1.5", 1.5),
    "via": ("batches", "batches"),
    "answer_cache": ("s3://bucket/answers", "s3://bucket/answers"),
}


def test_every_variable_of_the_table_is_read() -> None:
    assert {s.key for s in ENV_VARS.values()} == set(ENV_SAMPLES)
    for name, setting in ENV_VARS.items():
        text, expected = ENV_SAMPLES[setting.key]
        config = load_config(Path("in.jsonl"), environ={name: text})
        assert resolved(config, setting.key) == expected, name
        # ... and a flag still wins over it.
        if setting.key not in ("base_url",):
            flagged = load_config(Path("in.jsonl"), {setting.key: expected}, environ={name: text})
            assert resolved(flagged, setting.key) == expected


def test_a_flag_beats_the_variable_beats_the_job_file(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text('input = "in.jsonl"\ngrace = 5\n')
    assert load_config(job, environ={}).run.grace == 5.0
    assert load_config(job, environ={"BATCHRUN_GRACE": "7"}).run.grace == 7.0
    assert load_config(job, {"grace": 9.0}, environ={"BATCHRUN_GRACE": "7"}).run.grace == 9.0
    with pytest.raises(ConfigError, match="BATCHRUN_GRACE='soon' is not a valid grace"):
        load_config(job, environ={"BATCHRUN_GRACE": "soon"})


# --- the job file -------------------------------------------------------------------------

BASE = 'input = "in.jsonl"\n'
JOB_SAMPLES = {
    "input": (BASE, None),
    "output": (BASE + 'output = "o.jsonl"\n', None),
    "model": (BASE + 'model = "m"\n', "m"),
    "max_tokens": (BASE + "max_tokens = 9\n", 9),
    "system": (BASE + 'system = [{type = "text", text = "s"}]\n', [{"type": "text", "text": "s"}]),
    "template": (BASE + 'template = "Say {word}"\n', "Say {word}"),
    "temperature": (BASE + "temperature = 0.5\n", 0.5),
    "top_p": (BASE + "top_p = 0.9\n", 0.9),
    "top_k": (BASE + "top_k = 40\n", 40),
    "stop_sequences": (BASE + 'stop_sequences = ["END"]\n', ("END",)),
    "tools": (
        BASE + 'tools = [{name = "lookup", description = "Look a word up.", '
        'input_schema = {type = "object"}}]\n',
        (TOOL,),
    ),
    "tool_choice": (BASE + 'tool_choice = {type = "auto"}\n', {"type": "auto"}),
    "thinking": (
        BASE + "max_tokens = 2048\nthinking = {type = 'enabled', budget_tokens = 1024}\n",
        THINKING,
    ),
    "metadata": (BASE + 'metadata = {user_id = "u-1"}\n', {"user_id": "u-1"}),
    "service_tier": (BASE + 'service_tier = "auto"\n', "auto"),
    "effort": (BASE + 'effort = "low"\n', "low"),
    "drop_unsupported": (BASE + "drop_unsupported = true\n", True),
    "keep_columns": (BASE + 'keep_columns = ["a"]\n', ("a",)),
    "json_schema": (BASE + f"json_schema = '{REPO / 'jobs' / 'sentiment_schema.json'}'\n", None),
    "cache_system": (BASE + "cache_system = true\n", {"type": "ephemeral"}),
    "cache_ttl": (
        BASE + 'cache_system = true\ncache_ttl = "1h"\n',
        None,
    ),
    "cache": (BASE + 'cache = "off"\n', None),
    "base_url": (BASE + 'base_url = "https://gateway.example"\n', "https://gateway.example"),
    "allow_insecure_http": (BASE + "allow_insecure_http = true\n", True),
    "concurrency": (BASE + 'concurrency = "auto"\n', None),
    "limits": (BASE + "[limits]\nrpm = 60\n", None),
    "max_retries": (BASE + "max_retries = 1\n", 1),
    "input_format": (BASE + 'input_format = "csv"\n', "csv"),
    "work_dir": (BASE + f"work_dir = '{REPO / 'out'}'\n", REPO / "out"),
    "segment_rows": (BASE + "segment_rows = 500\n", 500),
    "output_format": (BASE + 'output_format = "parquet-dataset"\n', "parquet-dataset"),
    "part_rows": (BASE + "part_rows = 5000\n", 5000),
    "rate_limit_store": (
        BASE + 'rate_limit_store = "redis://127.0.0.1:6379/0"\n',
        "redis://127.0.0.1:6379/0",
    ),
    "segment_seconds": (BASE + "segment_seconds = 5\n", 5.0),
    "csv_delimiter": (BASE + 'csv_delimiter = ";"\n', ";"),
    "encoding": (BASE + 'encoding = "latin-1"\n', "latin-1"),
    "media_root": (BASE + f"media_root = '{REPO / 'sample_data'}'\n", REPO / "sample_data"),
    "max_retry_wait": (BASE + "max_retry_wait = 20\n", 20.0),
    "timeout": (BASE + "timeout = 30\n", 30.0),
    "api_version": (BASE + 'api_version = "2030-01-01"\n', "2030-01-01"),
    "betas": (BASE + 'betas = ["b-1"]\n', ("b-1",)),
    "http_backend": (BASE + 'http_backend = "httpx"\n', "httpx"),
    "stream": (BASE + "stream = true\n", True),
    "dedup": (BASE + "dedup = false\n", False),
    "answer_cache": (BASE + 'answer_cache = "gs://bucket/answers"\n', "gs://bucket/answers"),
    "answer_cache_samples": (BASE + "answer_cache_samples = true\n", True),
    "reask_other_source": (BASE + "reask_other_source = true\n", True),
    "grace": (BASE + "grace = 4\n", 4.0),
    "samples": (BASE + "samples = 3\n", 3),
    "limit": (BASE + "limit = 10\n", 10),
    "sample": (BASE + "sample = 10\n", 10),
    "seed": (BASE + "seed = 3\n", 3),
    "max_cost": (BASE + "max_cost = 2\n", 2.0),
    "prices": (BASE + f"prices = '{REPO / 'batchrun' / 'cost' / 'prices.toml'}'\n", None),
    "via": (BASE + 'via = "batches"\n', "batches"),
    "deadline": (BASE + 'via = "auto"\ndeadline = "6h"\n', "6h"),
    "batch_max_requests": (BASE + "batch_max_requests = 10\n", 10),
    "batch_max_mb": (BASE + "batch_max_mb = 8\n", 8.0),
    "poll_interval": (BASE + "poll_interval = 2\n", 2.0),
}


# Where a sample's value lands when it is not simply resolved(config, key).
JOB_CHECKS = {
    "cache": lambda c: c.defaults.cache is None and c.defaults.cache_system is None,
    "input": lambda c: c.input.path.name == "in.jsonl",
    "output": lambda c: c.output.path.name == "o.jsonl",
    "json_schema": lambda c: c.engine.json_schema is not None and c.defaults.structured is not None,
    "cache_ttl": lambda c: c.defaults.cache_system == {"type": "ephemeral", "ttl": "1h"},
    "concurrency": lambda c: c.engine.concurrency_auto,
    "limits": lambda c: c.engine.limits.default.rpm == 60,
    "prices": lambda c: len(c.cost.prices.sources) > 1,
}


def test_every_job_key_of_the_table_is_read(tmp_path: Path) -> None:
    assert set(JOB_SAMPLES) == set(JOB_KEYS)
    assert {key for key, (_, expected) in JOB_SAMPLES.items() if expected is None} == set(
        JOB_CHECKS
    )
    job = tmp_path / "job.toml"
    for key, (text, expected) in JOB_SAMPLES.items():
        job.write_text(text)
        config = load_config(job, environ={})
        if expected is None:
            assert JOB_CHECKS[key](config), key
        else:
            assert resolved(config, key) == expected, key


@pytest.mark.parametrize(
    "key", [s.key for s in SETTINGS if not s.job and s.kind == "flag"], ids=str
)
def test_flags_only_settings_are_not_job_keys(tmp_path: Path, key: str) -> None:
    job = tmp_path / "job.toml"
    job.write_text(f"{BASE}{key} = true\n")
    with pytest.raises(ConfigError, match=f"unknown key `{key}`"):
        load_config(job, environ={})


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("tool_choise", "tool_choice"), ("service_teir", "service_tier"), ("max_token", "max_tokens")],
)
def test_an_unknown_job_key_suggests_a_close_name(
    tmp_path: Path, typo: str, suggestion: str
) -> None:
    job = tmp_path / "job.toml"
    job.write_text(f'{BASE}{typo} = "x"\n')
    with pytest.raises(
        ConfigError, match=rf"unknown key `{typo}` \(did you mean `{suggestion}`\?\)"
    ):
        load_config(job, environ={})


def test_job_values_of_the_wrong_type_are_named(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(f'{BASE}tools = {{name = "x"}}\n')
    with pytest.raises(ConfigError, match="`tools` must be a list, not a table"):
        load_config(job, environ={})


# --- JSON flags ---------------------------------------------------------------------------


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[RunConfig]:
    """The configs the validate command loads."""
    import batchrun.cli.validate as validate_module

    real = validate_module.load
    configs: list[RunConfig] = []

    def load(source: Path, flags: dict[str, Any]) -> RunConfig:
        configs.append(real(source, flags))
        return configs[-1]

    monkeypatch.setattr(validate_module, "load", load)
    return configs


def test_json_flags_inline_and_from_a_file_reach_the_defaults(
    tmp_path: Path, captured: list[RunConfig]
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([TOOL]))
    args = ["validate", str(inp), "--model", "m", "--max-tokens", "2048"]
    result = CliRunner().invoke(
        cli,
        [
            *args,
            "--tools",
            f"@{tools}",
            "--thinking",
            json.dumps(THINKING),
            "--metadata",
            '{"user_id": "u-7"}',
            "--service-tier",
            "auto",
        ],
    )
    assert result.exit_code == 0, result.output
    defaults = captured[-1].defaults
    assert defaults.tools == (TOOL,)
    assert defaults.thinking == THINKING
    assert defaults.metadata == {"user_id": "u-7"}
    assert defaults.service_tier == "auto"

    result = CliRunner().invoke(
        cli, [*args, "--tools", json.dumps([TOOL]), "--tool-choice", '{"type": "any"}']
    )
    assert result.exit_code == 0, result.output
    assert captured[-1].defaults.tools == (TOOL,)
    assert captured[-1].defaults.tool_choice == {"type": "any"}


def test_json_flags_from_the_command_line_of_run_and_estimate_too() -> None:
    for path in ("run", "estimate", "validate"):
        names = {p.name for p in command(path).params}
        assert {"tools", "tool_choice", "thinking", "metadata", "service_tier"} <= names


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--tools", "[{name: x}]", "not valid JSON"),
        ("--tools", '{"name": "x"}', "must be a list, not an object"),
        ("--thinking", '"on"', "must be an object, not a string"),
        ("--tool-choice", "@nowhere.json", "cannot read nowhere.json"),
        ("--metadata", "", "not valid JSON"),
    ],
)
def test_a_bad_json_flag_is_a_usage_error_naming_the_flag(
    tmp_path: Path, flag: str, value: str, message: str
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    result = CliRunner().invoke(cli, ["validate", str(inp), flag, value])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{flag}'" in result.output and message in result.output


def test_a_bad_json_file_is_named(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    bad = tmp_path / "bad.json"
    bad.write_text("[1,")
    result = CliRunner().invoke(cli, ["validate", str(inp), "--tools", f"@{bad}"])
    assert result.exit_code == 2
    assert f"Invalid value for '--tools': {bad}: not valid JSON" in result.output
