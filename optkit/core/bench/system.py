"""The machine under the numbers: threads, peak memory, and the environment line.

- :func:`threads` (and the private ``_use_threads`` that :func:`~optkit.core.bench.measure` and
  :func:`~optkit.core.bench.compare` use) set torch's intra-op thread count for a block and
  restore it afterwards; torch is imported only when a thread count is read or set.
- :func:`peak_memory` and its :class:`MemoryResult`: peak resident memory of one call, from the
  kernel's high-water mark where allowed, else by sampling.
- :func:`environment` and :func:`environment_line`: CPU, flags (:data:`CPU_FLAGS`), cores, quota,
  versions, GPU, and any instruction-set cap (:data:`ISA_CAP_VARIABLES`) that every number was
  measured under. TensorFlow is never imported here.

Taught in 00_measure_first.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys
import threading
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from optkit.core.errors import OptkitError, check_callable, check_int

# CPU flags that decide which kernels a runtime can use. x86 first, then Arm.
CPU_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2",
)


# --------------------------------------------------------------------------- input checks

def _check_callable(parameter: str, value: Any, *, optional: bool = False) -> None:
    # the one callable check of the whole bench package (timing and comparison use it too)
    check_callable(parameter, value, optional=optional, fix="pass a function taking no arguments, e.g. lambda: model(x)")


# --------------------------------------------------------------------------- threads

def _torch():
    """torch if it can be imported, else None (timing ONNX Runtime or TFLite needs no torch)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return None
    return torch


def _current_threads() -> int | None:
    torch = _torch()
    return None if torch is None else int(torch.get_num_threads())


@contextlib.contextmanager
def _use_threads(n: int | None) -> Iterator[int | None]:
    if n is None:
        yield _current_threads()
        return
    n = check_int("threads", n, 1)
    torch = _torch()
    if torch is None:  # pragma: no cover
        raise OptkitError("threads", n, "needs torch, which is not installed",
                          "leave threads=None and set threads on your runtime's session")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def threads(n: int) -> Iterator[int]:
    """Run a block with ``torch.set_num_threads(n)``, restoring the previous count afterwards.

    Only torch's intra-op pool is affected; ONNX Runtime (``SessionOptions.intra_op_num_threads``)
    and TFLite (``Interpreter(num_threads=...)``) take their thread count when created.

    Taught in 00_measure_first.
    """
    if n is None:
        raise OptkitError("n", n, "must be an integer", "pass an int >= 1, e.g. threads(1)")
    with _use_threads(n) as used:
        yield used


# --------------------------------------------------------------------------- memory

class MemoryResult(int):
    """Peak resident memory (RSS) of the process during one call, in bytes.

    It *is* that number (an ``int``), so ``peak_memory(fn) / 1e6`` gives megabytes, and it carries:
    ``peak_rss_bytes`` (same value), ``delta_rss_bytes`` (peak during the call minus RSS just
    before it: what the call itself added at its worst), ``cuda_peak_bytes`` (peak CUDA memory
    allocated by torch during the call, or None without a GPU) and ``method`` (how RSS was read).

    Taught in 00_measure_first.
    """

    peak_rss_bytes: int
    delta_rss_bytes: int
    cuda_peak_bytes: int | None
    method: str

    def __new__(cls, peak_rss_bytes: int, delta_rss_bytes: int,
                cuda_peak_bytes: int | None = None, method: str = ""):
        obj = super().__new__(cls, int(peak_rss_bytes))
        obj.peak_rss_bytes = int(peak_rss_bytes)
        obj.delta_rss_bytes = int(delta_rss_bytes)
        obj.cuda_peak_bytes = None if cuda_peak_bytes is None else int(cuda_peak_bytes)
        obj.method = method
        return obj

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the four fields."""
        return {"peak_rss_bytes": self.peak_rss_bytes, "delta_rss_bytes": self.delta_rss_bytes,
                "cuda_peak_bytes": self.cuda_peak_bytes, "method": self.method}

    def __repr__(self) -> str:
        cuda = ("no CUDA" if self.cuda_peak_bytes is None
                else f"CUDA peak {self.cuda_peak_bytes / 1e6:.1f} MB")
        return (f"MemoryResult(peak RSS {self.peak_rss_bytes / 1e6:.1f} MB, "
                f"+{self.delta_rss_bytes / 1e6:.1f} MB during the call, {cuda}, via {self.method})")

    __str__ = __repr__

    def __reduce__(self):
        return (MemoryResult, (self.peak_rss_bytes, self.delta_rss_bytes,
                               self.cuda_peak_bytes, self.method))


_PROC_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kb(field_name: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes, or None where there is no /proc."""
    try:
        with open(_PROC_STATUS) as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _rss_bytes() -> int | None:
    rss = _status_kb("VmRSS")
    if rss is not None:
        return rss
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def _reset_hwm() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM); False where that is not allowed."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_memory_sampled(fn: Callable, args: tuple, kw: dict,
                         interval_s: float = 0.001) -> tuple[int, int, str]:
    """Peak RSS by polling from a thread (may miss a spike shorter than ``interval_s``)."""
    before = _rss_bytes()
    if before is None:
        import resource

        fn(*args, **kw)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak *= 1 if sys.platform == "darwin" else 1024
        return peak, 0, "getrusage (lifetime peak of the process, not reset)"
    peak = [before]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            rss = _rss_bytes() or 0
            if rss > peak[0]:
                peak[0] = rss
            done.wait(interval_s)

    sampler = threading.Thread(target=poll, daemon=True)
    sampler.start()
    try:
        fn(*args, **kw)
    finally:
        peak[0] = max(peak[0], _rss_bytes() or 0)
        done.set()
        sampler.join()
    return peak[0], peak[0] - before, f"sampling every {interval_s * 1e3:g} ms"


