"""Timing, memory and hardware facts: one harness for every runtime in the course.

``measure`` times any no-argument callable (a PyTorch model call, a compiled one, an ONNX Runtime
``session.run``, a TFLite ``invoke``) with warm-up, a repeat count bounded by both a number and a
time budget, and robust statistics (median, tail percentiles, a distribution-free confidence
interval for the median). ``compare`` interleaves several variants so that a slow drift of the
machine cannot bias their ratio; ``throughput_sweep`` walks batch sizes; ``peak_memory`` reports the
peak resident memory of one call; ``environment`` and ``environment_line`` state the hardware and
thread count that every number was measured on.

Which submodule owns what (import everything from here, ``from optkit.core import bench``):

- :mod:`.timing`: :func:`measure`, its :class:`Measurement` result, the warm-up / repeat / time
  budget loop, percentiles and :func:`median_ci` (the confidence interval of the median).
- :mod:`.comparison`: interleaved :func:`compare` and its :class:`Comparison`, :func:`throughput_sweep`.
- :mod:`.system`: the :func:`threads` context, :func:`peak_memory`, :func:`call_memory`
  (what one call adds, freed memory released first) and :class:`MemoryResult`,
  :func:`environment`, :func:`environment_line`, :data:`CPU_FLAGS` and :data:`ISA_CAP_VARIABLES`.

None of them imports torch, TensorFlow or ONNX Runtime at import time (torch is imported when a
thread count is read or set). Taught in 00_measure_first.
"""
from __future__ import annotations

from optkit.core.bench.comparison import Comparison, compare, throughput_sweep
from optkit.core.bench.system import (CPU_FLAGS, ISA_CAP_VARIABLES, MemoryResult, call_memory, environment,
                                      environment_line, peak_memory, release_memory, threads)
from optkit.core.bench.timing import Measurement, measure, median_ci

__all__ = [
    "Measurement",
    "Comparison",
    "MemoryResult",
    "measure",
    "compare",
    "throughput_sweep",
    "threads",
    "peak_memory",
    "call_memory",
    "release_memory",
    "environment",
    "environment_line",
    "median_ci",
    "CPU_FLAGS",
    "ISA_CAP_VARIABLES",
]
