"""The capstone's bundled reference: where its models and data live (``data/capstone``) and
:func:`make_reference`, which rebuilds them (``python -m optkit.optimize --make-reference``): the
ResNet CNN exported to ONNX with a Fashion-MNIST sample, a one-block text transformer trained on
sentence polarity, and a small Keras CNN, each with the sample its CI run uses.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from optkit.core.errors import OptkitError
from optkit.core.record import jsonable

__all__ = ["REFERENCE_DIR", "REFERENCE_MODEL", "REFERENCE_DATA", "REFERENCE_FILES", "make_reference"]

ROOT = Path(__file__).resolve().parents[2]  # the repository (optkit/<layer>/<module>.py)
#: Bundled models and data of the capstone (see data/capstone/README.md).
REFERENCE_DIR = ROOT / "data" / "capstone"
REFERENCE_MODEL = REFERENCE_DIR / "reference_cnn.onnx"
REFERENCE_DATA = REFERENCE_DIR / "fashion_mnist_600.npz"


def _tiny_text_transformer_class():
    import torch
    from torch import nn

    class TinyTextTransformer(nn.Module):
        """Token ids -> embedding + learned positions -> one self-attention block (4 heads) and a
        feed-forward block, each with a residual and LayerNorm -> mean over non-pad tokens -> logits.
        Ids at or above ``vocab_size`` read as ``<unk>`` (1); 0 is padding."""

        def __init__(self, vocab_size: int = 2000, dim: int = 48, heads: int = 4, ff: int = 96, max_len: int = 64,
                     num_classes: int = 2, dropout: float = 0.1):
            super().__init__()
            self.vocab_size, self.heads = vocab_size, heads
            self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
            self.position = nn.Parameter(torch.randn(max_len, dim) * 0.02)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.norm1 = nn.LayerNorm(dim)
            self.ff1 = nn.Linear(dim, ff)
            self.ff2 = nn.Linear(ff, dim)
            self.norm2 = nn.LayerNorm(dim)
            self.act = nn.GELU()
            self.drop = nn.Dropout(dropout)
            self.head = nn.Linear(dim, num_classes)

        def forward(self, ids):
            ids = torch.where(ids < self.vocab_size, ids, torch.ones_like(ids))
            n, t = ids.shape
            keep = ids != 0
            x = self.embedding(ids) + self.position[:t]
            q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            att = att + (~keep)[:, None, None, :].to(x.dtype) * -1e4
            y = (att.softmax(-1) @ v).transpose(1, 2).reshape(n, t, -1)
            x = self.norm1(x + self.drop(self.proj(y)))
            x = self.norm2(x + self.drop(self.ff2(self.act(self.ff1(x)))))
            w = keep.unsqueeze(-1).to(x.dtype)
            return self.head((x * w).sum(1) / w.sum(1).clamp(min=1.0))

    return TinyTextTransformer


#: What :func:`make_reference` writes: file -> what it is.
REFERENCE_FILES = {
    "reference_cnn.onnx": "ResNetCNN (optkit.data.models.pretrained('resnet_cnn')) exported to ONNX, dynamic batch",
    "fashion_mnist_600.npz": "600 Fashion-MNIST test images x (N,1,28,28) float32 in [0,1] and labels y",
    "text_transformer.onnx": "a 1-block text transformer trained on sentence polarity, exported to ONNX",
    "rotten_tomatoes_512.npz": "512 sentence-polarity test snippets as token ids x (N,64) int64 and labels y",
    "keras_cnn.keras": "a small Keras 3 CNN (optkit.runtimes.tflow.build_cnn, width 8) trained 2 epochs on Fashion-MNIST (55k)",
    "fashion_mnist_nhwc_256.npz": "256 Fashion-MNIST test images x (N,28,28,1) float32 (NHWC) and labels y",
}

def make_reference(out_dir: str | os.PathLike = REFERENCE_DIR, *, overwrite: bool = False,
                   only: Sequence[str] | None = None, log: Callable[[str], Any] = print) -> dict:
    """Rebuild the bundled capstone models and data (``data/capstone``), deterministically.

    ``only`` picks some of ``"cnn"``, ``"text"``, ``"keras"``. Data samples are seeded subsets of
    the official test splits; the text transformer and the Keras CNN are trained here (seeded, 2
    threads, about 2 and 1 minutes on a quiet 2-core CPU). Writes ``manifest.json`` with each
    file's SHA-256, size and the models' accuracy on the bundled sample. Existing files are kept
    unless ``overwrite=True``.

    Taught in 10_optimize_your_own_model.
    """
    import torch

    from optkit.runtimes.model_files import atomic_write, sha256

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    only = list(only or ["cnn", "text", "keras"])
    bad = [o for o in only if o not in ("cnn", "text", "keras")]
    if bad:
        raise OptkitError("only", bad, "are not reference parts", "use some of 'cnn', 'text', 'keras'")
    torch.set_num_threads(2)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"files": {}, "models": {}}

    def save_npz(name: str, **arrays) -> None:
        with atomic_write(out / name, overwrite=overwrite) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

    makers = {"cnn": _make_cnn, "text": _make_text, "keras": _make_keras}
    for part in ("cnn", "text", "keras"):
        if part in only:
            name, entry, line = makers[part](out, save_npz, overwrite)
            manifest["models"][name] = entry
            log(line)
    for name in REFERENCE_FILES:
        if (out / name).exists():
            manifest["files"][name] = {"sha256": sha256(out / name), "bytes": (out / name).stat().st_size,
                                       "what": REFERENCE_FILES[name]}
    manifest["made_with"] = {"torch": torch.__version__, "python": sys.version.split()[0]}
    with atomic_write(manifest_path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(jsonable(manifest, strict=False), indent=2) + "\n")
    return manifest


def _make_cnn(out: Path, save_npz: Callable, overwrite: bool) -> tuple[str, dict, str]:
    """The Fashion-MNIST sample and the ResNet CNN exported to ONNX: (file, manifest entry, log line)."""
    import torch

    from optkit import data as odata
    from optkit.data import models
    from optkit.runtimes import onnxrt as ox

    fm = odata.fashion_mnist()
    sample = fm.test.subset(600, seed=0)
    x, y = np.array(sample.x, dtype=np.float32), np.array(sample.y, dtype=np.int64)
    save_npz("fashion_mnist_600.npz", x=x, y=y)
    model = models.pretrained("resnet_cnn")
    ox.export(model, torch.from_numpy(x[:2]), out / "reference_cnn.onnx", input_names=["image"],
              output_names=["logits"], overwrite=overwrite)
    acc = float((ox.Runner(out / "reference_cnn.onnx", threads=2)(x).argmax(1) == y).mean())
    return ("reference_cnn.onnx", {"accuracy_on_sample": acc, "source": "models.pretrained('resnet_cnn')"},
            f"reference_cnn.onnx: accuracy {100 * acc:.2f} % on fashion_mnist_600.npz")


def _make_text(out: Path, save_npz: Callable, overwrite: bool) -> tuple[str, dict, str]:
    """The text transformer, trained on sentence polarity, its token-id sample, and its ONNX export."""
    import torch

    from optkit import data as odata
    from optkit.data import models
    from optkit.runtimes import onnxrt as ox

    rt = odata.rotten_tomatoes()
    models.set_seed(0)
    net = _tiny_text_transformer_class()()
    start = time.perf_counter()
    history = models.train(net, rt, epochs=5, lr=3e-3, seed=0, progress=False)
    train_s = time.perf_counter() - start
    net.eval()
    sample = rt.test.subset(512, seed=0)
    ids, y = np.array(sample.x, dtype=np.int64), np.array(sample.y, dtype=np.int64)
    save_npz("rotten_tomatoes_512.npz", x=ids, y=y)
    ox.export(net, torch.from_numpy(ids[:2]), out / "text_transformer.onnx", input_names=["ids"],
              output_names=["logits"], overwrite=overwrite)
    acc = float((ox.Runner(out / "text_transformer.onnx", threads=2)(ids).argmax(1) == y).mean())
    test_acc = models.evaluate(net, rt).accuracy
    entry = {"accuracy_on_sample": acc, "test_accuracy": test_acc, "train_s": train_s,
             "recipe": {"epochs": 5, "lr": 3e-3, "seed": 0, "vocab_size": 2000, "dim": 48, "heads": 4, "ff": 96},
             "history": history}
    return ("text_transformer.onnx", entry,
            f"text_transformer.onnx: accuracy {100 * acc:.2f} % on the sample, {100 * test_acc:.2f} % on the test split")


def _make_keras(out: Path, save_npz: Callable, overwrite: bool) -> tuple[str, dict, str]:
    """The small Keras CNN, trained 2 epochs, saved without optimizer state, and its NHWC sample."""
    from optkit import data as odata
    from optkit.runtimes import tflow as otf
    from optkit.runtimes.model_files import atomic_write

    otf.import_tensorflow(2)
    fm = odata.fashion_mnist()
    xtr, ytr = otf.keras_arrays(fm, "train")
    model = otf.build_cnn(width=8, seed=0)
    start = time.perf_counter()
    otf.fit(model, xtr, ytr, epochs=2, batch_size=128, seed=0)
    train_s = time.perf_counter() - start
    sample = fm.test.subset(256, seed=1)
    x, y = otf.nhwc(np.asarray(sample.x, dtype=np.float32)), np.asarray(sample.y, dtype=np.int64)
    save_npz("fashion_mnist_nhwc_256.npz", x=x, y=y)
    dst = out / "keras_cnn.keras"
    shipped = otf.build_cnn(width=8, seed=0)  # the same layers and weights, never compiled: no optimizer state
    shipped.set_weights(model.get_weights())
    with atomic_write(dst, overwrite=overwrite) as tmp:
        keras_tmp = tmp.with_suffix(".keras")
        with otf.silenced():
            shipped.save(str(keras_tmp))
        os.replace(keras_tmp, tmp)
    acc = otf.accuracy(otf.keras_predict(model), x, y)
    return ("keras_cnn.keras", {"accuracy_on_sample": acc, "train_s": train_s,
                                "recipe": {"epochs": 2, "n_train": len(xtr), "width": 8, "seed": 0}},
            f"keras_cnn.keras: accuracy {100 * acc:.2f} % on fashion_mnist_nhwc_256.npz")
