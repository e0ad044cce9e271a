"""Retrain the reference models shipped in ``data/models`` and record how.

``python -m optkit.data.train_reference`` trains ``small_cnn``, ``resnet_cnn`` and ``mlp`` on Fashion-MNIST
(the 55k training split) and ``text_lstm`` on sentence polarity, each from a fixed seed on a fixed
thread count, then writes ``<name>.pt`` (a state dict) and ``reference.json`` (recipe, test and
validation accuracy, parameter count, MACs, file size and SHA-256). With the same torch version,
CPU and thread count the weights come out bit for bit the same; elsewhere floating-point
summation order differs and accuracies agree to a few tenths of a point.

Options: ``--only small_cnn mlp`` retrains some models (the others' entries are kept),
``--out DIR`` writes somewhere else than ``data/models``, ``--threads N`` (default 2).
About 10 minutes on a 2-core CPU, most of it the ResNetCNN.

Taught nowhere; ``data/README.md`` describes the files it writes.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from optkit import data
from optkit.core.files import atomic_write
from optkit.core.sizes import file_size, sha256
from optkit.data import models
from optkit.core.bench import environment_line
from optkit.core.errors import OptkitError

__all__ = ["RECIPES", "train_one", "main"]

#: How each reference model is built and trained. ``data_kwargs`` go to ``optkit.data.load``.
RECIPES: dict[str, dict] = {
    "small_cnn": {"dataset": "fashion_mnist", "data_kwargs": {}, "build_kwargs": {},
                  "epochs": 10, "lr": 2e-3, "batch_size": 128, "weight_decay": 0.01, "seed": 0},
    "resnet_cnn": {"dataset": "fashion_mnist", "data_kwargs": {}, "build_kwargs": {},
                   "epochs": 3, "lr": 2e-3, "batch_size": 128, "weight_decay": 0.01, "seed": 0},
    "mlp": {"dataset": "fashion_mnist", "data_kwargs": {}, "build_kwargs": {},
            "epochs": 10, "lr": 1e-3, "batch_size": 128, "weight_decay": 0.01, "seed": 0},
    # 5,000 tokens keep the file under 5 MB; the model reads ids beyond its vocabulary as <unk>,
    # so it accepts data.rotten_tomatoes() with the default vocab_size.
    "text_lstm": {"dataset": "rotten_tomatoes", "data_kwargs": {}, "build_kwargs": {"vocab_size": 5000},
                  "epochs": 4, "lr": 2e-3, "batch_size": 64, "weight_decay": 0.01, "seed": 0},
}


def train_one(name: str, out_dir: Path, threads: int, progress: bool = True) -> dict:
    """Train reference model ``name`` by its recipe, save ``<name>.pt`` in ``out_dir``, return its entry."""
    recipe = RECIPES[name]
    torch.set_num_threads(threads)
    ds = data.load(recipe["dataset"], **recipe["data_kwargs"])
    models.set_seed(recipe["seed"])
    model = models.build(name, **recipe["build_kwargs"])
    start = time.perf_counter()
    history = models.train(model, ds, epochs=recipe["epochs"], batch_size=recipe["batch_size"], lr=recipe["lr"],
                           seed=recipe["seed"], progress=progress, weight_decay=recipe["weight_decay"],
                           schedule="cosine")
    seconds = time.perf_counter() - start
    test = models.evaluate(model, ds, split="test")
    val = models.evaluate(model, ds, split="val")
    path = out_dir / f"{name}.pt"
    with atomic_write(path, overwrite=True) as tmp, open(tmp, "wb") as f:
        torch.save(model.state_dict(), f)  # a file object: equal weights give equal bytes
    return {
        "file": path.name,
        "dataset": recipe["dataset"],
        "data_kwargs": recipe["data_kwargs"],
        "build_kwargs": recipe["build_kwargs"],
        "recipe": {"epochs": recipe["epochs"], "lr": recipe["lr"], "batch_size": recipe["batch_size"],
                   "weight_decay": recipe["weight_decay"], "seed": recipe["seed"], "optimizer": "AdamW",
                   "schedule": "cosine", "split": "train", "threads": threads, "torch": torch.__version__},
        "test_accuracy": round(test.accuracy, 6),
        "test_loss": round(test.loss, 6),
        "val_accuracy": round(val.accuracy, 6),
        "test_per_class": {k: round(v, 4) for k, v in test.per_class.items()},
        "params": models.count_params(model),
        "macs_per_sample": models.count_macs(model, ds.example_batch(1)),
        "file_bytes": file_size(path),
        "sha256": sha256(path),
        "train_seconds": round(seconds, 1),
        "history": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()} for h in history],
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: retrain the reference models (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m optkit.data.train_reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(RECIPES), help="models to retrain (default: all)")
    parser.add_argument("--out", type=Path, default=models.MODELS_DIR, help="output folder (default: data/models)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.threads < 1:
        raise OptkitError("--threads", args.threads, "must be at least 1", "pass e.g. --threads 2")
    args.out.mkdir(parents=True, exist_ok=True)
    index_path = args.out / "reference.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    index.setdefault("models", {})
    for name in args.only or list(RECIPES):
        print(f"== {name}: {RECIPES[name]}", flush=True)
        entry = train_one(name, args.out, args.threads, progress=not args.no_progress)
        print(f"== {name}: test accuracy {entry['test_accuracy']:.4f}, {entry['params']:,} params, "
              f"{entry['file_bytes'] / 1e6:.2f} MB, {entry['train_seconds']:.0f} s", flush=True)
        index["models"][name] = entry
        index["machine"] = {"description": environment_line(), "python": platform.python_version(),
                            "torch": torch.__version__, "threads": args.threads}
        index["generated_by"] = "python -m optkit.data.train_reference"
        index["models"] = {k: index["models"][k] for k in models.NAMES if k in index["models"]}
        with atomic_write(index_path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
