"""nbval's output check, applied to notebooks papermill has already executed, with stated tolerances.

``pytest --nbval`` starts a kernel and executes every notebook a second time just to compare
outputs. The curriculum is CPU-heavy, so the test command executes each notebook once, with
papermill, and this pytest plugin then compares each *committed* notebook with papermill's fresh
copy, honouring nbval's markers (``# NBVAL_IGNORE_OUTPUT``, ``# NBVAL_CHECK_OUTPUT``,
``# NBVAL_SKIP``), ``--nbval-lax`` and the ``--nbval-sanitize-with`` file::

    pytest -p optkit.course.nbcheck --nbcheck-executed runs/test-X --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks/*.ipynb

**Portable comparison.** The committed outputs come from one CPU; a learner's or CI's run comes
from another, whose math kernels (oneDNN, MKL, MLAS, XNNPACK) round differently in the last bits.
So a checked cell is compared in two parts:

- the *text around the numbers* (every word, "met"/"MISSED", an exercise verdict, a shape, an
  error message) must match exactly, with runs of whitespace counted as one space (tables re-pad
  their columns when a value gains a digit);
- every *number* must match exactly, unless the cell names the kinds of float result it prints
  with a marker line ``# NBCHECK_APPROX accuracy sqnr``; a number may then differ from the
  committed one by the tolerance of a kind that fits it (:data:`TOLERANCES`: each kind states its
  bound and why). Whole numbers (counts, shapes, parameters) stay exact unless a kind says
  otherwise. A cell whose *conclusion* is computed from such numbers (an interval touching zero)
  adds ``verdict``: its "inside/outside the noise", "met/MISSED" may then swap; nowhere else.

Machine lines and timings are never compared: the sanitize file rewrites the ``Measured on:``
line, and timing cells carry ``# NBVAL_IGNORE_OUTPUT``. Whatever the markers say, a cell fails if
papermill's copy holds an error or prints a Python traceback.

``pytest --nbval`` still works unchanged for a full re-execution (exact comparison). Used by
:mod:`optkit.course.curriculum`; the README section "What `make test` checks" describes it.
"""
from __future__ import annotations

import copy
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbval.plugin import IPyNbCell, IPyNbFile, coalesce_streams, transform_streams_for_comparison

__all__ = ["Tolerance", "TOLERANCES", "APPROX_MARKER", "VERDICT", "VERDICT_GROUPS", "approx_kinds",
           "allows_verdicts", "compare_text",
           "ExecutedNotebook", "ExecutedCell"]

#: Marker line naming the kinds of float result a cell prints: ``# NBCHECK_APPROX accuracy size``.
APPROX_MARKER = "NBCHECK_APPROX"
_MARKER_LINE = re.compile(r"^\s*#\s*" + APPROX_MARKER + r"\b(?P<kinds>[^\n]*)$", re.MULTILINE)


@dataclass(frozen=True)
class Tolerance:
    """How far a number of one kind may move between two machines, and why.

    A value passes when ``|a - b| <= abs + rel * max(|a|, |b|)``, or when both lie within
    ``floor`` of zero, or when they have the same sign and differ by at most a ``factor``.
    ``integers`` extends the tolerance to whole numbers; ``unit`` (a regex) limits it to numbers
    followed by that text, e.g. ``dB``; values both at or above ``cap`` (``inf`` included) count as
    equal (an SQNR of 168 dB and one of ``inf`` both say "identical to float precision").
    """

    name: str
    why: str
    abs: float = 0.0
    rel: float = 0.0
    floor: float = 0.0
    factor: float = 0.0
    integers: bool = False
    unit: str | None = None
    cap: float = math.inf

    def fits(self, number: str, after: str) -> bool:
        """Whether this kind applies to ``number`` printed before the text ``after``."""
        if not self.integers and _is_whole(number):
            return False
        return self.unit is None or re.match(r"\s*(?:" + self.unit + r")", after) is not None

    def accepts(self, a: float, b: float) -> bool:
        if a >= self.cap and b >= self.cap:
            return True
        if not (math.isfinite(a) and math.isfinite(b)):
            return a == b or (math.isnan(a) and math.isnan(b))
        if abs(a - b) <= self.abs + self.rel * max(abs(a), abs(b)) + 1e-12:
            return True
        if self.floor and abs(a) <= self.floor and abs(b) <= self.floor:
            return True
        if self.factor and a * b > 0:
            return max(abs(a), abs(b)) / min(abs(a), abs(b)) <= self.factor
        return False

    def describe(self) -> str:
        parts = []
        if self.abs:
            parts.append(f"±{self.abs:g}")
        if self.rel:
            parts.append(f"±{self.rel:.2%}")
        if self.factor:
            parts.append(f"within {self.factor:g}x")
        if self.floor:
            parts.append(f"or both below {self.floor:g}")
        if math.isfinite(self.cap):
            parts.append(f"or both at least {self.cap:g}")
        return f"{self.name}: " + " ".join(parts)


