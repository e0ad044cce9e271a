"""The searching int8 recipe: when plain static int8 loses quality or speed, find out why and repair it.

``ort-int8-search`` starts from the plain setting (static QDQ, U8S8, per-channel, min-max) and,
while that fails the quality budget or is not faster than the model as given beyond the noise,
tries, in order and within the run's time budget:

1. other calibration methods: percentile (clips outliers) and entropy;
2. reduce-range (7-bit weights), only on a CPU without VNNI: there U8S8 products are added in
   pairs into int16 and can saturate; with VNNI they are accumulated in int32, so the search says
   so and skips it;
3. the operator types that run slower in int8 than in float kept in float: the plain int8 file and
   the float one are profiled by ONNX Runtime (:func:`optkit.runtimes.onnxrt.profile`), their
   per-operator times compared (a QDQ pair around a cheap operator, or an operator without an int8
   kernel that gains Q/DQ pairs); the table is in the report. When the plain setting already meets
   the quality budget but is not faster, this step comes first;
4. the nodes whose outputs lose most (per-tensor SQNR from ONNX Runtime's QDQ debugging tools,
   :func:`optkit.runtimes.onnxrt.layer_errors`) kept in float, 1, 2 then 4 of them;
5. per-tensor weights; S8S8 (int8 activations, symmetric);
6. only the weighted operators (Conv, MatMul, Gemm) quantized, the rest left in float.

Every configuration tried is judged like any candidate (quality against the original on your
evaluation rows, speed-up timed interleaved with the original) and listed in the candidate's
``config["search"]``, with why it was kept or dropped; the report shows the list. The best
eligible configuration (fastest) is the candidate. Intel Neural Compressor's accuracy-aware tuning
and NNCF's ``quantize_with_accuracy_control`` search the float fallback set the same way for one
backend; here the run also weighs the result against every other runtime's candidate.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import time
from pathlib import Path

from optkit.optimize.recipes.onnx_runtime import (_WEIGHTED_OPS, _onnx_source, _per_channel_source,
                                                  _require_weights, ort_candidate)
from optkit.optimize.recipes.registry import Candidate, Context, RecipeSkipped, _first_line

__all__ = ["ort_int8_search", "SPEEDUP_NEEDED", "op_time_table"]

#: A configuration "pays" when it meets the quality budget and runs this much faster than the original.
SPEEDUP_NEEDED = 1.05
#: An operator type counts as slower in int8 when its int8 time exceeds its float time by this fraction ...
SLOWER_BY = 0.10
#: ... and by this many milliseconds per call (timer noise on tiny operators).
SLOWER_MS = 0.005

#: ONNX Runtime's fused kernels -> the ONNX operator they run (int8 QDQ fusions, float fusions, NHWC forms).
_KERNEL_OF = {"QLinearConv": "Conv", "QLinearMatMul": "MatMul", "MatMulIntegerToFloat": "MatMul", "QGemm": "Gemm",
              "QLinearAdd": "Add", "QLinearMul": "Mul", "QLinearSigmoid": "Sigmoid", "QLinearLeakyRelu": "LeakyRelu",
              "QLinearAveragePool": "AveragePool", "QLinearGlobalAveragePool": "GlobalAveragePool",
              "QLinearConcat": "Concat", "QLinearSoftmax": "Softmax", "QLinearReduceMean": "ReduceMean",
              "QLinearConvTranspose": "ConvTranspose", "QLinearWhere": "Where", "QLinearAveragePoolNhwc": "AveragePool",
              "FusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul", "NhwcMaxPool": "MaxPool",
              "NhwcConv": "Conv", "QuickGelu": "Sigmoid"}


def _cpu_has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX-512 VNNI or AVX-VNNI); tests patch it."""
    from optkit.core import bench

    flags = bench.environment().get("cpu_flags") or {}
    return bool(flags.get("avx512_vnni") or flags.get("avx_vnni"))


def _named_copy(ctx: Context, src: Path) -> Path:
    """``src`` with a name on every node (ONNX Runtime keeps nodes in float by name)."""
    import onnx

    model = onnx.load(str(src))
    if all(n.name for n in model.graph.node):
        return src
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{i}"
    dst = ctx.artifact("model.named.onnx")
    onnx.save(model, str(dst))
    return dst


