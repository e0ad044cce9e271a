"""Progress bars for long loops, silent where nobody watches.

:func:`bar` wraps :mod:`tqdm` (``tqdm.auto``: a widget in JupyterLab, text in a terminal). Under
papermill and nbval (``OPTKIT_STATIC=1``, set by the curriculum runner and the test command) and
when ``enabled`` is False it returns a no-op bar, so a committed notebook never holds a frozen
"0%|" line that differs from run to run.

Taught in 00_measure_first (and used by every long loop in the package).
"""
from __future__ import annotations

import os
from typing import Any, Iterable

__all__ = ["bar", "shown"]


def shown(enabled: bool = True) -> bool:
    """True when a progress bar would be seen: ``enabled`` and not a static (papermill/nbval) run."""
    return bool(enabled) and os.environ.get("OPTKIT_STATIC", "") != "1"


class _Silent:
    """A bar that draws nothing; iterates its iterable and accepts tqdm's calls."""

    def __init__(self, iterable: Iterable | None = None) -> None:
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable if self._iterable is not None else ())

    def set_description(self, text: str, refresh: bool = True) -> None:
        pass

    def set_postfix(self, *args: Any, **kw: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def bar(iterable: Iterable | None = None, *, enabled: bool = True, **kw: Any):
    """A tqdm bar over ``iterable`` (or with ``total=``), or a silent one (see the module docstring).

    ``kw`` goes to tqdm (``total``, ``desc``, ``leave`` ...).
    """
    if not shown(enabled):
        return _Silent(iterable)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return _Silent(iterable)
    return tqdm(iterable, **kw)
