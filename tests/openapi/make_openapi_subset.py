"""Cut the API's OpenAPI spec down to the schemas the conformance tests validate against.

The full spec (1.6 MB: Anthropic's API as Stainless publishes it; README.md beside this script
says where it comes from) is not in this repository. ``openapi_subset.json`` beside this script
keeps the component schemas reachable from the roots below, unchanged and at the same JSON
pointers, so the tests run on any clone. From the repository root, with the full spec at hand::

    python tests/openapi/make_openapi_subset.py FULL_SPEC.json           # write the subset again
    python tests/openapi/make_openapi_subset.py --check FULL_SPEC.json   # is it still that cut?
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
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
# Where the full spec was taken from (README.md says how that copy was made).
ORIGIN = {
    "repository": "github.com/tryAGI/Anthropic",
    "path": "src/libs/Anthropic/openapi.yaml",
    "commit": "8b42a21e6aa7fc9b521cc0c1581f586480b5cad3",
    "published_by": "Stainless (the spec the official Anthropic SDKs are generated from)",
}


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
    """The spec's component schemas reachable from ``ROOTS``, and nothing else."""
    schemas = spec["components"]["schemas"]
    keep: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo.extend(refs(schemas[name]) - keep)
    return {"components": {"schemas": {name: schemas[name] for name in sorted(keep)}}}


def write(source: Path) -> None:
    data = source.read_bytes()
    cut = subset(json.loads(data))
    cut["x-source"] = {
        "file": source.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        **ORIGIN,
        "cut_on": datetime.date.today().isoformat(),
        "roots": list(ROOTS),
    }
    OUT.write_text(json.dumps(cut, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(cut['components']['schemas'])} schemas")


def check(source: Path) -> int:
    """0 if the committed subset is what ``source`` cuts to, else 1 (saying which differ)."""
    data = source.read_bytes()
    want = subset(json.loads(data))["components"]["schemas"]
    committed = json.loads(OUT.read_text(encoding="utf-8"))
    have = committed["components"]["schemas"]
    differ = sorted(name for name in want.keys() | have.keys() if want.get(name) != have.get(name))
    recorded = committed.get("x-source", {}).get("sha256")
    if recorded != hashlib.sha256(data).hexdigest():
        print(f"{source} is not the spec the subset was cut from (sha256 {recorded})")
    if differ:
        print(f"{OUT.name} differs from the cut of {source} in: {', '.join(differ)}")
        return 1
    print(f"{OUT.name} is the cut of {source}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="the full OpenAPI spec (JSON)")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args()
    if args.check:
        return check(args.spec)
    write(args.spec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