def _worst_nodes(src: Path, qdq: Path, calib: list, k: int, errors: list | None = None) -> list[str]:
    """Names of the float nodes whose outputs lose most in ``qdq`` (lowest SQNR first); ``errors``,
    when given, receives ``(node name, SQNR dB)`` for each of them (the report's per-node numbers)."""
    import onnx

    from optkit.runtimes import onnxrt as ox

    producer = {out: n.name for n in onnx.load(str(src), load_external_data=False).graph.node for out in n.output}
    names = []
    for tensor, sqnr in ox.layer_errors(src, qdq, calib):
        name = producer.get(tensor)
        if name and name not in names:
            names.append(name)
            if errors is not None:
                errors.append((name, float(sqnr)))
        if len(names) == k:
            break
    return names


def _graph_roles(src: Path) -> tuple[dict, dict, dict]:
    """Node name -> operator type, tensor -> its consumers' types, tensor -> its producer's type."""
    import onnx

    graph = onnx.load(str(src), load_external_data=False).graph
    names, consumers, producer = {}, {}, {}
    for n in graph.node:
        names[n.name] = n.op_type
        for t in n.input:
            consumers.setdefault(t, []).append(n.op_type)
        for t in n.output:
            producer[t] = n.op_type
    return names, consumers, producer


def _source_op(name: str, kernel: str, roles: tuple[dict, dict, dict]) -> str:
    """The operator type of the original graph a profiled kernel's time belongs to: its own node's,
    the operator a fused kernel runs, or, for a Q/DQ node, the operator its tensor feeds (or comes from)."""
    names, consumers, producer = roles
    if name in names and kernel not in ("QuantizeLinear", "DequantizeLinear"):
        return names[name]
    if kernel in _KERNEL_OF:
        return _KERNEL_OF[kernel]
    if kernel in ("QuantizeLinear", "DequantizeLinear"):
        tensor = name.split(f"_{kernel}")[0]
        if consumers.get(tensor):
            return consumers[tensor][0]
        if tensor in producer:
            return producer[tensor]
        return kernel
    if kernel in ("ReorderInput", "ReorderOutput") or (kernel == "Transpose" and name not in names):
        return "layout changes"
    return kernel


def op_time_table(src: Path, qdq: Path, feed: dict, *, threads: int = 1, runs: int = 5) -> list[dict]:
    """The float model ``src`` and its int8 QDQ file ``qdq`` profiled by ONNX Runtime on ``feed``
    (:func:`optkit.runtimes.onnxrt.profile`), time per call grouped by the operator type of ``src``
    each kernel serves (a QDQ ``Conv`` runs as ``QLinearConv``; a Q/DQ pair counts for the operator
    it feeds): one row per type, ``{"op", "fp32_ms", "int8_ms", "slower"}``, slowest int8 first.
    ``slower`` is true where int8 takes more than :data:`SLOWER_BY` longer (and
    :data:`SLOWER_MS`) and the type ran on its own in float (not fused into a neighbour). Rows ``"total"`` and ``"wall"`` close the table.

    Taught in 10_optimize_your_own_model.
    """
    from optkit.runtimes import onnxrt as ox

    roles = _graph_roles(src)
    times = {}
    for kind, path in (("fp32_ms", src), ("int8_ms", qdq)):
        prof = ox.profile(path, feed, runs=runs, threads=threads)
        grouped: dict[str, float] = {}
        for name, (kernel, ms) in prof.nodes.items():
            op = _source_op(name, kernel, roles)
            grouped[op] = grouped.get(op, 0.0) + ms
        times[kind] = (grouped, prof.wall_ms)
    ops = set(times["fp32_ms"][0]) | set(times["int8_ms"][0])
    rows = []
    for op in ops:
        f, q = times["fp32_ms"][0].get(op, 0.0), times["int8_ms"][0].get(op, 0.0)
        # an operator absent from the float profile was fused into its neighbour there (a residual Add into
        # the Conv): keeping it in float would not bring that fusion back, so it is not compared
        rows.append({"op": op, "fp32_ms": f, "int8_ms": q, "slower": f > 0 and q > f * (1 + SLOWER_BY) + SLOWER_MS})
    rows.sort(key=lambda r: -r["int8_ms"])
    rows.append({"op": "total", "fp32_ms": sum(r["fp32_ms"] for r in rows),
                 "int8_ms": sum(r["int8_ms"] for r in rows), "slower": False})
    rows.append({"op": "wall", "fp32_ms": times["fp32_ms"][1], "int8_ms": times["int8_ms"][1], "slower": False})
    return rows


