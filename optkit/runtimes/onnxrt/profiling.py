"""Where an ONNX model spends its time, per node and per operator type, from ONNX Runtime's own
profiler (``SessionOptions.enable_profiling``).

:func:`profile` runs a model on your inputs with profiling on and reads the JSON trace ONNX Runtime
writes (one event per kernel call: ``dur`` in microseconds, the operator in ``args.op_name``; one
``model_run`` event per call). :func:`op_times` and :func:`node_times` are its two views: the
milliseconds per call spent in each operator type, and in each node. The first call (allocations,
the memory plan) is a warm-up and is not counted.

The names and operator types are those of the graph ONNX Runtime ran, after its fusions: a QDQ
``Conv`` runs as ``QLinearConv`` under the Conv's name, a float Conv with its ReLU as
``FusedConv``. The capstone's int8 search compares an int8 profile with the float one to find the
operators that int8 makes slower (:mod:`optkit.optimize.recipes.search`).

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from optkit.core.errors import OptkitError, check_choice, check_int
from optkit.runtimes.onnxrt.files import _check_src

__all__ = ["Profile", "profile", "op_times", "node_times"]


@dataclass
class Profile:
    """ONNX Runtime's profile of one model on some inputs: ``nodes`` (node name -> (operator type,
    ms per call)), ``ops`` (operator type -> ms per call, the nodes' sum), ``wall_ms`` (a whole
    ``session.run`` per call, as the profiler timed it), ``runs`` (calls counted) and ``threads``.
    The per-node times add up to at most ``wall_ms``: the rest is the session's own work (input
    and output copies, the executor)."""

    nodes: dict = field(default_factory=dict)
    ops: dict = field(default_factory=dict)
    wall_ms: float = 0.0
    runs: int = 0
    threads: int = 1

    def top(self, k: int = 8) -> list[tuple[str, float]]:
        """The ``k`` operator types that take longest, slowest first."""
        return sorted(self.ops.items(), key=lambda kv: -kv[1])[:k]

    def __repr__(self) -> str:
        top = ", ".join(f"{op} {ms:.3g} ms" for op, ms in self.top(4))
        return f"Profile({len(self.nodes)} nodes, {self.wall_ms:.3g} ms per call over {self.runs} calls: {top})"


def _feeds(feeds) -> list[dict]:
    if isinstance(feeds, dict):
        feeds = [feeds]
    if not isinstance(feeds, (list, tuple)) or not feeds or not all(isinstance(f, dict) for f in feeds):
        raise OptkitError("feeds", type(feeds).__name__, "must be a dict {input name: array} or a non-empty list "
                          "of them", "pass e.g. {'x': x}")
    return list(feeds)


def _parse(trace: list, warmup: int) -> tuple[dict, float, int]:
    """Node times summed over the counted calls, the counted calls' wall time, and their number."""
    runs = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    counted = runs[warmup:]
    if not counted:
        return {}, 0.0, 0
    start = counted[0]["ts"]
    nodes: dict[str, list] = {}
    for e in trace:
        if e.get("cat") != "Node" or e.get("ts", 0) < start or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        op = (e.get("args") or {}).get("op_name", "?")
        entry = nodes.setdefault(name, [op, 0.0])
        entry[1] += float(e.get("dur", 0)) / 1000.0
    return nodes, sum(float(e["dur"]) for e in counted) / 1000.0, len(counted)


def profile(path, feeds, *, runs: int = 10, threads: int = 1, warmup: int = 2,
            optimization: str = "all") -> Profile:
    """Run the ONNX model at ``path`` ``runs`` times on ``feeds`` (a dict ``{input name: array}``,
    or a list of them, each one call) with ONNX Runtime's profiler on, after ``warmup`` calls that
    are not counted, on ``threads`` intra-op threads (sequential execution), with ONNX Runtime's
    graph ``optimization`` level (``"disable"`` profiles the file's own nodes, unfused); returns a
    :class:`Profile` (times in ms per call).

    Taught in 10_optimize_your_own_model.
    """
    import onnxruntime as ort

    src = _check_src(path)
    runs = check_int("runs", runs, 1)
    warmup = check_int("warmup", warmup, 0)
    threads = check_int("threads", threads, 1)
    check_choice("optimization", optimization, ("disable", "basic", "extended", "all"))
    feeds = _feeds(feeds)
    work = Path(tempfile.mkdtemp(prefix="optkit-profile-"))
    try:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = str(work / "ort")
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                       "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                       }.get(optimization, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        calls = 0
        for i in range(warmup + runs):
            sess.run(None, feeds[i % len(feeds)])
            calls += 1
        trace_file = sess.end_profiling()
        trace = json.loads(Path(trace_file).read_text())
    except OptkitError:
        raise
    except Exception as exc:
        raise OptkitError("path", str(path), f"could not be profiled by ONNX Runtime ({str(exc).splitlines()[0][:200]})",
                          "check that the model runs on these feeds with optkit.runtimes.onnxrt.Runner first") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    nodes, wall, counted = _parse(trace, warmup)
    n = max(counted, 1)
    per_node = {name: (op, ms / n) for name, (op, ms) in nodes.items()}
    ops: dict[str, float] = {}
    for op, ms in per_node.values():
        ops[op] = ops.get(op, 0.0) + ms
    return Profile(nodes=per_node, ops=ops, wall_ms=wall / n, runs=counted, threads=threads)


def op_times(path, feeds, *, runs: int = 10, threads: int = 1, optimization: str = "all") -> dict[str, float]:
    """Milliseconds per call spent in each operator type of the ONNX model at ``path`` on ``feeds``
    (ONNX Runtime's profiler; see :func:`profile`), slowest first. With ``optimization="disable"``
    the types are the file's own; otherwise those of ONNX Runtime's fused graph.

    Taught in 10_optimize_your_own_model.
    """
    p = profile(path, feeds, runs=runs, threads=threads, optimization=optimization)
    return dict(sorted(p.ops.items(), key=lambda kv: -kv[1]))


def node_times(path, feeds, *, runs: int = 10, threads: int = 1,
               optimization: str = "all") -> dict[str, tuple[str, float]]:
    """Node name -> (operator type, milliseconds per call) for the ONNX model at ``path`` on
    ``feeds`` (see :func:`profile`), slowest first.

    Taught in 10_optimize_your_own_model.
    """
    p = profile(path, feeds, runs=runs, threads=threads, optimization=optimization)
    return dict(sorted(p.nodes.items(), key=lambda kv: -kv[1][1]))
