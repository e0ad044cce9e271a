"""Layer 2, data: the bundled data sets (:mod:`.datasets`), the reference models and their shipped
weights (:mod:`.models`), real pretrained models read offline from registry packages (:mod:`.zoo`)
and the script that retrains the shipped weights (:mod:`.train_reference`).

``optkit.data`` itself is the data sets (``data.fashion_mnist()``, ``data.load("digits")``):
the package re-exports :mod:`optkit.data.datasets`, so notebooks write ``from optkit import data``.
Imports only from :mod:`optkit.core`.
"""
from __future__ import annotations

from optkit.data.datasets import *  # noqa: F401,F403  (the data sets are the package's face)
from optkit.data.datasets import __all__  # noqa: F401
