"""optkit.course.nbcheck: nbval's comparison applied to papermill's executed copies."""
from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest_plugins = ["pytester"]


def _nb(cells):
    nb = nbformat.v4.new_notebook()
    for i, (src, text) in enumerate(cells, start=1):
        cell = nbformat.v4.new_code_cell(src)
        cell.execution_count = i
        if text is not None:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.cells.append(cell)
    return nb


def _run(pytester: pytest.Pytester, committed, executed, *, sanitize: Path | None = None,
         name: str = "lesson.ipynb") -> subprocess.CompletedProcess:
    """Write ``committed`` and papermill's ``executed`` copy (notebooks), run the nbcheck plugin.

    In this process (pytester), not a fresh interpreter: each run then costs the check, not
    another start-up of Python, pytest and nbval. The result reads like ``subprocess.run``'s.
    """
    root = pytester.path
    (root / "run").mkdir()
    nbformat.write(committed, str(root / name))
    nbformat.write(executed, str(root / "run" / name))
    extra = ["--nbval-sanitize-with", str(sanitize)] if sanitize else []
    args = ["-q", "-p", "no:cacheprovider", "-p", "optkit.course.nbcheck", "--nbcheck-executed", str(root / "run"),
            *extra, name]
    res = pytester.runpytest_inprocess(*args)
    return subprocess.CompletedProcess(args, int(res.ret), "\n".join(res.outlines), "\n".join(res.errlines))


def _check(pytester: pytest.Pytester, committed, executed, *,
           sanitize: Path | None = None) -> subprocess.CompletedProcess:
    return _run(pytester, _nb(committed), _nb(executed), sanitize=sanitize)


TIMING = "# NBVAL_IGNORE_OUTPUT\nprint(t)"


def test_matching_checked_output_and_differing_ignored_output_pass(pytester):
    res = _check(pytester, [("print(1)", "1\n"), (TIMING, "3.1 ms\n")],
                 [("print(1)", "1\n"), (TIMING, "2.7 ms\n")])
    assert res.returncode == 0, res.stdout
    assert "2 passed" in res.stdout


def test_differing_checked_output_fails_with_the_difference(pytester):
    res = _check(pytester, [("print(acc)", "accuracy 91.19 %\n")], [("print(acc)", "accuracy 90.02 %\n")])
    assert res.returncode == 1
    assert "Cell outputs differ" in res.stdout and "90.02" in res.stdout


def test_error_in_the_executed_copy_fails_even_in_an_ignored_cell(pytester):
    executed = _nb([(TIMING, None)])
    executed.cells[0].outputs = [nbformat.v4.new_output("error", ename="OptkitError", evalue="threads=0: bad",
                                                        traceback=[])]
    res = _run(pytester, _nb([(TIMING, "3 ms\n")]), executed)
    assert res.returncode == 1 and "OptkitError: threads=0: bad" in res.stdout


def test_changed_source_is_reported(pytester):
    res = _check(pytester, [("print(1)", "1\n")], [("print(2)", "1\n")])
    assert res.returncode == 1 and "source differs" in res.stdout


# ---------------------------------------------------------------- portable comparison (issue: make test on any CPU)
SANITIZE = ROOT / "notebooks" / "nbval_sanitize.cfg"


ACC = "# NBCHECK_APPROX accuracy\nprint(summary)"


def test_last_digits_of_float_results_machine_lines_and_timings_pass(pytester):
    committed = [("notebook.setup()", "Measured on: AMD EPYC, 2 cores, AVX-512 VNNI; torch 2.13.0, 2 threads\n"),
                 (ACC, "fine-tuned: 91.47 %  (696,042 parameters, drop −1.33 points)\n"),
                 ("# NBCHECK_APPROX sqnr\nprint(s)", "int8 SQNR 121.6 dB\n"),
                 ("# NBCHECK_APPROX size\nprint(g)", "gzip: 786,455 B\n"),
                 ("# NBCHECK_APPROX error\nprint(e)", "max abs error 8.6e-06: parity ok\n"),
                 (TIMING, "3.1 ms\n")]
    executed = [("notebook.setup()", "Measured on: Intel Xeon, 2 cores, AMX; torch 2.13.0, 2 threads\n"),
                (ACC, "fine-tuned: 91.48 %  (696,042 parameters, drop −1.26 points)\n"),
                ("# NBCHECK_APPROX sqnr\nprint(s)", "int8 SQNR 122.7 dB\n"),
                ("# NBCHECK_APPROX size\nprint(g)", "gzip: 786,454 B\n"),
                ("# NBCHECK_APPROX error\nprint(e)", "max abs error 1.1e-05: parity ok\n"),
                (TIMING, "2.7 ms\n")]
    res = _check(pytester, committed, executed, sanitize=SANITIZE)
    assert res.returncode == 0, res.stdout
    assert "6 passed" in res.stdout