def peak_memory(fn: Callable, *args: Any, **kw: Any) -> MemoryResult:
    """Call ``fn(*args, **kw)`` once and return the peak resident memory, as a :class:`MemoryResult`.

    On Linux the kernel's high-water mark is reset (``5`` written to /proc/self/clear_refs) and
    VmHWM read after the call: exact, even for a spike of a microsecond. Where that is refused
    (some containers) a thread samples RSS every millisecond instead. Without /proc, psutil is
    sampled if installed, else the lifetime peak from ``getrusage`` is reported. On a GPU,
    torch's CUDA peak is reset before and read after the call. ``fn``'s return value is dropped.

    Taught in 00_measure_first.
    """
    _check_callable("fn", fn)
    torch = sys.modules.get("torch")
    cuda = torch is not None and torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _rss_bytes()
    if before is not None and _status_kb("VmHWM") is not None and _reset_hwm():
        fn(*args, **kw)
        peak = max(_status_kb("VmHWM") or 0, before)
        delta, method = peak - before, "VmHWM after clear_refs"
    else:
        peak, delta, method = _peak_memory_sampled(fn, args, kw)
    cuda_peak = None
    if cuda:
        torch.cuda.synchronize()
        cuda_peak = int(torch.cuda.max_memory_allocated())
    return MemoryResult(peak, delta, cuda_peak, method)


def release_memory() -> bool:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Without it, memory a previous call freed stays resident and the next call reuses it, so its
    peak shows "+0 MB" (resident memory cannot see reuse). Returns False where ``malloc_trim`` is
    not available (not glibc): the next measurement may then under-count.

    Only the young generations are collected: what a previous call freed is there, while a full
    collection rescans every object the libraries loaded (about 2 s each time with TensorFlow
    imported, once per variant and batch size in :func:`optkit.core.variant.evaluate`).
    """
    import gc

    gc.collect(1)
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.malloc_trim(0)) or True
    except (OSError, AttributeError):
        return False


def call_memory(fn: Callable, *args: Any, **kw: Any) -> MemoryResult:
    """Peak resident memory one call of ``fn`` adds on top of the process, freed memory released first.

    :func:`release_memory`, then :func:`peak_memory`; read ``.delta_rss_bytes``. It sees what
    the call's tensors (activations, workspaces) occupy; it does not see memory a runtime keeps
    between calls in its own pool (ONNX Runtime's arena, TensorFlow's allocator, a CUDA caching
    allocator): that was counted when the pool first grew.

    Taught in 00_measure_first.
    """
    _check_callable("fn", fn)
    release_memory()
    return peak_memory(fn, *args, **kw)


# --------------------------------------------------------------------------- environment

def _cpuinfo() -> tuple[str | None, set[str]]:
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if model is None and key in ("model name", "hardware", "cpu model"):
                    model = value.strip() or None
                elif not flags and key in ("flags", "features"):
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model, flags


def _cpu_quota() -> float | None:
    """CPUs granted by a cgroup v2 quota (``cpu.max``), or None when unlimited or unknown."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return round(int(quota) / int(period), 2)


