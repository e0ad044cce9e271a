"""optkit.runtimes.gpu: a clear reason without a GPU; parity of the GPU variants where one exists."""
from __future__ import annotations

import pytest
import torch

from optkit.runtimes import gpu
from optkit.data import models
from optkit.core.errors import OptkitError

HAS_GPU = torch.cuda.is_available()


@pytest.mark.skipif(HAS_GPU, reason="checks the behaviour without a GPU; this machine has one")
def test_without_a_gpu_every_entry_point_says_why():
    ok, why = gpu.available()
    assert ok is False and "no CUDA GPU" in why and "torch.cuda.is_available() is False" in why
    with pytest.raises(OptkitError, match="device='cuda'.*no CUDA GPU"):
        gpu.cuda_variants(models.build("small_cnn"), torch.zeros(2, 1, 28, 28))
    with pytest.raises(OptkitError):
        gpu.synchronize()


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU (tools/gpu_check.sh runs this on one)")
def test_gpu_variants_agree_with_the_cpu_model():
    torch.manual_seed(0)
    model = models.build("small_cnn").eval()
    x = torch.rand(8, 1, 28, 28)
    with torch.inference_mode():
        ref = model(x)
    variants = gpu.cuda_variants(model, x)
    assert list(variants) == ["GPU fp32", "GPU fp16 autocast", "GPU CUDA graph fp32"]
    for name, fn in variants.items():
        out = fn().float().cpu()
        gpu.synchronize()
        tol = 5e-2 if "fp16" in name else 1e-3  # TF32/fp16 on tensor cores round differently
        assert torch.allclose(out, ref, atol=tol, rtol=tol), name
    assert next(model.parameters()).device.type == "cpu"  # the argument stays where it was
