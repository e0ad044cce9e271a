"""Writing ONNX files: :func:`export` (PyTorch) and :func:`from_tensorflow` (Keras / ``tf.function``).

:func:`export` runs the dynamo exporter with a dynamic batch dimension, falls back to the legacy
TorchScript exporter (its deprecation warning recorded) only when dynamo fails, checks the file
with ``onnx.checker`` and checks parity in ONNX Runtime at the example's batch size and at one the
exporter never saw; it returns an :class:`ExportResult`. :func:`from_tensorflow` converts with
tf2onnx. Taught in 06_onnx_and_onnx_runtime.
"""
from __future__ import annotations

import contextlib
import inspect as _inspect
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from optkit.core.errors import OptkitError
from optkit.core.verify import Parity, ParityError, compare_outputs
from optkit.runtimes.onnxrt.files import (_check_dst, _check_model, _first_line, _load_proto, _opset_of, _quiet,
                                          _specs, _uses_external_data)
from optkit.runtimes.onnxrt.sessions import Runner


# --------------------------------------------------------------------------- result type

@dataclass
class ExportResult:
    """What :func:`export` wrote and how: ``path``, ``exporter`` (``"dynamo"`` or ``"legacy"``),
    ``opset``, ``warnings`` (messages worth reading: the fallback's reason, the legacy exporter's
    deprecation, tracer warnings), ``seconds`` (wall time of the export), ``input_names``,
    ``output_names``, ``dynamic_batch`` (whether dim 0 of every input is symbolic in the file)
    and ``parity`` (ONNX Runtime vs PyTorch on the example inputs and on a batch size the
    exporter never saw; ``None`` when ``check=False``).

    Taught in 06_onnx_and_onnx_runtime.
    """

    path: Path
    exporter: str
    opset: int
    warnings: list = field(default_factory=list)
    seconds: float = 0.0
    input_names: list = field(default_factory=list)
    output_names: list = field(default_factory=list)
    dynamic_batch: bool = False
    parity: Parity | None = None
    external_data: bool = False

    def __repr__(self) -> str:
        parts = [f"ExportResult({str(self.path)!r}", f"exporter={self.exporter}", f"opset={self.opset}",
                 f"dynamic_batch={self.dynamic_batch}", f"{self.seconds:.1f} s"]
        if self.external_data:
            parts.append("external data")
        if self.parity is not None:
            parts.append(f"max_abs={self.parity.max_abs:.2g}")
        if self.warnings:
            parts.append(f"{len(self.warnings)} warning(s)")
        return ", ".join(parts) + ")"


# --------------------------------------------------------------------------- helpers

def _as_tuple(example_inputs: Any) -> tuple:
    import torch

    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not args:
        raise OptkitError("example_inputs", example_inputs, "is empty",
                          "pass a tensor, or a tuple of tensors in forward()'s argument order")
    for i, a in enumerate(args):
        if not isinstance(a, torch.Tensor):
            raise OptkitError(f"example_inputs[{i}]", type(a).__name__, "is not a torch.Tensor",
                              "pass real example tensors (they fix dtypes and the non-batch dimensions)")
        if a.ndim == 0:
            raise OptkitError(f"example_inputs[{i}]", "a 0-d tensor", "has no batch dimension",
                              "pass tensors shaped [batch, ...]")
    return args


