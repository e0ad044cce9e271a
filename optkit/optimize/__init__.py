"""The capstone: point it at your model and a sample of your data, get verified, benchmarked
artifacts and a report that recommends one.

One run, step by step (each step a method of :class:`Optimization`; :func:`optimize` runs them all,
and so do notebook 10 and the ``optkit optimize`` command):

1. :meth:`~Optimization.inspect` - what the model is (:class:`ModelSummary`: format, inputs,
   outputs, dtypes, dynamic dimensions, operator or layer counts, size); ONNX, torch.export
   (``.pt2``), Keras (``.keras``, ``.h5``, SavedModel) and TFLite are read; a pickled PyTorch
   module only with ``allow_pickle=True``, because unpickling runs code from the file;
2. :meth:`~Optimization.load_data` - your ``.npz`` (:class:`SampleData`): one array per model
   input (or one array for a single-input model) and optional labels (``y``/``labels``), checked
   against the model; a held-out part calibrates the int8 recipes, the rest measures quality.
   Without data, inputs are generated from the input signature (latency and parity only);
3. :meth:`~Optimization.measure_baseline` - the model as given, timed with the bench harness;
4. :meth:`~Optimization.try_recipes` - every recipe of :mod:`optkit.optimize.recipes` that applies
   to the format; a recipe that fails or does not apply is reported with its reason;
5. :meth:`~Optimization.verify` - parity with the original and accuracy on the labels (or top-1
   agreement without labels); candidates past ``max_accuracy_drop`` stay in the report but are
   never recommended;
6. :meth:`~Optimization.benchmark` - the one measurement path, :func:`optkit.core.variant.evaluate`:
   accuracy and parity on the evaluation rows, one interleaved :func:`optkit.core.bench.compare` per
   batch size, one :class:`~optkit.core.record.Record` per candidate and batch size;
7. :meth:`~Optimization.recommend` - the fastest eligible candidate at the largest batch size,
   near-ties (within 5 %) going to the smaller file; :func:`recommend` is the rule itself;
8. :meth:`~Optimization.write_report` - ``output_dir/<run id>/``: ``artifacts/``, ``results.json``
   (every measurement with the environment), ``report.md``, ``report.html`` and ``pareto.png``;
   ``output_dir/latest`` names the newest complete run. A run never writes over the input model
   and never into an earlier run's folder.

:func:`make_reference` rebuilds the bundled models and data in ``data/capstone`` (``python -m
optkit.optimize --make-reference``).

Submodules, one job each: :mod:`~optkit.optimize.inspection` (step 1: :func:`detect_format`,
:func:`inspect_model`, :class:`ModelSummary`), :mod:`~optkit.optimize.inputs` (step 1b:
:func:`load_data`, :class:`SampleData`, batch axes and generated inputs), :mod:`~optkit.optimize.recipes`
(the registry and the built-in recipes for ONNX Runtime, torch.export programs, Keras and TFLite,
and the searching int8 recipe), :mod:`~optkit.optimize.verification` (:class:`Check`,
:func:`predictions`), :mod:`~optkit.optimize.quality` (the quality measure that fits the output,
with its interval),
:mod:`~optkit.optimize.recommendation` (the rule, :class:`Recommendation`, the explanation),
:mod:`~optkit.optimize.reporting` (run folders, ``results.json``, the Markdown and HTML report, the
plot), :mod:`~optkit.optimize.optimization` (:class:`Optimization`, :func:`optimize`) and
:mod:`~optkit.optimize.reference` (the bundled models, :func:`make_reference`).

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

from optkit.optimize import recipes  # noqa: F401  (optimize.recipes, the registry)
from optkit.optimize.inputs import SampleData, load_data
from optkit.optimize.inspection import ModelSummary, detect_format, inspect_model
from optkit.optimize.optimization import Optimization, Outcome, optimize
from optkit.optimize.recipes import (FORMATS, RUNTIMES, Candidate, Context, Recipe, RecipeSkipped,  # noqa: F401
                                     all_recipes, get_recipe, litert_candidate, ort_candidate, recipes_for,
                                     register, torch_runner, unregister)
from optkit.optimize.recommendation import TIE_TOLERANCE, Recommendation, recommend
from optkit.optimize.reference import REFERENCE_DATA, REFERENCE_DIR, REFERENCE_FILES, REFERENCE_MODEL, make_reference
from optkit.optimize.reporting import RESULTS_FORMAT
from optkit.optimize.verification import Check, predictions

__all__ = [
    "Optimization", "optimize", "ModelSummary", "SampleData", "Check", "Recommendation", "Outcome",
    "inspect_model", "load_data", "recommend", "detect_format", "predictions",
    "Recipe", "Candidate", "Context", "RecipeSkipped", "register", "unregister", "get_recipe", "recipes_for",
    "all_recipes",
    "FORMATS", "RUNTIMES", "REFERENCE_DIR", "REFERENCE_MODEL", "REFERENCE_DATA", "REFERENCE_FILES", "make_reference",
    "RESULTS_FORMAT", "TIE_TOLERANCE",
]
