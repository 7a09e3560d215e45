"""No import cycles in edgetl or edgetl_runtime, not even through imports inside functions.

The graph has an edge A -> B for every ``import``/``from ... import`` statement in A's source
(module level, inside functions, under ``TYPE_CHECKING``) that names B, a module of either package.
Importing a submodule also runs its parent packages' ``__init__``; those implicit edges are left
out (Python runs a package before its submodules), but a submodule that names its own package
(``from . import Device``) has an edge to it like any other import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"edgetl": ROOT / "edgetl", "edgetl_runtime": ROOT / "runtimes" / "edgetl_runtime"}


def _modules() -> dict[str, Path]:
    found = {}
    for name, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Return ``{module: modules it imports}`` over both packages."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for target in targets:
                while target and target not in modules:  # `import edgetl.data.scan` -> that module
                    target = target.rpartition(".")[0]
                if target and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_real_imports() -> None:
    graph = import_graph()
    assert "edgetl_runtime.contract" in graph["edgetl_runtime.metadata"]
    assert "edgetl.training.trainer" in graph["edgetl.training"]  # an import inside a function
    assert len(graph) > 40


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_runtime_never_imports_the_workstation_package() -> None:
    graph = import_graph()
    assert not [(m, t) for m, targets in graph.items() if m.startswith("edgetl_runtime") for t in targets
                if t == "edgetl" or t.startswith("edgetl.")]


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
