"""Checkers for the notebooks' exercises: one module per notebook (``nb00`` for 00_measure_first,
``nb02`` for 02_quantization, ...).

Each ``check_*`` function runs a learner's answer on hand-made cases, prints ``✓`` or a ``✗`` line
saying what went wrong with a hint, and returns True or False. They never raise on a wrong answer,
so a notebook with unanswered exercises still runs to the end under papermill. ``reference_*``
functions are solutions to compare with after trying. This module holds what they share.

Taught in every notebook's closing "Exercises" section.
"""
from __future__ import annotations

from typing import Any, Callable

__all__: list[str] = []


def _report(ok: bool, message: str) -> bool:
    print(("✓ " if ok else "✗ ") + message)
    return ok


def _try(fn: Callable, *args) -> tuple[Any, str | None]:
    try:
        return fn(*args), None
    except NotImplementedError:
        return None, "is not written yet (it raised NotImplementedError)"
    except Exception as exc:  # a learner's bug: show it, do not crash the notebook
        return None, f"raised {type(exc).__name__}: {exc}"