def test_a_changed_parameter_count_fails_even_in_a_cell_with_tolerances(pytester):
    res = _check(pytester, [(ACC, "91.47 % with 696,042 parameters\n")], [(ACC, "91.47 % with 696,043 parameters\n")])
    assert res.returncode == 1
    assert "696,042 became 696,043" in res.stdout and "exact" in res.stdout


def test_an_accuracy_beyond_its_tolerance_fails_and_names_the_rule(pytester):
    res = _check(pytester, [(ACC, "accuracy 91.47 %\n")], [(ACC, "accuracy 89.90 %\n")])
    assert res.returncode == 1
    assert "91.47 became 89.90" in res.stdout and "accuracy: ±0.5" in res.stdout


def test_a_float_in_a_cell_without_a_marker_is_exact(pytester):
    res = _check(pytester, [("print(a)", "accuracy 91.47 %\n")], [("print(a)", "accuracy 91.48 %\n")])
    assert res.returncode == 1 and "91.47 became 91.48" in res.stdout


def test_a_flipped_exercise_verdict_fails(pytester):
    res = _check(pytester, [(ACC, "✓ exercise 2: correct (91.2 %)\n")],
                 [(ACC, "✗ exercise 2: not yet (91.2 %)\n")])
    assert res.returncode == 1 and "text around the numbers differs" in res.stdout


def test_a_target_flipping_from_met_to_missed_fails(pytester):
    res = _check(pytester, [(ACC, "target: size ratio ≥ 3.5x: 3.87x met\n")],
                 [(ACC, "target: size ratio ≥ 3.5x: 3.87x MISSED\n")])
    assert res.returncode == 1 and "text around the numbers differs" in res.stdout


def test_a_printed_traceback_fails_even_in_an_ignored_cell(pytester):
    tb = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad\n"
    executed = _nb([(TIMING, "3 ms\n")])
    executed.cells[0].outputs.append(nbformat.v4.new_output("stream", name="stderr", text=tb))
    res = _run(pytester, _nb([(TIMING, "3 ms\n")]), executed)
    assert res.returncode == 1 and "printed a Python traceback" in res.stdout


def test_tables_may_re_pad_columns_when_a_value_gains_a_digit(pytester):
    ref = "variant   acc\nfp32     9.99\nint8     9.98\n"
    new = "variant    acc\nfp32     10.01\nint8      9.98\n"
    res = _check(pytester, [(ACC, ref)], [(ACC, new)])
    assert res.returncode == 0, res.stdout


def test_an_unknown_tolerance_kind_is_reported():
    from optkit.course import nbcheck

    try:
        nbcheck.approx_kinds("# NBCHECK_APPROX acuracy\nprint(1)")
    except ValueError as exc:
        assert "'acuracy' is not a tolerance kind" in str(exc) and "accuracy" in str(exc)
    else:
        raise AssertionError("an unknown kind must raise")


def test_tolerance_rules():
    from optkit.course.nbcheck import TOLERANCES, compare_text

    acc, size, err = TOLERANCES["accuracy"], TOLERANCES["size"], TOLERANCES["error"]
    assert compare_text("91.47 %", "91.9 %", [acc]) == []
    assert compare_text("91.47 %", "92.0 %", [acc])
    assert compare_text("1000 B", "1009 B", [size]) == [] and compare_text("1000 B", "1020 B", [size])
    assert compare_text("err 8e-06", "err 7e-05", [err]) == []  # both below the floor
    assert compare_text("err 0.02", "err 0.5", [err])  # above the floor and 25x apart
    # whole numbers stay exact under a float kind, and every kind states why it is as wide as it is
    assert compare_text("10 images, 91.5 %", "11 images, 91.5 %", [acc])
    assert all(len(t.why) > 40 for t in TOLERANCES.values())


