"""Reference models, a seeded training loop, evaluation, parameter and MAC counts.

The models every lesson optimizes:

- :class:`SmallCNN` - two conv layers and two linear layers (Fashion-MNIST, about 207 k params);
- :class:`ResNetCNN` - the "deeper CNN": BatchNorm and residual blocks in three stages;
- :class:`MLP` - three linear layers on the flattened image;
- :class:`TextLSTM` - embedding, LSTM, mean pooling and two linear layers (sentence polarity).

:func:`build` makes one by name, :func:`pretrained` loads the trained weights shipped in
``data/models`` (recipe and accuracy in ``data/models/reference.json``; retrain them with
``python -m optkit.data.train_reference``). :func:`train` is a small deterministic AdamW loop,
:func:`evaluate` reports accuracy (overall and per class) and loss, :func:`count_params` and
:func:`count_macs` give the model's size and work.

:func:`as_variant` and :func:`workload_for` put a model and its test split into the one measurement
path (:func:`optkit.core.variant.evaluate`), with its parameters, MACs and size filled in.

Taught in 00_measure_first (baselines, MACs); train() is used for fine-tuning from 02_quantization (QAT) on.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from optkit.core import progress
from optkit.core.errors import OptkitError, check_choice, check_int, check_range
from optkit.core.sizes import model_size
from optkit.core.variant import Variant, Workload

__all__ = [
    "SmallCNN",
    "BasicBlock",
    "ResNetCNN",
    "MLP",
    "TextLSTM",
    "NAMES",
    "DATASET_OF",
    "MODELS_DIR",
    "build",
    "pretrained",
    "reference_info",
    "set_seed",
    "train",
    "evaluate",
    "EvalResult",
    "count_params",
    "count_macs",
    "as_variant",
    "workload_for",
]

ROOT = Path(__file__).resolve().parents[2]  # the repository (optkit/<layer>/<module>.py)
#: Where the trained reference weights and ``reference.json`` live.
MODELS_DIR = ROOT / "data" / "models"
#: The reference models, by the name :func:`build` and :func:`pretrained` take.
NAMES = ("small_cnn", "resnet_cnn", "mlp", "text_lstm")
#: The data set (an ``optkit.data.load`` name) each reference model was trained on.
DATASET_OF = {"small_cnn": "fashion_mnist", "resnet_cnn": "fashion_mnist", "mlp": "fashion_mnist",
              "text_lstm": "rotten_tomatoes"}


# --------------------------------------------------------------------------- models

class SmallCNN(nn.Module):
    """conv(1->16, 3x3) ReLU maxpool, conv(16->32, 3x3) ReLU maxpool, linear(32*7*7 -> 128) ReLU
    dropout, linear(128 -> 10).

    Every layer is its own named module (``conv1``, ``relu1``, ...) so that fusion, quantization
    and pruning can address it. ``in_size`` is the image side (28 for Fashion-MNIST, 8 for digits).

    Taught in 00_measure_first.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, in_size: int = 28,
                 dropout: float = 0.25):
        super().__init__()
        if in_size < 4 or in_size % 4:
            raise OptkitError("in_size", in_size, "must be a multiple of 4 (two 2x2 poolings)",
                              "pass 28 for Fashion-MNIST or 8 for digits")
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * (in_size // 4) ** 2, 128)
        self.relu3 = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.dropout(self.relu3(self.fc1(self.flatten(x))))
        return self.fc2(x)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut, then ReLU after the addition.

    The shortcut is the identity, or ``downsample`` (1x1 conv + BN) when the stride or the
    width changes. Structured pruning must keep ``conv2``'s output channels equal to the
    shortcut's, which is the dependency the pruning lesson is about.

    Taught in 03_pruning.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class ResNetCNN(nn.Module):
    """The deeper CNN: stem (conv3x3-BN-ReLU), three stages of two :class:`BasicBlock` s at
    ``widths`` (stride 2 at stages 2 and 3: 28 -> 14 -> 7), global average pooling, linear.

    Module names are plain (``stem.conv``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``) so
    that pruning can shrink the channels stage by stage.

    Taught in 00_measure_first and 03_pruning.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 widths: tuple[int, int, int] = (32, 64, 128), blocks: int = 2):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or min(widths) < 1:
            raise OptkitError("widths", widths, "must be three positive channel counts", "pass e.g. (32, 64, 128)")
        self.widths = widths
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            bn=nn.BatchNorm2d(widths[0]),
            relu=nn.ReLU()))
        stages, in_ch = [], widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks_ = [BasicBlock(in_ch, width, stride)] + [BasicBlock(width, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*blocks_))
            in_ch = width
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


class MLP(nn.Module):
    """Flatten, linear(784 -> 512) ReLU dropout, linear(512 -> 256) ReLU dropout, linear(256 -> 10).

    Taught in 00_measure_first.
    """

    def __init__(self, in_features: int = 784, hidden: tuple[int, int] = (512, 256), num_classes: int = 10,
                 dropout: float = 0.2):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, hidden[0])
        self.relu1 = nn.ReLU()
        self.dropout1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.relu2 = nn.ReLU()
        self.dropout2 = nn.Dropout(dropout)
        self.fc3 = nn.Linear(hidden[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout1(self.relu1(self.fc1(self.flatten(x))))
        x = self.dropout2(self.relu2(self.fc2(x)))
        return self.fc3(x)


class TextLSTM(nn.Module):
    """Embedding (``padding_idx=0``) -> LSTM -> mean over the non-pad positions -> linear ReLU ->
    linear, for int64 token ids ``(N, max_len)`` padded with 0 at the end.

    Token ids at or above ``vocab_size`` are read as ``<unk>`` (1). Vocabularies from
    ``optkit.data.rotten_tomatoes`` are ordered by frequency, so this model accepts data encoded
    with any larger ``vocab_size``: its words beyond the model's vocabulary are unknown to it.
    Dynamic int8 quantization (notebook 02) targets ``lstm``, ``fc1`` and ``fc2``.

    Taught in 00_measure_first and 02_quantization.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 128, hidden: int = 256, num_classes: int = 2,
                 dropout: float = 0.3):
        super().__init__()
        check_range("vocab_size", vocab_size, 2)
        self.vocab_size = int(vocab_size)
        self.embedding = nn.Embedding(self.vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(hidden, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = torch.where(ids < self.vocab_size, ids, torch.ones_like(ids))
        mask = (ids != 0).unsqueeze(-1).to(torch.float32)          # (N, T, 1)
        out, _ = self.lstm(self.embedding(ids))                    # (N, T, hidden)
        pooled = (out * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.fc2(self.relu(self.fc1(self.dropout(pooled))))


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN, "resnet_cnn": ResNetCNN, "mlp": MLP, "text_lstm": TextLSTM,
}


def build(name: str, **kwargs: Any) -> nn.Module:
    """A new, untrained reference model: ``small_cnn``, ``resnet_cnn``, ``mlp`` or ``text_lstm``.

    Keyword arguments go to the model's class (``text_lstm`` needs ``vocab_size``). Seed first
    with :func:`set_seed` for the same initial weights every time.

    Taught in 00_measure_first.
    """
    check_choice("name", name, NAMES)
    if name == "text_lstm" and "vocab_size" not in kwargs:
        raise OptkitError("vocab_size", None, "text_lstm needs its vocabulary size",
                          "pass build('text_lstm', vocab_size=len(dataset.vocab))")
    try:
        return _BUILDERS[name](**kwargs)
    except TypeError as e:
        raise OptkitError("kwargs", kwargs, f"not accepted by {_BUILDERS[name].__name__} ({e})",
                          f"see help(optkit.data.models.{_BUILDERS[name].__name__})") from None


# --------------------------------------------------------------------------- pretrained

def reference_info(name: str | None = None) -> dict:
    """The recipe and measured accuracy of the shipped weights (``data/models/reference.json``);
    one model's entry when ``name`` is given.

    Taught in 00_measure_first.
    """
    path = MODELS_DIR / "reference.json"
    if not path.is_file():
        raise OptkitError("reference.json", str(path), "is missing",
                          "restore it with `git checkout data/models`, or run `python -m optkit.data.train_reference`")
    info = json.loads(path.read_text(encoding="utf-8"))
    if name is None:
        return info
    check_choice("name", name, [n for n in NAMES if n in info["models"]])
    return info["models"][name]


def pretrained(name: str) -> nn.Module:
    """The trained reference model ``name``, in eval mode, on the CPU.

    Builds the model with the recorded arguments and loads ``data/models/<name>.pt`` (a state
    dict) with ``torch.load(weights_only=True)``: no code from the file runs. The file's SHA-256
    is checked against ``reference.json`` first.

    Taught in 00_measure_first.
    """
    check_choice("name", name, NAMES)
    entry = reference_info(name)
    path = MODELS_DIR / entry["file"]
    fix = "restore it with `git checkout data/models`, or retrain with `python -m optkit.data.train_reference`"
    if not path.is_file():
        raise OptkitError("name", name, f"its weights file {path} is missing", fix)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        raise OptkitError("name", name, f"{path.name} does not match reference.json "
                          f"(SHA-256 expected {entry['sha256']}, got {digest})", fix)
    model = build(name, **entry["build_kwargs"])
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


# --------------------------------------------------------------------------- training

def set_seed(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and CUDA).

    Taught in 00_measure_first; used for fine-tuning in 02_quantization, 03_pruning and 04_knowledge_distillation.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _device_of(model: Any) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
    return torch.device("cpu")


def _set_mode(model: nn.Module, training: bool) -> bool:
    """``model.train(training)``; False where the model refuses (a ``torch.export`` module, whose
    train/eval behaviour was fixed when it was exported)."""
    try:
        model.train(training)
    except NotImplementedError:
        return False
    return True


def _progress(iterable: Iterable, enabled: bool, **kw: Any):
    return progress.bar(iterable, enabled=enabled, **kw)


def train(model: nn.Module, dataset, epochs: int = 1, batch_size: int = 128, lr: float = 1e-3,
          seed: int = 0, progress: bool = True, *, weight_decay: float = 0.01, schedule: str = "cosine",
          split: str = "train", val_split: str | None = "val", loss_fn: Callable | None = None) -> list[dict]:
    """Train ``model`` in place with AdamW on ``dataset``'s ``split``; return one dict per epoch.

    Deterministic for a given ``seed`` (on the same machine and thread count): the seed fixes
    dropout and the batch order (a seeded ``DataLoader`` generator). ``schedule="cosine"``
    decays the learning rate to zero over the run, ``"constant"`` keeps it. Each history entry
    holds ``epoch``, ``lr`` (at the end of the epoch), ``train_loss`` and ``train_acc`` (running
    means over the epoch, dropout on), ``val_acc`` (``None`` when ``val_split`` is ``None``) and
    ``seconds``. The model ends in eval mode.

    Taught in 00_measure_first; used for fine-tuning in 02_quantization, 03_pruning and 04_knowledge_distillation.
    """
    from optkit.data import Dataset

    check_range("epochs", epochs, 1)
    check_range("lr", lr, 0, low_open=True)
    check_choice("schedule", schedule, ("cosine", "constant"))
    if not isinstance(dataset, Dataset):
        raise OptkitError("dataset", type(dataset).__name__, "is not an optkit Dataset",
                          "pass e.g. optkit.data.fashion_mnist() or optkit.data.digits()")
    set_seed(seed)
    loader = dataset.torch_loader(split, batch_size=batch_size, shuffle=True, seed=seed)
    device = _device_of(model)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total_steps = epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, (lambda s: 0.5 * (1 + math.cos(math.pi * s / total_steps))) if schedule == "cosine"
        else (lambda s: 1.0))
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        start, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
        bar = _progress(loader, progress, desc=f"epoch {epoch}/{epochs}", leave=False)
        for xb, yb in bar:
            xb, yb = xb.to(device), yb.to(device)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(yb)
            if progress:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
        entry = {"epoch": epoch, "lr": lr * scheduler.lr_lambdas[0](scheduler.last_epoch),
                 "train_loss": loss_sum / seen, "train_acc": correct / seen, "val_acc": None}
        if val_split is not None:
            entry["val_acc"] = evaluate(model, dataset, split=val_split).accuracy
        entry["seconds"] = time.perf_counter() - start
        history.append(entry)
        if progress:
            print(f"epoch {epoch}/{epochs}: train loss {entry['train_loss']:.4f}, train acc "
                  f"{entry['train_acc']:.4f}" + ("" if entry["val_acc"] is None else f", val acc {entry['val_acc']:.4f}")
                  + f" ({entry['seconds']:.1f} s)")
    model.eval()
    return history


# --------------------------------------------------------------------------- evaluation

@dataclass(frozen=True)
class EvalResult:
    """Accuracy overall and per class name, mean cross-entropy ``loss``, and ``n`` examples.

    Taught in 00_measure_first.
    """

    accuracy: float
    per_class: dict = field(default_factory=dict)
    loss: float = float("nan")
    n: int = 0

    def __repr__(self) -> str:
        worst = min(self.per_class.items(), key=lambda kv: kv[1]) if self.per_class else None
        tail = f", worst class {worst[0]!r} {100 * worst[1]:.1f} %" if worst else ""
        return f"EvalResult(accuracy={100 * self.accuracy:.2f} %, loss={self.loss:.4f}, n={self.n:,}{tail})"

    def to_dict(self) -> dict:
        """Plain values, for JSON and records."""
        return {"accuracy": self.accuracy, "per_class": dict(self.per_class), "loss": self.loss, "n": self.n}


def _batches(data, split: str, batch_size: int):
    """(batches of (x, y), class names) from a Dataset, Split, DataLoader or (x, y) pair."""
    from optkit.data import Dataset, Split

    if isinstance(data, Dataset):
        return data.torch_loader(split, batch_size=batch_size, shuffle=False), list(data.classes)
    if isinstance(data, Split):
        data = (data.x, data.y)
    if isinstance(data, torch.utils.data.DataLoader):
        return data, None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (torch.from_numpy(np.array(a)) if not isinstance(a, torch.Tensor) else a for a in data)
        if len(x) != len(y):
            raise OptkitError("data", f"{len(x)} inputs, {len(y)} labels", "lengths differ",
                              "pass as many labels as inputs")
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)], None
    raise OptkitError("data", type(data).__name__, "is not something evaluate can read",
                      "pass an optkit Dataset, a Split, a DataLoader of (x, y), or an (x, y) pair")


