"""What a runtime costs just to be there: the peak resident memory of a fresh process that loads and runs a model.

Inside a notebook every framework is already imported and warmed up, so the memory one call adds
(:func:`optkit.core.bench.call_memory`) says nothing about what a service pays to host a model
with PyTorch, ONNX Runtime, TFLite or TensorFlow. :func:`probe` starts a new Python process
(``sys.executable -c ...``) that imports **only** the runtime the artifact needs, loads the
artifact, runs it on zeros of the right shape and reports, from inside that process:

- ``rss_start_bytes``: resident memory of the bare interpreter;
- ``rss_before_load_bytes``: after importing the runtime (what the import alone costs);
- ``rss_loaded_bytes``: after loading the artifact;
- ``peak_rss_bytes``: the high-water mark of the whole process after running the batch
  (interpreter + runtime + model + one batch's activations): ``VmHWM`` from ``/proc/self/status``
  on Linux, ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` elsewhere. Not ``ru_maxrss`` on Linux:
  it survives ``exec``, so a child forked from a 2 GB notebook kernel would report 2 GB.

:func:`probe_sizes` runs several batch sizes in one process, smallest first: the high-water mark
only grows, so the peak read after each batch is that batch's peak (plus nothing a larger batch
added). Kinds (:data:`KINDS`): ``"torch_export"`` (a ``.pt2`` from ``torch.export.save``),
``"aoti"`` (a ``.pt2`` package from AOTInductor), ``"onnxruntime"`` (``.onnx``), ``"tflite"``
(``.tflite`` on LiteRT), ``"keras"`` (``.keras`` file), ``"saved_model"`` (a SavedModel folder),
and ``"numpy"`` (allocates ``allocate_mb`` MB: the probe's own check). :func:`probe_many` probes a
list of artifacts (two processes at a time) into one DataFrame; :func:`plot_probes` draws it.

Taught in 11_tensorflow_vs_pytorch_end_to_end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from optkit.core.errors import OptkitError, check_choice, check_int, check_path_exists, check_range

__all__ = ["KINDS", "MemoryProbe", "probe", "probe_sizes", "probe_many", "plot_probes"]

KINDS = {  # kind -> (suffixes it takes, what to pass)
    "torch_export": ((".pt2",), "a .pt2 file written by torch.export.save"),
    "aoti": ((".pt2",), "a .pt2 package written by torch._inductor.aoti_compile_and_package"),
    "onnxruntime": ((".onnx",), "an .onnx file"),
    "tflite": ((".tflite",), "a .tflite file"),
    "keras": ((".keras",), "a .keras file written by model.save"),
    "saved_model": (("",), "a SavedModel folder (tf.saved_model.save / tflow.export_saved_model)"),
    "numpy": ((), "no file: allocate_mb megabytes are allocated instead"),
}

_CHILD = r'''
import json, os, resource, sys, time
spec = json.loads(sys.argv[1])
def status(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
def rss():
    return status("VmRSS")
def peak():  # Linux keeps ru_maxrss across exec (the forking parent's peak): VmHWM is this process's own
    hwm = status("VmHWM")
    if hwm is not None:
        return hwm
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024
out = {"rss_start_bytes": rss()}
kind, path, shape, threads = spec["kind"], spec["path"], spec["input_shape"], spec["threads"]
import numpy as np
def zeros(b, s, dtype=np.float32):
    return np.zeros([b] + [int(d) for d in s], dtype)
if kind in ("torch_export", "aoti"):
    import torch
    if threads: torch.set_num_threads(threads)
    out["rss_before_load_bytes"] = rss(); t0 = time.perf_counter()
    fn = torch.export.load(path).module() if kind == "torch_export" else torch._inductor.aoti_load_package(path)
    run = lambda b: fn(torch.from_numpy(zeros(b, shape)))
elif kind == "onnxruntime":
    import onnxruntime as ort
    out["rss_before_load_bytes"] = rss(); t0 = time.perf_counter()
    so = ort.SessionOptions()
    if threads: so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    i = sess.get_inputs()[0]
    s = shape or [d if isinstance(d, int) else 1 for d in i.shape[1:]]
    run = lambda b: sess.run(None, {i.name: zeros(b, s)})
elif kind == "tflite":
    from ai_edge_litert.interpreter import Interpreter
    out["rss_before_load_bytes"] = rss(); t0 = time.perf_counter()
    it = Interpreter(model_path=path, num_threads=threads or None)
    d = it.get_input_details()[0]
    s = shape or [int(v) for v in d["shape"][1:]]
    def run(b):
        it.resize_tensor_input(d["index"], [b] + list(s)); it.allocate_tensors()
        it.set_tensor(d["index"], zeros(b, s, d["dtype"])); it.invoke()
elif kind in ("keras", "saved_model"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    out["rss_before_load_bytes"] = rss(); t0 = time.perf_counter()
    if kind == "keras":
        import keras
        m = keras.saving.load_model(path, compile=False)
        s = shape or [int(v) for v in m.inputs[0].shape[1:]]
        f = tf.function(lambda x: m(x, training=False), reduce_retracing=True)
        run = lambda b: f(tf.constant(zeros(b, s)))
    else:
        m = tf.saved_model.load(path)
        sig = m.signatures["serving_default"]
        arg = list(sig.structured_input_signature[1].items())[0]
        s = shape or [int(v) for v in arg[1].shape[1:]]
        run = lambda b: sig(**{arg[0]: tf.constant(zeros(b, s))})
else:  # numpy: allocate and touch allocate_mb megabytes
    out["rss_before_load_bytes"] = rss(); t0 = time.perf_counter()
    block = np.ones(int(spec["allocate_mb"] * 2**20) // 8, np.float64)
    run = lambda b: float(block[:: 512].sum())
out["load_s"] = time.perf_counter() - t0
out["rss_loaded_bytes"] = rss()
rows = []
for b in spec["batch_sizes"]:
    t0 = time.perf_counter()
    for _ in range(spec["runs"]):
        run(b)
    rows.append({"batch_size": b, "run_s": (time.perf_counter() - t0) / spec["runs"], "peak_rss_bytes": peak()})
out["rows"] = rows
print("MEMORY_PROBE " + json.dumps(out))
'''


@dataclass(frozen=True)
class MemoryProbe:
    """One probe: a fresh process that imported the runtime, loaded ``artifact`` and ran ``batch_size`` rows.

    Byte counts are resident memory measured inside that process; ``peak_rss_bytes`` is its
    high-water mark after the run. :attr:`runtime_mb` is the import's cost, :attr:`peak_mb` the
    whole process's peak. ``load_s`` and ``run_s`` are the load time and one run's time (the
    first runs include warm-up: not a latency measurement).
    """

    kind: str
    artifact: str | None
    batch_size: int
    rss_start_bytes: int
    rss_before_load_bytes: int
    rss_loaded_bytes: int
    peak_rss_bytes: int
    load_s: float
    run_s: float

    @property
    def peak_mb(self) -> float:
        """Peak resident memory of the whole process, in MB (10^6 bytes)."""
        return self.peak_rss_bytes / 1e6

    @property
    def runtime_mb(self) -> float:
        """What importing the runtime added to the bare interpreter, in MB."""
        return (self.rss_before_load_bytes - self.rss_start_bytes) / 1e6

    @property
    def model_mb(self) -> float:
        """What loading the artifact and running the batch added after the import, in MB."""
        return (self.peak_rss_bytes - self.rss_before_load_bytes) / 1e6

    def to_dict(self) -> dict[str, Any]:
        """The fields and the MB figures, for a DataFrame row."""
        return {**asdict(self), "peak_mb": self.peak_mb, "runtime_mb": self.runtime_mb, "model_mb": self.model_mb}


def _check_artifact(kind: str, artifact_path: Any) -> str | None:
    if kind == "numpy":
        return None
    if artifact_path is None:
        raise OptkitError("artifact_path", None, f"is needed for kind={kind!r}", f"pass {KINDS[kind][1]}")
    p = check_path_exists("artifact_path", artifact_path)
    suffixes = KINDS[kind][0]
    if kind == "saved_model":
        if not (p / "saved_model.pb").is_file():
            raise OptkitError("artifact_path", str(p), "is not a SavedModel folder (no saved_model.pb inside)",
                              "pass the folder tflow.export_saved_model wrote, or the matching kind for a file")
    elif p.suffix.lower() not in suffixes:
        guess = [k for k, (s, _) in KINDS.items() if p.suffix.lower() in s]
        raise OptkitError("artifact_path", str(p), f"has the suffix {p.suffix!r}, not one kind={kind!r} loads",
                          f"pass {KINDS[kind][1]}" + (f", or kind={guess[0]!r} for this file" if guess else ""))
    return str(p.resolve())


def probe_sizes(kind: str, artifact_path: Any, batch_sizes: Sequence[int] = (1,), *,
                input_shape: Sequence[int] | None = None, threads: int | None = 1, runs: int = 2,
                allocate_mb: float = 0.0, timeout_s: float = 300.0) -> list[MemoryProbe]:
    """One fresh process per call: load ``artifact_path`` with ``kind``'s runtime, run each batch size (smallest first).

    ``input_shape``: one row's shape without the batch dimension (``(1, 28, 28)`` for NCHW); needed
    for ``"torch_export"`` and ``"aoti"``, read from the model otherwise. ``threads``: intra-op
    threads of the runtime (1 by default: memory, not speed, is measured; None leaves the
    runtime's default). ``runs``: calls per batch size. Returns one :class:`MemoryProbe` per batch
    size; the peak after a batch is that process's high-water mark so far, which the smaller
    batches before it do not raise. A process that fails raises :class:`OptkitError` with the last
    line it printed to stderr.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    check_choice("kind", kind, list(KINDS))
    path = _check_artifact(kind, artifact_path)
    sizes = sorted({check_int("batch_sizes", b, 1) for b in (batch_sizes or [])})
    if not sizes:
        raise OptkitError("batch_sizes", batch_sizes, "holds no batch size", "pass e.g. [1, 32]")
    if kind in ("torch_export", "aoti") and input_shape is None:
        raise OptkitError("input_shape", None, f"is needed for kind={kind!r} (a program does not say its input shape)",
                          "pass one row's shape without the batch dimension, e.g. input_shape=(1, 28, 28)")
    check_int("threads", threads, 1, allow_none=True)
    check_int("runs", runs, 1)
    check_range("allocate_mb", allocate_mb, 0.0, 1e6)
    spec = {"kind": kind, "path": path, "input_shape": None if input_shape is None else [int(d) for d in input_shape],
            "threads": threads, "batch_sizes": sizes, "runs": int(runs), "allocate_mb": float(allocate_mb)}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True,
                              timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise OptkitError("timeout_s", timeout_s, f"the {kind} probe of {Path(path or '-').name} did not finish in time",
                          "pass a larger timeout_s, or a smaller batch size") from None
    lines = [x for x in done.stdout.splitlines() if x.startswith("MEMORY_PROBE ")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise OptkitError("artifact_path", path, f"the {kind} probe process failed (exit {done.returncode}: {last})",
                          "check that the file loads in this environment with the runtime kind names")
    out = json.loads(lines[-1][len("MEMORY_PROBE "):])
    return [MemoryProbe(kind=kind, artifact=path, batch_size=r["batch_size"], rss_start_bytes=out["rss_start_bytes"],
                        rss_before_load_bytes=out["rss_before_load_bytes"], rss_loaded_bytes=out["rss_loaded_bytes"],
                        peak_rss_bytes=r["peak_rss_bytes"], load_s=out["load_s"], run_s=r["run_s"])
            for r in out["rows"]]


def probe(kind: str, artifact_path: Any, batch_size: int = 1, **kwargs: Any) -> MemoryProbe:
    """:func:`probe_sizes` for one batch size: a fresh process's peak memory with ``artifact_path`` loaded and run.

    Keywords as in :func:`probe_sizes` (``input_shape``, ``threads``, ``runs``, ``allocate_mb``,
    ``timeout_s``). Example: ``probe("onnxruntime", "model.onnx", 32).peak_mb``.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    return probe_sizes(kind, artifact_path, [check_int("batch_size", batch_size, 1)], **kwargs)[0]


def probe_many(items: Sequence[tuple[str, str, Any, Sequence[int] | None]], batch_sizes: Sequence[int] = (1,), *,
               workers: int = 2, threads: int | None = 1, timeout_s: float = 300.0):
    """:func:`probe_sizes` for each ``(label, kind, artifact_path, input_shape)``, ``workers`` processes at a time.

    Processes running side by side do not share memory, so their peaks are their own (only the
    wall time shortens). Returns ``(frame, failed)``: a DataFrame with one row per label and batch
    size (the :class:`MemoryProbe` fields, MB figures and ``runtime`` = label), and ``{label: reason}``
    for the probes that failed (an artifact this machine cannot load is reported, not fatal).

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    import pandas as pd
    from concurrent.futures import ThreadPoolExecutor

    check_int("workers", workers, 1, 64)

    def one(item):
        label, kind, path, shape = item
        try:
            return label, probe_sizes(kind, path, batch_sizes, input_shape=shape, threads=threads,
                                       timeout_s=timeout_s), None
        except OptkitError as e:
            return label, [], f"{e.problem}"

    rows, failed = [], {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for label, probes, err in pool.map(one, list(items)):
            if err:
                failed[label] = err
            rows += [{"runtime": label, **p.to_dict()} for p in probes]
    return pd.DataFrame(rows), failed


def plot_probes(frame, *, title: str = "peak resident memory of a fresh process"):
    """Horizontal stacked bars per runtime, one panel per batch size: interpreter, runtime import, model + batch.

    ``frame``: the DataFrame of :func:`probe_many`. Returns the (closed) matplotlib Figure; show
    it with ``display(fig)``.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    import matplotlib.pyplot as plt

    if frame is None or not len(frame):
        raise OptkitError("frame", frame, "holds no probe", "run probe_many first (with at least one artifact)")
    m = frame.assign(interp=frame.rss_start_bytes / 1e6)
    sizes = sorted(m.batch_size.unique())
    n = m.runtime.nunique()
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 0.45 * n + 1.5), sharex=True, squeeze=False)
    plt.close(fig)
    for ax, bs in zip(axes[0], sizes):
        part = m[m.batch_size == bs].set_index("runtime").sort_values("peak_mb")
        left = None
        for col, label in [("interp", "Python interpreter"), ("runtime_mb", "runtime import"),
                           ("model_mb", "model + batch")]:
            ax.barh(part.index, part[col], left=left, label=label)
            left = part[col].to_numpy() if left is None else left + part[col].to_numpy()
        ax.set_title(f"{title}, batch {bs}", fontsize=9)
        ax.set_xlabel("MB")
    axes[0][0].legend(loc="lower right")
    fig.tight_layout()
    return fig
