"""ONNX export, ONNX Runtime sessions, graph optimization and ORT quantization, each checked.

The path a PyTorch model takes to ONNX Runtime, one verb per step:

- :func:`export` - ``torch.onnx.export`` with the dynamo exporter, a dynamic batch dimension,
  one file or external data, ``onnx.checker``, and a parity check at the example's batch size
  *and* at a batch size the exporter never saw; falls back to the legacy TorchScript exporter
  (its deprecation warning recorded) only when the dynamo exporter fails;
- :func:`inspect` - a :class:`ModelInfo`: inputs and outputs (:class:`TensorSpec`), opset,
  node and operator counts, size on disk;
- :func:`session` - an ``onnxruntime.InferenceSession`` with every option in the open
  (threads, execution mode, graph optimization level, memory pattern and arena, providers with
  a CUDA-then-CPU fallback chain); :func:`session_options_of` reads them back;
- :class:`Runner` - a callable around a session that checks each input's rank, dtype and fixed
  dimensions and raises a readable error naming the input;
- :func:`verify` - run a reference (a ``torch.nn.Module`` or any callable) and an ONNX model on the
  same real inputs; :class:`~optkit.core.verify.Parity` back, :class:`~optkit.core.verify.ParityError` past
  the tolerances (max absolute and relative error, top-1 agreement, SQNR);
- :func:`optimize` - ONNX Runtime's graph optimizations, saved as a model (offline optimization);
  :func:`simplify` - the onnxslim simplifier;
- :func:`quantize_dynamic`, :func:`quantize_static` - ORT's quantization recipes (dynamic int8
  for transformers; static QDQ per-channel with calibration for CNNs), with
  :func:`calibration_reader` turning arrays into a ``CalibrationDataReader`` and
  :func:`layer_errors` finding the layer whose quantization hurts most (``qdq_loss_debug``).

Comparisons go through the one measurement path (:func:`optkit.core.variant.evaluate`):
:func:`to_variant` makes an ONNX model a Variant (size on disk, session options, numpy timing
inputs), :func:`quantize_static_variants` one int8 Variant per setting, :func:`with_head` and
:func:`linear_head` turn an encoder into a task model (accuracy, agreement), and
:func:`fastest_source_float` picks the fair baseline of an "ORT is faster" claim (the best
PyTorch float variant, not eager only).

:func:`from_tensorflow` converts a Keras model with tf2onnx; :func:`convert_fp16` halves a model's
precision (08_tensorrt); :func:`u8s8_matmul` shows how x86 CPUs accumulate int8 products.

Submodules, one job each (each imports only those listed before it; this file imports them all):

- :mod:`.files` - shared pieces: :class:`TensorSpec`, checks on source and destination files,
  loading a model proto, ``onnx.checker``, the exporters' silencer;
- :mod:`.inspection` - :class:`ModelInfo`, :func:`op_counts`, :func:`inspect`, :func:`check`;
- :mod:`.sessions` - :func:`default_providers`, :func:`session`, :func:`session_options_of`,
  :func:`resolved_threads`,
  :class:`Runner`;
- :mod:`.exporting` - :class:`ExportResult`, :func:`export` (dynamo, legacy fallback, parity
  checks), :func:`from_tensorflow`;
- :mod:`.parity` - :func:`verify`;
- :mod:`.optimization` - :func:`optimize`, :func:`simplify`, :func:`optimize_transformer` (ORT's
  transformer fusions, counted);
- :mod:`.quantization` - :func:`preprocess`, :func:`calibration_reader`, :func:`quantize_dynamic`,
  :func:`quantize_static`, :func:`layer_errors`, :func:`node_errors`, :func:`worst_nodes`, :func:`rank_nodes`, :func:`convert_fp16`, :func:`u8s8_matmul`;
- :mod:`.comparing` - :func:`to_variant`, :func:`quantize_static_variants`, :func:`with_head`,
  :func:`linear_head`, :func:`numpy_inputs`, :func:`fastest_source_float`, :func:`plot_records`,
  :func:`plot_node_errors`.

Every failure on bad input is an :class:`~optkit.core.errors.OptkitError`. Taught in
06_onnx_and_onnx_runtime; used by 08_tensorrt and the capstone's ``optkit.optimize``. Importing
this package imports neither torch nor onnx nor onnxruntime: each function imports what it needs.
"""
from __future__ import annotations

from optkit.runtimes.onnxrt.comparing import (RUNTIME, fastest_source_float, linear_head, numpy_inputs,
                                              plot_node_errors, plot_records, quantize_static_variants,
                                              to_variant, with_head)
from optkit.runtimes.onnxrt.exporting import ExportResult, export, from_tensorflow
from optkit.runtimes.onnxrt.files import TensorSpec
from optkit.runtimes.onnxrt.inspection import ModelInfo, check, inspect, op_counts
from optkit.runtimes.onnxrt.optimization import FUSED_OPS, optimize, optimize_transformer, simplify
from optkit.runtimes.onnxrt.parity import verify
from optkit.runtimes.onnxrt.profiling import Profile, node_times, op_times, profile
from optkit.runtimes.onnxrt.quantization import (CALIBRATION_METHODS, QUANT_FORMATS, NodeError, calibration_reader,
                                                 convert_fp16, layer_errors, node_errors, preprocess,
                                                 quantize_dynamic, quantize_static, rank_nodes, u8s8_matmul,
                                                 worst_nodes)
from optkit.runtimes.onnxrt.sessions import (EXECUTION_MODES, OPTIMIZATION_LEVELS, Runner, default_providers,
                                             resolved_threads, session, session_options_of)

__all__ = [
    "Profile",
    "profile",
    "op_times",
    "node_times",
    "ExportResult",
    "TensorSpec",
    "ModelInfo",
    "export",
    "inspect",
    "check",
    "op_counts",
    "default_providers",
    "session",
    "session_options_of",
    "Runner",
    "verify",
    "optimize",
    "simplify",
    "optimize_transformer",
    "FUSED_OPS",
    "preprocess",
    "calibration_reader",
    "quantize_dynamic",
    "quantize_static",
    "layer_errors",
    "node_errors",
    "worst_nodes",
    "rank_nodes",
    "NodeError",
    "resolved_threads",
    "u8s8_matmul",
    "from_tensorflow",
    "convert_fp16",
    "to_variant",
    "quantize_static_variants",
    "with_head",
    "linear_head",
    "numpy_inputs",
    "fastest_source_float",
    "plot_records",
    "plot_node_errors",
    "RUNTIME",
    "OPTIMIZATION_LEVELS",
    "EXECUTION_MODES",
    "CALIBRATION_METHODS",
    "QUANT_FORMATS",
]
