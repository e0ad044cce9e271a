"""Shared fixtures: real data sets, loaded once per test session (optkit.data caches them too)."""
from __future__ import annotations

import gc

import pytest


def pytest_collection_finish(session):
    """Once every test module is imported, keep the objects alive then out of later garbage collections.

    The libraries the tests import (torch, TensorFlow, ONNX Runtime ...) live for the whole session;
    without this, every ``gc.collect()`` (``bench.call_memory`` runs one before each memory probe)
    rescans them all, about a second each once TensorFlow is loaded.
    """
    gc.freeze()

from optkit import data


@pytest.fixture(scope="session")
def digits():
    """sklearn digits, 1,797 8x8 images: small enough to train on in a second."""
    return data.digits()


@pytest.fixture(scope="session")
def fmnist():
    """Fashion-MNIST with the standard 55k/5k/10k/1k splits."""
    return data.fashion_mnist()


@pytest.fixture(scope="session")
def text():
    """Sentence polarity with the default vocabulary (the one text_lstm was trained with)."""
    return data.rotten_tomatoes()
