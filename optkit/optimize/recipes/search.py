"""The searching int8 recipe: when plain static int8 loses quality or speed, find out why and repair it.

``ort-int8-search`` starts from the plain setting (static QDQ, U8S8, per-channel, min-max) and,
while that fails the quality budget or is not faster than the model as given beyond the noise,
tries, in order and within the run's time budget:

1. other calibration methods: percentile (clips outliers) and entropy;
2. the nodes whose outputs lose most (per-tensor SQNR from ONNX Runtime's QDQ debugging tools,
   :func:`optkit.runtimes.onnxrt.layer_errors`) kept in float, 1, 2 then 4 of them;
3. per-tensor weights; S8S8 (int8 activations, symmetric);
4. only the weighted operators (Conv, MatMul, Gemm) quantized, the rest left in float.

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

__all__ = ["ort_int8_search", "SPEEDUP_NEEDED"]

#: A configuration "pays" when it meets the quality budget and runs this much faster than the original.
SPEEDUP_NEEDED = 1.05


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


def _worst_nodes(src: Path, qdq: Path, calib: list, k: int) -> list[str]:
    """Names of the float nodes whose outputs lose most in ``qdq`` (lowest SQNR first)."""
    import onnx

    from optkit.runtimes import onnxrt as ox

    producer = {out: n.name for n in onnx.load(str(src), load_external_data=False).graph.node for out in n.output}
    names = []
    for tensor, _sqnr in ox.layer_errors(src, qdq, calib):
        name = producer.get(tensor)
        if name and name not in names:
            names.append(name)
        if len(names) == k:
            break
    return names


class _Search:
    """The list of configurations tried, and the best one so far."""

    def __init__(self, ctx: Context, src: Path, calib: list, per_channel: bool) -> None:
        self.ctx, self.src, self.calib, self.per_channel = ctx, src, calib, per_channel
        self.tried: list[dict] = []
        self.best: tuple | None = None  # (speed-up, candidate, config)
        self.first: Path | None = None

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


def ort_int8_search(ctx: Context) -> Candidate:
    """Build the ``ort-int8-search`` candidate (see the module docstring)."""
    if ctx.judge is None:
        raise RecipeSkipped("searching needs a run to judge each configuration (use it through optkit optimize)")
    src = _onnx_source(ctx)
    _require_weights(ctx, src, _WEIGHTED_OPS)
    src, per_channel, opset_note = _per_channel_source(ctx, src)
    s = _Search(ctx, _named_copy(ctx, src), ctx.calibration(batch_size=16), per_channel)
    s.attempt("U8S8, per-channel, min-max" if per_channel else "U8S8, per-tensor, min-max")
    for label, settings in (("percentile calibration", {"method": "percentile"}),
                            ("entropy calibration", {"method": "entropy"})):
        if not s.paid():
            s.attempt(label, **settings)
    if not s.paid() and s.first is not None:
        try:
            worst = _worst_nodes(s.src, s.first, s.calib, 4)
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
        raise RecipeSkipped("no int8 configuration met the quality budget; tried: " + "; ".join(
            f"{r['setting']} ({r['why']})" for r in s.tried))
    speed, cand, row = s.best
    cand.config = {**cand.config, "chosen": row["setting"], "search": s.tried}
    cand.notes = [f"The fastest eligible of {len(s.tried)} int8 configurations tried ({row['setting']}, "
                  f"{speed:.2f}x the original in the search's quick timing); every configuration and why it was "
                  "kept or dropped is listed in the report."] + ([opset_note] if opset_note else [])
    return cand