#: The kinds a cell may name. Bounds come from comparing the committed outputs (AMD EPYC with
#: AVX-512 VNNI) with the same notebooks run with the kernels held to AVX2 (``make test ISA=avx2``)
#: and on an Intel Xeon with AMX: the largest drift seen, with margin, and still well below the
#: effect each lesson is about. ``unit`` narrows a kind to numbers followed by that text.
TOLERANCES: dict[str, Tolerance] = {t.name: t for t in [
    Tolerance("accuracy", abs=0.5,
              why="an accuracy in percent (or a difference in points) of a model trained or fine-tuned "
                  "here: kernels round the last bits differently, so training follows another "
                  "trajectory. Seen: up to 0.35 point on 10,000 test images; 0.5 point is 50 images, "
                  "below every effect a lesson states"),
    Tolerance("short_training", abs=1.5,
              why="an accuracy in percent of a model trained here for a single short epoch (a few hundred "
                  "steps) and scored on 1,000 images: the trajectory has not settled, so the drift of "
                  "`accuracy` is larger. Seen: 0.9 point (notebook 11's Keras MobileNet, AVX2 vs AVX-512); "
                  "1.5 points is 15 of 1,000 images"),
    Tolerance("int8", abs=2.0, unit="%|points?|pp",
              why="an accuracy or agreement (percent or points) of an int8 model: without VNNI, int8 "
                  "kernels add pairs of products in int16 and optkit halves the activation range "
                  "(quantize.int8_reduce_range), so the int8 model itself differs. Seen: 1.6 points on "
                  "500 MiniLM snippets (8 snippets)"),
    Tolerance("sqnr", abs=7.0, unit="dB", cap=100.0,
              why="a signal-to-quantization-noise ratio in dB: rounding moves it by about a dB, and a CPU "
                  "without VNNI quantizes activations to 7 bits (one bit is 6 dB); a broken quantization "
                  "loses 20 dB or more. From 100 dB up (and inf) the outputs are the same to float "
                  "precision: seen inf vs 168.6 dB for a reloaded SavedModel"),
    Tolerance("agreement", abs=2.0, unit="%",
              why="top-1 agreement (percent) between two models trained or fine-tuned here: each one "
                  "drifts like `accuracy` and their disagreements add up (seen 92.08 vs 91.48 %)"),
    Tolerance("similarity", abs=0.05,
              why="a cosine similarity or agreement written as a fraction in [0, 1] between float and "
                  "int8 outputs: moves with the int8 kernels like `int8` (seen 0.980 vs 0.945)"),
    Tolerance("fraction", abs=0.01,
              why="an accuracy written as a fraction in [0, 1] of a model trained here (0.01 = 1 point)"),
    Tolerance("interval", abs=1.0,
              why="bounds of a confidence interval, or a mean, over a few short trainings (points): each "
                  "seed's run drifts like `accuracy`, and a small-sample interval amplifies it"),
    Tolerance("loss", rel=0.05,
              why="a training or distillation loss: the trajectory drifts like `accuracy`"),
    Tolerance("error", factor=10.0, floor=1e-3, integers=True,
              why="a maximum or mean error between two float computations (parity): it is made of "
                  "last-bit differences, so only its order of magnitude is stable"),
    Tolerance("size", rel=0.01, integers=True,
              why="the size of trained or compressed weights (bytes, gzip ratios): the weights' last "
                  "bits change the compressed size slightly (seen 786,455 vs 786,454 B)"),
    Tolerance("sparsity", abs=0.5,
              why="a sparsity in percent chosen from trained weights by magnitude: ties and near-ties "
                  "fall the other way on another CPU (seen 80.00 vs 79.75 %)"),
    Tolerance("float", rel=1e-3,
              why="any other float that passes through math kernels (logits, scores, means): only the "
                  "last printed digit may differ"),
]}