def _default_input_names(model: Any, n: int) -> list[str]:
    try:
        params = [p for p in _inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = [p.name for p in params[:n]]
    except (TypeError, ValueError, AttributeError):
        names = []
    if len(names) < n:
        names = [f"input_{i}" for i in range(n)] if n > 1 else ["input"]
    return names


def _flat_outputs(out: Any) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        flat = []
        for o in out:
            flat += _flat_outputs(o)
        return flat
    if isinstance(out, dict):
        return _flat_outputs(list(out.values()))
    if hasattr(out, "to_tuple"):  # Hugging Face ModelOutput
        return _flat_outputs(out.to_tuple())
    raise OptkitError("model", type(out).__name__, "returned something that is not tensors",
                      "make forward() return a tensor or a tuple of tensors")


def _grown_batch(args: tuple) -> tuple:
    """The example inputs with one more row (the first row repeated): a batch size the exporter
    never saw, to prove the batch dimension really is dynamic."""
    import torch

    return tuple(torch.cat([a, a[:1]], dim=0) for a in args)


def _move_into_place(tmpdir: Path, name: str, dst: Path, overwrite: bool) -> None:
    """Move ``tmpdir/name`` (and any side files it wrote) next to ``dst``; side files first, so the
    ``.onnx`` file appears only when its data is already there."""
    files = sorted(tmpdir.iterdir(), key=lambda f: f.name == name)
    for f in files:
        target = dst if f.name == name else dst.parent / f.name
        if target.exists() and not overwrite and f.name != name:
            raise OptkitError("path", str(target), "already exists (an external-data file of another model?)",
                              "pass overwrite=True, or choose a new name")
        os.replace(f, target)


# --------------------------------------------------------------------------- export

def export(model, example_inputs, path, *, input_names: Sequence[str] | None = None,
           output_names: Sequence[str] | None = None, dynamic_batch: bool = True, opset: int | None = None,
           external_data: bool = False, fallback: bool = True, overwrite: bool = False,
           check: bool = True, atol: float = 1e-4) -> ExportResult:
    """Export a PyTorch model to ONNX with the dynamo exporter; check it; return an :class:`ExportResult`.

    ``example_inputs`` is a tensor or a tuple of tensors in ``forward``'s order. With
    ``dynamic_batch=True`` dim 0 of every input is exported as one symbolic ``batch`` dimension
    (``torch.export.Dim``). ``opset=None`` takes the exporter's default (20 for dynamo in torch
    2.13). ``external_data=True`` writes weights to ``<name>.onnx.data`` beside the file (needed
    past 2 GB); the default writes one self-contained file.

    When the dynamo exporter raises and ``fallback=True``, the legacy TorchScript exporter
    (``dynamo=False``, ``dynamic_axes``) is tried; its DeprecationWarning and the dynamo error are
    kept in ``result.warnings``. The written model passes ``onnx.checker``; with ``check=True``
    ONNX Runtime runs it on the example inputs and on one more row than the exporter saw, and a
    :class:`~optkit.core.verify.ParityError` is raised past ``atol`` (or when the batch dimension came
    out fixed although ``dynamic_batch`` was asked for: the model's code fixed it, e.g. a tensor
    created with a literal batch size). The model is put in eval mode.

    Taught in 06_onnx_and_onnx_runtime.
    """
    import torch

    model, args, dst = _export_args(model, example_inputs, path, opset, dynamic_batch, overwrite)
    with contextlib.suppress(NotImplementedError, RuntimeError):  # an exported program's module refuses .eval()
        model.eval()
    with torch.inference_mode():
        ref_out = _flat_outputs(model(*args))
    in_names, out_names = _io_names(model, args, ref_out, input_names, output_names)

    notes: list[str] = []
    start = time.perf_counter()
    exporter = _write_onnx(model, args, dst, in_names, out_names, dynamic_batch=dynamic_batch, opset=opset,
                           external_data=external_data, fallback=fallback, overwrite=overwrite, notes=notes)
    seconds = time.perf_counter() - start

    proto = _load_proto(dst, load_external_data=False)
    inputs = _specs(proto.graph.input)
    is_dynamic = all(s.shape and not isinstance(s.shape[0], int) for s in inputs)
    result = ExportResult(path=dst, exporter=exporter, opset=_opset_of(proto), warnings=_dedupe(notes),
                          seconds=seconds, input_names=[s.name for s in inputs],
                          output_names=[o.name for o in proto.graph.output], dynamic_batch=is_dynamic,
                          external_data=_uses_external_data(proto))
    if check:
        _check_parity(result, model, args, ref_out, inputs, dynamic_batch=dynamic_batch, atol=atol)
    return result


def _export_args(model, example_inputs, path, opset, dynamic_batch: bool, overwrite: bool):
    """:func:`export`'s argument checks: ``(model, args, dst)`` with the model a ``torch.nn.Module``,
    the example inputs a tuple of tensors (batch 1 doubled under ``dynamic_batch``) and ``dst`` a
    ``.onnx`` path that may be written."""
    import torch

    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()  # re-exported from its graph; the dynamic batch is declared again below
    if not isinstance(model, torch.nn.Module):
        raise OptkitError("model", type(model).__name__, "is not a torch.nn.Module",
                          "pass the PyTorch model (for a TensorFlow model use tf2onnx, see notebook 06)")
    args = _as_tuple(example_inputs)
    dst = _check_dst(path, overwrite=overwrite)
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or not 7 <= opset <= 25):
        raise OptkitError("opset", opset, "is not an ONNX opset this stack supports",
                          "pass None (the exporter's default) or an int between 7 and 25 (ORT 1.32 runs up to 23)")
    if dynamic_batch and any(a.shape[0] < 2 for a in args):
        # torch.export specializes dimensions of size 0 and 1: a batch-1 example cannot prove that
        # the code works for any batch. Two copies of the example fix that without new data.
        args = tuple(torch.cat([a, a], 0) if a.shape[0] < 2 else a for a in args)
    return model, args, dst


