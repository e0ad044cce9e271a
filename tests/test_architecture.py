"""The package's shape, checked: layers that import only downward, a framework-free core, no
import cycles, no module over its size budget, and no use of the 0.1 flat import paths.

docs/ARCHITECTURE.md draws the layers. Every import of an optkit module counts here, including
imports inside functions (how the upper layers reach optional frameworks lazily): a lazy import
that goes up a layer is still a dependency that goes up.
"""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import optkit
from optkit import _compat

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "optkit"
LAYERS = optkit.LAYERS  # ("core", "data", "techniques", "runtimes", "serve", "optimize", "course")
FRAMEWORKS = ("torch", "tensorflow", "onnxruntime", "onnx", "tf_keras", "ray")
#: modules allowed over the line budget, each with the reason (none today)
LONG_MODULES: dict[str, str] = {}
MAX_LINES = 650


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int | None:
    """Index of the layer a dotted optkit module belongs to; None for optkit itself, cli, _compat."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Dotted optkit modules that ``path`` imports (resolved to modules, not names in them)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base != "optkit" and not base.startswith("optkit."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES or sub.split(".")[-1] in _compat.MOVED else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("optkit.")}
    return found


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) is not None))
def test_each_layer_imports_only_from_the_layers_before_it(module):
    mine = _layer(module)
    for dep in _imports(MODULES[module]):
        theirs = _layer(dep)
        if theirs is None:
            entry_point = module.endswith(".__main__") and dep == "optkit.cli"  # `python -m` may call the CLI
            assert dep == "optkit" or entry_point, f"{module} imports {dep}: cli is a leaf, _compat is for old code"
            continue
        assert theirs <= mine, (f"{module} (layer {LAYERS[mine]}) imports {dep} (layer {LAYERS[theirs]}): "
                                f"a layer may import only from {', '.join(LAYERS[:mine + 1])}")


def test_nothing_imports_the_cli():
    for module, path in MODULES.items():
        if module not in ("optkit.cli", "optkit.optimize.__main__"):
            assert "optkit.cli" not in _imports(path), f"{module} imports optkit.cli (the command line is a leaf)"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) == 0 or m == "optkit"))
def test_core_imports_no_framework(module):
    code = (f"import sys, {module}; "
            f"bad = [m for m in {FRAMEWORKS!r} if m in sys.modules]; assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"{module} imports a framework at import time: {res.stderr[-500:]}"


def test_module_level_imports_form_no_cycle():
    graph = {m: {d for d in _imports(p, top_level_only=True) if d in MODULES} - {m} for m, p in MODULES.items()}
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


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_under_the_line_budget(module):
    lines = MODULES[module].read_text().count("\n")
    if module in LONG_MODULES:
        pytest.skip(f"{module} is allowed {lines} lines: {LONG_MODULES[module]}")
    assert lines <= MAX_LINES, f"{module} has {lines} lines (budget {MAX_LINES}): split it along its jobs"


def _our_python_files():
    for folder in ("optkit", "tests", "tools", "notebooks/src"):
        yield from (ROOT / folder).rglob("*.py")


def test_no_code_of_ours_uses_the_old_flat_paths():
    old = {f"optkit.{name}" for name in _compat.MOVED}
    for path in _our_python_files():
        if path.name == "_compat.py":
            continue
        used = {d for d in _imports(path) if d in old}
        assert not used, f"{path.relative_to(ROOT)} imports {sorted(used)}: use the new paths ({_compat.MOVED})"


def test_old_paths_still_import_the_same_module_with_a_warning():
    from optkit.techniques import quantize
    code = ("import warnings, sys; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import optkit.quantize\nexcept DeprecationWarning as e:\n    print('warned:', e)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "warned: optkit.quantize moved to optkit.techniques.quantize" in res.stdout, res.stderr[-500:]
    sys.modules.pop("optkit.onnx", None)
    with pytest.warns(DeprecationWarning, match="optkit.onnx moved to optkit.runtimes.onnxrt"):
        old_onnx = importlib.import_module("optkit.onnx")
        from optkit.runtimes import onnxrt
    assert old_onnx is onnxrt
    assert old_onnx.__spec__.name == "optkit.runtimes.onnxrt"
    assert quantize.__name__ == "optkit.techniques.quantize"


MAX_FUNCTION_LINES = 80  # lines of code: the docstring does not count
LONG_FUNCTION_MARK = "long-function:"  # a comment near the def saying why this one stays long


def _long_functions(path: Path):
    source = path.read_text()
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
                    and isinstance(first.value.value, str):
                length -= first.end_lineno - first.lineno + 1  # a docstring is not code
            head = "\n".join(lines[node.lineno - 1: node.lineno + 25])
            if length > MAX_FUNCTION_LINES and LONG_FUNCTION_MARK not in head:
                yield f"{node.name} ({length} lines)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_stay_short_or_say_why(module):
    if module in LONG_MODULES:
        pytest.skip(f"{module}: {LONG_MODULES[module]}")
    long = list(_long_functions(MODULES[module]))
    assert not long, (f"{module}: {', '.join(long)} over {MAX_FUNCTION_LINES} lines: split, or add a "
                      f"'# {LONG_FUNCTION_MARK} <reason>' comment in the function's first lines")
