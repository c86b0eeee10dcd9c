"""Every library the package imports when a module loads is one ``pip install batchrun``
installs: a module-level import of a library only the dev extra brings (numpy came in with
pandas and moto) passes every test and breaks the README's first command on a fresh machine.
Libraries of the optional extras are imported inside the functions that use them."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "batchrun"


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = (re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0] for spec in project["dependencies"])
    return {name.lower().replace("_", "-") for name in names}


def _loaded_imports(path: Path) -> set[str]:
    """Libraries a file imports when it loads: its module-level imports (outside functions,
    ``if TYPE_CHECKING:`` and ``try:`` guards), the first part of each name."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def test_every_library_a_module_loads_is_a_declared_dependency() -> None:
    declared = _declared()
    owners_of = packages_distributions()
    undeclared: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for module in _loaded_imports(path):
            if module in sys.stdlib_module_names or module in ("batchrun", "__future__"):
                continue
            owners = {d.lower().replace("_", "-") for d in owners_of.get(module, [module])}
            if not owners & declared:
                undeclared.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    assert undeclared == {}, f"loaded by a module, not in [project.dependencies]: {undeclared}"
