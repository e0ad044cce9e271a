"""tensorflow-model-optimization recipes: pruning, clustering, QAT and prune-preserving QAT.

Owns :func:`pruning_schedule` (a ``PolynomialDecay`` that really fires on a short run),
:func:`plan_pruning` (:class:`PruningPlan`: which layers to prune, and how hard, so the whole
model reaches a sparsity), :func:`prune_model`, :func:`quantize_aware`, :func:`prune_preserving_qat`,
:func:`cluster_model` and the checks of what they did, :func:`sparsity` (:class:`SparsityInfo`) and
:func:`distinct_values`. tfmot needs Keras 2 (``tf_keras``) models; :func:`require_keras2` in
:mod:`.env` says so up front.

Importing this module does not import TensorFlow or tfmot.

Taught in 07_tensorflow_and_tflite.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optkit.core.deprecation import renamed_keyword
from optkit.core.errors import OptkitError, check_range
from optkit.runtimes.tflow.env import _keras, import_tfmot, require_keras2, silenced
from optkit.runtimes.tflow.models import fit

__all__ = ["pruning_schedule", "plan_pruning", "PruningPlan", "prune_model", "quantize_aware", "cluster_model",
           "prune_preserving_qat", "sparsity", "SparsityInfo", "distinct_values"]


def _kernels(model) -> list[tuple[str, np.ndarray]]:
    out = []
    for layer in model.layers:
        for w in layer.weights:
            name = w.name if "/" in w.name else f"{layer.name}/{w.name}"
            if "kernel" in name and "quantize" not in name.lower():
                out.append((name, np.asarray(w)))
        if hasattr(layer, "layers"):  # nested models
            out += _kernels(layer)
    return out


@dataclass
class SparsityInfo:
    """Zeros in the kernels (conv and dense weight matrices) of a Keras model: total and per layer."""

    zeros: int
    total: int
    layers: dict = field(default_factory=dict)  # name -> (zeros, total)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0

    def __repr__(self) -> str:
        rows = ", ".join(f"{k}: {100 * z / t:.1f}%" for k, (z, t) in self.layers.items())
        return f"SparsityInfo({100 * self.sparsity:.2f} % of {self.total:,} kernel weights are zero; {rows})"


def sparsity(model) -> SparsityInfo:
    """Fraction of exact zeros in every kernel of a Keras model (biases and BatchNorm not counted).

    Taught in 07_tensorflow_and_tflite.
    """
    layers = {name: (int((w == 0).sum()), int(w.size)) for name, w in _kernels(model)}
    return SparsityInfo(sum(z for z, _ in layers.values()), sum(t for _, t in layers.values()), layers)


def distinct_values(model) -> dict[str, int]:
    """Number of distinct values in each kernel of a Keras model (a clustered kernel holds at most k).

    Taught in 07_tensorflow_and_tflite.
    """
    return {name: int(np.unique(w).size) for name, w in _kernels(model)}


@dataclass
class PruningPlan:
    """Which kernels to prune and how hard, so that ``sparsity`` of *all* kernel weights end up zero.

    ``kernel_sizes``: kernel weights per layer; ``pruned``: the layers with at least ``min_weights``
    of them; ``layer_sparsity``: the sparsity each pruned layer gets (capped at ``cap``);
    ``expected_sparsity``: the fraction of all kernel weights that are then zero (below ``sparsity``
    only when the cap bites).
    """

    kernel_sizes: dict
    min_weights: int
    sparsity: float
    layer_sparsity: float
    pruned: list = field(default_factory=list)

    @property
    def expected_sparsity(self) -> float:
        total = sum(self.kernel_sizes.values())
        pruned = sum(self.kernel_sizes[name] for name in self.pruned)
        return self.layer_sparsity * pruned / total if total else 0.0

    def __repr__(self) -> str:
        return (f"kernel weights per layer: {self.kernel_sizes}; pruning the layers with >= {self.min_weights:,} to "
                f"{100 * self.layer_sparsity:.2f} % each ({100 * self.expected_sparsity:.2f} % of all kernel weights)")


def plan_pruning(model, sparsity: float, *, min_weights: int = 0, cap: float = 0.99) -> PruningPlan:
    """Plan magnitude pruning that leaves small layers dense and still zeroes ``sparsity`` of all kernel weights.

    Layers whose kernel holds fewer than ``min_weights`` weights (a first conv, a small classifier)
    save nothing measurable and lose accuracy when pruned; the others are pruned a little harder,
    ``sparsity * total / prunable``, capped at ``cap``. Pass ``plan.layer_sparsity`` and the same
    ``min_weights`` to :func:`prune_model`. Works on Keras 2 and Keras 3 models (no tfmot needed).

    Taught in 07_tensorflow_and_tflite.
    """
    check_range("sparsity", sparsity, 0.0, 1.0, high_open=True)
    check_range("min_weights", min_weights, 0)
    check_range("cap", cap, 0.0, 1.0, low_open=True, high_open=True)
    sizes = {layer.name: int(np.prod(layer.kernel.shape)) for layer in model.layers
             if getattr(layer, "kernel", None) is not None}
    pruned = [name for name, n in sizes.items() if n >= min_weights]
    if not pruned:
        raise OptkitError("min_weights", min_weights, f"leaves no layer to prune (kernel sizes: {sizes})",
                          "lower min_weights below the largest kernel's size")
    share = sum(sizes[name] for name in pruned) / sum(sizes.values())
    return PruningPlan(sizes, int(min_weights), float(sparsity), min(float(sparsity) / share, float(cap)), pruned)


@renamed_keyword("target_sparsity", "sparsity")
def pruning_schedule(sparsity: float, end_step: int, *, frequency: int | None = None,
                     begin_step: int = 0, initial_sparsity: float = 0.0):
    """A ``PolynomialDecay`` schedule that really reaches ``sparsity`` at ``end_step``.

    tfmot prunes only on steps where ``(step - begin_step) % frequency == 0``; its default
    ``frequency=100`` never fires past step 0 on a run shorter than 100 steps, so the model stays
    dense. ``frequency=None`` picks about ten pruning steps, and rounds ``end_step`` up to a
    multiple of it so the final step prunes to the target. (``target_sparsity=`` is the deprecated
    name of ``sparsity``.)

    Taught in 07_tensorflow_and_tflite.
    """
    check_range("sparsity", sparsity, 0.0, 1.0, high_open=True)
    check_range("end_step", end_step, 1)
    tfmot = import_tfmot()
    span = int(end_step) - int(begin_step)
    if span < 1:
        raise OptkitError("end_step", end_step, f"must come after begin_step={begin_step}", "raise end_step")
    if frequency is None:
        frequency = max(1, span // 10)
        span = -(-span // frequency) * frequency
    check_range("frequency", frequency, 1)
    return tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=float(initial_sparsity),
                                                final_sparsity=float(sparsity),
                                                begin_step=int(begin_step), end_step=int(begin_step) + span,
                                                frequency=int(frequency))


def _steps(n: int, batch_size: int) -> int:
    return -(-int(n) // int(batch_size))


@renamed_keyword("target_sparsity", "sparsity")
def prune_model(model, x: np.ndarray, y: np.ndarray, *, sparsity: float = 0.8, epochs: int = 1,
                batch_size: int = 128, learning_rate: float = 1e-3, frequency: int | None = None,
                schedule=None, min_weights: int = 0, strip: bool = True, seed: int = 0):
    """Magnitude-prune a Keras 2 model to ``sparsity`` while fine-tuning it on ``(x, y)``.

    ``tfmot.sparsity.keras.prune_low_magnitude`` wraps each conv/dense layer with a mask; a
    ``PolynomialDecay`` schedule (:func:`pruning_schedule`) raises the sparsity from 0 to the
    target over the first 3/4 of the run, and the last quarter fine-tunes at the final sparsity.
    ``min_weights`` leaves layers with fewer kernel weights than that dense (a first conv with a
    few hundred weights is sensitive and saves nothing). ``strip=True`` returns
    ``strip_pruning``'s plain model (zeros in ordinary kernels; what you export). ``schedule``
    replaces the default schedule (e.g. to show tfmot's own defaults). The wrappers mutate the
    layers they wrap: pass a fresh model (or a clone), not one you still use elsewhere.
    (``target_sparsity=`` is the deprecated name of ``sparsity``.)

    Taught in 07_tensorflow_and_tflite.
    """
    require_keras2(model)
    tfmot = import_tfmot()
    total_steps = _steps(len(x), batch_size) * int(epochs)
    if schedule is None:
        end = max(1, (3 * total_steps) // 4)
        schedule = pruning_schedule(sparsity, end, frequency=frequency)
    with silenced(stdout=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if min_weights:
            k2 = _keras(True)

            def wrap(layer):
                kernel = getattr(layer, "kernel", None)
                if kernel is not None and int(np.prod(kernel.shape)) >= min_weights:
                    return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
                return layer

            wrapped = k2.models.clone_model(model, clone_function=wrap)  # reuses the layers, weights and all
        else:
            wrapped = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    fit(wrapped, x, y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    return tfmot.sparsity.keras.strip_pruning(wrapped) if strip else wrapped


def quantize_aware(model, x: np.ndarray, y: np.ndarray, *, epochs: int = 1, batch_size: int = 128,
                   learning_rate: float = 1e-4, scheme: Any = None, seed: int = 0):
    """Quantization-aware training: fake-quantize a Keras 2 model (``quantize_model``) and fine-tune it.

    The returned model simulates int8 weights and activations in training, so the weights adapt
    to the rounding; convert it with ``to_tflite(qat, path, variant="int8")`` (no representative
    data needed: the ranges were learned). ``scheme`` is passed to ``quantize_apply`` (e.g. the
    prune-preserving scheme; see :func:`prune_preserving_qat`).

    Taught in 07_tensorflow_and_tflite.
    """
    require_keras2(model)
    tfmot = import_tfmot()
    q = tfmot.quantization.keras
    with silenced(stdout=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if scheme is None:
            qat = q.quantize_model(model)
        else:
            qat = q.quantize_apply(q.quantize_annotate_model(model), scheme)
    fit(qat, x, y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    return qat


def prune_preserving_qat(pruned_model, x: np.ndarray, y: np.ndarray, *, epochs: int = 1, batch_size: int = 128,
                         learning_rate: float = 1e-4, seed: int = 0):
    """QAT that keeps a pruned (stripped) Keras 2 model's zeros: ``Default8BitPrunePreserveQuantizeScheme``.

    Plain QAT would let the zeros regrow while it fine-tunes; this scheme masks them.

    Taught in 07_tensorflow_and_tflite.
    """
    tfmot = import_tfmot()
    return quantize_aware(pruned_model, x, y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                          scheme=tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme(), seed=seed)


def cluster_model(model, x: np.ndarray, y: np.ndarray, *, n_clusters: int = 16, epochs: int = 1,
                  batch_size: int = 128, learning_rate: float = 1e-4, strip: bool = True, seed: int = 0):
    """Weight clustering (k-means weight sharing): each kernel keeps at most ``n_clusters`` distinct values.

    ``tfmot.clustering.keras.cluster_weights`` (k-means++ initial centroids) then a fine-tune that
    trains the centroids, then ``strip_clustering``. The file does not shrink by itself (still
    float32), but it compresses well, and a runtime with a palette format stores
    ``log2(n_clusters)``-bit indices. On a Keras 3 model tfmot's ``cluster_weights`` returns None
    without a word; this raises an :class:`OptkitError` instead.

    Taught in 07_tensorflow_and_tflite.
    """
    require_keras2(model)
    check_range("n_clusters", n_clusters, 2)
    tfmot = import_tfmot()
    c = tfmot.clustering.keras
    with silenced(stdout=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clustered = c.cluster_weights(model, number_of_clusters=int(n_clusters),
                                      cluster_centroids_init=c.CentroidInitialization.KMEANS_PLUS_PLUS)
    if clustered is None:  # pragma: no cover - require_keras2 catches the known case
        raise OptkitError("model", type(model).__name__, "cluster_weights returned None",
                          "pass a tf_keras model (optkit.runtimes.tflow.to_keras2)")
    fit(clustered, x, y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    return c.strip_clustering(clustered) if strip else clustered
