"""The runtime's shape (issue 13): imports run one way, and each module stays small."""

from __future__ import annotations

import ast
import pathlib

import trioflow._pipeline

# The package that is imported (a clone, or an installed wheel in CI), not a
# path beside the tests: the sdist job runs these tests with no trioflow/ there.
PACKAGE = pathlib.Path(trioflow._pipeline.__file__).resolve().parent


def _imports(path: pathlib.Path) -> set[str]:
    """Sibling modules ``path`` imports (``from ._x import ...``), type-checking blocks included."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is not None:
                out.add(node.module)
            else:
                out.update(alias.name for alias in node.names)
    return out


def test_no_import_cycle_inside_the_pipeline_package() -> None:
    assert list(PACKAGE.glob("*.py")), PACKAGE
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py")}
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "active", f"import cycle: {' -> '.join([*path, node])}"
        state[node] = "active"
        for dep in sorted(graph.get(node, ())):
            visit(dep, [*path, node])
        state[node] = "done"
        order.append(node)

    for module in sorted(graph):
        visit(module, [])
    assert "_runtime" in order
    assert "_stage" in order
    # Tracing functions never see the runtime; stages never see the run.
    assert not graph["_telemetry"] & {"_runtime", "_stage", "_loops", "_pipeline"}
    assert not graph["_stage"] & {"_runtime", "_pipeline", "_loops"}


def test_no_module_over_about_500_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert max(sizes.values()) <= 520, sizes