def test_a_verdict_may_flip_only_in_a_cell_that_says_it_follows_a_measured_float(pytester):
    ref = "T=2: +1.25 (95 % CI [+0.19, +2.30]): outside the noise\n"
    new = "T=2: +1.11 (95 % CI [-0.24, +2.46]): inside the noise\n"
    cell = "# NBCHECK_APPROX interval verdict\nprint(d)"
    res = _check(pytester, [(cell, ref)], [(cell, new)])
    assert res.returncode == 0, res.stdout
    from optkit.course.nbcheck import TOLERANCES, compare_text

    problems = compare_text(ref, new, [TOLERANCES["interval"]])  # same numbers, no `verdict`: fails
    assert problems and "outside the noise" in problems[0] and "inside the noise" in problems[0]


def test_identical_to_float_precision_counts_as_equal_and_units_narrow_a_kind():
    from optkit.course.nbcheck import TOLERANCES, compare_text

    sqnr, int8 = TOLERANCES["sqnr"], TOLERANCES["int8"]
    assert compare_text("SQNR inf dB, max |diff| 0", "SQNR 168.6 dB, max |diff| 2.86e-06",
                        [sqnr, TOLERANCES["error"]]) == []
    assert compare_text("SQNR inf dB", "SQNR 60.0 dB", [sqnr])  # 60 dB is a real quantization error
    # int8's 2 points apply to percentages only: a plain fraction in the same cell stays exact
    assert compare_text("acc 74.2 %, cosine 0.980", "acc 75.8 %, cosine 0.980", [int8]) == []
    assert compare_text("acc 74.2 %, cosine 0.980", "acc 74.2 %, cosine 0.945", [int8])


# ---------------------------------------------------------------- the same check on a real committed notebook
def _check_real(pytester: pytest.Pytester, edit) -> subprocess.CompletedProcess:
    """nbcheck of the committed 00 against a copy of itself changed by ``edit(code_cells)``."""
    committed = ROOT / "notebooks" / "00_measure_first.ipynb"
    nb = nbformat.read(str(committed), as_version=4)
    executed = nbformat.read(str(committed), as_version=4)
    edit([c for c in executed.cells if c.cell_type == "code"])
    return _run(pytester, nb, executed, sanitize=SANITIZE, name=committed.name)


def _edit_text(cell, old: str, new: str) -> None:
    for out in cell.outputs:
        if out.output_type == "stream" and old in out.text:
            out.text = out.text.replace(old, new)
            return
        if "data" in out and old in out.data.get("text/plain", ""):
            out.data["text/plain"] = out.data["text/plain"].replace(old, new)
            return
    raise AssertionError(f"{old!r} not in the cell's outputs")


def _another_machine(cells) -> None:
    """What another CPU changes: every timing, the machine line, last digits of a trained accuracy."""
    import re

    for cell in cells:
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = re.sub(r"Measured on: [^\n]*", "Measured on: Intel Xeon (AMX), 2 cores, no GPU", out.text)
                if "NBVAL_IGNORE_OUTPUT" in cell.source:
                    out.text = re.sub(r"\d+\.\d+", "9.99", out.text)
    accuracy_cell = next(c for c in cells if c.source.startswith("# NBCHECK_APPROX accuracy\ndataset_of"))
    _edit_text(accuracy_cell, "test accuracy 91.19 %", "test accuracy 91.23 %")


def test_a_real_notebook_passes_when_only_what_varies_by_machine_varies(pytester):
    res = _check_real(pytester, _another_machine)
    assert res.returncode == 0, res.stdout[-3000:]


def test_a_real_notebook_fails_when_a_parameter_count_changes(pytester):
    def edit(cells):
        _another_machine(cells)
        cell = next(c for c in cells if c.source.startswith("# NBCHECK_APPROX accuracy\ndataset_of"))
        _edit_text(cell, "params   206,922", "params   206,923")

    res = _check_real(pytester, edit)
    assert res.returncode == 1 and "206,922 became 206,923" in res.stdout


def test_a_claim_verdict_may_swap_in_a_verdict_cell():
    from optkit.course.nbcheck import TOLERANCES, compare_text

    ref = "✔ holds here: KD beats labels\n    evidence: +1.2 points, 95 % interval [+0.2, +2.2]\n"
    new = "≈ inside the noise here: KD beats labels\n    evidence: +0.9 points, 95 % interval [-0.1, +1.9]\n"
    assert compare_text(ref, new, [TOLERANCES["interval"]], verdicts=True) == []
    assert compare_text(ref, new, [TOLERANCES["interval"]])  # without `verdict` the swap fails
