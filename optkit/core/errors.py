"""One error type for everything a user can get wrong.

Every message names the parameter, the value that was given, what is wrong with it and what to
do instead, so that a learner sees one readable line rather than a traceback from deep inside
torch or onnxruntime. Used by every optkit module; taught nowhere in particular.
"""
from __future__ import annotations

import os

__all__ = ["OptkitError", "check_choice", "check_int", "check_range", "check_callable", "check_path_exists",
           "check_destination"]


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OptkitError(ValueError):
    """A bad input: ``parameter=value: problem. Fix: what to do``.

    It subclasses ``ValueError`` so callers that already catch that keep working.
    """

    def __init__(self, parameter: str, value: object, problem: str, fix: str):
        self.parameter = parameter
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(f"{parameter}={_short(value)}: {problem}. Fix: {fix}")


def check_choice(parameter: str, value: object, choices) -> object:
    """Return ``value`` if it is one of ``choices``, else raise an :class:`OptkitError`."""
    choices = list(choices)
    if value not in choices:
        raise OptkitError(parameter, value, "is not a known choice",
                          "use one of " + ", ".join(repr(c) for c in choices))
    return value


def _interval(low, high, low_open: bool, high_open: bool) -> str:
    lo = "-inf" if low is None else low
    hi = "inf" if high is None else high
    return f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"


def check_int(parameter: str, value, low=None, high=None, *, allow_none: bool = False):
    """Return ``value`` as an ``int`` if it is a whole number in ``[low, high]``, else raise.

    ``bool`` is refused (``True`` is not a batch size); numpy integers are accepted. With
    ``allow_none=True``, ``None`` passes through (a setting left to the library's default).
    """
    import numbers

    if value is None and allow_none:
        return None
    hint = f"pass a whole number in {_interval(low, high, False, False)}" + (", or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptkitError(parameter, value, "must be a whole number", hint)
    if (low is not None and value < low) or (high is not None and value > high):
        raise OptkitError(parameter, value, f"is outside {_interval(low, high, False, False)}", hint)
    return int(value)


def check_range(parameter: str, value, low=None, high=None, *, low_open=False, high_open=False,
                allow_none: bool = False):
    """Return ``value`` if it is a finite number in the stated interval, else raise an :class:`OptkitError`.

    ``low_open``/``high_open`` exclude the end points (a sparsity is in ``[0, 1)``); with
    ``allow_none=True``, ``None`` passes through.
    """
    import math
    import numbers

    if value is None and allow_none:
        return None
    interval = _interval(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise OptkitError(parameter, value, "must be a number", f"pass an int or float in {interval}")
    bad = (
        (low is not None and (value <= low if low_open else value < low))
        or (high is not None and (value >= high if high_open else value > high))
    )
    if bad:
        raise OptkitError(parameter, value, f"is outside {interval}", f"pass a value in {interval}")
    return value


def check_callable(parameter: str, value, *, optional: bool = False, fix: str = "pass a function"):
    """Return ``value`` if it is callable (or ``None`` with ``optional=True``), else raise."""
    if optional and value is None:
        return None
    if not callable(value):
        raise OptkitError(parameter, value, "is not callable", fix)
    return value


def check_path_exists(parameter: str, path) -> "os.PathLike":
    """Return ``path`` as a :class:`pathlib.Path` if it exists, else raise an :class:`OptkitError`."""
    from pathlib import Path

    p = Path(path).expanduser()
    if not p.exists():
        hint = ""
        if p.parent.exists():
            near = sorted(q.name for q in p.parent.iterdir())[:8]
            hint = f" (the folder {str(p.parent)!r} holds: {', '.join(near) or 'nothing'})"
        raise OptkitError(parameter, str(path), "no such file or folder" + hint,
                          "check the path, or create the file first")
    return p


def check_destination(path, *, overwrite: bool = False, parameter: str = "path") -> "os.PathLike":
    """Check that an artifact may be written at ``path``; return it as an expanded ``Path``.

    Refuses an existing ``path`` unless ``overwrite=True`` (a user's model is never replaced by
    accident) and a ``path`` whose folder does not exist, each with one message naming
    ``parameter``, the value and the fix. Every writer in optkit calls this before writing.
    """
    from pathlib import Path

    p = Path(path).expanduser()
    if p.exists() and not overwrite:
        raise OptkitError(parameter, str(p), "already exists", "pass overwrite=True to replace it, or choose a new name")
    if not p.parent.is_dir():
        raise OptkitError(parameter, str(p), f"its folder {str(p.parent)!r} does not exist",
                          "create the folder first (Path(...).mkdir(parents=True))")
    return p