def _quantizable(src: Path) -> set[str]:
    """The model's operator types ONNX Runtime's static quantizer would quantize (its QDQ and QLinear registries)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from optkit.runtimes import onnxrt as ox

    return set(ox.op_counts(src)) & (set(QDQRegistry) | set(QLinearOpsRegistry))


class _Search:
    """The list of configurations tried, and the best one so far."""

    def __init__(self, ctx: Context, src: Path, calib: list, per_channel: bool) -> None:
        self.ctx, self.src, self.calib, self.per_channel = ctx, src, calib, per_channel
        self.tried: list[dict] = []
        self.best: tuple | None = None  # (speed-up, candidate, config)
        self.first: Path | None = None
        self.op_times: dict | None = None  # the per-operator time table that decided the exclusions
        self.profiled = False
        self.profile_failed = False
        self.worst_errors: list[tuple[str, float]] = []  # (node, SQNR dB) of the plain int8 file's worst outputs

    def out_of_time(self) -> bool:
        return self.ctx.deadline is not None and time.perf_counter() > self.ctx.deadline and bool(self.tried)

    def paid(self) -> bool:
        return self.best is not None and self.best[0] >= SPEEDUP_NEEDED

    def attempt(self, label: str, **settings) -> None:
        from optkit.runtimes import onnxrt as ox

        if self.out_of_time():
            self.tried.append({"setting": label, "kept": False, "why": "not tried: the time budget was spent"})
            return
        cfg = {"per_channel": self.per_channel, "activation_type": "uint8", "weight_type": "int8",
               "method": "minmax", **settings}
        try:
            dst = ox.quantize_static(self.src, self.ctx.artifact(f"model.int8-search-{len(self.tried) + 1}.onnx"),
                                     self.calib, **cfg)
            self.first = self.first or dst
            cand = ort_candidate(self.ctx, "ort-int8-search", "ort-int8-search", f"int8 static QDQ ({label})", dst,
                                 precision="int8", config=dict(cfg))
            check, speed = self.ctx.judge(cand)
        except Exception as exc:  # one setting failing must not end the search
            self.tried.append({"setting": label, **cfg, "kept": False, "why": f"failed: {_first_line(exc)}"})
            return
        row = {"setting": label, **cfg, "quality_kind": check.quality_kind, "quality": check.quality,
               "speedup": speed, "eligible": check.ok}
        if not check.ok:
            row.update(kept=False, why=f"quality: {check.why}")
        elif self.best is not None and speed <= self.best[0]:
            row.update(kept=False, why=f"eligible, but slower than {self.best[2]['setting']}")
        else:
            row.update(kept=True, why="eligible and the fastest so far")
            if self.best is not None:
                self.best[2].update(kept=False, why=f"eligible, but slower than {label}")
            self.best = (speed, cand, row)
        self.tried.append(row)


_REDUCE_RANGE_WHY = ("not tried: this CPU has VNNI, which adds u8*s8 products in int32, so 8-bit weights cannot "
                     "saturate; reduce-range (7-bit weights) pays only without VNNI, where pairs of products "
                     "are added in int16")


def _reduce_range_step(s: _Search) -> None:
    label = "reduce-range (7-bit weights)"
    if _cpu_has_vnni():
        s.tried.append({"setting": label, "kept": False, "why": _REDUCE_RANGE_WHY})
    elif not s.paid():
        s.attempt(label, reduce_range=True)


def _profile_table(s: _Search) -> list[str] | None:
    """Profile the plain int8 file against the float one, once (ONNX Runtime's profiler, one batch);
    store the per-operator table in ``s.op_times`` and return the quantizable operator types int8
    makes slower. None (and a row saying why) when there is nothing to profile or it failed."""
    label = "operator types slower in int8 kept in float"
    if s.op_times is not None:
        return s.op_times["slower"]
    if s.first is None or s.profile_failed:
        return None
    feed = s.calib[0]
    try:
        rows = op_time_table(s.src, s.first, feed, threads=s.ctx.threads)
        quantizable = _quantizable(s.src)
    except Exception as exc:  # the profiler must not end the search
        s.profile_failed = True
        s.tried.append({"setting": label, "kept": False, "why": f"failed: profiling: {_first_line(exc)}"})
        return None
    slower = sorted(r["op"] for r in rows if r["slower"] and r["op"] in quantizable)
    for r in rows:
        r["decision"] = "kept in float" if r["op"] in slower else "int8" if r["op"] in quantizable else "-"
    batch = len(next(iter(feed.values())))
    s.op_times = {"batch": batch, "threads": s.ctx.threads, "rows": rows, "slower": slower,
                  "quantizable": sorted(quantizable)}
    return slower


def _profile_step(s: _Search) -> None:
    """Keep in float the operator types the profile shows int8 slowing (profiled first if needed)."""
    label = "operator types slower in int8 kept in float"
    if s.first is None or s.profiled or s.paid():
        return
    s.profiled = True
    if s.out_of_time():
        s.tried.append({"setting": label, "kept": False, "why": "not tried: the time budget was spent"})
        return
    slower = _profile_table(s)
    if slower is None:
        return
    keep = sorted(set(s.op_times["quantizable"]) - set(slower))
    if not slower:
        s.tried.append({"setting": label, "kept": False, "why": "not tried: ONNX Runtime's profile shows no "
                        "operator type slower in int8 than in float (table below)"})
    elif not keep:
        s.tried.append({"setting": label, "kept": False, "why": "not tried: every quantized operator type ran "
                        f"slower in int8 ({', '.join(slower)}): int8 does not pay on this CPU (table below)"})
    else:
        s.attempt(f"{', '.join(slower)} kept in float (slower in int8 per ONNX Runtime's profile)", op_types=keep)


def ort_int8_search(ctx: Context) -> Candidate:
    """Build the ``ort-int8-search`` candidate (see the module docstring)."""
    if ctx.judge is None:
        raise RecipeSkipped("searching needs a run to judge each configuration (use it through optkit optimize)")
    src = _onnx_source(ctx)
    _require_weights(ctx, src, _WEIGHTED_OPS)
    src, per_channel, opset_note = _per_channel_source(ctx, src)
    s = _Search(ctx, _named_copy(ctx, src), ctx.calibration(batch_size=16), per_channel)
    s.attempt("U8S8, per-channel, min-max" if per_channel else "U8S8, per-tensor, min-max")
    if not s.paid():  # where does int8 gain or lose time? (the report shows the table whatever comes next)
        _profile_table(s)
    if s.tried[-1].get("eligible"):  # quality is fine, speed is not: keep the slow operator types in float
        _profile_step(s)
    for label, settings in (("percentile calibration", {"method": "percentile"}),
                            ("entropy calibration", {"method": "entropy"})):
        if not s.paid():
            s.attempt(label, **settings)
    _reduce_range_step(s)
    _profile_step(s)
    if not s.paid() and s.first is not None:
        try:
            worst = _worst_nodes(s.src, s.first, s.calib, 4, s.worst_errors)
        except Exception as exc:  # the debugging tools do not cover every graph
            worst = []
            s.tried.append({"setting": "per-node errors", "kept": False, "why": f"failed: {_first_line(exc)}"})
        for k in (1, 2, 4):
            if not s.paid() and len(worst) >= k:
                s.attempt(f"{k} worst node(s) kept in float", nodes_to_exclude=worst[:k])
    for label, settings in (("per-tensor weights", {"per_channel": False}),
                            ("S8S8, symmetric", {"activation_type": "int8", "symmetric": True}),
                            ("only Conv/MatMul/Gemm quantized", {"op_types": list(_WEIGHTED_OPS)})):
        if not s.paid():
            s.attempt(label, **settings)
    if s.best is None:
        profiled = "" if s.op_times is None else ("; ONNX Runtime's profile, ms per call fp32 -> int8 at batch "
                                                  f"{s.op_times['batch']}: " + ", ".join(
            f"{r['op']} {r['fp32_ms']:.3g} -> {r['int8_ms']:.3g}" for r in s.op_times["rows"][:6]))
        worst = "" if not s.worst_errors else ("; the nodes whose outputs lose most in plain int8 (SQNR): " + ", ".join(
            f"{name} {db:.1f} dB" for name, db in s.worst_errors))
        raise RecipeSkipped("no int8 configuration met the quality budget; tried: " + "; ".join(
            f"{r['setting']} ({r['why']})" for r in s.tried) + profiled + worst)
    speed, cand, row = s.best
    cand.config = {**cand.config, "chosen": row["setting"], "search": s.tried}
    if s.op_times is not None:
        cand.config["op_times"] = s.op_times
    cand.notes = [f"The fastest eligible of {len(s.tried)} int8 configurations tried ({row['setting']}, "
                  f"{speed:.2f}x the original in the search's quick timing); every configuration and why it was "
                  "kept or dropped is listed in the report."] + ([opset_note] if opset_note else [])
    return cand
