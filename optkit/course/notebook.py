"""Notebook plumbing shared by every lesson.

- :func:`setup` fixes seeds and threads and prints the hardware every figure is measured on.
- :func:`check_parameters` turns a wrong papermill parameter (unknown name, wrong type, value out
  of range) into one clear message instead of a confusing failure many cells later.
- :func:`explore` shows ipywidgets controls in JupyterLab and a static result under papermill
  or nbval, so one cell serves the learner who wants to play and the CI run that must not hang.
- :func:`headline` marks a figure as one of the notebook's headline results; the curriculum
  runner (:mod:`optkit.course.curriculum`) collects them into the run's summary page.

Taught in 00_measure_first (and used by every notebook).
"""
from __future__ import annotations

import ast
import difflib
import logging
import os
from typing import Any, Callable

from optkit.core.errors import OptkitError

__all__ = [
    "setup",
    "check_parameters",
    "validate_parameters",
    "is_static",
    "explore",
    "headline",
    "HEADLINE_KEY",
    "DECLARED_MARKER",
]

#: First line of every notebook's ``parameters`` cell. :func:`check_parameters` finds the
#: declared defaults by it; papermill's injected cell starts with ``# Parameters`` instead.
DECLARED_MARKER = "# Default parameters"
_INJECTED_MARKER = "# Parameters"
#: Key under which :func:`headline` stores its figure in an output's metadata.
HEADLINE_KEY = "optkit_headline"


def setup(threads: int | None = None, seed: int = 0, *, quiet: bool = False) -> dict:
    """Seed every generator, set torch's intra-op threads and print the machine.

    ``threads=None`` uses every core this process may run on. Returns
    :func:`optkit.core.bench.environment` so a notebook can store it with its records.
    """
    import random
    import warnings

    import numpy as np
    import torch

    from optkit.core import bench

    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise OptkitError("threads", threads, "must be a positive whole number",
                          "pass e.g. threads=2, or None for every core")
    torch.set_num_threads(threads)
    # torch.export's pytree code warns about its own internals on every export in torch 2.13;
    # it says nothing to a learner, so it is silenced here, narrowly, by its exact message.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # Inductor's int8 convolution lowering copies a tensor the old way (torch 2.13); same reasoning.
    warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning,
                            module=r"torch\._inductor\.mkldnn_lowerings")
    # torchao registers its Enum types with torch's pytree lazily, on first compile, and torch logs a
    # warning about its own registration API; a log record, not a Python warning, hence the logger.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:  # readable, reasonably small figures in the committed notebooks
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": 90, "figure.figsize": (7.0, 3.6),
                                    "axes.grid": True, "grid.alpha": 0.3})
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        pass
    env = bench.environment()
    if not quiet:
        print("Measured on:", bench.environment_line())
    return env


# --------------------------------------------------------------------------- parameters
def _assignments(source: str) -> dict[str, Any]:
    """Names assigned at top level of a cell, with their literal values (or ``...`` if not literal)."""
    out: dict[str, Any] = {}
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return out
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    try:
                        out[t.id] = ast.literal_eval(node.value)
                    except (ValueError, SyntaxError, TypeError):
                        out[t.id] = ...
    return out


