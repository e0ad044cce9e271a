"""The project's own plumbing: pins, environment.yml, parameter checks, the summary page."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from optkit.course import notebook
from optkit.core.errors import OptkitError

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_pins() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for name in ("notebooks", "tf", "models", "serve"):
        reqs += meta["optional-dependencies"][name]
    pins = {}
    for req in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[\w,]+\])?==([^\s;]+)", req)
        assert m, f"pyproject requirement {req!r} is not an exact pin"
        pins[m.group(1).lower()] = m.group(2)
    return pins


def _environment_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.fullmatch(r"\s*-\s*([A-Za-z0-9_.\-]+)(?:\[[\w,]+\])?==(\S+)\s*", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_environment_yml_matches_pyproject():
    assert _environment_pins() == _pyproject_pins()


def test_torch_is_pinned_to_the_cpu_wheel_and_torchvision_absent():
    pins = _pyproject_pins()
    assert pins["torch"] == "2.13.0"
    assert "torchvision" not in pins
    assert "torchvision" not in (ROOT / "environment.yml").read_text()


def test_installed_versions_match_pins():
    from importlib.metadata import PackageNotFoundError, version

    for name, pinned in _pyproject_pins().items():
        try:
            got = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} is pinned but not installed; run `make env`")
        assert got.split("+")[0] == pinned, f"{name}: installed {got}, pinned {pinned}"


# ----------------------------------------------------------------- papermill parameters
DECLARED = notebook.DECLARED_MARKER + "\nthreads = 2\nbatch_sizes = [1, 32]\nmax_time_s = 1.0\nlabel = 'x'\n"


def test_check_parameters_accepts_defaults_and_overrides(capsys):
    injected = "# Parameters\nthreads = 1\nmax_time_s = 2\n"
    got = notebook.check_parameters(history=["import optkit", DECLARED, injected])
    assert got == {"threads": 1, "batch_sizes": [1, 32], "max_time_s": 2, "label": "x"}
    assert "set by papermill" in capsys.readouterr().out


def test_check_parameters_rejects_unknown_name_with_suggestion():
    with pytest.raises(OptkitError) as err:
        notebook.check_parameters(history=[DECLARED, "# Parameters\nthread = 1\n"], quiet=True)
    msg = str(err.value)
    assert msg.startswith("thread=1: is not a parameter of this notebook")
    assert "did you mean 'threads'" in msg and "batch_sizes" in msg


@pytest.mark.parametrize("injected, fragment", [
    ("threads = 'two'", "has type str but the default 2 is a int"),
    ("batch_sizes = 32", "has type int but the default [1, 32] is a list"),
    ("threads = 1.5", "has type float"),
])
def test_check_parameters_rejects_wrong_types(injected, fragment):
    with pytest.raises(OptkitError, match=re.escape(fragment)):
        notebook.check_parameters(history=[DECLARED, "# Parameters\n" + injected + "\n"], quiet=True)


def test_check_parameters_ranges_and_choices():
    with pytest.raises(OptkitError, match=r"threads=0: must lie in \[1, inf\]"):
        notebook.check_parameters({"threads": (1, None)}, history=[DECLARED, "# Parameters\nthreads = 0\n"],
                                  quiet=True)
    with pytest.raises(OptkitError, match="batch_sizes"):
        notebook.check_parameters({"batch_sizes": (1, 4096)},
                                  history=[DECLARED, "# Parameters\nbatch_sizes = [0, 8]\n"], quiet=True)
    with pytest.raises(OptkitError, match="is not one of the supported values"):
        notebook.check_parameters(choices={"label": ["x", "y"]},
                                  history=[DECLARED, "# Parameters\nlabel = 'z'\n"], quiet=True)


def test_check_parameters_without_history_checks_nothing():
    # pytest --nbval runs cells without storing history; there is nothing to validate then
    assert notebook.check_parameters(history=["x = 1"], quiet=True) == {}
    assert notebook.check_parameters(history=[], quiet=True) == {}


def test_explore_is_static_under_ci(monkeypatch):
    monkeypatch.setenv("OPTKIT_STATIC", "1")
    seen = {}

    def show(bits, granularity, scale):
        seen.update(bits=bits, granularity=granularity, scale=scale)
        return "drawn"

    assert notebook.explore(show, bits=(2, 8), granularity=["per-channel", "per-tensor"], scale=3) == "drawn"
    assert seen == {"bits": 5, "granularity": "per-channel", "scale": 3}


# ----------------------------------------------------------------- curriculum runner
def test_summary_lists_each_notebook_and_headlines(tmp_path):
    from optkit.course.curriculum import NotebookResult, write_summary

    results = [
        NotebookResult("00_measure_first", str(tmp_path / "00.ipynb"), True, 61.0,
                       headlines=[{"label": "fp32 latency b1", "value": 0.4200000001, "unit": "ms"}],
                       claims=[{"statement": "int8 beats fp32", "holds": False, "evidence": "0.9x"}]),
        NotebookResult("01_x", str(tmp_path / "01.ipynb"), False, 5.0, error="OptkitError: threads=0: bad"),
    ]
    write_summary(results, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "fp32 latency b1: 0.42 ms" in md and "**failed**: OptkitError: threads=0: bad" in md
    assert "00_measure_first: **does not hold**: int8 beats fp32 (0.9x)" in md
    html = (tmp_path / "summary.html").read_text()
    assert "00_measure_first" in html and "failed" in html
    assert "<b>does not hold</b>: int8 beats fp32" in html
    import json

    data = json.loads((tmp_path / "summary.json").read_text())
    assert [r["ok"] for r in data["results"]] == [True, False]


def test_curriculum_only_rejects_unknown_prefix():
    from optkit.course.curriculum import notebooks

    with pytest.raises(OptkitError, match="matches no notebook"):
        notebooks(["99"])


# ----------------------------------------------------------------- exercise checkers
def test_exercise_checkers_accept_reference_solutions_and_reject_stubs(capsys):
    from optkit.course.exercises import nb00, nb01

    def stub(*args):
        raise NotImplementedError

    assert nb00.check_percentile(nb00.reference_percentile)
    assert not nb00.check_percentile(stub)
    assert not nb00.check_percentile(lambda xs, q: xs[int(len(xs) * q / 100) - 1])
    assert nb01.check_predict(nb01.reference_predict)
    assert not nb01.check_predict(lambda m, x: m(x).argmax(1))  # train mode, autograd on
    assert nb01.check_export_dynamic(nb01.reference_export_dynamic)
    assert not nb01.check_export_dynamic(lambda m, x: __import__("torch").export.export(m, (x,)))
    out = capsys.readouterr().out
    assert out.count("✓") == 3 and out.count("✗") == 4


def test_batch_budget_checker():
    import numpy as np

    from optkit.core.bench import Measurement
    from optkit.course.exercises import nb00 as exercises

    sweep = [Measurement(f"b{b}", np.full(20, ms / 1e3), batch_size=b) for b, ms in [(1, 1.0), (8, 3.0), (32, 9.0)]]
    assert exercises.check_batch_budget(8, sweep, 5.0)
    assert not exercises.check_batch_budget(32, sweep, 5.0)
    assert exercises.check_batch_budget(None, sweep, 0.5)
    assert not exercises.check_batch_budget(1, sweep, 0.5)


def test_committed_notebooks_are_built_from_their_sources():
    """notebooks/src/NN_*.py is what reviews read; the committed .ipynb must hold the same cells
    (rebuild and re-execute with `make notebooks NB=NN` after editing a source)."""
    import sys

    import nbformat

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_notebooks
    finally:
        sys.path.pop(0)
    for src in sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py")):
        built = [(c.cell_type, c.source) for c in build_notebooks.parse(src.read_text())]
        nb = nbformat.read(str(ROOT / "notebooks" / f"{src.stem}.ipynb"), as_version=4)
        committed = [(c.cell_type, c.source) for c in nb.cells]
        assert committed == built, f"{src.stem}.ipynb differs from {src.name}: run `make notebooks NB={src.stem[:2]}`"


def test_every_nbcheck_marker_names_known_kinds():
    import nbformat

    from optkit.course import nbcheck

    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in nbformat.read(str(path), as_version=4).cells:
            if cell.cell_type == "code":
                nbcheck.approx_kinds(cell.source)  # raises on an unknown kind


def test_notebook_cells_stay_thin():
    """Orchestration lives in the package (tested); a code cell holds at most 25 lines of code
    (comments and blank lines not counted), so a learner reads what each step does."""
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from build_notebooks import parse
    finally:
        sys.path.pop(0)
    for src in sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py")):
        for i, cell in enumerate(parse(src.read_text())):
            code = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
            assert cell.cell_type != "code" or len(code) <= 25, (
                f"{src.name}, cell {i}: {len(code)} lines of code; move the logic into optkit (with a test)")

# A cell means to show a figure when it calls a plotting function or shows one.
_DRAWS = re.compile(r"\bplot_\w+\(|\.plot\(|plt\.show\(\)|display\(fig|imshow\(|plt\.subplots\(|\.hist\(|\.scatter\(")


def test_every_figure_a_cell_draws_is_rendered():
    """A figure that never renders is a lesson a learner cannot see (a helper that closes its figure
    followed by ``plt.show()`` shows nothing). Every committed cell that draws has an image in its
    output; a cell that draws on purpose without showing says why in a ``# no-figure:`` comment."""
    import nbformat

    missing = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for i, cell in enumerate(nbformat.read(str(path), as_version=4).cells):
            if cell.cell_type != "code" or not _DRAWS.search(cell.source) or "# no-figure:" in cell.source:
                continue
            if not any("image/png" in out.get("data", {}) for out in cell.get("outputs", [])):
                missing.append(f"{path.name} cell {i}: {cell.source.splitlines()[0][:70]}")
    assert not missing, "cells that draw a figure but show none:\n" + "\n".join(missing)


