"""Old names kept for one release. The 0.2 redesign renamed functions and keywords to the naming
convention in docs/ARCHITECTURE.md; the old names go in 0.3.

- ``renamed(new_function, "old.name")`` is ``new_function`` with a ``DeprecationWarning`` that names
  its new home (``prune_global`` → ``prune_global_``);
- ``@renamed_keyword("old", "new")`` lets a function still take its old keyword
  (``target_sparsity=`` → ``sparsity=``, ``layers=`` → ``kinds=``), refusing both at once.
"""
from __future__ import annotations

import functools
import inspect
import warnings
from typing import Callable, TypeVar

from optkit.core.errors import OptkitError

F = TypeVar("F", bound=Callable)

__all__ = ["renamed", "renamed_keyword"]


def renamed(new: F, old: str) -> F:
    """``new`` under its 0.1 name ``old``, warning once per call site that the name changed."""
    where = f"{new.__module__}.{new.__qualname__}"

    @functools.wraps(new)
    def alias(*args, **kwargs):
        warnings.warn(f"{old} is now {where} (the old name goes in optkit 0.3)", DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)

    alias.__doc__ = f"Deprecated name of :func:`{where}`."
    return alias  # type: ignore[return-value]


def renamed_keyword(old: str, new: str, *, why: str = "") -> Callable[[F], F]:
    """Decorator: ``fn(..., old=value)`` is ``fn(..., new=value)`` with a ``DeprecationWarning``.

    Giving both (``new`` by keyword or by position) raises :class:`OptkitError`. ``why`` is added
    to the warning (e.g. what the old name meant).
    """

    def wrap(fn: F) -> F:
        position = list(inspect.signature(fn).parameters).index(new)  # ``new`` may come positionally
        where = f"{fn.__module__}.{fn.__qualname__}"

        @functools.wraps(fn)
        def call(*args, **kwargs):
            if old in kwargs:
                if new in kwargs or len(args) > position:
                    raise OptkitError(old, kwargs[old], f"is the old name of {new}, which is given too",
                                      f"pass only {new}=")
                warnings.warn(f"{where}({old}=...) is now {fn.__name__}({new}=...){': ' + why if why else ''} "
                              "(the old keyword goes in optkit 0.3)", DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return call  # type: ignore[return-value]

    return wrap
