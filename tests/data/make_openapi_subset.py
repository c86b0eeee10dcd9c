"""Cut the API's OpenAPI spec down to the schemas the conformance tests validate against.

The full spec (1.6 MB, ``shared/anthropic-openapi`` beside the repository: Anthropic's API
as Stainless publishes it; see that folder's README for its origin) is not in this
repository. ``openapi_subset.json`` beside this script keeps the component schemas reachable
from the roots below, unchanged and at the same JSON pointers, so the tests run on any clone.
Re-run after the spec changes, from the repository root::

    python tests/data/make_openapi_subset.py \
        ../shared/anthropic-openapi/anthropic-stainless-openapi.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOTS = (
    "CreateMessageParams",
    "CreateMessageBatchParams",
    "MessageBatch",
    "ListResponse_MessageBatch_",
    "MessageBatchIndividualResponse",
    "DeleteMessageBatchResponse",
)
PREFIX = "#/components/schemas/"
OUT = Path(__file__).with_name("openapi_subset.json")


def refs(node: Any) -> set[str]:
    """The component schema names ``node`` refers to, at any depth."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(PREFIX):
            found.add(ref[len(PREFIX) :])
        for value in node.values():
            found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def subset(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec["components"]["schemas"]
    keep: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo.extend(refs(schemas[name]) - keep)
    return {"components": {"schemas": {name: schemas[name] for name in sorted(keep)}}}


def main(source: str) -> None:
    data = Path(source).read_bytes()
    cut = subset(json.loads(data))
    cut["x-source"] = {
        "file": Path(source).name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "roots": list(ROOTS),
    }
    OUT.write_text(json.dumps(cut, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(cut['components']['schemas'])} schemas")


if __name__ == "__main__":
    main(sys.argv[1])
