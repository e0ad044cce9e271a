"""TensorFlow, Keras, SavedModel, TFLite / LiteRT and tensorflow-model-optimization, with quiet imports
and clear errors. Every name is re-exported here, so ``tflow.X`` works whatever submodule owns ``X``:

- :mod:`.env`: :func:`import_tensorflow` (TensorFlow's C++ log lines kept off stderr),
  :func:`import_tfmot`, :func:`environment_line`, :func:`silenced`, and Keras 2 (``tf_keras``) vs
  Keras 3 (``keras``): :func:`keras_flavour`, :func:`is_keras2`, :func:`require_keras2`, :func:`to_keras2`;
- :mod:`.models`: :func:`nhwc`, :func:`keras_arrays`, the ``tf.data`` :func:`pipeline` and PNG files for it
  (:func:`encode_png`, :func:`decode_png`, :func:`decode_png_batch`, the naive :func:`python_batches`), :func:`build_cnn`,
  :func:`fit`, :func:`keras_predict` (one traced ``tf.function``, optionally XLA), :func:`accuracy`,
  :func:`score` / :class:`Score`, :func:`op_error_reason`, :func:`artifact_sizes`;
- :mod:`.saved_model`: :func:`load_keras`, :func:`export_saved_model`, :func:`saved_model_predict`;
- :mod:`.lite`: :func:`to_tflite` in its :data:`VARIANTS` (``"float32"``, ``"dynamic"``, ``"float16"``,
  ``"int8"``; :data:`VARIANT_PRECISIONS`), :func:`representative_batches`, the :class:`LiteRT` runner
  (with or without the XNNPACK delegate), :func:`tensor_dtypes`;
- :mod:`.comparing`: LiteRT variants for ``variant.evaluate``: :func:`thread_variants` (one per
  ``num_threads``), :func:`fastest_threads` (keep each model's faster one), :func:`add_gzip_sizes`;
- :mod:`.plots`: :func:`plot_pipelines` (input-pipeline throughput) and :func:`plot_latencies` (latency by
  variant, coloured by runtime);
- :mod:`.mot`: tensorflow-model-optimization recipes on Keras 2 models: :func:`pruning_schedule`,
  :func:`plan_pruning` (:class:`PruningPlan`),
  :func:`prune_model`, :func:`quantize_aware` (QAT), :func:`prune_preserving_qat`, :func:`cluster_model`,
  and :func:`sparsity` / :func:`distinct_values` to check what they did.

``import optkit.runtimes.tflow`` does not import TensorFlow: every function imports it when called.

Taught in 07_tensorflow_and_tflite.
"""
from __future__ import annotations

from optkit.runtimes.tflow.env import (environment_line, import_tensorflow, import_tfmot, is_keras2, keras_flavour,
                                       require_keras2, silenced, to_keras2)
from optkit.runtimes.tflow.comparing import add_gzip_sizes, fastest_threads, thread_variants
from optkit.runtimes.tflow.lite import (VARIANT_PRECISIONS, VARIANTS, LiteRT, representative_batches, tensor_dtypes,
                                        to_tflite)
from optkit.runtimes.tflow.models import (Score, accuracy, artifact_sizes, build_cnn, decode_png, decode_png_batch,
                                          encode_png, fit, keras_arrays, keras_predict, nhwc, op_error_reason, pipeline,
                                          python_batches, score)
from optkit.runtimes.tflow.mot import (PruningPlan, SparsityInfo, cluster_model, distinct_values, plan_pruning,
                                       prune_model, prune_preserving_qat, pruning_schedule, quantize_aware, sparsity)
from optkit.runtimes.tflow.plots import plot_latencies, plot_pipelines
from optkit.runtimes.tflow.saved_model import export_saved_model, load_keras, saved_model_predict

__all__ = [
    "VARIANTS",
    "VARIANT_PRECISIONS",
    "import_tensorflow",
    "import_tfmot",
    "environment_line",
    "silenced",
    "keras_flavour",
    "is_keras2",
    "require_keras2",
    "to_keras2",
    "nhwc",
    "keras_arrays",
    "build_cnn",
    "fit",
    "keras_predict",
    "accuracy",
    "score",
    "op_error_reason",
    "Score",
    "artifact_sizes",
    "pipeline",
    "encode_png",
    "decode_png",
    "decode_png_batch",
    "python_batches",
    "load_keras",
    "export_saved_model",
    "saved_model_predict",
    "representative_batches",
    "to_tflite",
    "LiteRT",
    "tensor_dtypes",
    "thread_variants",
    "fastest_threads",
    "add_gzip_sizes",
    "plot_pipelines",
    "plot_latencies",
    "pruning_schedule",
    "plan_pruning",
    "PruningPlan",
    "prune_model",
    "quantize_aware",
    "cluster_model",
    "prune_preserving_qat",
    "sparsity",
    "SparsityInfo",
    "distinct_values",
]
