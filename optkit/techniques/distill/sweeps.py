"""Temperature and alpha sweeps: two one-dimensional sweeps around a main setting, read with their noise.

- :func:`train_sweep` trains each setting of a temperature sweep (at the main ``alpha``) and an
  alpha sweep (at the main temperature) once, reusing the runs already trained and the scratch
  runs for ``alpha = 0`` (which ignores the teacher); it returns a :class:`Sweep`.
- :func:`plot_sweep` draws both sweeps, mean +- 1 sd over seeds, against the scratch band.

Taught in 04_knowledge_distillation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from optkit.core.errors import OptkitError
from optkit.techniques.distill.experiments import SeedRuns
from optkit.techniques.distill.losses import check_alpha, check_temperature

Setting = tuple[float, float]  # (temperature, alpha)


@dataclass(repr=False)
class Sweep:
    """The runs of a sweep, each a :class:`SeedRuns`: ``by_temperature[T]`` (at ``alpha``) and
    ``by_alpha[a]`` (at ``temperature``), and the ``reference`` (from scratch, same seeds) they
    are read against. ``trained`` lists the settings this sweep trained (not reused).

    Taught in 04_knowledge_distillation.
    """

    temperature: float
    alpha: float
    by_temperature: dict[float, SeedRuns]
    by_alpha: dict[float, SeedRuns]
    reference: SeedRuns
    trained: list[Setting]

    def settings(self) -> list[tuple[str, SeedRuns]]:
        """Every setting once, labelled ``"T=2, alpha=0.5"``: the temperature sweep, then the alphas
        not already in it."""
        rows = [(f"T={t:g}, alpha={self.alpha:g}", r) for t, r in self.by_temperature.items()]
        shown = self.temperature in self.by_temperature  # the main setting is already a row
        return rows + [(f"T={self.temperature:g}, alpha={a:g}", r) for a, r in self.by_alpha.items()
                       if not (shown and a == self.alpha)]

    def __repr__(self) -> str:
        return (f"Sweep(T in {list(self.by_temperature)} at alpha={self.alpha:g}, alpha in {list(self.by_alpha)} "
                f"at T={self.temperature:g}; {len(self.trained)} settings trained here)")


def _floats(values: Iterable[Any], check: Callable[[Any], float]) -> list[float]:
    return list(dict.fromkeys(check(v) for v in values))  # checked, in order, each value once


def train_sweep(run: Callable[[float, float], SeedRuns], temperatures: Iterable[float], alphas: Iterable[float], *,
                temperature: float, alpha: float, reference: SeedRuns,
                known: Mapping[Setting, SeedRuns] | None = None) -> Sweep:
    """Sweep the temperature at ``alpha`` and alpha at ``temperature``, training each setting once.

    ``run(T, alpha)`` trains one setting over the seeds (e.g. a ``train_seeds(...)`` call) and
    returns its :class:`SeedRuns`. ``known`` maps settings already trained, ``{(T, alpha): runs}``,
    to reuse (the main runs). ``alpha = 0`` ignores the teacher, so its runs *are* ``reference``
    (the labels-only runs with the same seeds: weight for weight when they train on the same
    images, the labelled subset's own run in the few-labels regime) and are never trained again; a
    setting that appears in both sweeps is trained once and shared.

    Taught in 04_knowledge_distillation.
    """
    temps, alps = _floats(temperatures, check_temperature), _floats(alphas, check_alpha)
    if not temps and not alps:
        raise OptkitError("temperatures", temps, "and alphas are both empty", "sweep at least one value")
    main = (check_temperature(temperature), check_alpha(alpha))
    runs: dict[Setting, SeedRuns] = {(float(t), float(a)): r for (t, a), r in (known or {}).items()}
    trained: list[Setting] = []

    def get(setting: Setting) -> SeedRuns:
        if setting[1] == 0.0:
            return reference  # alpha = 0 ignores the teacher: the scratch run, weight for weight
        if setting not in runs:
            runs[setting] = run(*setting)
            trained.append(setting)
        return runs[setting]

    by_t = {t: get((t, main[1])) for t in temps}
    by_a = {a: get((main[0], a)) for a in alps}
    return Sweep(main[0], main[1], by_t, by_a, reference, trained)


def plot_sweep(sweep: Sweep, score: str = "val"):
    """Both sweeps side by side: each setting's mean +- 1 sd over seeds on ``score``, against the
    reference's mean +- 1 sd as a grey band; the temperature axis is log2. Returns the closed Figure.

    Taught in 04_knowledge_distillation.
    """
    import matplotlib.pyplot as plt

    if score not in sweep.reference.scores:
        raise OptkitError("score", score, "is not an evaluation set of the runs",
                          "use one of " + ", ".join(sweep.reference.scores))
    base = 100 * np.array(sweep.reference.scores[score])
    spread = base.std(ddof=1) if len(base) > 1 else 0.0
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    panels = [(axes[0], sweep.by_temperature, "temperature T", True, f"alpha = {sweep.alpha:g}"),
              (axes[1], sweep.by_alpha, "alpha", False, f"T = {sweep.temperature:g}")]
    for ax, runs, xlabel, log, title in panels:
        ax.axhspan(base.mean() - spread, base.mean() + spread, color="0.85", label="from scratch, mean +- 1 sd")
        if runs:
            vals = np.array([[100 * v for v in r.scores[score]] for r in runs.values()])
            err = vals.std(1, ddof=1) if vals.shape[1] > 1 else np.zeros(len(vals))
            ax.errorbar(list(runs), vals.mean(1), yerr=err, fmt="o-", capsize=4,
                        label=f"distilled ({vals.shape[1]} seeds)")
        if log:
            ax.set_xscale("log", base=2)
        ax.set(xlabel=xlabel, title=title)
    axes[0].set_ylabel(f"{'validation' if score == 'val' else score} accuracy (%)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig
