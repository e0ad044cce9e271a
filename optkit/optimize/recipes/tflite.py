"""The capstone's Keras and TFLite recipes: XLA (``jit_compile``), TFLite float32, dynamic-range,
float16 and full int8 for a Keras model, and LiteRT on one thread for a ``.tflite`` file.

Each one calls :mod:`optkit.runtimes.tflow` for the work (``to_tflite``, ``LiteRT``,
``keras_predict``); :func:`litert_candidate` wraps a ``.tflite`` file in a
:class:`~optkit.optimize.recipes.registry.Candidate`.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from optkit.core.deprecation import renamed_keyword
from optkit.optimize.recipes.registry import Candidate, Context, RecipeSkipped, _size

__all__ = ["litert_candidate"]

def _keras_model(ctx: Context):
    model = ctx.cache.get("keras_model")
    if model is None:  # pragma: no cover - set when the model is loaded
        raise RecipeSkipped("no Keras model loaded")
    return model


def _single_input(ctx: Context) -> str:
    if len(ctx.summary.inputs) != 1:
        raise RecipeSkipped("only single-input Keras models are converted here")
    return ctx.summary.inputs[0].name


@renamed_keyword("info", "config")
def litert_candidate(ctx: Context, name: str, recipe: str, technique: str, path: Path, *,
                     precision: str = "fp32", threads: int | None = None, artifact: bool = True,
                     notes: Sequence[str] = (), config: dict | None = None) -> Candidate:
    """A :class:`Candidate` running the ``.tflite`` file ``path`` with LiteRT (``threads`` threads);
    ``precision`` is what the file computes in, ``config`` the recipe's settings (the thread count
    is added).

    Taught in 10_optimize_your_own_model.
    """
    from optkit.runtimes import tflow as otf

    runner = otf.LiteRT(path, num_threads=threads or ctx.threads)
    names = [s.name for s in ctx.summary.inputs]

    def run(feed: dict) -> list:
        return runner.run_all(*[feed[n] for n in names])

    return Candidate(name=name, predict=run, recipe=recipe, technique=technique, runtime="tflite",
                     precision=precision, artifact=path if artifact else None, size_bytes=_size(path),
                     notes=list(notes), config={**(config or {}), "threads": threads or ctx.threads})


#: what each TFLite conversion computes in (float16 weights are expanded to float32 on a CPU)
_TFLITE_PRECISION = {"float32": "fp32", "dynamic": "int8-dynamic", "float16": "fp16", "int8": "int8"}


def _tflite(variant: str) -> Callable[[Context], Candidate]:
    def build(ctx: Context) -> Candidate:
        from optkit.runtimes import tflow as otf

        name = _single_input(ctx)
        rep = None
        notes = {"float32": ["The Keras graph converted as it is: float weights and activations."],
                 "dynamic": ["Dynamic-range quantization: int8 weights, float activations quantized on the fly."],
                 "float16": ["fp16 weights (half the size), expanded to float32 when loaded on a CPU."],
                 "int8": []}[variant]
        if variant == "int8":
            rep = [feed[name] for feed in ctx.calibration(batch_size=1)][:200]
            notes = [f"Full integer quantization calibrated on {len(rep)} of your examples; int8 input and output "
                     "(LiteRT applies the input scale and zero point)."]
        source = Path(ctx.summary.path)  # a SavedModel converts from its folder; a Keras file from the model
        path = otf.to_tflite(source if source.is_dir() else _keras_model(ctx), ctx.artifact(f"model.{variant}.tflite"),
                             variant=variant, representative=rep)
        config = {"variant": variant} if rep is None else {"variant": variant, "representative_examples": len(rep)}
        return litert_candidate(ctx, f"tflite-{variant}", f"tflite-{variant}", f"TFLite {variant}", path,
                                precision=_TFLITE_PRECISION[variant], notes=notes, config=config)

    return build


def _keras_xla(ctx: Context) -> Candidate:
    from optkit.runtimes import tflow as otf

    name = _single_input(ctx)
    predict = otf.keras_predict(_keras_model(ctx), jit_compile=True)
    return Candidate(name="keras-xla", predict=lambda feed: [predict(feed[name])], recipe="keras-xla",
                     technique="XLA (jit_compile)", runtime="tensorflow", precision="fp32",
                     config={"jit_compile": True}, size_bytes=ctx.summary.size_bytes,
                     notes=["Same model, its tf.function compiled with XLA (jit_compile=True); no new file."])


def _litert_one_thread(ctx: Context) -> Candidate:
    if ctx.threads <= 1:
        raise RecipeSkipped("the baseline already runs on one thread")
    return litert_candidate(ctx, "litert-1-thread", "litert-1-thread", "LiteRT, 1 thread", Path(ctx.summary.path),
                            threads=1, artifact=False,
                            notes=["Same file, one interpreter thread (what a phone app often gets)."])
