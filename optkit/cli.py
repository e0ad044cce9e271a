"""The ``optkit`` command.

``optkit curriculum run|test`` runs the notebooks (see :mod:`optkit.curriculum`). The capstone's
``optkit optimize`` joins it in notebook 10.
"""
from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print("usage: optkit curriculum {run,test} [options]\n\n"
              "  curriculum run   execute every notebook into runs/<time>/ with a summary page\n"
              "  curriculum test  unit tests, papermill of every notebook, nbval")
        return 0
    if argv[0] == "curriculum":
        from .curriculum import main as curriculum_main

        return curriculum_main(argv[1:])
    print(f"optkit: unknown command {argv[0]!r}; known: curriculum (see `optkit --help`)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
