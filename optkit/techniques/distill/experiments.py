"""Honest comparisons over seeds: train each method once per seed and compare them paired.

- :func:`train_seeds` repeats one method over seeds (each seed fixes the initial weights and the
  batch order, the same for every method) and returns a :class:`SeedRuns`.
- :func:`summarize` (mean and spread over seeds), :func:`paired_difference` (the difference
  between two methods seed by seed, with a Student's t 95 % confidence interval in
  :class:`Difference`) and :func:`plot_runs` (per-seed dots joined across methods).

Taught in 04_knowledge_distillation.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
from torch import nn

from optkit.core import progress as _progress
from optkit.core.errors import OptkitError, check_int, check_range
from optkit.techniques.distill.trainer import Distilled, train_student

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


# =========================================================================== training over seeds

@dataclass(repr=False)
class SeedRuns:
    """One method trained once per seed: the ``students`` (in seed order), each run's :class:`Distilled`
    result, and ``scores[name]`` = one accuracy per seed on each evaluation set given to
    :func:`train_seeds` (``accuracy`` is the first set's). Taught in 04_knowledge_distillation.
    """

    method: str
    seeds: list[int]
    students: list[nn.Module]
    results: list[Distilled]
    scores: dict[str, list[float]]

    @property
    def accuracy(self) -> list[float]:
        return next(iter(self.scores.values()))

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracy))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracy, ddof=1)) if len(self.accuracy) > 1 else float("nan")

    @property
    def seconds(self) -> float:
        return float(sum(r.seconds for r in self.results))

    def __repr__(self) -> str:
        first = next(iter(self.scores), "accuracy")
        per_seed = ", ".join(f"{100 * a:.2f}" for a in self.accuracy)
        return (f"SeedRuns({self.method!r}, {len(self.seeds)} seeds: {first} {100 * self.mean:.2f} % "
                f"(sd {100 * self.std:.2f}; per seed {per_seed}))")


def train_seeds(make_student, data: Any, *, seeds: int | Sequence[int] = 3,
                eval_data: Mapping[str, Any] | Any = None, desc: str | None = None, **train_kw: Any) -> SeedRuns:
    """Train one method once per seed and score every student; return a :class:`SeedRuns`.

    For each seed: :func:`optkit.data.models.set_seed`, then ``make_student()`` (so every method gets the
    *same* initial weights for the same seed), then :func:`train_student` with ``seed=seed`` (the
    same batch order) and ``train_kw``. ``eval_data`` is one data set or ``{name: data}`` (a
    Split, an ``(x, y)`` pair, or a Dataset whose test split is used), scored with
    :func:`optkit.data.models.evaluate`. ``seeds`` is a count (0, 1, ...) or a list. A progress
    bar (``desc``, silent in static runs) counts the trainings.

    Taught in 04_knowledge_distillation.
    """
    from optkit.data.models import evaluate, set_seed

    seed_list = (list(range(check_int("seeds", seeds, 1))) if isinstance(seeds, numbers.Integral)
                 else [int(s) for s in seeds])
    if not seed_list:
        raise OptkitError("seeds", seeds, "names no seed", "pass a count >= 1 or a list of seeds")
    if eval_data is None:
        raise OptkitError("eval_data", None, "is needed to score the students",
                          "pass e.g. eval_data={'test': dataset.test}")
    sets = dict(eval_data) if isinstance(eval_data, Mapping) else {"accuracy": eval_data}
    students, results, scores = [], [], {name: [] for name in sets}
    for seed in _progress.bar(seed_list, desc=desc or "training students", unit="student", leave=False):
        set_seed(seed)
        student = make_student()
        results.append(train_student(student, data, seed=seed, **train_kw))
        students.append(student)
        for name, d in sets.items():
            scores[name].append(evaluate(student, d).accuracy)
    return SeedRuns(results[0].method, seed_list, students, results, scores)


def label_subset(n: int, n_labelled: int, seed: int = 0) -> np.ndarray:
    """A boolean mask over ``n`` training examples with ``n_labelled`` of them True, drawn by ``seed``.

    The few-labels regime of distillation: a student may use the labels of the masked examples
    only (``train_student(..., labelled=mask)``), while the teacher's soft targets cover all ``n``.
    ``n_labelled == n`` marks every example. Taught in 04_knowledge_distillation.
    """
    n = check_int("n", n, 1)
    k = check_int("n_labelled", n_labelled, 1)
    if k > n:
        raise OptkitError("n_labelled", k, f"is more than the {n:,} training examples",
                          f"pass at most {n:,} (every example labelled)")
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(int(seed)).choice(n, size=k, replace=False)] = True
    return mask


# =========================================================================== statistics over seeds

def _values(values: Iterable[float], parameter: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    if arr.ndim != 1 or len(arr) == 0 or not np.isfinite(arr).all():
        raise OptkitError(parameter, values, "must be a non-empty list of finite numbers (one per seed)",
                          "pass e.g. [0.861, 0.858, 0.866]")
    return arr


def summarize(results: Mapping[str, Iterable[float]], scale: float = 100.0) -> "pd.DataFrame":
    """One row per method: ``mean``, ``std`` (sample, ddof=1), ``min``, ``max``, ``n`` over its seeds.

    ``results`` maps a method's name to its per-seed values (e.g. accuracies in [0, 1]); ``scale``
    multiplies them (100 gives percent). Taught in 04_knowledge_distillation.
    """
    import pandas as pd

    rows = {}
    for name, vals in results.items():
        arr = _values(vals, f"results[{name!r}]") * scale
        rows[name] = {"mean": arr.mean(), "std": arr.std(ddof=1) if len(arr) > 1 else float("nan"),
                      "min": arr.min(), "max": arr.max(), "n": len(arr)}
    return pd.DataFrame.from_dict(rows, orient="index")


@dataclass(frozen=True)
class Difference:
    """``b - a`` seed by seed: ``mean`` and ``std`` of the paired differences, ``n`` seeds, and the 95 %
    confidence interval ``(low, high)`` of the mean difference (Student's t with n-1 degrees of
    freedom). ``inside_noise`` is True when that interval contains 0: the data do not show a
    difference. Values are in the units given (e.g. accuracy points).

    Taught in 04_knowledge_distillation.
    """

    mean: float
    std: float
    n: int
    low: float
    high: float

    @property
    def inside_noise(self) -> bool:
        return self.low <= 0.0 <= self.high

    def __repr__(self) -> str:
        verdict = "inside the noise" if self.inside_noise else "outside the noise"
        return (f"{self.mean:+.2f} (paired over {self.n} seeds: sd {self.std:.2f}, 95 % CI "
                f"[{self.low:+.2f}, {self.high:+.2f}]): {verdict}")


def paired_difference(a: Iterable[float], b: Iterable[float], scale: float = 100.0,
                      confidence: float = 0.95) -> Difference:
    """How much ``b`` beats ``a`` when run with the same seeds (same initial weights and batch order).

    Pairing removes the part of the spread that both share (a lucky initialization helps both), so
    a small but consistent gain can show with few seeds. With one seed no interval can be given
    (``low=-inf, high=inf``: always inside the noise). ``scale=100`` turns accuracies into points.

    Taught in 04_knowledge_distillation.
    """
    from scipy import stats

    xa, xb = _values(a, "a"), _values(b, "b")
    if len(xa) != len(xb):
        raise OptkitError("b", len(xb), f"must have one value per seed of a ({len(xa)})",
                          "run both methods with the same seeds")
    check_range("confidence", confidence, 0, 1, low_open=True, high_open=True)
    d = (xb - xa) * scale
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return Difference(mean, float("nan"), n, float("-inf"), float("inf"))
    std = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Difference(mean, std, n, mean - half, mean + half)


def plot_runs(runs: Mapping[str, "SeedRuns"], score: str | None = None, ax=None, title: str | None = None,
              reference: str | None = None):
    """Each method's per-seed accuracies as dots, with its mean and +-1 sd as a bar; returns the closed Figure.

    Dots of the same seed are joined across methods by a faint line, so a paired gain (every seed
    up) is visible even when the spread between seeds is larger than the gain. ``score`` picks the
    evaluation set (default: the first one); ``reference`` draws that method's mean as a dashed line.

    Taught in 04_knowledge_distillation.
    """
    import matplotlib.pyplot as plt

    if not runs:
        raise OptkitError("runs", runs, "is empty", "pass {method name: SeedRuns}")
    names = list(runs)
    key = score or next(iter(runs[names[0]].scores))
    vals = np.array([[100 * v for v in runs[n].scores[key]] for n in names])  # (methods, seeds)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2.5, 3.4))
    else:
        fig = ax.figure
    pos = np.arange(len(names))
    for j in range(vals.shape[1]):
        ax.plot(pos, vals[:, j], color="0.75", lw=0.8, zorder=1)
        ax.scatter(pos, vals[:, j], s=18, color="tab:blue", zorder=2, label="one seed" if j == 0 else None)
    std = vals.std(axis=1, ddof=1) if vals.shape[1] > 1 else np.zeros(len(names))
    ax.errorbar(pos + 0.12, vals.mean(axis=1), yerr=std, fmt="o", color="tab:red", capsize=4,
                label="mean +- 1 sd", zorder=3)
    if reference is not None:
        ax.axhline(vals[names.index(reference)].mean(), color="tab:red", ls="--", lw=0.8, alpha=0.6)
    ax.set_xticks(pos, names, rotation=15, ha="right")
    ax.set_ylabel(f"{key} accuracy (%)")
    ax.set_title(title or f"{vals.shape[1]} seeds per method (same seed = same initial weights and batches)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig
