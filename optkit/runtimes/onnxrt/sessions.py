"""ONNX Runtime sessions with every option in the open, and :class:`Runner`, a checked callable model.

:func:`session` builds an ``onnxruntime.InferenceSession`` (threads, execution mode, graph
optimization level, memory pattern and arena, providers with a CUDA-then-CPU fallback chain from
:func:`default_providers`); :func:`session_options_of` reads the options back; :class:`Runner`
checks each input's rank, dtype and fixed dimensions before running; :func:`resolved_threads` says what
a thread setting became (threads started, cores they are pinned to). Taught in
06_onnx_and_onnx_runtime.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_choice, check_int, check_path_exists
from optkit.runtimes.onnxrt.files import TensorSpec

#: ``session(optimization=...)`` choices -> ``onnxruntime.GraphOptimizationLevel`` member names.
OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                       "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
#: ``session(execution_mode=...)`` choices -> ``onnxruntime.ExecutionMode`` member names.
EXECUTION_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
# ORT's type strings ("tensor(float)") -> numpy dtype name.
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
               "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(uint16)": "uint16",
               "tensor(uint32)": "uint32", "tensor(uint64)": "uint64", "tensor(bool)": "bool",
               "tensor(bfloat16)": "bfloat16"}


# --------------------------------------------------------------------------- sessions

def default_providers() -> list[str]:
    """The fallback chain: ``CUDAExecutionProvider`` when this onnxruntime build has it, then
    ``CPUExecutionProvider`` (always). ORT assigns each node to the first provider that runs it.

    Taught in 06_onnx_and_onnx_runtime.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    chain = ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []
    return chain + ["CPUExecutionProvider"]


def session(path, *, threads: int | None = None, inter_op_threads: int | None = None,
            optimization: str = "all", execution_mode: str = "sequential", providers: Sequence | None = None,
            enable_mem_pattern: bool = True, enable_cpu_mem_arena: bool = True,
            optimized_model_path: str | os.PathLike | None = None, log_severity: int = 3,
            spinning: bool = True):
    """An ``onnxruntime.InferenceSession`` with its options spelled out.

    - ``threads``: intra-op threads (one operator split across cores); ``None`` = ORT's default
      (one per physical core it finds, each worker pinned to a core; :func:`resolved_threads`
      shows what it became). Set it on a shared machine: pinned workers cannot avoid busy cores. ``inter_op_threads``: threads running independent nodes at once,
      used only with ``execution_mode="parallel"``.
    - ``optimization``: ``"disable" | "basic" | "extended" | "all"`` (graph rewrites: constant
      folding, node fusions, layout changes; see :func:`optimize`).
    - ``enable_mem_pattern``: plan buffers from the first run's allocation pattern (fixed shapes
      gain, changing shapes lose); ``enable_cpu_mem_arena``: keep freed memory in an arena.
    - ``providers``: names or ``(name, options)`` pairs, in order of preference; ``None`` =
      :func:`default_providers` (CUDA if this build has it, then CPU). A name this build lacks
      raises an ``OptkitError`` listing the ones it has.
    - ``optimized_model_path``: also write the optimized graph there (what :func:`optimize` uses).
    - ``spinning``: ORT's intra-op workers busy-wait after each call to start the next one sooner
      (ORT's default, ``True``). ``False`` sets ``session.intra_op.allow_spinning=0``: the setting
      for a process that shares its cores, and for timing ORT interleaved with anything else, where
      spinning workers take the cores the next variant needs (on 2 cores an eager PyTorch call took
      0.9 ms alone and over 200 ms right after an ORT call).

    ``path`` may also be an ``onnx.ModelProto`` or serialized bytes. Read the options back with
    :func:`session_options_of`.

    Taught in 06_onnx_and_onnx_runtime.
    """
    import onnxruntime as ort

    check_choice("optimization", optimization, OPTIMIZATION_LEVELS)
    check_choice("execution_mode", execution_mode, EXECUTION_MODES)
    so = ort.SessionOptions()
    # None leaves the count to onnxruntime (0 in SessionOptions: one thread per physical core)
    so.intra_op_num_threads = check_int("threads", threads, low=1, allow_none=True) or 0
    so.inter_op_num_threads = check_int("inter_op_threads", inter_op_threads, low=1, allow_none=True) or 0
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
    so.execution_mode = getattr(ort.ExecutionMode, EXECUTION_MODES[execution_mode])
    so.enable_mem_pattern = bool(enable_mem_pattern)
    so.enable_cpu_mem_arena = bool(enable_cpu_mem_arena)
    so.log_severity_level = int(log_severity)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if optimized_model_path is not None:
        so.optimized_model_filepath = str(optimized_model_path)

    available = ort.get_available_providers()
    chain = default_providers() if providers is None else list(providers)
    if not chain:
        raise OptkitError("providers", providers, "is empty", "pass None, or e.g. ['CPUExecutionProvider']")
    for p in chain:
        name = p[0] if isinstance(p, (tuple, list)) else p
        if name not in available:
            raise OptkitError("providers", name, "is not in this onnxruntime build",
                              f"use one of {available} (CUDA needs the onnxruntime-gpu package and a GPU)")

    source: Any
    try:
        import onnx

        if isinstance(path, onnx.ModelProto):
            source = path.SerializeToString()
        elif isinstance(path, (bytes, bytearray)):
            source = bytes(path)
        else:
            p = check_path_exists("path", path)
            if p.is_dir():
                raise OptkitError("path", str(path), "is a folder, not an ONNX file", "pass the .onnx file")
            source = str(p)
    except ImportError:  # pragma: no cover - onnx is a dependency
        source = str(path)
    try:
        return ort.InferenceSession(source, sess_options=so, providers=chain)
    except Exception as e:
        text = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        label = "model bytes" if not isinstance(source, str) else source
        raise OptkitError("path", label, f"could not be loaded by ONNX Runtime ({type(e).__name__}: {text})",
                          "check that it is an ONNX file written by torch.onnx.export or an optkit.runtimes.onnxrt "
                          "recipe, with its .onnx.data file beside it") from None


def session_options_of(sess) -> dict[str, Any]:
    """The options a session actually runs with, read back from it (threads, execution mode,
    optimization level, memory pattern and arena, providers).

    Taught in 06_onnx_and_onnx_runtime.
    """
    import onnxruntime as ort

    so = sess.get_session_options()
    level = {getattr(ort.GraphOptimizationLevel, v): k for k, v in OPTIMIZATION_LEVELS.items()}
    mode = {getattr(ort.ExecutionMode, v): k for k, v in EXECUTION_MODES.items()}
    return {"threads": so.intra_op_num_threads, "inter_op_threads": so.inter_op_num_threads,
            "optimization": level.get(so.graph_optimization_level, str(so.graph_optimization_level)),
            "execution_mode": mode.get(so.execution_mode, str(so.execution_mode)),
            "enable_mem_pattern": so.enable_mem_pattern, "enable_cpu_mem_arena": so.enable_cpu_mem_arena,
            "providers": sess.get_providers(),
            "spinning": _config_entry(so, "session.intra_op.allow_spinning", "1") != "0"}


def _config_entry(so, key: str, default: str) -> str:
    """A session config entry, or ``default`` when it was never set (ORT raises then)."""
    try:
        return so.get_session_config_entry(key)
    except Exception:
        return default


def _ort_specs(args) -> list[TensorSpec]:
    return [TensorSpec(a.name, tuple(d if isinstance(d, int) else (d if isinstance(d, str) else None)
                                     for d in (a.shape or [])), _ORT_DTYPES.get(a.type, a.type)) for a in args]


class Runner:
    """A checked, callable ONNX Runtime model.

    ``Runner(path_or_session, **session_kwargs)`` (keywords go to :func:`session`).
    ``runner(x)`` / ``runner(ids, mask)`` / ``runner({"input": x})`` returns the first output as a
    numpy array; :meth:`run_all` returns every output. Torch tensors are accepted (converted on the
    CPU). Each input's rank, dtype and fixed dimensions are checked against the model first, so a
    wrong input is an ``OptkitError`` naming it, not an ONNX Runtime traceback.

    Taught in 06_onnx_and_onnx_runtime.
    """

    def __init__(self, path_or_session, **session_kwargs: Any):
        import onnxruntime as ort

        if isinstance(path_or_session, ort.InferenceSession):
            if session_kwargs:
                raise OptkitError("session_kwargs", sorted(session_kwargs), "cannot apply to an existing session",
                                  "pass a path to have options applied, or build the session with optkit.runtimes.onnxrt.session")
            self.session = path_or_session
            self.path = None
        else:
            self.session = session(path_or_session, **session_kwargs)
            self.path = Path(path_or_session) if isinstance(path_or_session, (str, os.PathLike)) else None
        self.inputs = _ort_specs(self.session.get_inputs())
        self.outputs = _ort_specs(self.session.get_outputs())
        self._names = [s.name for s in self.outputs]

    def _feed(self, args: tuple) -> dict[str, np.ndarray]:
        if len(args) == 1 and isinstance(args[0], dict):
            given = dict(args[0])
            unknown = sorted(set(given) - {s.name for s in self.inputs})
            if unknown:
                raise OptkitError("inputs", unknown, "are not inputs of this model",
                                  f"use the names {[s.name for s in self.inputs]}")
            missing = [s.name for s in self.inputs if s.name not in given]
            if missing:
                raise OptkitError("inputs", sorted(given), f"lack {missing}",
                                  f"pass every input: {[s.name for s in self.inputs]}")
        else:
            if len(args) != len(self.inputs):
                raise OptkitError("inputs", f"{len(args)} arrays", f"the model takes {len(self.inputs)} inputs "
                                  f"({', '.join(repr(s) for s in self.inputs)})",
                                  "pass one array per input, in this order, or a dict name -> array")
            given = {s.name: a for s, a in zip(self.inputs, args)}
        feed = {}
        for spec in self.inputs:
            feed[spec.name] = self._check(spec, given[spec.name])
        return feed

    @staticmethod
    def _check(spec: TensorSpec, value: Any) -> np.ndarray:
        try:
            import torch

            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
        except ImportError:  # pragma: no cover
            pass
        if not isinstance(value, np.ndarray):
            if isinstance(value, (list, tuple, int, float)):
                value = np.asarray(value)
            else:
                raise OptkitError(f"input {spec.name!r}", type(value).__name__, "is not an array",
                                  f"pass a numpy array {spec!r}")
        if value.ndim != spec.rank:
            raise OptkitError(f"input {spec.name!r}", f"shape {value.shape}", f"has rank {value.ndim}, the model "
                              f"expects rank {spec.rank} ({spec!r})",
                              "reshape it (a single example needs its batch axis: x[None])")
        if str(value.dtype) != spec.dtype:
            raise OptkitError(f"input {spec.name!r}", f"dtype {value.dtype}", f"the model expects {spec.dtype}",
                              f"convert it: x.astype(np.{spec.dtype})")
        for axis, (got, want) in enumerate(zip(value.shape, spec.shape)):
            if isinstance(want, int) and got != want:
                raise OptkitError(f"input {spec.name!r}", f"shape {value.shape}", f"dimension {axis} is {got}, the "
                                  f"model fixes it at {want} ({spec!r})",
                                  "resize the input, or re-export with that dimension dynamic")
        return np.ascontiguousarray(value)

    def run_all(self, *args: Any) -> list[np.ndarray]:
        """Every output, in the model's order."""
        return self.session.run(self._names, self._feed(args))

    def __call__(self, *args: Any) -> np.ndarray:
        return self.session.run(self._names[:1], self._feed(args))[0]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __repr__(self) -> str:
        where = self.path.name if self.path is not None else "session"
        opts = session_options_of(self.session)
        return (f"Runner({where}: inputs {self.inputs}, outputs {self.outputs}, "
                f"providers {[p.replace('ExecutionProvider', '') for p in opts['providers']]}, "
                f"threads {opts['threads'] or 'default'}, optimization {opts['optimization']})")


# --------------------------------------------------------------------------- threads, as resolved

def _tasks() -> set[int]:
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:  # not Linux: threads cannot be listed
        return set()


def resolved_threads(path, **session_kwargs: Any) -> dict[str, Any]:
    """What a session's intra-op thread setting resolved to, read from the threads it started.

    ``intra_op_num_threads=0`` (``threads=None``) lets ONNX Runtime choose; the session options
    keep reading 0, so the only way to see the choice is to count the threads the session started
    (Linux ``/proc/self/task``): an intra-op pool of N threads starts N - 1 workers (the calling
    thread is the N-th; a throwaway one-thread session is created first, so that the threads ORT
    starts once per process are not counted). Also returned: the CPUs each new worker is pinned to (ORT pins its
    workers to cores when it picks the count itself, and leaves them free when you set it), the
    cores this process may use (CPU affinity) and the cgroup CPU quota. Keys: ``requested``,
    ``threads`` (None where threads cannot be listed), ``pinned`` (one sorted CPU list per
    worker), ``available_cores``, ``logical_cores``, ``cpu_quota`` and ``session`` (the session itself).

    Taught in 06_onnx_and_onnx_runtime.
    """
    session(path, threads=1, optimization="disable")  # the first session also starts ORT's own threads
    before = _tasks()
    sess = session(path, **session_kwargs)
    new = sorted(_tasks() - before)
    pinned = []
    for tid in new:
        try:
            pinned.append(sorted(os.sched_getaffinity(tid)))
        except (OSError, AttributeError):
            pinned.append([])
    try:
        available = len(os.sched_getaffinity(0))
    except (OSError, AttributeError):
        available = os.cpu_count()
    quota = None
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            q, period = f.read().split()[:2]
            quota = None if q == "max" else round(int(q) / int(period), 2)
    except (OSError, ValueError):
        pass
    listed = bool(before)
    return {"requested": sess.get_session_options().intra_op_num_threads,
            "threads": len(new) + 1 if listed else None, "pinned": pinned,
            "available_cores": available, "logical_cores": os.cpu_count(), "cpu_quota": quota,
            "session": sess}
