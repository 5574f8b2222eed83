"""The package's structure: no import circle between jaxcnn's modules, read from the source (module-level
imports only; an import inside a function is deliberate laziness, e.g. the CLI building ``bench``'s parser).

A package's ``__init__`` that re-exports its submodules is the usual exception: importing ``jaxcnn.layers``
from ``jaxcnn.models.vgg`` means ``jaxcnn.layers.__init__``, whose own imports point down into
``jaxcnn.layers.*``, never back up; so edges into an ``__init__`` count like any other, and a circle
through one is still a circle.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxcnn"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level else []
    return ".".join([*base, *([target] if target else [])])


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The jaxcnn modules ``path`` imports at module level (a ``from x import y`` of a submodule ``y``
    counts as importing ``x.y``)."""
    name, is_package = _module_name(path), path.name == "__init__.py"
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("jaxcnn")}
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, is_package, node.level, node.module) if node.level else node.module or ""
            if not source.startswith("jaxcnn"):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in modules else source)
    return found & modules


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) - {_module_name(p)} for p in paths}


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module, path):
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target] if target in path else [module, target]
            if target not in state:
                found = visit(target, [*path, target])
                if found:
                    return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_no_import_circle_in_the_package():
    graph = _graph()
    assert "jaxcnn.bench.twins" in graph and "jaxcnn.train.loop" in graph["jaxcnn.train.run"]  # the graph is read
    circle = _circle(graph)
    assert circle is None, " -> ".join(circle)


def test_the_circle_finder_finds_a_circle():
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b"}, "b": set()}) is None


def test_the_benchmark_twins_depend_one_way():
    graph = _graph()
    for twin in ("jaxcnn.bench.flax_models", "jaxcnn.bench.torch_models"):
        assert "jaxcnn.bench.models" not in graph[twin], twin  # they read the table in twins.py
    assert "jaxcnn.bench.twins" in graph["jaxcnn.bench.models"]
