"""ONNX Runtime's int8 recipes, and the arithmetic behind them.

:func:`preprocess` (``quant_pre_process``), :func:`calibration_reader` (arrays or dicts to a
rewindable ``CalibrationDataReader``), :func:`quantize_dynamic` (int8 weights, for transformers),
:func:`quantize_static` (QDQ per-channel with calibration, for CNNs; entropy ranges computed with
enough bins), :func:`layer_errors` (the layers whose quantization hurts most), :func:`node_errors`
and :func:`worst_nodes` (the nodes whose own quantization added the most error, to keep in
float with ``nodes_to_exclude``), :func:`convert_fp16`
(float16 weights and computation) and :func:`u8s8_matmul` (how x86 CPUs accumulate U8S8 products).
Taught in 06_onnx_and_onnx_runtime (``convert_fp16`` in 08_tensorrt).
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_choice, check_range
from optkit.runtimes.onnxrt.files import _check_dst, _check_model, _check_src, _quiet
from optkit.runtimes.onnxrt.inspection import inspect

#: ``quantize_static(method=...)`` choices -> ``CalibrationMethod`` member names.
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
#: ``quantize_static(quant_format=...)`` choices -> ``QuantFormat`` member names.
QUANT_FORMATS = {"qdq": "QDQ", "qoperator": "QOperator"}
_QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}


# --------------------------------------------------------------------------- quantization

def preprocess(src, dst, *, overwrite: bool = False) -> Path:
    """ORT's ``quant_pre_process``: symbolic shape inference, ORT's basic graph optimizations
    (BatchNorm folded into Conv, ...) and ONNX shape inference, so that the quantizer sees every
    tensor's shape and quantizes fused operators. Falls back to skipping the symbolic pass when a
    model's shapes defeat it.

    Taught in 06_onnx_and_onnx_runtime.
    """
    from onnxruntime.quantization import quant_pre_process

    from optkit.runtimes.model_files import atomic_write

    src_p = _check_src(src)
    dst_p = _check_dst(dst, "dst", overwrite=overwrite)
    with atomic_write(dst_p, overwrite=overwrite) as tmp:
        tmp_onnx = tmp.with_suffix(".onnx")
        try:
            with _quiet(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    # When symbolic shape inference gives up, ONNX Runtime saves its partial graph as
                    # sym_shape_infer_temp.onnx in the working directory: keep that out of the user's.
                    with tempfile.TemporaryDirectory(prefix="optkit-shapes-") as scratch, contextlib.chdir(scratch):
                        quant_pre_process(str(src_p.resolve()), str(tmp_onnx.resolve()))
                except Exception:
                    quant_pre_process(str(src_p), str(tmp_onnx), skip_symbolic_shape=True)
            os.replace(tmp_onnx, tmp)
        finally:
            with contextlib.suppress(OSError):
                tmp_onnx.unlink()
    return dst_p


class _ListReader:
    """A ``CalibrationDataReader`` over a list of feeds (built lazily to keep onnxruntime optional)."""

    def __new__(cls, feeds: list[dict]):
        from onnxruntime.quantization import CalibrationDataReader

        class ListReader(CalibrationDataReader):
            def __init__(self, feeds):
                self.feeds = feeds
                self._it = iter(feeds)

            def get_next(self):
                return next(self._it, None)

            def rewind(self):
                self._it = iter(self.feeds)

            def __len__(self):
                return len(self.feeds)

            def __repr__(self):
                return f"CalibrationDataReader({len(self.feeds)} batches)"

        return ListReader(feeds)


def calibration_reader(calibration, input_names: Sequence[str] | None = None, *, model=None):
    """Turn calibration data into an ORT ``CalibrationDataReader`` (rewindable, length known).

    ``calibration``: an iterable of ``dict[input name, np.ndarray]`` batches, or of arrays (for a
    single-input model; names come from ``input_names`` or the ``model`` path), or a
    ``CalibrationDataReader`` already (its batches are read once and kept). Torch tensors are
    converted. No batch at all raises an ``OptkitError``: calibration on nothing would give scales
    of zero.

    Taught in 06_onnx_and_onnx_runtime.
    """
    from onnxruntime.quantization import CalibrationDataReader

    if input_names is None and model is not None:
        input_names = [s.name for s in inspect(model).inputs]
    if isinstance(calibration, CalibrationDataReader):
        items = []
        while (item := calibration.get_next()) is not None:
            items.append(item)
    elif isinstance(calibration, (np.ndarray,)) or hasattr(calibration, "detach"):
        raise OptkitError("calibration", f"one {type(calibration).__name__}", "must be an iterable of batches",
                          "pass a list of batches, e.g. [x[i:i + 32] for i in range(0, len(x), 32)]")
    else:
        try:
            items = list(calibration)
        except TypeError:
            raise OptkitError("calibration", type(calibration).__name__, "is not iterable",
                              "pass a list of arrays or dicts, or a CalibrationDataReader") from None
    feeds = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            feed = {k: _np(v) for k, v in item.items()}
        else:
            if not input_names or len(input_names) != 1:
                raise OptkitError("calibration", f"item {i}: {type(item).__name__}",
                                  "is a bare array but the model's input names are unknown or several",
                                  "yield dicts {input name: array}, or pass input_names=[name]")
            feed = {input_names[0]: _np(item)}
        feeds.append(feed)
    if not feeds:
        raise OptkitError("calibration", calibration, "yielded no batches",
                          "pass a few hundred real examples from the calibration split (not the test split)")
    return _ListReader(feeds)


def _np(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value))


def quantize_dynamic(src, dst, *, per_channel: bool = False, weight_type: str = "int8",
                     preprocess: bool = True, op_types: Sequence[str] | None = None,
                     nodes_to_exclude: Sequence[str] | None = None, overwrite: bool = False) -> Path:
    """ORT dynamic quantization: int8 weights stored in the file, activations quantized at run time
    per tensor from their observed range. Best for transformers and MLPs (MatMul-heavy models
    where weight loading dominates). On convolutions it emits ``ConvInteger``, which ORT runs
    slowly on x86: use :func:`quantize_static` for CNNs (notebook 06 measures both).

    ``op_types``: restrict to these operator types (e.g. ``["MatMul", "Gemm"]``).
    ``nodes_to_exclude``: node names kept in float (see :func:`worst_nodes`).
    ``preprocess=True`` runs :func:`preprocess` (``quant_pre_process``) first.

    Taught in 06_onnx_and_onnx_runtime.
    """
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as _qd

    check_choice("weight_type", weight_type, _QUANT_TYPES)
    src_p = _check_src(src)
    dst_p = _check_dst(dst, "dst", overwrite=overwrite)
    return _quantize(src_p, dst_p, overwrite, preprocess,
                     lambda a, b: _qd(a, b, per_channel=per_channel, op_types_to_quantize=op_types,
                                      nodes_to_exclude=list(nodes_to_exclude or []),
                                      weight_type=getattr(QuantType, _QUANT_TYPES[weight_type])))


def quantize_static(src, dst, calibration, *, per_channel: bool = True, activation_type: str = "uint8",
                    weight_type: str = "int8", method: str = "minmax", quant_format: str = "qdq",
                    preprocess: bool = True, op_types: Sequence[str] | None = None,
                    nodes_to_exclude: Sequence[str] | None = None, symmetric: bool = False,
                    entropy_bins: int = 512, percentile: float = 99.999, reduce_range: bool = False,
                    overwrite: bool = False) -> Path:
    """ORT static quantization: activation scales fixed ahead of time from ``calibration`` data.

    ``calibration``: see :func:`calibration_reader` (empty -> ``OptkitError``). ``method``:
    ``"minmax"`` (range of everything seen), ``"entropy"`` (KL-divergence threshold) or
    ``"percentile"`` (the ``percentile``-th percentile of each tensor's absolute values,
    99.999 by default; clips outliers). ``quant_format``: ``"qdq"``
    (QuantizeLinear/DequantizeLinear pairs that ORT fuses into int8 kernels; the format every
    runtime, TensorRT included, reads) or ``"qoperator"`` (QLinearConv etc.; slow on x86 here).
    ``activation_type="uint8"`` with ``weight_type="int8"`` (U8S8) is the fast combination on x86
    CPUs; S8S8 can be far slower (notebook 06). ``nodes_to_exclude`` keeps sensitive nodes in
    float (see :func:`layer_errors`). ``symmetric=True`` makes activation ranges symmetric (zero
    point 0); with ``activation_type="int8"`` that is the Q/DQ form TensorRT requires.
    ``reduce_range=True`` quantizes weights to 7 bits: on an x86 CPU without VNNI, the U8S8 kernels
    add pairs of u8*s8 products into int16 (``vpmaddubsw``), which can saturate with 8-bit weights;
    with VNNI (``vpdpbusd`` accumulates in int32) there is nothing to avoid and it only costs precision.

    ``entropy_bins``: histogram bins of the entropy method. ORT's ``quantize_static`` builds its
    entropy calibrator with 128 bins for 128 quantized bins, which leaves a single candidate
    threshold, the full range: "entropy" silently equals "minmax". optkit calibrates the entropy
    ranges itself with 512 bins (TensorRT uses 2,048: finer but 10x slower here) and hands them to ORT as a calibration cache.

    Taught in 06_onnx_and_onnx_runtime.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as _qs

    check_choice("method", method, CALIBRATION_METHODS)
    check_choice("quant_format", quant_format, QUANT_FORMATS)
    check_choice("activation_type", activation_type, _QUANT_TYPES)
    check_choice("weight_type", weight_type, _QUANT_TYPES)
    src_p = _check_src(src)
    dst_p = _check_dst(dst, "dst", overwrite=overwrite)
    reader = calibration_reader(calibration, model=src_p)
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else {}
    if method == "percentile":
        extra["CalibPercentile"] = float(check_range("percentile", percentile, 50.0, 100.0))

    def run(a, b):
        reader.rewind()
        cache = None
        if method == "entropy":
            cache = _entropy_ranges(a, reader, Path(b).parent, entropy_bins)
        _qs(a, b, None if cache else reader, calibration_cache_path=cache, quant_format=getattr(QuantFormat, QUANT_FORMATS[quant_format]),
            per_channel=per_channel, activation_type=getattr(QuantType, _QUANT_TYPES[activation_type]),
            weight_type=getattr(QuantType, _QUANT_TYPES[weight_type]),
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
            op_types_to_quantize=op_types, nodes_to_exclude=list(nodes_to_exclude or []), extra_options=extra,
            reduce_range=bool(reduce_range))

    return _quantize(src_p, dst_p, overwrite, preprocess, run)


