"""The package's shape, checked: a framework-free core, and no import cycles at module level.

docs/ARCHITECTURE.md describes the layers. The core (errors, files, quiet, formats, record,
report, bench, verify) must import without torch, TensorFlow or ONNX Runtime, so that tables,
records and timing work in any environment and ``import optkit`` stays quick; and the modules'
top-level imports must form no cycle, so that each can be read (and moved into its layer) on its
own. Imports inside functions are how the upper layers reach optional frameworks lazily; they
are not counted.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "optkit"
CORE = ("errors", "files", "quiet", "formats", "record", "report", "bench", "verify")
FRAMEWORKS = ("torch", "tensorflow", "onnxruntime", "onnx", "tf_keras", "ray")


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_no_framework(module):
    code = (f"import sys, optkit.{module}; "
            f"bad = [m for m in {FRAMEWORKS!r} if m in sys.modules]; assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"optkit.{module} imports a framework at import time: {res.stderr[-500:]}"


def _top_level_imports(path: Path) -> set[str]:
    """optkit modules that ``path`` imports at module level (not inside functions or classes)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks import nothing at run time
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1:  # from .x import y / from . import x
                names = [base] if base else [a.name for a in node.names]
            elif base.startswith("optkit."):
                names = [base.split(".", 1)[1]]
            elif base == "optkit":
                names = [a.name for a in node.names]
            else:
                continue
            found |= {n.split(".")[0] for n in names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("optkit.")}
    return {m for m in found if (PACKAGE / f"{m}.py").exists()}


def test_module_level_imports_form_no_cycle():
    graph = {p.stem: _top_level_imports(p) - {p.stem} for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle at module level: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_core_modules_import_only_core_at_module_level():
    for module in CORE:
        outside = _top_level_imports(PACKAGE / f"{module}.py") - set(CORE)
        assert not outside, f"optkit.{module} (core) imports {sorted(outside)} at module level"