def _io_names(model, args: tuple, ref_out: list, input_names, output_names) -> tuple[list, list]:
    """The input and output names of the file: the ones given (one per input / output, checked), else
    ``forward``'s parameter names and ``output`` / ``output_<i>``."""
    in_names = list(input_names) if input_names is not None else _default_input_names(model, len(args))
    out_names = (list(output_names) if output_names is not None
                 else (["output"] if len(ref_out) == 1 else [f"output_{i}" for i in range(len(ref_out))]))
    if len(in_names) != len(args):
        raise OptkitError("input_names", input_names, f"names {len(in_names)} inputs but {len(args)} were given",
                          "pass one name per example input")
    if len(out_names) != len(ref_out):
        raise OptkitError("output_names", output_names, f"names {len(out_names)} outputs but the model returns "
                          f"{len(ref_out)}", "pass one name per output")
    return in_names, out_names


def _write_onnx(model, args: tuple, dst: Path, in_names, out_names, *, dynamic_batch: bool, opset, external_data: bool,
                fallback: bool, overwrite: bool, notes: list) -> str:
    """Export into a temporary folder beside ``dst`` with the dynamo exporter, else (``fallback``) the
    legacy one; run ``onnx.checker``; move the file (and its external data) into place. Returns the
    exporter used; the exporters' warnings and the fallback's reason go to ``notes``."""
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    tmp = tmpdir / dst.name
    exporter = "dynamo"
    try:
        try:
            _export_dynamo(model, args, tmp, in_names, out_names, dynamic_batch, opset, external_data, notes)
        except OptkitError:
            raise
        except Exception as e:
            reason = "dynamo exporter failed: " + (_root_cause(e) or _first_line(e))
            if not fallback:
                raise OptkitError("model", type(model).__name__, reason,
                                  "fix the model for torch.export (see the message), or pass fallback=True to "
                                  "try the legacy TorchScript exporter") from None
            notes.append(reason)
            for f in tmpdir.iterdir():
                f.unlink()
            exporter = "legacy"
            _export_legacy(model, args, tmp, in_names, out_names, dynamic_batch, opset, notes)
        _check_model(tmp)
        _move_into_place(tmpdir, dst.name, dst, overwrite)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return exporter


def _check_parity(result: ExportResult, model, args: tuple, ref_out: list, inputs: list, *, dynamic_batch: bool,
                  atol: float) -> None:
    """:func:`export`'s post-checks: ONNX Runtime against PyTorch on the example inputs and, with a
    dynamic batch, on one more row than the exporter saw. Sets ``result.parity``; raises a
    :class:`~optkit.core.verify.ParityError` (carrying ``result``) past ``atol`` or when the batch
    dimension came out fixed although ``dynamic_batch`` was asked for."""
    import torch

    runner = Runner(result.path, threads=1)
    parity = compare_outputs([t.numpy() for t in ref_out], runner.run_all(*[a.numpy() for a in args]))
    failures = [] if parity.max_abs <= atol else [f"max_abs {parity.max_abs:.3g} > atol {atol:.3g} at batch "
                                                  f"{args[0].shape[0]}"]
    if dynamic_batch and not result.dynamic_batch:
        failures.append(f"the batch dimension came out fixed ({inputs[0]!r}): the model's code specialized "
                        "it (a tensor built with a literal batch size, a shape-dependent branch); build such "
                        "tensors from x.shape[0], or export with dynamic_batch=False")
    elif dynamic_batch:
        grown = _grown_batch(args)
        with torch.inference_mode():
            ref_grown = _flat_outputs(model(*grown))
        try:
            got = runner.run_all(*[a.numpy() for a in grown])
        except Exception as e:
            failures.append(f"ONNX Runtime failed at batch {grown[0].shape[0]}, which the exporter never saw: "
                            f"{str(e).splitlines()[0][:200]}")
        else:
            grown_parity = compare_outputs([t.numpy() for t in ref_grown], got)
            if not grown_parity.max_abs <= atol:
                failures.append(f"max_abs {grown_parity.max_abs:.3g} > atol {atol:.3g} at batch "
                                f"{grown[0].shape[0]}, which the exporter never saw")
            parity = grown_parity if grown_parity.max_abs > parity.max_abs else parity
    result.parity = parity
    if failures:
        err = ParityError(parity, failures)
        err.result = result  # the file stays on disk for inspection
        raise err


