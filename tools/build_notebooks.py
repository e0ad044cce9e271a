"""Build notebooks/NN_*.ipynb from their readable sources in notebooks/src/NN_*.py.

The sources use the "percent" format: a line ``# %%`` starts a code cell, ``# %% [markdown]``
a markdown cell (its lines are comments), and ``# %% tags=["parameters"]`` tags a cell.
Building writes an unexecuted notebook; ``make notebooks`` then executes it with papermill so
the committed copy holds the outputs of a real run.

    python tools/build_notebooks.py [NN ...]
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "notebooks" / "src"
HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def parse(text: str) -> list:
    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(re.sub(r"^# ?", "", ln) for ln in body.splitlines())
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell(body)
        if tags:
            cell.metadata["tags"] = tags
        cells.append(cell)

    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            flush()
            kind = "markdown" if m.group("md") else "code"
            tags = json.loads(m.group("tags")) if m.group("tags") else []
            lines = []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def build(src: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = parse(src.read_text())
    nb.metadata["kernelspec"] = {"name": "optkit", "display_name": "Python (optkit)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    out = ROOT / "notebooks" / (src.stem + ".ipynb")
    nbformat.write(nb, str(out))
    return out


if __name__ == "__main__":
    wanted = sys.argv[1:]
    for src in sorted(SRC.glob("[0-9][0-9]_*.py")):
        if not wanted or any(src.stem.startswith(w) for w in wanted):
            print("built", build(src).relative_to(ROOT))