def _entropy_ranges(model_path: str, reader, work: Path, num_bins: int) -> str:
    """KL-divergence (entropy) ranges with ``num_bins`` histogram bins, saved as ORT's calibration cache."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 256:
        raise OptkitError("entropy_bins", num_bins, "must be an int of at least 256 (twice the 128 quantized bins)",
                          "pass e.g. 2048")
    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    calibrator = create_calibrator(Path(model_path), ops, augmented_model_path=str(work / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": num_bins, "num_quantized_bins": 128})
    reader.rewind()
    calibrator.collect_data(reader)
    cache = work / "entropy_ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return str(cache)


def _quantize(src: Path, dst: Path, overwrite: bool, pre: bool, run: Callable[[str, str], None]) -> Path:
    from optkit.runtimes.model_files import atomic_write

    work = Path(tempfile.mkdtemp(prefix=".quant.", dir=dst.parent))
    try:
        source = src
        if pre:
            source = preprocess(src, work / "pre.onnx")
        out = work / "quant.onnx"
        with _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                run(str(source), str(out))
            except OptkitError:
                raise
            except Exception as e:
                raise OptkitError("src", str(src), f"could not be quantized ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:300] if str(e) else ''})",
                                  "check that the calibration batches match the model's inputs (names, "
                                  "dtypes, shapes), and that the model runs in ONNX Runtime") from None
        _sorted_if_needed(out)
        _check_model(out, "dst")
        with atomic_write(dst, overwrite=overwrite) as tmp:
            os.replace(out, tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dst


def layer_errors(float_model, qdq_model, calibration, *, top: int | None = None) -> list[tuple[str, float]]:
    """Per-tensor SQNR (dB) between a float model's activations and its QDQ-quantized twin's, on
    the same ``calibration`` batches, lowest (worst) first: the first names are the layers to keep
    in float (``quantize_static(nodes_to_exclude=...)``) or to calibrate differently.

    Uses ``onnxruntime.quantization.qdq_loss_debug``. Both models should have been preprocessed
    the same way (pass the preprocessed float model, the one :func:`quantize_static` quantized).

    Taught in 06_onnx_and_onnx_runtime.
    """
    from onnxruntime.quantization import qdq_loss_debug as qd

    f_p, q_p = _check_src(float_model, "float_model"), _check_src(qdq_model, "qdq_model")
    reader = calibration_reader(calibration, model=f_p)
    work = Path(tempfile.mkdtemp(prefix=".qdqdebug."))
    try:
        with _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f_aug, q_aug = work / "float_aug.onnx", work / "qdq_aug.onnx"
            qd.modify_model_output_intermediate_tensors(str(f_p), str(f_aug))
            qd.modify_model_output_intermediate_tensors(str(q_p), str(q_aug))
            reader.rewind()
            q_act = qd.collect_activations(str(q_aug), reader)
            reader.rewind()
            f_act = qd.collect_activations(str(f_aug), reader)
            matched = qd.create_activation_matching(q_act, f_act)
            errors = qd.compute_activation_error(matched)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [(name, float(err.get("xmodel_err", math.nan))) for name, err in errors.items()
            if "xmodel_err" in err]
    rows.sort(key=lambda r: (math.isnan(r[1]), r[1]))
    return rows[:top] if top else rows


@dataclass(frozen=True)
class NodeError:
    """One float-model node: its output's SQNR in the quantized model, and the part it added.

    ``sqnr_db`` compares the node's output in the two models (the error accumulated up to here);
    ``added_db`` is the SQNR of the noise this node *added* to what its inputs already carried
    (noise-to-signal ratio of the output minus that of its noisiest input), so a deep node that
    only passes on earlier errors scores high and a node whose own quantization hurts scores low.
    ``input_db`` is the SQNR of 8-bit min-max rounding applied to the node's float activation
    input alone (what dynamic quantization does to it at run time): low where a few outliers
    stretch the range, as after a GELU. ``quantized``: the quantizer replaced this node (its
    name is gone from the quantized model).
    """

    name: str
    op_type: str
    tensor: str
    sqnr_db: float
    added_db: float
    input_db: float
    quantized: bool


def _nsr(ref: np.ndarray, test: np.ndarray) -> float:
    signal = float(np.mean(np.square(ref.astype(np.float64))))
    noise = float(np.mean(np.square(ref.astype(np.float64) - test.astype(np.float64))))
    return noise / signal if signal > 0 else (0.0 if noise == 0 else math.inf)


def _rounding_nsr(a: np.ndarray) -> float:
    """Noise-to-signal ratio of asymmetric uint8 min-max rounding of ``a`` (range includes 0)."""
    a = a.astype(np.float64)
    lo, hi = min(float(a.min()), 0.0), max(float(a.max()), 0.0)
    if hi == lo:
        return 0.0
    scale = (hi - lo) / 255.0
    zero = np.round(-lo / scale)
    return _nsr(a, (np.clip(np.round(a / scale) + zero, 0, 255) - zero) * scale)


def _db(nsr: float) -> float:
    return math.inf if nsr <= 0 else -10.0 * math.log10(nsr)


def node_errors(float_model, quant_model, calibration) -> list[NodeError]:
    """Per-node SQNR between a float model and its quantized twin (static QDQ or dynamic), on the
    same ``calibration`` batches (a validation slice, not the test set), worst added error first.

    Every intermediate tensor of both models is exposed (``qdq_loss_debug``) and tensors are
    matched by name: ORT's quantizers keep a quantized node's output name. Pass the float model
    the quantizer saw (the preprocessed one when ``preprocess=True``). The first names are the
    nodes to keep in float (``nodes_to_exclude=``); see :func:`worst_nodes`.

    Taught in 06_onnx_and_onnx_runtime.
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as qd

    f_p, q_p = _check_src(float_model, "float_model"), _check_src(quant_model, "quant_model")
    reader = calibration_reader(calibration, model=f_p)
    work = Path(tempfile.mkdtemp(prefix=".nodeerr."))
    try:
        with _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            acts = []
            for name, path in (("float", f_p), ("quant", q_p)):
                aug = work / f"{name}_aug.onnx"
                qd.modify_model_output_intermediate_tensors(str(path), str(aug))
                reader.rewind()
                acts.append(qd.collect_activations(str(aug), reader))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    f_act, q_act = acts
    graph = onnx.load(str(f_p), load_external_data=False).graph
    q_inputs = {n.name: list(n.input) for n in onnx.load(str(q_p), load_external_data=False).graph.node}
    weights = {t.name for t in graph.initializer}
    nsr = {}
    for t, f_vals in f_act.items():  # a QDQ model's dequantized copy of t is what its consumers read
        q_vals = q_act.get(t + "_DequantizeLinear_Output", q_act.get(t))
        if q_vals is not None and len(f_vals) == len(q_vals) and all(
                a.shape == b.shape for a, b in zip(f_vals, q_vals)):
            nsr[t] = _nsr(np.concatenate([a.ravel() for a in f_vals]), np.concatenate([a.ravel() for a in q_vals]))
    consumers: dict[str, list] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    rows = []
    for node in graph.node:
        out = node.output[0] if node.output else ""
        after = consumers.get(out, [])
        if out not in nsr and len(after) == 1 and after[0].op_type in ("Relu", "Clip"):
            out = after[0].output[0]  # a QDQ quantizer folds an activation into the node before it
        if out not in nsr:
            continue
        before = max([nsr[i] for i in node.input if i in nsr] or [0.0])
        acts = [i for i in node.input if i in f_act and i not in weights]
        rounding = max([_rounding_nsr(np.concatenate([a.ravel() for a in f_act[i]])) for i in acts] or [0.0])
        rows.append(NodeError(node.name, node.op_type, out, _db(nsr[out]), _db(max(nsr[out] - before, 0.0)),
                              _db(rounding), any(i in weights for i in node.input) and (
                                  node.name not in q_inputs  # dynamic: replaced by MatMulInteger & co.
                                  or any(i.endswith("_DequantizeLinear_Output") for i in q_inputs[node.name]))))
    rows.sort(key=lambda r: (r.added_db, r.sqnr_db))
    return rows


