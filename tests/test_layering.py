"""The package's layers hold: no import circle, and no module imports a module of a higher layer.

Every import counts: at module level, inside functions, and under `if TYPE_CHECKING:`; no upward
edge is allowed. Where a lower layer needs a higher one at run time, the package face (the top
layer, the composition root) installs it: `lightning_client/__init__.py` installs the realtime
opener `Generator.realtime()` calls (`lightning_client.generator.install_realtime`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "lightning_client"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

#: Module (relative to the package) -> layer, bottom (0) to top. The longest dotted prefix decides:
#: "providers" covers every module under providers/. `__init__` is the package's own face.
LAYERS: dict[str, int] = {
    # 0 foundations
    **dict.fromkeys(
        (
            "_version",
            "_log",
            "_background",
            "_compat",
            "_money",
            "_suggest",
            "_sync",
            "errors",
            "result",
            "request",
            "credentials",
            "images",
            "pricing",
            "telemetry",
            "registry",
            "sandbox_endpoints",
            "state",
            "state.schema",
            "state.store",
            "state.sqlite",
            "state.postgres",
            "state.jobs",
        ),
        0,
    ),
    # 1 the generator contract and what records it
    **dict.fromkeys(("generator", "realtime_contract", "realtime_backend", "ledger", "cache"), 1),
    # 2 providers
    "providers": 2,
    # 3 routing
    "routing": 3,
    # 4 features over generators and routers
    **dict.fromkeys(("realtime", "batching", "webhooks", "report", "testing", "config"), 4),
    # 5 what is served and how it is built
    **dict.fromkeys(("assembly", "serving"), 5),
    # 6 front ends
    **dict.fromkeys(("cli", "mcp_server"), 6),
    # 7 the package face
    **dict.fromkeys(("__init__", "__main__"), 7),
}


@dataclass(frozen=True)
class Edge:
    """One import of a package module by another; `eager` when it runs at import time."""

    source: str
    target: str
    line: int
    eager: bool


def module_names(root: Path) -> dict[str, Path]:
    """Every module under `root`, by its name relative to the package (`__init__` for the package)."""
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of a module, and whether it runs at import time (not in a function
    body, not under `if TYPE_CHECKING:`)."""

    def walk(nodes: Iterable[ast.AST], eager: bool) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node, eager
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(ast.iter_child_nodes(node), False)
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, False)
                yield from walk(node.orelse, eager)
            else:
                yield from walk(ast.iter_child_nodes(node), eager)

    yield from walk(tree.body, True)


def import_edges(root: Path, package: str = PACKAGE) -> list[Edge]:
    """The imports between the package's modules (names relative to the package)."""
    modules = module_names(root)

    def relative(dotted: str) -> str | None:
        """`dotted` relative to the package ("" for the package itself), None outside it."""
        if dotted == package:
            return ""
        return dotted[len(package) + 1 :] if dotted.startswith(package + ".") else None

    def resolve(dotted: str) -> str | None:
        """The package module an absolute name lands in (its longest module prefix), else None."""
        name = relative(dotted)
        if name is None:
            return None
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or "__init__"

    edges: list[Edge] = []
    for source, path in modules.items():
        is_package = path.name == "__init__.py"
        dotted = package if source == "__init__" else f"{package}.{source}"
        here = dotted if is_package else dotted.rpartition(".")[0]
        for node, eager in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [resolve(alias.name) for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    # `from package import module` imports that module; `from module import name`, the module.
                    full = f"{base}.{alias.name}"
                    targets.append(resolve(full) if relative(full) in modules else resolve(base))
            for target in targets:
                if target is not None and target != source:
                    edges.append(Edge(source, target, node.lineno, eager))
    return edges


def layer_of(module: str, layers: Mapping[str, int] = LAYERS) -> int | None:
    """The layer of the longest prefix of `module` in `layers` (dotted parts, not characters)."""
    name = module
    while name:
        if name in layers:
            return layers[name]
        name = name.rpartition(".")[0]
    return None


def circles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The graph's import circles: its strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:
        # Tarjan's algorithm, iterative: (node, its remaining successors) per frame.
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def upward(edges: Iterable[Edge], layers: Mapping[str, int]) -> list[str]:
    """Each import of a module of a higher layer, as a readable line."""
    found = set()
    for edge in edges:
        low, high = layer_of(edge.source, layers), layer_of(edge.target, layers)
        if low is not None and high is not None and high > low:
            found.add(f"{edge.source} (layer {low}) imports {edge.target} (layer {high}), line {edge.line}")
    return sorted(found)


def graph_of(edges: Iterable[Edge]) -> dict[str, set[str]]:
    """Module -> the modules it imports."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.target, set())
        graph.setdefault(edge.source, set()).add(edge.target)
    return graph


EDGES = import_edges(ROOT)


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in module_names(ROOT) if layer_of(m) is None)
    assert not missing, f"modules without a layer: {missing}; add each to LAYERS in tests/test_layering.py"


def test_no_import_circle() -> None:
    found = circles(graph_of(EDGES))
    assert not found, "import circles (lazy and TYPE_CHECKING imports count):\n" + "\n".join(
        " -> ".join(c) for c in found
    )


def test_no_module_imports_a_higher_layer() -> None:
    found = upward(EDGES, LAYERS)
    assert not found, "imports of a higher layer:\n" + "\n".join(found)


# -- the checker itself sees what it must ----------------------------------------------------------


def test_circles_are_found_in_a_small_graph() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_upward_edges_are_found_lazy_ones_too() -> None:
    layers = {"low": 0, "high": 1, "high.entry": 1}
    edges = [Edge("low", "high", 3, True), Edge("low", "high.entry", 9, False), Edge("high", "low", 1, True)]
    assert upward(edges, layers) == [
        "low (layer 0) imports high (layer 1), line 3",
        "low (layer 0) imports high.entry (layer 1), line 9",
    ]
    assert circles(graph_of(edges)) == [["high", "low"]]


def test_longest_prefix_decides_the_layer() -> None:
    assert layer_of("state") == 0 and layer_of("state.store") == 0
    assert layer_of("a.b.c", {"a": 0, "a.b": 2}) == 2 and layer_of("a.bc", {"a": 0, "a.b": 2}) == 0
    assert layer_of("providers.fal.realtime") == 2
    assert layer_of("realtime_backend") == 1 and layer_of("realtime.session") == 4
    assert layer_of("no_such_module") is None


def test_every_kind_of_import_is_an_edge(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("")
    (package / "other.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import leaf\n")
    (package / "sub" / "leaf.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import pkg.base\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.other import Thing\n"
        "def later():\n"
        "    from ..base import x\n"
        "    import pkg\n"
    )
    edges = {(e.source, e.target, e.eager) for e in import_edges(package, "pkg")}
    assert edges == {
        ("sub", "sub.leaf", True),
        ("sub.leaf", "base", True),
        ("sub.leaf", "other", False),
        ("sub.leaf", "base", False),
        ("sub.leaf", "__init__", False),
    }
