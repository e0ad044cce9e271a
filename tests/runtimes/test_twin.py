"""optkit.runtimes.twin: one MobileNet-class CNN in Keras and PyTorch, and the weight port between them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="TensorFlow is not installed (the tf extra)")
torch = pytest.importorskip("torch", reason="PyTorch is not installed")

from optkit.core.errors import OptkitError  # noqa: E402
from optkit.runtimes import twin  # noqa: E402


@pytest.fixture(scope="module")
def keras_model():
    """A Keras twin with non-trivial BatchNorm statistics (fresh ones are 0/1 and hide epsilon and layout bugs)."""
    km = twin.keras_mobilenet(width=8)
    rng = np.random.default_rng(0)
    for layer in km.layers:
        if type(layer).__name__ == "BatchNormalization":
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.2, b.shape),
                               rng.normal(0, 0.2, m.shape), rng.uniform(0.2, 2.0, v.shape)])
    return km


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(1).random((32, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def real_rows():
    from optkit import data
    from optkit.runtimes import tflow

    x, _ = tflow.keras_arrays(data.fashion_mnist(), "test", n=256)
    return x


def test_shapes_and_layouts(keras_model):
    tm = twin.torch_mobilenet(width=8)
    assert keras_model.output_shape == (None, 10)
    assert tuple(tm(torch.zeros(3, 1, 28, 28)).shape) == (3, 10)
    assert sum(p.numel() for p in tm.parameters()) + sum(b.numel() for n, b in tm.named_buffers()
                                                         if "num_batches" not in n) == keras_model.count_params()
    bn = [m for m in tm.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-3 and m.momentum == pytest.approx(0.1) for m in bn)  # Keras' epsilon, 1 - Keras' 0.9
    km = twin.keras_mobilenet(width=8, bn_momentum=0.99)
    ported = twin.port_keras_to_torch(km, twin.torch_mobilenet(width=8))
    assert all(m.momentum == pytest.approx(0.01) for m in ported.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_tf_same_padding_is_asymmetric_at_stride_2():
    pad = twin.SamePad(3, 2)
    x = torch.ones(1, 1, 28, 28)
    y = pad(x)
    assert tuple(y.shape) == (1, 1, 29, 29)  # one pixel, bottom and right only
    assert y[0, 0, 0].sum() == 28 and y[0, 0, -1].sum() == 0
    assert tuple(twin.SamePad(3, 2)(torch.ones(1, 1, 7, 7)).shape) == (1, 1, 9, 9)  # odd size: one each side
    assert tuple(twin.SamePad(3, 1)(x).shape) == (1, 1, 30, 30)


def test_ported_twin_matches_keras(keras_model, rows, real_rows):
    tm = twin.port_keras_to_torch(keras_model, twin.torch_mobilenet(width=8))
    p = twin.parity(keras_model, tm, rows)
    assert p.max_abs < 1e-4 and p.top1_agreement == 1.0 and p.n == len(rows)
    assert twin.parity(keras_model, tm, real_rows).top1_agreement == 1.0


@pytest.mark.parametrize("step", twin.SKIPPABLE)
def test_skipping_a_conversion_breaks_parity(keras_model, rows, step):
    tm = twin.port_keras_to_torch(keras_model, twin.torch_mobilenet(width=8), skip=(step,))
    assert twin.parity(keras_model, tm, rows).max_abs > 1e-4, f"leaving out {step} should show"


def test_symmetric_padding_breaks_parity(keras_model, rows):
    tm = twin.port_keras_to_torch(keras_model, twin.torch_mobilenet(width=8, padding="symmetric"))
    assert twin.parity(keras_model, tm, rows).max_abs > 1e-4


def test_mismatched_twin_and_bad_input_are_named(keras_model):
    with pytest.raises(OptkitError) as e:
        twin.port_keras_to_torch(keras_model, twin.torch_mobilenet(width=8, blocks=((2, 1),)))
    assert e.value.parameter == "torch_model" and "same width and blocks" in e.value.fix
    with pytest.raises(OptkitError) as e:
        twin.port_keras_to_torch(keras_model, twin.torch_mobilenet(width=16))
    assert "shape" in e.value.problem
    with pytest.raises(OptkitError) as e:
        twin.port_keras_to_torch(keras_model, twin.torch_mobilenet(width=8), skip=("padding",))
    assert e.value.parameter == "skip"
    with pytest.raises(OptkitError):
        twin.torch_mobilenet(blocks=((2, 3),))
    with pytest.raises(OptkitError):
        twin.nchw(np.zeros((28, 28, 1)))


def test_publish_is_atomic_and_keeps_the_suffix(tmp_path):
    seen = []
    path = twin.publish(tmp_path / "m.keras", lambda tmp: (seen.append(tmp.name), tmp.write_text("ok")))
    assert seen == ["m.keras"] and path.read_text() == "ok"
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]  # the temporary folder is gone

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        twin.publish(tmp_path / "m.keras", fail)
    assert path.read_text() == "ok" and len(list(tmp_path.iterdir())) == 1  # the old file is untouched
    with pytest.raises(OptkitError):
        twin.publish(tmp_path / "no" / "m.keras", lambda tmp: None)


def test_built_keeps_the_reason_of_a_failed_variant(capsys):
    from optkit.core import variant

    built = twin.Built()
    built.add("works", lambda: variant.Variant("works", lambda x: x), np.asarray)
    built.add("broken", lambda: 1 / 0)
    assert [v.name for v in built.variants] == ["works"] and built.convert == {"works": np.asarray}
    assert built.skipped["broken"].startswith("ZeroDivisionError")
    assert "skipped broken" in capsys.readouterr().out
    assert list(built.table().index) == ["works", "broken"]


def test_torch_variants_without_compiling_match_the_twin(keras_model, real_rows, tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed")
    tm = twin.port_keras_to_torch(keras_model, twin.torch_mobilenet(width=8))
    built = twin.torch_variants(tm, tmp_path, [real_rows[:32]], {1: real_rows[:1], 4: real_rows[:4]},
                                threads=1, compile=False)
    names = {v.name for v in built.variants} | set(built.skipped)
    assert names == {"PyTorch eager", "PyTorch bf16", "ORT fp32 (torch.onnx)", "ORT int8 (torch.onnx)"}
    assert {"torch_export", "torch_onnx"} <= set(built.files)
    with torch.no_grad():
        ref = tm(torch.from_numpy(twin.nchw(real_rows))).numpy()
        outs = {v.name: np.asarray(v.predict(built.convert[v.name](real_rows)), dtype=np.float32)
                for v in built.variants}
    for v in built.variants:
        out = outs[v.name]
        assert out.shape == ref.shape
        if v.name == "ORT fp32 (torch.onnx)":
            assert np.abs(out - ref).max() < 1e-4
        assert (out.argmax(1) == ref.argmax(1)).mean() > 0.9, v.name  # int8 and bf16 agree on most rows
        assert set(v.inputs) == {1, 4}
        if v.runtime == "onnxruntime":  # idle ORT workers must not spin: they would steal the next runtime's cores
            assert v.config["allow_spinning"] is False and v.size_bytes == Path(v.artifact).stat().st_size