def _available_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


#: Variables that cap the instruction set math libraries use (oneDNN, MKL, ATen, numpy).
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY",
                     "NPY_DISABLE_CPU_FEATURES")


def environment() -> dict[str, Any]:
    """Facts about the machine and software every measurement depends on, as a JSON-ready dict.

    Keys: ``cpu``, ``arch``, ``cpu_flags`` (each of :data:`CPU_FLAGS` -> present or not),
    ``logical_cores``, ``available_cores`` (this process's CPU affinity), ``cpu_quota`` (cgroup
    limit, or None), ``memory_bytes``, ``torch_threads``, ``torch_interop_threads``,
    ``thread_env`` (OMP/MKL/... variables that are set), ``os``, ``python``, ``numpy``, ``torch``,
    ``onnxruntime``, ``onnx``, ``tensorflow`` (only if already imported: this never imports it),
    ``gpu`` and ``cuda`` (None without a GPU), ``isa_cap`` (variables of
    :data:`ISA_CAP_VARIABLES` that hold the math libraries below the CPU's best kernels, as
    ``make test ISA=avx2`` sets them). No host or user names.

    Taught in 00_measure_first.
    """
    model, flags = _cpuinfo()
    env: dict[str, Any] = {
        "cpu": model or platform.processor() or platform.machine() or "unknown CPU",
        "arch": platform.machine(),
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS} if flags else {},
        "logical_cores": os.cpu_count(),
        "available_cores": _available_cores(),
        "cpu_quota": _cpu_quota(),
        "memory_bytes": _memory_bytes(),
        "torch_threads": None,
        "torch_interop_threads": None,
        "thread_env": {k: os.environ[k] for k in
                       ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                        "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
                       if k in os.environ},
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None,
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "tensorflow": None,
        "gpu": None,
        "cuda": None,
        "isa_cap": {k: os.environ[k] for k in ISA_CAP_VARIABLES if os.environ.get(k)},
    }
    torch = _torch()
    if torch is not None:
        env["torch"] = torch.__version__
        env["torch_threads"] = int(torch.get_num_threads())
        env["torch_interop_threads"] = int(torch.get_num_interop_threads())
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda"] = torch.version.cuda
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        env["tensorflow"] = getattr(tf, "__version__", None)
    return env


def _isa_summary(flags: Mapping[str, bool]) -> str | None:
    """The most capable matrix/vector extension present, in words."""
    ladder = (
        ("amx_tile", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"),
        ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2"), ("sve2", "SVE2"), ("sve", "SVE"),
        ("i8mm", "NEON i8mm"), ("asimddp", "NEON dotprod"), ("asimd", "NEON"),
    )
    for flag, words in ladder:
        if flags.get(flag):
            return words
    return None


def environment_line(env: Mapping[str, Any] | None = None) -> str:
    """One line stating the hardware and threads, to print beside every number.

    e.g. ``"AMD EPYC (AVX-512 VNNI), 2 cores, torch 2.13.0 with 2 threads, no GPU"``.
    Pass a dict from :func:`environment` (say, one stored in a Record) to describe that machine.

    Taught in 00_measure_first.
    """
    env = environment() if env is None else env
    cpu = env.get("cpu") or "unknown CPU"
    isa = _isa_summary(env.get("cpu_flags") or {})
    parts = [f"{cpu} ({isa})" if isa else cpu]
    avail, logical = env.get("available_cores"), env.get("logical_cores")
    if avail and logical and avail != logical:
        parts.append(f"{avail} of {logical} cores")
    elif avail or logical:
        parts.append(f"{avail or logical} cores")
    if env.get("cpu_quota") is not None and avail and env["cpu_quota"] < avail:
        parts[-1] += f" (quota {env['cpu_quota']:g})"
    if env.get("torch"):
        version = str(env["torch"]).split("+")[0]
        threads_txt = f" with {env['torch_threads']} threads" if env.get("torch_threads") else ""
        parts.append(f"torch {version}{threads_txt}")
    parts.append(f"GPU {env['gpu']}" if env.get("gpu") else "no GPU")
    cap = env.get("isa_cap") or {}
    if cap:
        held = cap.get("ONEDNN_MAX_CPU_ISA") or cap.get("DNNL_MAX_CPU_ISA") or next(iter(cap.values()))
        parts.append(f"math kernels held to {held}")
    return ", ".join(parts)