def test_notebooks_speak_to_learners():
    """The curriculum is read by learners: no words about our issue tracker or course plan, and no
    pointers to files a learner's clone does not have."""
    banned = re.compile(r"the issue\b|issue asks|course plan|PLATFORM\.md|STYLE\.md|\.\./shared", re.I)
    for src in sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py")):
        for n, line in enumerate(src.read_text().splitlines(), 1):
            assert not banned.search(line), f"{src.name}:{n}: {line.strip()[:80]}"


# Notebooks whose measurements all need hardware CI lacks, and why they may print no claim here.
_NO_CLAIMS_WITHOUT = {"08_tensorrt": "every measurement needs an NVIDIA GPU; on a CPU its timed cells skip"}


def test_every_lesson_prints_the_conclusions_it_checked():
    """Conclusions are printed by the cell that measured them (optkit.course.claims), so the
    committed outputs hold at least one checked claim per lesson."""
    import nbformat

    from optkit.course.claims import CLAIM_KEY

    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if path.stem in _NO_CLAIMS_WITHOUT:
            continue
        found = [out for cell in nbformat.read(str(path), as_version=4).cells
                 for out in cell.get("outputs", []) if CLAIM_KEY in out.get("metadata", {})]
        assert found, f"{path.name} prints no checked conclusion (optkit.course.claims)"