def worst_nodes(float_model, quant_model, calibration, *, top: int = 3, by: str = "input",
                op_types: Sequence[str] | None = None) -> list[str]:
    """Names of the ``top`` quantized nodes that hurt most: :func:`rank_nodes` of :func:`node_errors`.
    Pass them to ``quantize_static``/``quantize_dynamic(nodes_to_exclude=...)`` and measure again:
    a node kept in float costs speed and size, so exclude few.

    Taught in 06_onnx_and_onnx_runtime.
    """
    return rank_nodes(node_errors(float_model, quant_model, calibration), top=top, by=by, op_types=op_types)


def rank_nodes(rows: Sequence[NodeError], *, top: int | None = None, by: str = "input",
               op_types: Sequence[str] | None = None) -> list[str]:
    """Names of the quantized nodes among ``rows`` (:func:`node_errors`), worst first, at most
    ``top`` (None: all), among ``op_types`` (e.g. ``["MatMul"]``; None: any), ranked by
    ``by="input"`` (lowest ``input_db``: the activations 8 bits represent worst, the usual culprits)
    or ``by="added"`` (lowest ``added_db``).

    Taught in 06_onnx_and_onnx_runtime.
    """
    from optkit.core.errors import check_int

    check_int("top", top, low=1, allow_none=True)
    check_choice("by", by, ("input", "added"))
    chosen = [r for r in rows if r.quantized and (op_types is None or r.op_type in set(op_types))]
    chosen.sort(key=lambda r: (r.input_db, r.added_db) if by == "input" else (r.added_db, r.sqnr_db))
    return [r.name for r in chosen[:top]]


