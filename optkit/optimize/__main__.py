"""``python -m optkit.optimize``: the ``optkit optimize`` command, plus ``--make-reference``.

An entry point, not a module anyone imports, so it may reach the command line (``optkit.cli``).
"""
from __future__ import annotations

import sys

from optkit.optimize.reference import REFERENCE_DIR, make_reference


def main(argv: list[str] | None = None) -> int:
    """``python -m optkit.optimize [--make-reference [--overwrite] [--only cnn text keras]]``;
    anything else is the ``optkit optimize`` command (see :mod:`optkit.cli`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--make-reference":
        import argparse

        parser = argparse.ArgumentParser(prog="python -m optkit.optimize --make-reference")
        parser.add_argument("--make-reference", action="store_true")
        parser.add_argument("--overwrite", action="store_true")
        parser.add_argument("--only", nargs="*", default=None)
        parser.add_argument("--out", default=str(REFERENCE_DIR))
        args = parser.parse_args(argv)
        make_reference(args.out, overwrite=args.overwrite, only=args.only)
        return 0
    from optkit.cli import main as cli_main

    return cli_main(["optimize", *argv])


if __name__ == "__main__":
    sys.exit(main())