def evaluate(model: Callable, data, split: str = "test", batch_size: int = 256) -> EvalResult:
    """Accuracy, per-class accuracy and mean cross-entropy of ``model`` on ``data``.

    ``data`` is an optkit ``Dataset`` (``split`` chooses the split), a ``Split``, a ``DataLoader``
    of ``(x, y)`` or an ``(x, y)`` pair. ``model`` is any callable from a batch to logits: an
    ``nn.Module`` (run in eval mode under ``torch.inference_mode``, its previous train/eval mode
    restored afterwards), a compiled or exported module, or a function returning numpy logits
    (e.g. an ONNX Runtime session wrapped in a lambda).

    Taught in 00_measure_first.
    """
    check_range("batch_size", batch_size, 1)
    batches, classes = _batches(data, split, int(batch_size))
    was_training = isinstance(model, nn.Module) and model.training
    switched = was_training and _set_mode(model, False)
    device = _device_of(model)
    loss_sum, n = 0.0, 0
    all_pred, all_true = [], []
    try:
        with torch.inference_mode():
            for xb, yb in batches:
                out = model(xb.to(device) if isinstance(xb, torch.Tensor) else xb)
                if isinstance(out, (tuple, list)):
                    out = out[0]
                logits = out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out))
                logits = logits.float().cpu()
                yb = torch.as_tensor(yb).long().cpu()
                loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
                all_pred.append(logits.argmax(1))
                all_true.append(yb)
                n += len(yb)
    finally:
        if switched:
            _set_mode(model, True)
    if n == 0:
        raise OptkitError("data", split, "holds no examples", "pass a non-empty split")
    pred, true = torch.cat(all_pred).numpy(), torch.cat(all_true).numpy()
    n_classes = max(int(true.max()) + 1, len(classes or []))
    names = classes if classes is not None and len(classes) >= n_classes else [str(i) for i in range(n_classes)]
    per_class = {names[c]: float((pred[true == c] == c).mean()) for c in range(n_classes) if (true == c).any()}
    return EvalResult(accuracy=float((pred == true).mean()), per_class=per_class, loss=loss_sum / n, n=n)


