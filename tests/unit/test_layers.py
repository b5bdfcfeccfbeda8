"""The package's import graph: no cycle, and every import points down the layers (docs/contributing.md shows them)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import duckreg

ROOT = Path(duckreg.__file__).parent

# Each module may import only from its own layer or lower ones (the README's Layout section).
LAYERS: list[tuple[str, ...]] = [
    (  # 0: leaves
        "duckreg.identifiers", "duckreg.values", "duckreg.faults", "duckreg.model_signature", "duckreg.custom",
        "duckreg.huggingface", "duckreg.batch.specs", "duckreg.duckdb_ext.snowflake_syntax",
        "duckreg.openai_signatures", "duckreg.function_spec", "duckreg.artifacts", "duckreg.model_cache",
        "duckreg.result_cache", "duckreg.interrupts", "duckreg.row_errors", "duckreg.store",
        "duckreg.tables", "duckreg.batch.layout", "duckreg.threaded_server",
    ),
    ("duckreg.tasks", "duckreg.catalog", "duckreg.stages", "duckreg.inference_engines"),
    ("duckreg.model_handlers", "duckreg.duckdb_ext.names", "duckreg.duckdb_ext.types", "duckreg.duckdb_ext.extensions"),
    ("duckreg.inference",),
    (
        "duckreg.pandas_io", "duckreg.jobs", "duckreg.duckdb_ext.functions", "duckreg.duckdb_ext.stage_functions",
        "duckreg.duckdb_ext.connections", "duckreg.batch.plan", "duckreg.batch.inputs", "duckreg.batch.executors",
        "duckreg.request_batching",
    ),
    ("duckreg.batch.submit",),
    ("duckreg.registry",),
    ("duckreg", "duckreg.duckdb_ext.statements", "duckreg.cli", "duckreg.dbt", "duckreg.batch", "duckreg.duckdb_ext",
     "duckreg.shell", "duckreg.serve", "duckreg.harlequin_adapter", "duckreg.ui", "duckreg.http_server"),
]  # fmt: skip


def module_names() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ["duckreg", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for child in ast.walk(node)}
    return skipped


def imports(module: str, path: Path, known: dict[str, Path], *, for_typing: bool = False) -> Iterator[str]:
    """The duckreg modules ``module`` imports at run time (top-level and deferred), and with ``for_typing``
    also those it imports for type hints only (``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    skipped = set() if for_typing else _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            yield from submodules
            if len(submodules) < len(node.names) and base in known:
                yield base


def graph(*, for_typing: bool = False) -> dict[str, set[str]]:
    known = module_names()
    return {
        module: set(imports(module, path, known, for_typing=for_typing)) - {module} for module, path in known.items()
    }


def layer_of(module: str) -> int:
    """A module's layer: that of the longest listed name it is, or lies under."""
    best, layer = "", None
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, layer = name, index
    assert layer is not None, f"{module} is in no layer: add it to LAYERS (the contributing page shows them)"
    return layer


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_even_through_type_hints() -> None:
    """A loop closed by ``TYPE_CHECKING`` imports is still two modules that cannot be understood apart."""
    assert cycles(graph()) == []
    assert cycles(graph(for_typing=True)) == []


def test_every_import_points_down_the_layers() -> None:
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_no_module_imports_another_packages_private_names() -> None:
    offenders = []
    for module, path in module_names().items():
        package = module.rpartition(".")[0] if path.name != "__init__.py" else module
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("duckreg"):
                source_package = node.module.rpartition(".")[0]
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                if private and not (source_package == package or node.module == package):
                    offenders.append(f"{module}: from {node.module} import {private}")
    assert offenders == []


def test_the_checks_see_a_cycle_and_an_upward_import() -> None:
    edges = graph()
    edges["duckreg.identifiers"] = {"duckreg.registry.registry"}
    assert any("duckreg.identifiers" in component for component in cycles(edges))
    assert layer_of("duckreg.registry.registry") > layer_of("duckreg.identifiers")
