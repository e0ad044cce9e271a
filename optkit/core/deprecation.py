"""Old names kept for one release: ``renamed(new_function, "old_name")`` is ``new_function`` with
a ``DeprecationWarning`` that names its new home. The 0.2 redesign renamed functions to the
naming convention in docs/ARCHITECTURE.md; the old names go in 0.3.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

__all__ = ["renamed"]


def renamed(new: F, old: str) -> F:
    """``new`` under its 0.1 name ``old``, warning once per call site that the name changed."""
    where = f"{new.__module__}.{new.__qualname__}"

    @functools.wraps(new)
    def alias(*args, **kwargs):
        warnings.warn(f"{old} is now {where} (the old name goes in optkit 0.3)", DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)

    alias.__doc__ = f"Deprecated name of :func:`{where}`."
    return alias  # type: ignore[return-value]
