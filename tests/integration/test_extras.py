"""Every optional extra that a setting needs and is missing is one line naming the ``pip
install`` to run, before anything is written or sent: never an ImportError traceback.

Here from Python, with the extra's module made unimportable (``sys.modules[name] = None``,
what Python does for a module it must not load); the command line as a real process:
tests/system/test_extras_cli.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support import prompts

import batchrun
from batchrun.core.errors import ConfigError, MissingExtraError
from batchrun.core.extras import has_extra, install_hint, require_extra
from batchrun.remote.lease import Lease
from batchrun.remote.objects import Storage

MODEL = "claude-haiku-4-5"


def test_python_is_told_the_same_naming_the_keyword(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingExtraError) as caught:
        batchrun.run(
            prompts(2),
            model=MODEL,
            max_tokens=5,
            simulate=True,
            rate_limit_store="redis://127.0.0.1:6379/0",
            output=str(tmp_path / "out.parquet"),
        )
    assert str(caught.value) == (
        "rate_limit_store needs the `redis` package, which is not installed: "
        "pip install 'batchrun[redis]'"
    )
    assert caught.value.extra == "redis" and isinstance(caught.value, ConfigError)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not any(tmp_path.iterdir())


def test_the_ray_stage_without_ray_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import batchrun.ray

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(MissingExtraError, match=r"^batchrun.ray.answer needs the `ray` package"):
        batchrun.ray.answer(object(), parts_dir="parts", settings={"model": MODEL})
    with pytest.raises(MissingExtraError, match=r"^run_on_ray needs .*'batchrun\[ray\]'$"):
        batchrun.ray.run_on_ray("job.toml", {})


def test_an_extra_that_is_there_but_broken_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "brokenextra.py").write_text(
        "raise ImportError('libfoo.so.1: cannot open shared object file')\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as caught:
        require_extra("brokenextra", "redis", "--rate-limit-store")
    assert str(caught.value) == (
        "--rate-limit-store needs the `brokenextra` package, which cannot be imported "
        "(libfoo.so.1: cannot open shared object file): pip install 'batchrun[redis]'"
    )
    assert not has_extra("brokenextra") and has_extra("json")
    assert install_hint("s3") == "pip install 'batchrun[s3]'"


# --- s3: boto3 makes the lease atomic; without it, it works, and says what it lacks ---------


def test_a_lease_on_s3_without_boto3_warns_with_the_fix_and_still_holds(
    storage: Storage, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = f"s3://{bucket}/out.parquet"
    told: list[str] = []
    with Lease(storage, out, run_id="run-a", warn=told.append):
        pass  # boto3 here: atomic, nothing to say
    assert told == []
    monkeypatch.setitem(sys.modules, "boto3", None)
    assert not storage.conditions_atomic(out)
    with Lease(storage, out, run_id="run-b", warn=told.append) as lease:
        assert lease.held
    assert told == [
        f"batchrun: warning: boto3 is not installed, so the lease of {out} is taken by "
        "check-then-write: two machines starting this output at the same moment could both "
        "run it; pip install 'batchrun[s3]' makes it atomic"
    ]