#: The marker word for verdicts that follow a measured float. A cell naming it (``# NBCHECK_APPROX
#: interval verdict``) says its conclusion is computed from numbers that move between CPUs (a
#: confidence interval that touches zero, a drop next to its budget), so each group's phrases may
#: replace one another. Cells that do not name it keep every word exact: a target that flips from
#: "met" to "MISSED" where the result does not depend on the CPU fails the check.
VERDICT = "verdict"
VERDICT_GROUPS: tuple[tuple[str, ...], ...] = (
    # optkit.course.claims verdicts first (they contain the shorter phrases below)
    ("✘ does not hold here", "✔ holds here", "≈ inside the noise here"),
    ("inside the noise", "outside the noise", "a real gain"),
    ("MISSED", "met"),
    ("does not hold here", "holds here"),
    ("not clearly", "clearly"),
)


def approx_kinds(source: str) -> list[Tolerance]:
    """The tolerances a cell's ``# NBCHECK_APPROX kind ...`` lines name; an unknown kind raises.

    ``verdict`` is not a tolerance; see :func:`allows_verdicts`.
    """
    found: list[Tolerance] = []
    for m in _MARKER_LINE.finditer(source):
        for name in m.group("kinds").replace(",", " ").split():
            if name == VERDICT:
                continue
            if name not in TOLERANCES:
                raise ValueError(f"# {APPROX_MARKER} {name}: {name!r} is not a tolerance kind. "
                                 f"Fix: use one of {', '.join(TOLERANCES)} or {VERDICT!r} "
                                 "(optkit.course.nbcheck.TOLERANCES)")
            found.append(TOLERANCES[name])
    return found


def allows_verdicts(source: str) -> bool:
    """Whether a cell names ``verdict`` in its ``# NBCHECK_APPROX`` line."""
    return any(VERDICT in m.group("kinds").replace(",", " ").split() for m in _MARKER_LINE.finditer(source))


def _mask_verdicts(text: str) -> str:
    for i, group in enumerate(VERDICT_GROUPS):
        text = re.sub("|".join(re.escape(w) for w in group), f"<verdict {i}>", text)
    return text


# A number not glued to a word: 12, -3.5, +0.65, −1.33 (Unicode minus), 1,248,000, 8.6e-06.
_NUMBER = re.compile(r"(?<![\w.])[-+−]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|inf(?!\w))")


def _is_whole(number: str) -> bool:
    return not any(ch in number for ch in ".eEn")  # 'inf' counts as a float


def _value(number: str) -> float:
    return float(number.replace("−", "-").replace(",", ""))


def _skeleton(text: str) -> str:
    return re.sub(r"\s+", " ", _NUMBER.sub("#", text)).strip()


