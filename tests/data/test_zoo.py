"""The offline pretrained models and sample images load, with the shapes and labels we rely on."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from optkit.data import zoo
from optkit.core.errors import OptkitError


def test_sample_images_shapes_labels_and_normalization():
    x, y = zoo.sample_images("fashionMNIST")
    assert x.shape == (20, 28, 28, 1) and x.dtype == np.uint8
    assert y.dtype == np.int64 and set(y) <= set(range(10))
    xn, yn = zoo.sample_images("imagenet", size=64, normalize=True)
    assert xn.shape == (20, 3, 64, 64) and xn.dtype == np.float32
    assert -1.0 <= xn.min() and xn.max() <= 1.0
    assert (yn >= 0).all() and (yn < 1000).all()


def test_sample_images_rejects_unknown_kind():
    with pytest.raises(OptkitError, match="kind='svhn'"):
        zoo.sample_images("svhn")


@pytest.mark.slow
def test_efficientnet_lite0_classifies_the_imagenet_samples():
    x, y = zoo.sample_images("imagenet", size=224, normalize=True)
    model = zoo.efficientnet_lite0()
    with torch.no_grad():
        pred = model(torch.from_numpy(x[:8])).argmax(1).numpy()
    # A real ImageNet model: most of the 8 labelled samples are right (random would get ~0).
    assert (pred == y[:8]).sum() >= 5


@pytest.mark.slow
def test_minilm_embeddings_are_unit_length_and_ignore_padding():
    enc, tok = zoo.minilm()
    batch = tok(["a moving, funny film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        emb = enc(batch["input_ids"], batch["attention_mask"])
        alone = tok(["dull"], return_tensors="pt")
        single = enc(alone["input_ids"], alone["attention_mask"])
    assert emb.shape == (2, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(emb[1:], single, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_ids_only_encoder_matches_the_two_input_encoder_on_padded_ids():
    enc, tok = zoo.minilm()
    ids, mask, n = zoo.tokenize_fixed(tok, ["a moving, funny film", "dull", "an overlong mess of a thriller"],
                                      max_length=16)
    one_input = zoo.IdsOnlyEncoder(enc, tok.pad_token_id).eval()
    with torch.no_grad():
        want = enc(ids, mask)
        got = one_input(ids)
    assert n == 3 and got.shape == (3, 384)
    assert bool((mask == 0).any())  # the short texts really are padded
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert "pad_id=0" in repr(one_input)


def test_fer_model_files_exist():
    assert zoo.fer_model_path("keras").suffix == ".hdf5" and zoo.fer_model_path("keras").exists()
    assert zoo.fer_model_path("tflite").exists()


class _FakeTokenizer:
    """Stands in for a Hugging Face tokenizer: one id per word, padded to max_length."""

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        ids = torch.zeros(len(texts), max_length, dtype=torch.int64)
        for i, t in enumerate(texts):
            words = t.split()[:max_length]
            ids[i, :len(words)] = torch.tensor([len(w) for w in words])
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}


def test_embed_pads_to_fixed_batches_and_returns_one_row_per_text():
    shapes = []

    def model(ids, mask):
        shapes.append(tuple(ids.shape))
        return ids.float().sum(1, keepdim=True)

    texts = ["a bb", "ccc", "dddd e", "ff", "g"]
    out = zoo.embed(model, _FakeTokenizer(), texts, batch_size=2, max_length=4)
    assert out.shape == (5, 1) and out.dtype == np.float32
    assert shapes == [(2, 4)] * 3  # the last batch was padded to full size
    np.testing.assert_array_equal(out[:, 0], [3, 3, 5, 2, 1])
    with pytest.raises(OptkitError, match="texts"):
        zoo.tokenize_fixed(_FakeTokenizer(), [])
