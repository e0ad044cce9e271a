"""optkit.techniques.quantize.intmath: integer-only int8 arithmetic matches the quantized layer."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from optkit.core.errors import OptkitError
from optkit.techniques import quantize as Q


def test_fixed_point_multiplier_is_exact_to_31_bits():
    m = np.array([0.5, 0.0123456, 3.7e-5, 0.999999999, 1.75])
    m0, shift = Q.fixed_point_multiplier(m)
    assert np.all((m0 >= 2 ** 30) & (m0 < 2 ** 31))
    np.testing.assert_allclose(m0 * 2.0 ** -shift.astype(float), m, rtol=2 ** -30)
    m0, shift = Q.fixed_point_multiplier(0.25)
    assert int(m0) == 2 ** 30 and int(shift) == 32  # 0.25 = 2^30 * 2^-32
    for bad in (0.0, -1.0, float("nan"), []):
        with pytest.raises(OptkitError, match="^multiplier="):
            Q.fixed_point_multiplier(bad)


def _layer_case(seed=0, n=16, k=64, m=10):
    """A float layer, an input, and the quantization parameters an int8 kernel would use."""
    g = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(k, m)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(m, k, generator=g) * 0.2)
        layer.bias.copy_(torch.randn(m, generator=g) * 0.1)
    x = torch.relu(torch.randn(n, k, generator=g))
    x_scale, x_zp = float(x.max()) / 127, 0  # 7 bits: no int16 saturation on any x86 kernel
    w_scale, _ = Q.choose_qparams(layer.weight.detach(), 8, symmetric=True, axis=0)
    y = layer(x).detach()
    y_scale = float(y.max() - y.min()) / 255
    y_zp = int(round(-float(y.min()) / y_scale))
    return layer, x, (x_scale, x_zp), w_scale, (y_scale, y_zp)


def test_integer_linear_matches_the_float_layer_within_one_step():
    layer, x, (xs, xz), ws, (ys, yz) = _layer_case()
    x_q = torch.clamp(torch.round(x / xs) + xz, 0, 127).to(torch.uint8).numpy()
    w_q = Q.quantize(layer.weight.detach(), ws, torch.zeros(len(ws), dtype=torch.int32), axis=0).numpy()
    out = Q.integer_linear(x_q, xs, xz, w_q, ws.numpy(), layer.bias.detach().numpy(), ys, yz)
    assert out.acc.dtype == np.int32 and out.bias_q.dtype == np.int32 and out.q.dtype == np.uint8
    # the quantized layer in float arithmetic: dequantized input and weights, then quantize the result
    x_hat = (x_q.astype(np.float64) - xz) * xs
    w_hat = w_q.astype(np.float64) * ws.numpy()[:, None]
    y_float = x_hat @ w_hat.T + layer.bias.detach().numpy()
    q_ref = np.clip(np.round(y_float / ys) + yz, 0, 255)
    assert np.abs(out.q.astype(int) - q_ref).max() <= 1
    # and the integer result is within a step (plus the input's rounding) of the float layer itself
    assert np.abs(out.y - layer(x).detach().numpy()).max() <= 2 * ys + 1e-6


def test_integer_linear_matches_torch_quantized_linear_within_one_step():
    layer, x, (xs, xz), ws, (ys, yz) = _layer_case(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch.ao.nn.quantized as nnq

        qx = torch.quantize_per_tensor(x, xs, xz, torch.quint8)
        qw = torch.quantize_per_channel(layer.weight.detach(), ws.double(), torch.zeros(len(ws), dtype=torch.long), 0,
                                        torch.qint8)
        qlinear = nnq.Linear(x.shape[1], len(ws))
        qlinear.set_weight_bias(qw, layer.bias.detach())
        qlinear.scale, qlinear.zero_point = ys, yz
        ref = qlinear(qx).int_repr().numpy().astype(int)
    out = Q.integer_linear(qx.int_repr().numpy(), xs, xz, qw.int_repr().numpy(), ws.numpy(),
                           layer.bias.detach().numpy(), ys, yz)
    assert np.abs(out.q.astype(int) - ref).max() <= 1


def test_integer_linear_relu_and_bad_input():
    layer, x, (xs, xz), ws, (ys, yz) = _layer_case(seed=2)
    x_q = torch.clamp(torch.round(x / xs), 0, 127).to(torch.uint8).numpy()
    w_q = Q.quantize(layer.weight.detach(), ws, torch.zeros(len(ws), dtype=torch.int32), axis=0).numpy()
    out = Q.integer_linear(x_q, xs, xz, w_q, ws.numpy(), None, ys, yz, relu=True)
    assert out.q.min() >= yz and np.all(out.y >= 0)
    with pytest.raises(OptkitError, match="^x_q="):
        Q.integer_linear(x_q[:, :5], xs, xz, w_q, ws.numpy(), None, ys, yz)
    with pytest.raises(OptkitError, match="^x_q="):
        Q.integer_linear(x_q.astype(np.float32), xs, xz, w_q, ws.numpy(), None, ys, yz)
