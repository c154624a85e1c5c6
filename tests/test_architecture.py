"""The shape of the house: no import cycles between noisekit's modules, and no library module imports the CLI."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path, package_root):
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_root=ROOT / "noisekit"):
    """`{module: {imported noisekit modules}}` from every import statement (function-level ones included: a lazy
    import still ties two modules together)."""
    modules = {module_name(p, package_root): p for p in package_root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module
                # `from pkg import name` imports pkg.name when that is a module
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_library_module_imports_the_cli():
    graph = import_graph()
    offenders = {m: sorted(e for e in edges if e == "noisekit.cli" or e.startswith("noisekit.cli."))
                 for m, edges in graph.items()
                 if not (m in ("noisekit.cli", "noisekit.__main__") or m.startswith("noisekit.cli."))}
    assert {m: e for m, e in offenders.items() if e} == {}


def test_the_graph_sees_relative_and_lazy_imports():
    graph = import_graph()
    assert "noisekit.core.families" in graph["noisekit.core.sampler"]  # relative, module level
    assert "noisekit.library" in graph["noisekit.plan"]  # inside a function
