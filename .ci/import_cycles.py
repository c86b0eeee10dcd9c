"""Fail when any module of batchrun imports one that imports it back, directly or round a circle.

import-linter's layers keep packages in order; this keeps modules inside one package honest
too. Function-level imports count: a lazy import is still a dependency.

    python .ci/import_cycles.py          # prints each circle, exits 1 if there is one
"""

from __future__ import annotations

import sys

import grimp


def circles(package: str) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan's algorithm, iterative)."""
    graph = grimp.build_graph(package)
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & graph.modules) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                # A package's __init__ importing its own submodule is not a circle of code.
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def main() -> int:
    found = circles("batchrun")
    for group in found:
        print("import circle: " + " -> ".join(group))
    if not found:
        print("no import circles in batchrun")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
