"""Job files, precedence (flag > environment > job file > default), validation of settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.config.load import DEFAULT_CONCURRENCY, load_config
from batchrun.core.errors import ConfigError
from batchrun.formats.registry import file_suffixes, said

JOB = """
input = "data/in.jsonl"
output = "../out/result.parquet"
model = "claude-haiku-4-5"
max_tokens = 50
concurrency = 4
system = "Be brief."
keep_columns = ["a", "b"]
"""


def job_file(tmp_path: Path, text: str = JOB) -> Path:
    folder = tmp_path / "jobs"
    folder.mkdir(exist_ok=True)
    path = folder / "job.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_job_file_paths_are_relative_to_the_job_file(tmp_path: Path) -> None:
    cfg = load_config(job_file(tmp_path), environ={})
    assert cfg.input.path == (tmp_path / "jobs" / "data" / "in.jsonl").resolve()
    assert cfg.output.path == (tmp_path / "out" / "result.parquet").resolve()
    assert cfg.output.keep_columns == ("a", "b")
    assert cfg.defaults.system == "Be brief."


def test_flag_beats_environment_beats_job_file_beats_default(tmp_path: Path) -> None:
    path = job_file(tmp_path)
    assert load_config(path, environ={}).engine.concurrency == 4
    env = {"BATCHRUN_CONCURRENCY": "9", "BATCHRUN_MODEL": "claude-sonnet-4-6"}
    from_env = load_config(path, environ=env)
    assert (from_env.engine.concurrency, from_env.defaults.model) == (9, "claude-sonnet-4-6")
    from_flag = load_config(path, {"concurrency": 30, "model": None}, environ=env)
    assert (from_flag.engine.concurrency, from_flag.defaults.model) == (30, "claude-sonnet-4-6")
    bare = load_config(tmp_path / "in.jsonl", environ={})
    assert bare.engine.concurrency == DEFAULT_CONCURRENCY


def test_flag_paths_are_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(job_file(tmp_path), {"output": "mine.jsonl"}, environ={})
    assert cfg.output.path == (tmp_path / "mine.jsonl").resolve()


def test_dataset_source_gets_a_default_output_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("data/reviews.jsonl"), environ={})
    assert cfg.output.path == tmp_path / "reviews.results.parquet"


def test_credentials_and_base_url_come_from_the_sdk_variables(tmp_path: Path) -> None:
    env = {
        "ANTHROPIC_API_KEY": "k1",
        "ANTHROPIC_AUTH_TOKEN": "t1",
        "ANTHROPIC_BASE_URL": "https://gateway.example",
    }
    cfg = load_config(job_file(tmp_path), environ=env)
    key = cfg.client.credentials.api_key
    assert key is not None and key.reveal() == "k1"
    assert cfg.client.credentials.auth_token is not None
    assert cfg.client.base_url == "https://gateway.example"
    assert "k1" not in repr(cfg)


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"job.toml: unknown key `max_token`.*`max_tokens`"):
        load_config(job_file(tmp_path, 'input = "x.jsonl"\nmax_token = 5\n'), environ={})


def test_every_misspelt_key_is_listed_at_once_each_with_its_suggestion(tmp_path: Path) -> None:
    text = 'input = "x.jsonl"\nmodle = "m"\nmax_token = 5\nsytem = "s"\nzzz = 1\n'
    with pytest.raises(ConfigError) as caught:
        load_config(job_file(tmp_path, text), environ={})
    lines = str(caught.value).splitlines()
    assert lines[0].endswith("job.toml: 4 problems:")
    assert lines[1:] == [
        "  - unknown key `modle` (did you mean `model`?)",
        "  - unknown key `max_token` (did you mean `max_tokens`?)",
        "  - unknown key `sytem` (did you mean `system`?)",
        "  - unknown key `zzz`",
    ]


def test_keys_set_elsewhere_and_wrong_types_are_listed_with_the_typos(tmp_path: Path) -> None:
    text = 'input = "x.jsonl"\nrpm = 10\nsimulate = true\nstream = 1\nmodle = "m"\n'
    with pytest.raises(ConfigError) as caught:
        load_config(job_file(tmp_path, text), environ={})
    message = str(caught.value)
    assert "4 problems" in message
    assert "unknown key `rpm`: it goes in the [limits] table" in message
    assert "unknown key `simulate`: a job file cannot set it; pass simulate=True" in message
    assert "`stream` must be true or false, not an integer" in message
    assert "(did you mean `model`?)" in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('input = "x.jsonl"\nconcurrency = "many"\n', "`concurrency` must be an integer"),
        ('input = "x.jsonl"\nstream = 1\n', "`stream` must be true or false"),
        ('input = "x.jsonl"\nmax_tokens = 0\n', "max_tokens"),
        ('input = "x.jsonl"\ntemperature = 1.5\n', "temperature"),
        ('input = "x.jsonl"\nconcurrency = 0\n', "concurrency"),
        # The suffixes are the output formats' (.parquet, .jsonl or .csv, ...): from the registry.
        ('input = "x.jsonl"\noutput = "out.tsv"\n', f"must end in {said(file_suffixes())}"),
        ('input = "x.jsonl"\nhttp_backend = "curl"\n', "http_backend"),
        ("model = 'claude-haiku-4-5'\n", "no input"),
        ("input = [", "not valid TOML"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(job_file(tmp_path, text), environ={})


def test_bad_environment_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BATCHRUN_CONCURRENCY"):
        load_config(job_file(tmp_path), environ={"BATCHRUN_CONCURRENCY": "lots"})


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="job file not found"):
        load_config(tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize("url", ["http://api.example.com", "http://10.0.0.5:8080"])
def test_plain_http_to_another_machine_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="in clear"):
        load_config(job_file(tmp_path), {"base_url": url}, environ={})
    cfg = load_config(
        job_file(tmp_path), {"base_url": url, "allow_insecure_http": True}, environ={}
    )
    assert cfg.client.base_url == url


def test_plain_http_on_loopback_is_fine(tmp_path: Path) -> None:
    cfg = load_config(job_file(tmp_path), {"base_url": "http://127.0.0.1:8765"}, environ={})
    assert cfg.client.base_url == "http://127.0.0.1:8765"


def test_simulate_never_carries_the_real_key(tmp_path: Path) -> None:
    cfg = load_config(
        job_file(tmp_path), {"simulate": True}, environ={"ANTHROPIC_API_KEY": "real-key"}
    )
    assert cfg.client.credentials.api_key is not None
    assert cfg.client.credentials.api_key.reveal() != "real-key"


def test_shipped_jobs_load(tmp_path: Path) -> None:
    jobs = Path(__file__).resolve().parents[2] / "jobs"
    names = sorted(p.name for p in jobs.glob("*.toml"))
    assert {"label_sentiment.toml", "summarize_docs.toml", "estimate_costs.toml"} <= set(names)
    for path in jobs.glob("*.toml"):
        cfg = load_config(path, environ={})
        assert cfg.input.path.exists(), path


def test_batch_settings_from_job_file_environment_and_flags(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        'input = "in.jsonl"\nvia = "batches"\nbatch_max_requests = 500\n'
        "batch_max_mb = 10\npoll_interval = 2\n"
    )
    cfg = load_config(job, {}, environ={})
    assert (cfg.via, cfg.batches.max_requests, cfg.batches.poll_interval) == ("batches", 500, 2.0)
    assert cfg.batches.max_bytes == 10 * 1024 * 1024
    assert load_config(job, {"via": "online"}, environ={}).via == "online"
    assert load_config(tmp_path / "in.jsonl", {}, environ={"BATCHRUN_VIA": "batches"}).via == (
        "batches"
    )
    defaults = load_config(tmp_path / "in.jsonl", {}, environ={})
    assert (defaults.via, defaults.batches.max_requests) == ("online", 100_000)
    assert defaults.batches.max_bytes == 256 * 1024 * 1024
    assert (
        load_config(tmp_path / "in.jsonl", {"simulate": True}, environ={}).batches.poll_interval < 1
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('via = "mail"', "`via` must be online or batches"),
        ("batch_max_requests = 100001", "at most 100,000"),
        ("batch_max_mb = 300", "at most 256"),
        ("poll_interval = 0", "`poll_interval` must be a number > 0"),
    ],
)
def test_bad_batch_settings_are_refused(tmp_path: Path, text: str, message: str) -> None:
    job = tmp_path / "job.toml"
    job.write_text(f'input = "in.jsonl"\n{text}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(job, {}, environ={})