# --------------------------------------------------------------------------- counting

def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once).

    Quantized modules keep their weights in packed buffers, not parameters; count those with
    ``optkit.runtimes.model_files.model_size`` instead.

    Taught in 00_measure_first.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _conv_macs(m: nn.Module, inputs, output) -> int:
    kernel = math.prod(m.kernel_size) if isinstance(m.kernel_size, tuple) else m.kernel_size ** 2
    if getattr(m, "transposed", False):
        # each input element is multiplied into (out_channels / groups) * kernel outputs
        return inputs[0].numel() * (m.out_channels // m.groups) * kernel
    return output.numel() * (m.in_channels // m.groups) * kernel


def _linear_macs(m: nn.Module, inputs, output) -> int:
    return output.numel() * m.in_features


def _rnn_macs(m: nn.Module, inputs, output) -> int:
    x = inputs[0]
    if isinstance(x, nn.utils.rnn.PackedSequence):
        steps = int(x.data.shape[0])        # sum of the sequence lengths
    elif x.dim() == 2:                      # unbatched (T, features)
        steps = int(x.shape[0])
    else:
        steps = int(x.shape[0] * x.shape[1])
    mode = getattr(m, "mode", "LSTM")
    gates = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    directions = 2 if m.bidirectional else 1
    hidden = m.hidden_size
    proj = getattr(m, "proj_size", 0) or 0
    h_out = proj or hidden
    total = 0
    for layer in range(m.num_layers):
        in_size = m.input_size if layer == 0 else h_out * directions
        per_step = gates * hidden * (in_size + h_out) + (hidden * proj if proj else 0)
        total += per_step * directions
    return total * steps


def _macs_rule(m: nn.Module):
    name = type(m).__name__
    if isinstance(m, nn.modules.conv._ConvNd) or ("Conv" in name and hasattr(m, "in_channels")
                                                  and hasattr(m, "kernel_size")):
        return _conv_macs
    if isinstance(m, nn.Linear) or (name.endswith("Linear") and hasattr(m, "in_features")):
        return _linear_macs
    if isinstance(m, nn.RNNBase) or (name in ("LSTM", "GRU") and hasattr(m, "hidden_size")):
        return _rnn_macs
    return None


def count_macs(model: nn.Module, example_input) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``example_input`` (the whole batch:
    pass a batch of 1 for MACs per sample).

    Counted, by forward hooks: convolutions ``output elements x (in_channels / groups) x kernel
    area`` (depthwise and grouped included; transposed: ``input elements x (out_channels / groups)
    x kernel area``); linear layers ``output elements x in_features``; LSTM/GRU/RNN
    ``steps x gates x hidden x (input + hidden)`` per layer and direction, over every step the
    layer runs (padding positions included, since the LSTM computes them). Quantized versions of
    these layers count the same. Not counted: biases, BatchNorm, activations, pooling, additions,
    embeddings (a lookup) and the LSTM's element-wise gate arithmetic, which are small next to the
    matrix products. ``example_input`` may be a tensor or a tuple of positional arguments.

    Taught in 00_measure_first.
    """
    total = [0]
    handles = []

    def hook(rule):
        def fn(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            if isinstance(out, nn.utils.rnn.PackedSequence):
                out = out.data
            total[0] += int(rule(module, inputs, out))
        return fn

    for module in model.modules():
        rule = _macs_rule(module)
        if rule is not None:
            handles.append(module.register_forward_hook(hook(rule)))
    if not handles:
        raise OptkitError("model", type(model).__name__, "has no Conv, Linear or RNN layer to count",
                          "count_macs counts those layers; check that you passed the model itself")
    was_training = bool(getattr(model, "training", False))
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    device = _device_of(model)
    switched = was_training and _set_mode(model, False)
    try:
        with torch.inference_mode():
            model(*(a.to(device) if isinstance(a, torch.Tensor) else a for a in args))
    finally:
        for h in handles:
            h.remove()
        if switched:
            _set_mode(model, True)
    return total[0]


# --------------------------------------------------------------------------- the measurement path

#: How a data set is named in a Workload label (its task, its title).
_TASKS = {"fashion_mnist": ("Fashion-MNIST", "clothing classification"),
          "rotten_tomatoes": ("sentence polarity", "review sentiment"), "digits": ("digits", "digit classification")}


def as_variant(model: nn.Module, example: Any, name: str | None = None, **fields: Any) -> Variant:
    """``model`` as a :class:`~optkit.core.variant.Variant`, with what it costs filled in: ``params``
    (:func:`count_params`), ``macs`` per sample (:func:`count_macs` on the first row of ``example``)
    and ``size_bytes`` (its state dict, :func:`optkit.core.sizes.model_size`). ``name`` defaults to
    the class name; ``fields`` go to ``Variant`` (``technique``, ``precision``, ``config`` ...) and
    win over the computed ones.

    Taught in 00_measure_first.
    """
    if not isinstance(model, nn.Module):
        raise OptkitError("model", type(model).__name__, "is not a torch nn.Module",
                          "wrap other callables yourself: variant.Variant(name, predict, ...)")
    one = example[:1] if isinstance(example, torch.Tensor) else example
    costs = {"params": count_params(model), "macs": count_macs(model, one), "size_bytes": model_size(model)}
    return Variant(name or type(model).__name__, model, **{**costs, **fields})


def workload_for(dataset, models: Iterable[nn.Module | str], split: str = "test", n: int | None = None) -> Workload:
    """The :class:`~optkit.core.variant.Workload` of ``models`` (modules or names) measured on one split
    of ``dataset`` (its first ``n`` rows, or all): ``"SmallCNN, MLP · Fashion-MNIST test (10,000)"``.

    One workload per task: models of one task may be compared (ratios, a Pareto plot); records
    of two workloads never are. Taught in 00_measure_first.
    """
    names = [m if isinstance(m, str) else type(m).__name__ for m in models]
    if not names:
        raise OptkitError("models", names, "names no model", "pass the models measured, e.g. [net]")
    total = len(dataset.split(split))
    count = total if n is None else min(check_int("n", n, 1), total)
    title, task = _TASKS.get(dataset.name, (dataset.name, "classification"))
    rows = f"{count:,}" if count == total else f"{count:,} of {total:,}"
    return Workload(", ".join(dict.fromkeys(names)), f"{title} {task}", f"{title} {split} ({rows})")