def _dedupe(messages: Iterable[str]) -> list[str]:
    seen, out = set(), []
    for m in messages:
        if m not in seen:
            seen.add(m)
            out.append(m)
    return out


def _root_cause(e: BaseException) -> str:
    """The innermost exception's one-line summary (torch wraps the real reason twice)."""
    inner = e
    for _ in range(10):
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    if inner is e:
        return ""
    return _first_line(inner)


# Warnings the exporters raise about their own internals, which say nothing to a user.
_NOISE = ("isinstance(treespec, LeafSpec)", "Constant folding - Only steps=1", "torchvision is not installed",
          "since it shares the same shape constraints with another axis")


def _keep(msg: str) -> bool:
    return not any(n in msg for n in _NOISE)


def _export_dynamo(model, args, tmp: Path, in_names, out_names, dynamic_batch, opset, external_data, notes):
    import torch

    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch} for _ in args)
    kwargs = dict(dynamo=True, input_names=in_names, output_names=out_names, dynamic_shapes=dynamic_shapes,
                  external_data=external_data, verbose=False)
    if opset is not None:
        kwargs["opset_version"] = opset
    with warnings.catch_warnings(record=True) as caught, _quiet():
        warnings.simplefilter("always")
        program = torch.onnx.export(model, args, None, **kwargs)
        _drop_stack_traces(program.model)
        program.save(str(tmp), external_data=external_data)
    notes += [f"{w.category.__name__}: {w.message}" for w in caught if _keep(str(w.message))]


def _drop_stack_traces(model) -> None:
    """Remove the exporter's per-node Python stack traces (``pkg.torch.onnx.stack_trace``).

    They name files on the exporting machine (the checkout and venv paths), so the same model
    exported from two folders gives two different files; nothing at inference reads them.
    """
    graphs = [model.graph, *getattr(model, "functions", {}).values()]
    for graph in graphs:
        for node in graph:
            node.metadata_props.pop("pkg.torch.onnx.stack_trace", None)


def _export_legacy(model, args, tmp: Path, in_names, out_names, dynamic_batch, opset, notes):
    import torch

    axes = {n: {0: "batch"} for n in list(in_names) + list(out_names)} if dynamic_batch else None
    with warnings.catch_warnings(record=True) as caught, _quiet():
        warnings.simplefilter("always")
        torch.onnx.export(model, args, str(tmp), dynamo=False, input_names=in_names, output_names=out_names,
                          dynamic_axes=axes, opset_version=opset or 17, do_constant_folding=True)
    notes += [f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught if _keep(str(w.message))]


# --------------------------------------------------------------------------- TensorFlow

def from_tensorflow(model, path, *, input_signature=None, opset: int = 17, overwrite: bool = False) -> Path:
    """Convert a Keras model (Keras 3 or tf_keras) or a ``tf.function`` to ONNX with tf2onnx.

    tf2onnx's ``from_keras`` fails on Keras 3 models, so the model is wrapped in a ``tf.function``
    with an explicit ``input_signature`` and converted with ``from_function``. ``input_signature``:
    a list of ``tf.TensorSpec``; by default it is read from ``model.inputs`` with a dynamic batch
    dimension. The written file passes ``onnx.checker``. Check parity with :func:`verify`.

    Taught in 06_onnx_and_onnx_runtime.
    """
    dst = _check_dst(path, overwrite=overwrite)
    from optkit.runtimes import tflow as otf

    tf = otf.import_tensorflow()
    if input_signature is None:
        inputs = getattr(model, "inputs", None)
        if not inputs:
            raise OptkitError("input_signature", None, "is needed: the model has no declared inputs",
                              "pass input_signature=[tf.TensorSpec([None, ...], tf.float32, name='x')]")
        input_signature = [tf.TensorSpec([None] + list(t.shape[1:]), t.dtype, name=f"input_{i}" if len(inputs) > 1
                                         else "input") for i, t in enumerate(inputs)]
    fn = model if hasattr(model, "get_concrete_function") else \
        tf.function(lambda *xs: model(*xs, training=False), input_signature=input_signature)
    from optkit.runtimes.model_files import atomic_write

    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tf2onnx

        try:
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=input_signature, opset=opset)
        except Exception as e:
            raise OptkitError("model", type(model).__name__, f"tf2onnx could not convert it ({_first_line(e)})",
                              "check the input_signature (shapes, dtypes), or export a SavedModel and use "
                              "`python -m tf2onnx.convert --saved-model`") from None
    with atomic_write(dst, overwrite=overwrite) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    _check_model(dst)
    return dst
