"""trioflow.adaptive is pure: it imports nothing from trio, nor from the rest of trioflow."""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

import trioflow.adaptive

# The package as imported (an installed wheel in CI's packaging job), not a path
# beside the tests: with no source tree there the list would be empty.
ADAPTIVE = pathlib.Path(trioflow.adaptive.__file__).parent
ALLOWED_THIRD_PARTY = {"attrs"}


@pytest.mark.parametrize("path", sorted(ADAPTIVE.glob("*.py")), ids=lambda p: p.name)
def test_adaptive_module_imports_only_stdlib_attrs_and_itself(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: must stay inside trioflow.adaptive
                assert node.level == 1, f"{path.name} reaches outside adaptive: {ast.unparse(node)}"
                continue
            roots = [node.module or ""]
        elif isinstance(node, ast.Import):
            roots = [alias.name for alias in node.names]
        else:
            continue
        for name in roots:
            root = name.split(".")[0]
            assert (
                root in sys.stdlib_module_names
                or root in ALLOWED_THIRD_PARTY
                or root == "__future__"
            ), f"{path.name} imports {name}"
