"""Checkers for notebook 05_compression_and_efficient_architectures's exercises.

Like :mod:`optkit.course.exercises`: each ``check_*`` runs the learner's function on hand-made cases,
prints ``✓`` or a ``✗`` line with a hint, returns True or False and never raises on a wrong
answer. ``reference_*`` are solutions to compare with after trying.

Taught in 05_compression_and_efficient_architectures.
"""
from __future__ import annotations

import math
from typing import Callable

from optkit.course.exercises import _report, _try

__all__ = [
    "check_shared_storage_bytes",
    "reference_shared_storage_bytes",
    "check_low_rank",
    "reference_low_rank",
]


def reference_shared_storage_bytes(n_weights: int, k: int) -> int:
    """Bytes to store ``n_weights`` indices at ``ceil(log2 k)`` bits (padded to a byte) plus a ``k``-entry fp32 codebook."""
    bits = (k - 1).bit_length()
    return math.ceil(n_weights * bits / 8) + 4 * k


def check_shared_storage_bytes(fn: Callable) -> bool:
    """Exercise 05.1: ``fn(n_weights, k)`` is the storage of one k-means-shared tensor in bytes."""
    cases = [(200_704, 16), (4_608, 16), (1_000, 4), (1_001, 5), (9, 2), (144, 256), (10, 1)]
    for n, k in cases:
        got, err = _try(fn, n, k)
        want = reference_shared_storage_bytes(n, k)
        if err:
            return _report(False, f"storage({n}, {k}) {err}. Hint: bits = ceil(log2 k); bytes = ceil(n * bits / 8) + 4 * k")
        if got != want:
            bits = (k - 1).bit_length()
            hint = "bits = ceil(log2 k): 5 centroids need 3 bits, not log2(5) = 2.32"
            if isinstance(got, (int, float)) and got == math.ceil(n * bits / 8):
                hint = "the codebook is stored too: k fp32 values = 4k bytes"
            elif isinstance(got, (int, float)) and got == n * bits + 32 * k:
                hint = "that is in bits; divide the index bits by 8 (rounding up) and count the codebook in bytes"
            return _report(False, f"storage({n:,}, {k}) returned {got!r}; expected {want:,}. Hint: {hint}")
    return _report(True, f"exact byte counts on {len(cases)} cases, including k=5 (3 bits), k=256 (8 bits) and "
                         "k=1 (0 bits: only the codebook)")


def reference_low_rank(weight, rank: int):
    """``(A, B)`` with ``A`` of shape (out, rank), ``B`` (rank, in) and ``A @ B`` the best rank-``rank`` approximation."""
    import torch

    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    return u[:, :rank] * s[:rank], vh[:rank]


def check_low_rank(fn: Callable) -> bool:
    """Exercise 05.2: ``fn(weight, rank)`` returns factors whose product is the best rank-r approximation."""
    import torch

    g = torch.Generator().manual_seed(5)
    w = torch.randn(6, 9, generator=g) @ torch.diag(torch.linspace(3, 0.1, 9))
    cases = [(w, 1), (w, 3), (w, 6), (torch.randn(8, 4, generator=g), 2)]
    for weight, rank in cases:
        got, err = _try(fn, weight.clone(), rank)
        label = f"a {tuple(weight.shape)} weight at rank {rank}"
        if err:
            return _report(False, f"low_rank on {label} {err}. Hint: U, S, Vh = torch.linalg.svd(W, full_matrices=False)")
        try:
            a, b = got
        except (TypeError, ValueError):
            return _report(False, f"on {label} it returned {type(got).__name__}; expected a pair (A, B)")
        out_f, in_f = weight.shape
        if tuple(a.shape) != (out_f, rank) or tuple(b.shape) != (rank, in_f):
            return _report(False, f"on {label} the factors have shapes {tuple(a.shape)} and {tuple(b.shape)}; "
                                  f"expected ({out_f}, {rank}) and ({rank}, {in_f})")
        s = torch.linalg.svdvals(weight)
        best = float(s[rank:].pow(2).sum().sqrt())
        err_fro = float(torch.linalg.norm(weight - a @ b))
        if not math.isclose(err_fro, best, rel_tol=1e-4, abs_tol=1e-5):
            return _report(False, f"on {label} ||W - AB|| = {err_fro:.5f}, but the best possible is {best:.5f} "
                                  "(the root of the sum of the dropped singular values squared). Hint: keep the "
                                  "*largest* singular values, and put S into one of the factors")
    return _report(True, f"the best rank-r approximation (Eckart-Young) on {len(cases)} cases, full rank included")