def compare_text(reference: str, fresh: str, kinds: list[Tolerance], *, verdicts: bool = False) -> list[str]:
    """Differences between two outputs under ``kinds``; an empty list means they match.

    The text around the numbers must be equal (whitespace runs count as one space; with
    ``verdicts``, the phrases of each :data:`VERDICT_GROUPS` group count as one); each pair of
    numbers must be equal, or accepted by the loosest kind that fits the reference number.
    """
    if reference == fresh:
        return []
    if verdicts:
        reference, fresh = _mask_verdicts(reference), _mask_verdicts(fresh)
    if _skeleton(reference) != _skeleton(fresh):
        import difflib

        diff = [ln for ln in difflib.unified_diff(reference.splitlines(), fresh.splitlines(), lineterm="", n=0)
                if ln.startswith(("-", "+")) and not ln.startswith(("---", "+++"))]
        return ["the text around the numbers differs:\n    " + "\n    ".join(diff[:6])]
    ref_nums = list(_NUMBER.finditer(reference))
    new_nums = list(_NUMBER.finditer(fresh))
    problems = []
    for r, n in zip(ref_nums, new_nums):
        if r.group() == n.group():
            continue
        after = reference[r.end():r.end() + 12]
        fitting = [k for k in kinds if k.fits(r.group(), after)]
        if fitting and any(k.accepts(_value(r.group()), _value(n.group())) for k in fitting):
            continue
        context = reference[max(0, r.start() - 30):r.end() + 12].replace("\n", " ")
        rule = "; ".join(k.describe() for k in fitting) if fitting else "exact (no tolerance kind fits)"
        problems.append(f"{r.group()} became {n.group()} [{rule}] in: ...{context}...")
    return problems


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


def _flatten(cell: IPyNbCell, outputs: list, skip: tuple) -> dict[str, list]:
    """nbval's layout: one list of sanitized values per output key (MIME types flattened)."""
    flat: dict[str, list] = defaultdict(list)
    for out in transform_streams_for_comparison(outputs):
        for key, value in out.items():
            if key in skip:
                continue
            if key == "data":
                for mime, payload in value.items():
                    if mime not in skip:
                        flat[mime].append(cell.sanitize(payload))
            else:
                flat[key].append(cell.sanitize(value))
    return flat


class ExecutedCell(IPyNbCell):
    """One code cell: no error or traceback in papermill's run, and a tolerant output comparison."""

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
        printed = [o.get("text", "") for o in outs if o.get("output_type") == "stream"]
        if any("Traceback (most recent call last)" in t for t in printed):
            self.raise_cell_error("The cell printed a Python traceback (caught and printed, or logged)",
                                  next(t for t in printed if "Traceback (most recent call last)" in t)[-2000:])
        unrun = self.cell.execution_count is None
        if unrun and self.cell.outputs:
            self.raise_cell_error("Unrun reference cell has outputs")
        if self.options["check"] and not unrun:
            if not self.compare_outputs(outs, coalesce_streams(self.cell.outputs)):
                self.raise_cell_error("Cell outputs differ", "\n".join(self.comparison_traceback))

    def compare_outputs(self, test, ref, skip_compare=None):
        """nbval's comparison (same keys, same number of outputs per key), with numbers compared
        under the cell's ``# NBCHECK_APPROX`` kinds (:func:`compare_text`)."""
        skip = skip_compare or self.parent.skip_compare
        kinds, verdicts = approx_kinds(self.cell.source), allows_verdicts(self.cell.source)
        fresh, committed = _flatten(self, test, skip), _flatten(self, ref, skip)
        self.comparison_traceback = []
        if set(fresh) != set(committed):
            self.comparison_traceback.append(
                f"output kinds differ: committed {sorted(committed)}, executed {sorted(fresh)}")
            return False
        for key, ref_values in committed.items():
            new_values = fresh[key]
            if len(new_values) != len(ref_values):
                self.comparison_traceback.append(
                    f"{key}: {len(ref_values)} outputs committed, {len(new_values)} executed")
                return False
            for ref_value, new_value in zip(ref_values, new_values):
                if isinstance(ref_value, str) and isinstance(new_value, str):
                    problems = compare_text(ref_value, new_value, kinds, verdicts=verdicts)
                else:
                    problems = [] if ref_value == new_value else ["the values differ"]
                if problems:
                    self.comparison_traceback.append(f"{key}: " + "\n  ".join(problems))
                    self.format_output_compare(key, ref_value, new_value)
                    return False
        return True