def _type_ok(default: Any, given: Any) -> bool:
    if default is None or default is ...:
        return True
    if isinstance(default, bool):
        return isinstance(given, bool)
    if isinstance(default, int):
        return isinstance(given, int) and not isinstance(given, bool)
    if isinstance(default, float):
        return isinstance(given, (int, float)) and not isinstance(given, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(given, (list, tuple))
    return isinstance(given, type(default))


def validate_parameters(declared: dict[str, Any], given: dict[str, Any],
                        ranges: dict[str, tuple] | None = None,
                        choices: dict[str, list] | None = None) -> None:
    """Check papermill parameters ``given`` against the notebook's ``declared`` defaults.

    Raises :class:`OptkitError` for an unknown name (suggesting the nearest known one), a value
    whose type does not match the default's, a number outside ``ranges[name] = (low, high)``
    (either bound may be None) or a value not in ``choices[name]``.
    """
    for name, value in given.items():
        if name not in declared:
            near = difflib.get_close_matches(name, list(declared), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise OptkitError(
                name, value, "is not a parameter of this notebook",
                f"{hint}known parameters: {', '.join(sorted(declared))} "
                "(list them with `papermill --help-notebook NOTEBOOK`)")
        default = declared[name]
        if not _type_ok(default, value):
            raise OptkitError(
                name, value,
                f"has type {type(value).__name__} but the default {default!r} is a {type(default).__name__}",
                f"pass a {type(default).__name__}, e.g. `-p {name} {default!r}`"
                + (" (use -p, not -r, for numbers)" if isinstance(value, str) else ""))
    effective = {**declared, **given}
    for name, (low, high) in (ranges or {}).items():
        value = effective.get(name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is None or v is ...:
                continue
            if (low is not None and v < low) or (high is not None and v > high):
                lo = "-inf" if low is None else low
                hi = "inf" if high is None else high
                raise OptkitError(name, value, f"must lie in [{lo}, {hi}]",
                                  f"pass a value between {lo} and {hi}")
    for name, allowed in (choices or {}).items():
        value = effective.get(name)
        if value not in allowed:
            raise OptkitError(name, value, "is not one of the supported values",
                              "use one of " + ", ".join(repr(a) for a in allowed))


def check_parameters(ranges: dict[str, tuple] | None = None,
                     choices: dict[str, list] | None = None,
                     *, history: list[str] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Validate the parameters papermill injected into this notebook and print them.

    Call it in the cell right after the ``parameters`` cell (whose first line is
    ``# Default parameters``). It reads the cells this kernel executed (IPython's ``In``),
    finds the declared defaults and papermill's injected ``# Parameters`` cell, and raises one
    :class:`OptkitError` naming the parameter, the value and the fix if something is off.
    Returns the effective parameters as a dict; an empty dict, without checking, when no executed
    ``# Default parameters`` cell is in the history. Outside IPython, pass ``history`` yourself.
    """
    if history is None:
        try:
            from IPython import get_ipython

            ip = get_ipython()
        except ImportError:  # pragma: no cover - ipython ships with the notebooks extra
            ip = None
        history = list(ip.user_ns.get("In", [])) if ip is not None else []
    declared_at = max((i for i, src in enumerate(history) if src.lstrip().startswith(DECLARED_MARKER)),
                      default=None)
    if declared_at is None:
        # No history to read: the kernel does not store it (``pytest --nbval`` executes cells with
        # store_history=False) or the parameters cell was never run. Papermill and JupyterLab
        # both keep it, so there is nothing to validate here rather than something wrong.
        return {}
    declared = _assignments(history[declared_at])
    given: dict[str, Any] = {}
    for src in history[declared_at + 1:]:
        first = src.lstrip().splitlines()[0] if src.strip() else ""
        if first.strip() == _INJECTED_MARKER:
            given.update(_assignments(src))
    validate_parameters(declared, given, ranges, choices)
    effective = {name: given.get(name, default) for name, default in declared.items()}
    if not quiet:
        width = max((len(n) for n in effective), default=0)
        for name, value in effective.items():
            mark = "  (set by papermill)" if name in given else ""
            print(f"{name:<{width}} = {value!r}{mark}")
    return effective


# --------------------------------------------------------------------------- widgets
def is_static() -> bool:
    """True when widgets would not be seen: under papermill/nbval (``OPTKIT_STATIC=1``,
    which the curriculum runner and test command set) or when ipywidgets is missing."""
    if os.environ.get("OPTKIT_STATIC", "") == "1":
        return True
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return True
    try:
        from IPython import get_ipython

        ip = get_ipython()
    except ImportError:
        return True
    if ip is None or not hasattr(ip, "kernel"):
        return True
    # papermill leaves its injected cell in the history; a learner's session has none
    return any(src.lstrip().startswith(_INJECTED_MARKER + "\n") for src in ip.user_ns.get("In", []))


def _default_of(control: Any) -> Any:
    if hasattr(control, "value"):
        return control.value
    if isinstance(control, list) and control:
        first = control[0]
        return first[1] if isinstance(first, tuple) and len(first) == 2 else first
    if isinstance(control, tuple) and 2 <= len(control) <= 3 and all(
            isinstance(v, (int, float)) for v in control):
        lo, hi = control[0], control[1]
        mid = (lo + hi) / 2
        return type(lo)(mid) if isinstance(lo, int) and isinstance(hi, int) else mid
    return control


def explore(fn: Callable[..., Any], **controls: Any) -> Any:
    """Run ``fn`` behind ipywidgets controls in JupyterLab, or once with the defaults when static.

    ``controls`` are what :func:`ipywidgets.interact` accepts: widgets (their ``value`` is the
    default), lists of options (the first is the default), ``(min, max[, step])`` tuples (the
    middle is the default) or fixed values. Static runs call ``fn`` directly, so the cell's
    output in a committed notebook is the result at the defaults, and return its result;
    interactive runs return None (the controls and ``fn``'s output are already on screen).
    """
    if is_static():
        return fn(**{name: _default_of(c) for name, c in controls.items()})
    import ipywidgets

    ipywidgets.interact(fn, **controls)  # shows the controls and the output
    return None  # interact returns ``fn``; a cell ending in explore() would print its repr


# --------------------------------------------------------------------------- headlines
def _format_value(value: Any, fmt: str | None) -> str:
    if fmt:
        return format(value, fmt)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def headline(label: str, value: Any, unit: str = "", *, fmt: str | None = None, note: str = "") -> None:
    """Display one of the notebook's headline figures and tag it for the run summary.

    The figure is shown as a line of text; the same figure travels in the output's metadata
    (``optkit_headline``) where :mod:`optkit.course.curriculum` picks it up. Call it in the cell that
    measured the value, so every stated figure is printed by the cell that measured it.
    """
    text = f"★ {label}: {_format_value(value, fmt)}{(' ' + unit) if unit else ''}"
    if note:
        text += f"  ({note})"
    plain = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    try:
        from IPython.display import display

        display({"text/plain": text}, raw=True,
                metadata={HEADLINE_KEY: {"label": label, "value": plain, "unit": unit, "note": note}})
    except ImportError:  # pragma: no cover - outside IPython
        print(text)
