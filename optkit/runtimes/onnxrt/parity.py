"""Parity of a converted model: :func:`verify` runs a reference and an ONNX model on the same real inputs.

Returns a :class:`~optkit.core.verify.Parity`, or raises :class:`~optkit.core.verify.ParityError`
past the tolerances. Taught in 06_onnx_and_onnx_runtime; used in 07, 08 and the capstone.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from optkit.core.errors import OptkitError
from optkit.core.verify import Parity, compare_outputs, judge_parity
from optkit.runtimes.onnxrt.exporting import _flat_outputs
from optkit.runtimes.onnxrt.sessions import Runner


# --------------------------------------------------------------------------- verify

def verify(reference: Callable, candidate, inputs, *, atol: float = 1e-4, max_rel: float | None = None,
           min_top1: float | None = 1.0, min_sqnr_db: float | None = None, batch_size: int | None = None) -> Parity:
    """Run ``reference`` and ``candidate`` on the same real ``inputs``; return their :class:`Parity`
    or raise :class:`~optkit.core.verify.ParityError` naming each failed criterion.

    ``reference``: a ``torch.nn.Module`` (run in eval mode under ``torch.inference_mode``) or any
    callable taking the inputs as arrays/tensors. ``candidate``: an ONNX path, an
    ``InferenceSession``, a :class:`Runner`, or any callable. ``inputs``: an array/tensor, or a
    tuple of them for several inputs. ``batch_size`` splits the inputs into batches (every later
    conversion in the curriculum runs through this function). Criteria: ``max_abs <= atol``,
    ``max_rel <= max_rel`` (when given), top-1 agreement ``>= min_top1`` (2-D outputs),
    SQNR ``>= min_sqnr_db`` (when given). For a quantized model pass ``atol=math.inf`` and judge by
    SQNR and top-1.

    Taught in 06_onnx_and_onnx_runtime; used in 07, 08 and the capstone.
    """
    import onnxruntime as ort
    import torch

    args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    if not args:
        raise OptkitError("inputs", inputs, "is empty", "pass real inputs (a batch of test data)")
    np_args = [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a) for a in args]
    n = np_args[0].shape[0] if np_args[0].ndim else 1
    if n == 0:
        raise OptkitError("inputs", "0 rows", "holds no examples", "pass at least one real input")
    if isinstance(candidate, (str, os.PathLike, ort.InferenceSession)):
        candidate = Runner(candidate)
    if not callable(candidate):
        raise OptkitError("candidate", type(candidate).__name__, "is not callable",
                          "pass an ONNX path, an InferenceSession, a Runner or a function")
    if not callable(reference):
        raise OptkitError("reference", type(reference).__name__, "is not callable",
                          "pass the source model (a torch.nn.Module) or a function")
    step = n if batch_size is None else int(batch_size)
    refs, tests = [], []
    is_module = isinstance(reference, torch.nn.Module)
    if is_module:
        reference.eval()
    for lo in range(0, n, step):
        chunk = [a[lo:lo + step] for a in np_args]
        if is_module:
            with torch.inference_mode():
                r = _flat_outputs(reference(*[torch.from_numpy(np.array(c)) for c in chunk]))
            r = [t.float().numpy() for t in r]
        else:
            r = reference(*chunk)
            r = [np.asarray(x) for x in (r if isinstance(r, (list, tuple)) else [r])]
        t = candidate.run_all(*chunk) if isinstance(candidate, Runner) else candidate(*chunk)
        t = [np.asarray(x) for x in (t if isinstance(t, (list, tuple)) else [t])]
        if len(t) != len(r):  # a runner returning every output against a single-output reference
            t = t[:len(r)]
        refs.append(r)
        tests.append(t)
    ref_all = [np.concatenate([b[i] for b in refs]) for i in range(len(refs[0]))]
    test_all = [np.concatenate([b[i] for b in tests]) for i in range(len(tests[0]))]
    parity = compare_outputs(ref_all if len(ref_all) > 1 else ref_all[0],
                             test_all if len(test_all) > 1 else test_all[0])
    return judge_parity(parity, atol=atol, max_rel=max_rel, min_top1=min_top1, min_sqnr_db=min_sqnr_db)
