"""Layers go one way: no product module imports a higher layer, route modules stand alone, no circles.

Read with ``ast`` from the sources (nothing is imported). Layers, low to high; a module may import its
own layer or lower ones:

    config, core → security → workflow → comfyui_client, backends → events → tasks → cluster → gateway → api
    → main, start

``cluster`` (several replicas through Redis and object storage) supplies implementations of the seams below
it (a ``TaskStore``, an ``EventBus``, a ``Backend``, the manager's placement) and so builds on tasks, events
and backends; it is wired by ``main`` and reached by gateway and api only through ``Services.extras``.

``emulator`` and ``tools`` are equipment, not product: product code never imports them, except
``start.py`` for ``--demo``. An import circle is reported with its modules in order (imports under
``if TYPE_CHECKING:`` are left out of circles: they never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS: list[set[str]] = [
    {"config", "core"},
    {"security"},
    {"workflow"},
    {"comfyui_client", "backends"},
    {"events"},
    {"tasks"},
    {"cluster"},
    {"gateway"},
    {"api"},
    {"main", "start"},
]
LAYER_OF = {top: index for index, tops in enumerate(LAYERS) for top in tops}
EQUIPMENT = {"emulator", "tools"}
ALLOWED_EQUIPMENT = {("start", "emulator.server")}  # python start.py --demo


@dataclass(frozen=True, slots=True)
class Import:
    importer: str
    imported: str
    line: int
    type_checking: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_files() -> Iterator[Path]:
    for top in LAYER_OF:
        if (ROOT / f"{top}.py").is_file():
            yield ROOT / f"{top}.py"
        elif (ROOT / top).is_dir():
            yield from sorted((ROOT / top).rglob("*.py"))


def known_modules() -> set[str]:
    tops = set(LAYER_OF) | EQUIPMENT
    found = set()
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in tops or (len(rel.parts) == 1 and rel.stem in tops):
            found.add(module_name(path))
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, modules: set[str], importer: str | None = None) -> list[Import]:
    """Project modules imported by one file (``from a import b`` counts as ``a.b`` when that is a module)."""
    importer = importer or module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_checking)
            return
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importer's package
                package = importer.split(".")[: -node.level] if not path.name == "__init__.py" else importer.split(".")
                base = ".".join([*package, base] if base else package)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]  # "api.routers.core.router" → the module it lives in
            if target and target != importer:
                found.append(Import(importer, target, getattr(node, "lineno", 0), type_checking))
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking)

    visit(tree, False)
    return found


def all_imports() -> list[Import]:
    modules = known_modules()
    return [imp for path in product_files() for imp in imports_of(path, modules)]


def top(module: str) -> str:
    return module.split(".", 1)[0]


def layer_violations(imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        importer, imported = top(imp.importer), top(imp.imported)
        where = f"{imp.importer} (line {imp.line}) imports {imp.imported}"
        if imported in EQUIPMENT:
            if (imp.importer, imp.imported) not in ALLOWED_EQUIPMENT:
                problems.append(f"{where}: {imported}/ is test and demo equipment, not product")
        elif LAYER_OF[imported] > LAYER_OF[importer]:
            problems.append(f"{where}: a higher layer ({imported} over {importer})")
        elif imp.importer.startswith("api.routers.") and imp.imported.startswith("api.routers."):
            problems.append(f"{where}: route modules do not import each other (shared code goes to gateway/)")
    return problems


def circles(imports: list[Import]) -> list[list[str]]:
    """Every import circle (strongly connected modules), each as a path that closes on itself."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.type_checking:
            graph.setdefault(imp.importer, set()).add(imp.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan; the graph is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            on_stack.difference_update(component)
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_module_imports_a_higher_layer_or_equipment() -> None:
    problems = layer_violations(all_imports())
    assert not problems, "\n".join(problems)


def test_no_import_circles() -> None:
    found = circles(all_imports())
    assert not found, "\n".join(" ↔ ".join(c) for c in found)


def test_every_product_package_has_a_layer() -> None:
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    unplaced = packages - set(LAYER_OF) - EQUIPMENT - {"tests", "bench"}
    assert not unplaced, f"packages without a layer: {sorted(unplaced)} (add them to LAYERS)"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from api.routers import core\n", "higher layer"),
        ("import emulator.server\n", "equipment"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gateway.services import Services\n", "higher"),
    ],
)
def test_the_checker_catches_upward_imports(tmp_path: Path, source: str, expected: str) -> None:
    path = tmp_path / "_layer_probe.py"
    path.write_text(source)
    problems = layer_violations(imports_of(path, known_modules(), "workflow._layer_probe"))
    assert len(problems) == 1 and expected in problems[0] and "workflow._layer_probe" in problems[0]


def test_the_checker_finds_circles() -> None:
    imports = [Import("a", "b", 1, False), Import("b", "c", 1, False), Import("c", "a", 1, False)]
    imports += [Import("c", "d", 1, False), Import("d", "c", 1, True)]  # TYPE_CHECKING only: no circle
    assert circles(imports) == [["a", "b", "c"]]
