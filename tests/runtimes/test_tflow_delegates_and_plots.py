"""optkit.runtimes.tflow: LiteRT without XNNPACK, batch-first tf.data pipelines, per-row hits, the lesson's plots."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("TensorFlow is not installed (pip install -e '.[tf]')", allow_module_level=True)

from optkit.core import verify  # noqa: E402
from optkit.core.bench import Measurement  # noqa: E402
from optkit.core.errors import OptkitError  # noqa: E402
from optkit.core.record import Record  # noqa: E402
from optkit.runtimes import tflow as otf  # noqa: E402


@pytest.fixture(scope="module")
def real(fmnist):
    """400 real Fashion-MNIST test images (NHWC) with labels, and 50 calibration images."""
    otf.import_tensorflow()
    x, y = otf.keras_arrays(fmnist, "test", n=400)
    return x, y, otf.representative_batches(fmnist, n=50, batch_size=10)


@pytest.fixture(scope="module")
def lite_files(real, tmp_path_factory):
    """A small (untrained, seeded) CNN as float32 and full-int8 TFLite files."""
    folder = tmp_path_factory.mktemp("xnnpack")
    model = otf.build_cnn(width=8)
    return {v: otf.to_tflite(model, folder / f"cnn_{v}.tflite", variant=v,
                             representative=real[2] if v == "int8" else None) for v in ("float32", "int8")}


# --------------------------------------------------------------------------- XNNPACK on and off
@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_xnnpack_off_runs_on_builtin_kernels_with_the_same_outputs(variant, lite_files, real):
    x = real[0]
    on = otf.LiteRT(lite_files[variant], num_threads=1)
    off = otf.LiteRT(lite_files[variant], num_threads=1, xnnpack=False)
    assert on.delegated is True and off.delegated is False  # XNNPACK took over part of the graph, or nothing did
    assert "XNNPACK off" in repr(off) and "XNNPACK off" not in repr(on)
    a, b = on(x), off(x)
    parity = verify.compare_outputs(a, b)
    if variant == "float32":  # the same float math in other kernels: rounding only
        assert parity.max_abs < 1e-4
    else:  # int8 kernels may round an accumulator differently: at most a step or two of the output scale
        scale = on.output_details[0]["quantization"][0]
        assert parity.max_abs <= 2 * scale + 1e-6
        assert parity.top1_agreement >= 0.97


def test_xnnpack_switch_must_be_a_bool(lite_files):
    with pytest.raises(OptkitError, match="xnnpack"):
        otf.LiteRT(lite_files["float32"], xnnpack="off")


# --------------------------------------------------------------------------- batch-first pipelines
def test_batch_first_pipeline_decodes_the_same_images(real):
    x = real[0][:300]
    files = otf.encode_png(x)
    per_image = np.concatenate([b.numpy() for b in otf.pipeline(files, batch_size=128, map_fn=otf.decode_png)])
    batched = otf.pipeline(files, batch_size=128, map_fn=otf.decode_png_batch, batch_first=True)
    shapes = [tuple(b.shape) for b in batched]
    assert shapes == [(128, 28, 28, 1), (128, 28, 28, 1), (44, 28, 28, 1)]  # one map call per batch, last one short
    got = np.concatenate([b.numpy() for b in batched])
    np.testing.assert_array_equal(got, per_image)
    assert np.abs(got - x).max() <= 0.5 / 255 + 1e-6  # 8-bit PNG round trip


def test_batch_first_refuses_shuffle_with_cache(real):
    files = otf.encode_png(real[0][:10])
    with pytest.raises(OptkitError, match="shuffle"):
        otf.pipeline(files, map_fn=otf.decode_png_batch, batch_first=True, shuffle=True, cache=True)
    ds = otf.pipeline(files, batch_size=4, map_fn=otf.decode_png_batch, batch_first=True, shuffle=True, cache=False)
    assert sum(int(b.shape[0]) for b in ds) == 10


# --------------------------------------------------------------------------- per-row hits
def test_score_keeps_per_row_hits_for_paired_differences(lite_files, real):
    x, y, _ = real
    s32 = otf.score(otf.LiteRT(lite_files["float32"]), x, y)
    s8 = otf.score(otf.LiteRT(lite_files["int8"]), x, y)
    assert s32.hits.shape == (len(x),) and s32.hits.dtype == bool
    assert s32.hits.mean() == pytest.approx(s32.accuracy)
    d = verify.paired_difference(s8.hits, s32.hits)
    assert d.n == len(x) and d.diff == pytest.approx(s8.accuracy - s32.accuracy)
    assert otf.score(otf.LiteRT(lite_files["float32"]), x).hits is None  # no labels, no hits
    assert "hits" not in s32.to_dict() and "hits" not in repr(s32)


# --------------------------------------------------------------------------- plots
def _measurement(name, seconds, batch_size):
    return Measurement(name=name, samples_s=np.full(5, seconds), batch_size=batch_size)


def test_plot_pipelines_draws_one_panel_per_comparison_and_one_bar_per_variant():
    import matplotlib.pyplot as plt

    inp = {n: _measurement(n, t, 1000) for n, t in [("loop", 0.2), ("tf.data", 0.3), ("cache", 0.02)]}
    full = {n: _measurement(n, t, 1000) for n, t in [("loop", 1.2), ("cached", 1.0)]}
    before = set(plt.get_fignums())
    fig = otf.plot_pipelines({"input only": inp, "full pass": full})
    assert set(plt.get_fignums()) == before  # closed in pyplot: shown once, as the cell's value
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["input only", "full pass"]
    widths = [sorted(round(p.get_width()) for p in ax.patches) for ax in axes]
    assert widths == [[3333, 5000, 50000], [833, 1000]]  # throughput = items / median seconds
    with pytest.raises(OptkitError, match="comparisons"):
        otf.plot_pipelines({"bad": {"x": 1.0}})


def test_plot_latencies_draws_medians_and_p95_per_record():
    recs = [Record(name=n, runtime=rt, workload="w", batch_size=1, latency_ms=ms, p95_ms=1.5 * ms)
            for n, rt, ms in [("keras", "TensorFlow", 2.0), ("lite f32", "LiteRT", 0.2), ("lite int8", "LiteRT", 0.08)]]
    fig = otf.plot_latencies(recs + [Record(name="untimed", workload="w", batch_size=1)])
    ax = fig.get_axes()[0]
    assert sorted(round(p.get_width(), 3) for p in ax.patches) == [0.08, 0.2, 2.0]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["LiteRT", "TensorFlow", "p95"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["keras", "lite f32", "lite int8"]
    with pytest.raises(OptkitError, match="batch_size"):
        otf.plot_latencies(recs + [Record(name="b8", workload="w", batch_size=8, latency_ms=1.0)])
    with pytest.raises(OptkitError, match="latency"):
        otf.plot_latencies([Record(name="untimed", workload="w", batch_size=1)])
