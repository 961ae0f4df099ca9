"""Imports go one way: cli -> recipes -> refit subpackages -> low-level modules -> kernels.

A small AST check (no dependency): every `import refit...` / `from refit... import` anywhere in a file,
function-local imports included (a local import does not make a cycle acceptable), must point to the same
or a lower layer, and the graph between refit's components must have no cycle. A new top-level module or
subpackage must be placed in LAYERS first: where it sits is a decision, not an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# source folder -> the import name it is mapped to (pyproject.toml)
SOURCES = {"framework": "refit", "kernels": "refit.kernels", "recipes": "refit.recipes"}

# Lowest first. A component may import components of its own layer or of lower layers; within a layer
# the component graph must stay acyclic (checked below across all layers).
LAYERS: list[set[str]] = [
    {"kernels"},
    {"errors", "__init__", "lazy"},
    {"io"},
    {"settings", "config"},
    {"data"},
    {"models"},
    {"inference", "evaluate", "tracking", "report", "estimate"},
    {"train", "drift", "compress", "export", "registry", "tune", "maintain", "serve"},
    {"recipes"},
    {"cli", "__main__"},
]
TIER = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    for folder, package in SOURCES.items():
        base = ROOT / folder
        if base in path.parents:
            parts = path.relative_to(base).with_suffix("").parts
            return ".".join((package, *parts))
    raise ValueError(path)


def _component(module: str) -> str:
    """refit.drift.check -> drift; refit.recipes.x -> recipes; refit -> __init__."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__init__":
        return "__init__"
    return parts[1]


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported refit module, line) for every import in the file, wherever it is."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "refit"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] == "refit":
                found.append((target, node.lineno))
    return found


def _edges() -> list[tuple[str, str, str]]:
    """(from component, to component, 'file:line') for every cross-component import."""
    edges = []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            src = _component(_module_name(path))
            for target, line in _imports(path):
                dst = _component(target)
                if dst != src:
                    edges.append((src, dst, f"{path.relative_to(ROOT)}:{line}"))
    return edges


def _cycles(edges: list[tuple[str, str, str]]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_every_component_has_a_layer():
    components = {_component(_module_name(p)) for folder in SOURCES for p in (ROOT / folder).rglob("*.py")}
    unplaced = sorted(components - set(TIER))
    assert not unplaced, f"place {unplaced} in LAYERS in {__file__}"


def test_imports_point_down_the_layers():
    upward = [
        f"{where}: {a} imports {b}"
        for a, b, where in _edges()
        if a in TIER and b in TIER and TIER[b] > TIER[a]
    ]
    assert not upward, "imports against the layers (cli -> recipes -> refit -> kernels):\n" + "\n".join(
        upward
    )


def test_no_cycles_between_components():
    edges = _edges()
    cycles = _cycles(edges)
    where = {(a, b): w for a, b, w in edges}
    described = [
        " -> ".join(c) + "  (" + ", ".join(where[(x, y)] for x, y in zip(c, c[1:])) + ")" for c in cycles
    ]
    assert not cycles, "import cycles between refit components:\n" + "\n".join(described)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from refit.export.runtimes import make_predictor\n", "io imports export"),
        ("def f():\n    from refit.recipes import compress\n", "io imports recipes"),
    ],
)
def test_the_check_catches_an_upward_import(tmp_path, monkeypatch, source, expected):
    """The check is not vacuous: a low-level module importing a higher one (even inside a function) fails."""
    fake_root = tmp_path
    (fake_root / "framework").mkdir()
    (fake_root / "framework" / "io.py").write_text(source)
    monkeypatch.setitem(globals(), "ROOT", fake_root)
    monkeypatch.setitem(globals(), "SOURCES", {"framework": "refit"})
    with pytest.raises(AssertionError, match=expected):
        test_imports_point_down_the_layers()


def test_the_check_catches_a_cycle(tmp_path, monkeypatch):
    (tmp_path / "framework" / "drift").mkdir(parents=True)
    (tmp_path / "framework" / "train").mkdir()
    (tmp_path / "framework" / "drift" / "a.py").write_text("import refit.train.b\n")
    (tmp_path / "framework" / "train" / "b.py").write_text("def f():\n    from refit.drift import a\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "SOURCES", {"framework": "refit"})
    with pytest.raises(AssertionError, match="drift -> train -> drift|train -> drift -> train"):
        test_no_cycles_between_components()
