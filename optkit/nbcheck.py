"""nbval's output check, applied to notebooks papermill has already executed.

``pytest --nbval`` starts a kernel and executes every notebook a second time just to compare
outputs. The curriculum is CPU-heavy, so the test command executes each notebook once, with
papermill, and this pytest plugin then runs nbval's own comparison (its ``# NBVAL_IGNORE_OUTPUT``
/ ``# NBVAL_CHECK_OUTPUT`` markers, ``--nbval-lax``, ``--nbval-sanitize-with`` file and the
outputs it never compares) between each *committed* notebook and papermill's fresh copy::

    pytest -p optkit.nbcheck --nbcheck-executed runs/test-X --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks/*.ipynb

A cell fails if papermill's copy holds an error, lacks the cell, or differs in a checked output.
``pytest --nbval`` still works unchanged for a full re-execution. Used by :mod:`optkit.curriculum`.
"""
from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest
from nbval.plugin import IPyNbCell, IPyNbFile, coalesce_streams

__all__ = ["ExecutedNotebook", "ExecutedCell"]


def pytest_addoption(parser):
    group = parser.getgroup("nbcheck", "compare committed notebooks with papermill-executed copies")
    group.addoption("--nbcheck-executed", default=None, metavar="DIR",
                    help="folder holding papermill's executed copies (same file names)")


def pytest_collect_file(file_path, parent):
    opt = parent.config.option
    if opt.nbcheck_executed and file_path.suffix == ".ipynb" and not (opt.nbval or opt.nbval_lax):
        return ExecutedNotebook.from_parent(parent, path=file_path)
    return None


def _code_cells(nb) -> list:
    """Code cells, without the parameters papermill injected."""
    return [c for c in nb.cells if c.cell_type == "code"
            and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


class ExecutedNotebook(IPyNbFile):
    """A committed notebook whose cells are checked against papermill's executed copy."""

    def setup(self):  # no kernel: the outputs come from the executed copy
        self.setup_sanitize_files()
        executed = Path(self.config.option.nbcheck_executed) / self.path.name
        if not executed.exists():
            raise FileNotFoundError(f"{executed} does not exist: run papermill into "
                                    f"{self.config.option.nbcheck_executed} first")
        self.executed_cells = _code_cells(nbformat.read(str(executed), as_version=4))

    def collect(self):
        for item in super().collect():
            yield ExecutedCell.from_parent(self, name=item.name, cell_num=item.cell_num, cell=item.cell,
                                           options=item.options)

    def teardown(self):
        pass


class ExecutedCell(IPyNbCell):
    """One code cell: no error in papermill's run, and nbval's comparison of checked outputs."""

    def runtest(self):
        if self.options["skip"]:
            pytest.skip()
        cells = self.parent.executed_cells
        if self.cell_num >= len(cells):
            self.raise_cell_error("the executed copy has fewer code cells than the committed notebook")
        executed = cells[self.cell_num]
        if executed.source != self.cell.source:
            self.raise_cell_error("the executed copy's source differs: re-run papermill on this notebook")
        outs = coalesce_streams(copy.deepcopy(list(executed.get("outputs", []))))
        errors = [o for o in outs if o.get("output_type") == "error"]
        if errors and not self.options["check_exception"]:
            err = errors[0]
            self.raise_cell_error("Cell execution caused an exception",
                                  f"{err.get('ename')}: {err.get('evalue')}")
        unrun = self.cell.execution_count is None
        if unrun and self.cell.outputs:
            self.raise_cell_error("Unrun reference cell has outputs")
        if self.options["check"] and not unrun:
            if not self.compare_outputs(outs, coalesce_streams(self.cell.outputs)):
                self.raise_cell_error("Cell outputs differ", "\n".join(self.comparison_traceback))
