"""Package layering: the import graph between dr's packages (and top-level modules) has no cycles, and the
objectives sit above the trainer's parts and below the composition root (dr.train).

Every `import dr.X` / `from dr.X... import` anywhere in a module counts, inside functions too: an import
deferred into a function is still a dependency.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

DR = Path(__file__).resolve().parents[1] / "dr"


def package_graph(root: Path = DR) -> dict[str, set[str]]:
    """{node: nodes it imports}; a node is a subpackage (`dr/eval/`) or a top-level module (`dr/train.py`)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        node = parts[0] if len(parts) > 1 else path.stem
        edges[node]  # every node, even one that imports nothing of dr
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                names = [n.module]
            elif isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            else:
                continue
            for name in names:
                if name.startswith("dr.") and name.split(".")[1] != node:
                    edges[node].add(name.split(".")[1])
    return dict(edges)


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_cycles_finds_what_it_should():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_packages():
    graph = package_graph()
    assert {"data", "eval", "retrievers", "index", "train"} <= set(graph)  # the walk found the packages
    assert "retrievers" not in graph["data"] and "retrievers" in graph["eval"]  # data < retrievers < eval
    assert cycles(graph) == []


def test_objectives_layer():
    """The trainer loop knows objectives only through their interface (no import of dr.objectives), and
    faiss is imported only inside dr.index."""
    graph = package_graph()
    assert "objectives" not in graph["trainer"] and "objectives" in graph["train"]
    for path in DR.rglob("*.py"):
        if path.relative_to(DR).parts[0] == "index":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for n in ast.walk(tree):
            names = ([n.module or ""] if isinstance(n, ast.ImportFrom) else
                     [a.name for a in n.names] if isinstance(n, ast.Import) else [])
            names += [a.name for a in n.names] if isinstance(n, ast.ImportFrom) else []
            assert not any(x == "faiss" or x.startswith("faiss.") or x == "dr.index._faiss" for x in names), \
                f"{path.relative_to(DR)} imports faiss outside dr.index"
