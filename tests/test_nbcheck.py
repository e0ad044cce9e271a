"""optkit.nbcheck: nbval's comparison applied to papermill's executed copies."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def _nb(cells):
    nb = nbformat.v4.new_notebook()
    for i, (src, text) in enumerate(cells, start=1):
        cell = nbformat.v4.new_code_cell(src)
        cell.execution_count = i
        if text is not None:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.cells.append(cell)
    return nb


def _check(tmp_path: Path, committed, executed) -> subprocess.CompletedProcess:
    (tmp_path / "run").mkdir()
    nbformat.write(_nb(committed), str(tmp_path / "lesson.ipynb"))
    nbformat.write(_nb(executed), str(tmp_path / "run" / "lesson.ipynb"))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "optkit.nbcheck",
                           "--nbcheck-executed", str(tmp_path / "run"), "lesson.ipynb"],
                          cwd=tmp_path, capture_output=True, text=True)


TIMING = "# NBVAL_IGNORE_OUTPUT\nprint(t)"


def test_matching_checked_output_and_differing_ignored_output_pass(tmp_path):
    res = _check(tmp_path, [("print(1)", "1\n"), (TIMING, "3.1 ms\n")],
                 [("print(1)", "1\n"), (TIMING, "2.7 ms\n")])
    assert res.returncode == 0, res.stdout
    assert "2 passed" in res.stdout


def test_differing_checked_output_fails_with_the_difference(tmp_path):
    res = _check(tmp_path, [("print(acc)", "accuracy 91.19 %\n")], [("print(acc)", "accuracy 90.02 %\n")])
    assert res.returncode == 1
    assert "Cell outputs differ" in res.stdout and "90.02" in res.stdout


def test_error_in_the_executed_copy_fails_even_in_an_ignored_cell(tmp_path):
    (tmp_path / "run").mkdir()
    committed = _nb([(TIMING, "3 ms\n")])
    executed = _nb([(TIMING, None)])
    executed.cells[0].outputs = [nbformat.v4.new_output("error", ename="OptkitError", evalue="threads=0: bad",
                                                        traceback=[])]
    nbformat.write(committed, str(tmp_path / "lesson.ipynb"))
    nbformat.write(executed, str(tmp_path / "run" / "lesson.ipynb"))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "optkit.nbcheck",
                          "--nbcheck-executed", str(tmp_path / "run"), "lesson.ipynb"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 1 and "OptkitError: threads=0: bad" in res.stdout


def test_changed_source_is_reported(tmp_path):
    res = _check(tmp_path, [("print(1)", "1\n")], [("print(2)", "1\n")])
    assert res.returncode == 1 and "source differs" in res.stdout