def convert_fp16(src, dst, *, keep_io_types: bool = True, overwrite: bool = False) -> Path:
    """Convert a model's weights and computation to float16 (ORT's ``convert_float_to_float16``).

    ``keep_io_types=True`` keeps float32 inputs and outputs (a ``Cast`` at each end), so callers
    do not change. FP16 pays on GPUs (tensor cores) and in TensorRT 11, whose strongly typed
    networks take precision from the file; ORT's CPU provider runs most fp16 operators slowly.
    The result passes ``onnx.checker``; check parity with :func:`verify` (expect ~1e-3 errors).

    Taught in 08_tensorrt.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from optkit.runtimes.model_files import atomic_write

    src_p = _check_src(src)
    dst_p = _check_dst(dst, "dst", overwrite=overwrite)
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(onnx.load(str(src_p)), keep_io_types=keep_io_types)
    _toposort(half.graph)  # the converter appends its input Casts at the end of the node list
    with atomic_write(dst_p, overwrite=overwrite) as tmp:
        tmp.write_bytes(half.SerializeToString())
    _check_model(dst_p, "dst")
    return dst_p


def _outer_inputs(node) -> set[str]:
    """Names a node reads: its inputs and what its subgraphs (If/Loop/Scan bodies) read from outside."""
    names = set(node.input)
    for attr in node.attribute:
        for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            inner = {i.name for i in g.input} | {t.name for t in g.initializer}
            for n in g.node:
                names |= {i for i in _outer_inputs(n) if i not in inner}
                inner.update(n.output)
    return names


def _toposort(graph) -> None:
    """Reorder ``graph.node`` in place so that every node comes after the nodes it reads from
    (counting the outer-scope values its subgraphs read)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    produced = {o for n in graph.node for o in n.output}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known or i not in produced for i in _outer_inputs(n))]
        if not ready:  # a cycle or an undefined input: leave the rest as they were, the checker will say
            ordered += pending
            break
        for n in ready:
            known.update(n.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def _sorted_if_needed(path: Path) -> None:
    """ONNX Runtime's quantizer can leave a node before the If/Loop that produces its input (ONNX
    Runtime sorts on load; the ONNX checker refuses): sort the file in place when it is so."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
        return
    except Exception as e:
        if "topologically sorted" not in str(e):
            return
    model = onnx.load(str(path))
    _toposort(model.graph)
    onnx.save(model, str(path))


# --------------------------------------------------------------------------- int8 arithmetic on x86

def u8s8_matmul(a, w, *, vnni: bool = True) -> np.ndarray:
    """``a @ w`` for uint8 activations ``a [m, k]`` and int8 weights ``w [k, n]``, accumulated in int32
    the way an x86 CPU does it.

    ``vnni=True``: AVX-512 VNNI / AVX-VNNI (``vpdpbusd``) multiply four u8 x s8 pairs and add them
    straight into int32: the exact result. ``vnni=False``: AVX2 / AVX-512 without VNNI use
    ``vpmaddubsw``, which adds each *pair* of products into a **saturating int16** first (255 x 127
    x 2 = 64,770 does not fit in 32,767) and only then widens to int32. The two disagree whenever a
    pair of large activations meets a pair of large weights of the same sign, which is why the
    same U8S8 model can give different int8 results on different CPUs, and why ORT offers
    ``reduce_range`` (7-bit weights: 2 x 255 x 64 = 32,640 fits) for CPUs without VNNI.

    Taught in 06_onnx_and_onnx_runtime.
    """
    a = np.asarray(a)
    w = np.asarray(w)
    if a.dtype != np.uint8 or w.dtype != np.int8:
        raise OptkitError("a, w", f"{a.dtype}, {w.dtype}", "must be uint8 activations and int8 weights",
                          "pass a.astype(np.uint8), w.astype(np.int8)")
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0]:
        raise OptkitError("a, w", f"{a.shape}, {w.shape}", "must be [m, k] and [k, n]", "reshape the operands")
    a32, w32 = a.astype(np.int32), w.astype(np.int32)
    if vnni:
        return a32 @ w32
    k = a.shape[1]
    if k % 2:  # the kernel pads k to even with zeros
        a32 = np.concatenate([a32, np.zeros((a.shape[0], 1), np.int32)], axis=1)
        w32 = np.concatenate([w32, np.zeros((1, w.shape[1]), np.int32)], axis=0)
    products = a32[:, :, None] * w32[None, :, :]            # [m, k, n]
    pairs = products[:, 0::2, :] + products[:, 1::2, :]     # vpmaddubsw: adjacent pairs ...
    pairs = np.clip(pairs, -32768, 32767)                    # ... saturated to int16
    return pairs.sum(axis=1, dtype=np.int64).astype(np.int32)
