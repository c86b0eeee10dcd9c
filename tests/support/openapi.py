"""The API's OpenAPI schemas as JSON Schema validators, for checking what batchrun sends and
what the simulator answers.

The schemas are the committed subset of Anthropic's spec (``tests/openapi/``, whose README says
where it comes from); ``BATCHRUN_OPENAPI`` points the tests at another copy, such as the whole
spec. The spec is JSON Schema 2020-12 (OpenAPI 3.1); its ``$ref``s are resolved against the
spec document itself through a ``referencing`` registry.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

FOLDER = Path(__file__).resolve().parents[1] / "openapi"
SUBSET = FOLDER / "openapi_subset.json"
SPEC_PATH = Path(os.environ.get("BATCHRUN_OPENAPI", str(SUBSET)))
SPEC_URI = "urn:anthropic-openapi"


@lru_cache(maxsize=1)
def spec_registry() -> Registry[Any]:
    spec = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    registry: Registry[Any] = Registry().with_resource(
        SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    return registry


@lru_cache(maxsize=16)
def schema_validator(name: str) -> Draft202012Validator:
    """A validator for one of the spec's component schemas, by name."""
    schema = {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}
    return Draft202012Validator(schema, registry=spec_registry())


def validator() -> Draft202012Validator:
    """The validator of a Messages request body (``CreateMessageParams``)."""
    return schema_validator("CreateMessageParams")


def assert_conforms(body: Mapping[str, Any]) -> None:
    errors = sorted(validator().iter_errors(dict(body)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def assert_schema(name: str, value: Mapping[str, Any]) -> None:
    errors = list(schema_validator(name).iter_errors(dict(value)))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def cutter() -> ModuleType:
    """``tests/openapi/make_openapi_subset.py``, which cuts the subset from the full spec."""
    found = importlib.util.spec_from_file_location("cut", FOLDER / "make_openapi_subset.py")
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module
