"""Invariants of optkit.core.bench: counts, bounds, statistics, interleaving, restoration. No speed targets."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from optkit.core import bench
from optkit.core.bench import Comparison, Measurement, MemoryResult
from optkit.core.bench.system import _peak_memory_sampled
from optkit.core.errors import OptkitError


def noop() -> None:
    pass


# ----------------------------------------------------------------------------- measure

def test_sleep_2ms_gives_median_at_least_2ms():
    m = bench.measure(lambda: time.sleep(0.002), warmup=1, min_repeats=5, max_repeats=10,
                      max_time_s=0.05)
    assert m.median_ms >= 2.0
    assert min(m.samples_s) >= 0.002


def test_repeats_bounded_by_max_repeats():
    m = bench.measure(noop, warmup=0, min_repeats=1, max_repeats=50, max_time_s=10.0)
    assert m.n == 50


def test_min_repeats_respected_when_time_budget_is_tiny():
    m = bench.measure(lambda: time.sleep(0.001), warmup=0, min_repeats=7, max_repeats=100,
                      max_time_s=0.0)
    assert m.n == 7


def test_time_budget_stops_long_runs():
    t0 = time.perf_counter()
    m = bench.measure(noop, warmup=0, min_repeats=1, max_repeats=10_000_000, max_time_s=0.05)
    assert time.perf_counter() - t0 < 2.0
    assert 1 <= m.n < 10_000_000


def test_warmup_and_sync_call_counts():
    calls, syncs = [], []
    m = bench.measure(lambda: calls.append(1), warmup=3, min_repeats=4, max_repeats=4,
                      sync=lambda: syncs.append(1))
    assert m.n == 4 and m.warmup == 3
    assert len(calls) == 7
    assert len(syncs) == 7


def test_name_batch_size_and_threads_recorded():
    def forward():
        pass

    m = bench.measure(forward, batch_size=32, min_repeats=2, max_repeats=2, warmup=0)
    assert m.name == "forward"
    assert m.batch_size == 32
    assert m.threads == torch.get_num_threads()
    assert bench.measure(noop, name="x", max_repeats=10, warmup=0).name == "x"


def test_threads_set_during_call_and_restored_after():
    before = torch.get_num_threads()
    seen = []
    m = bench.measure(lambda: seen.append(torch.get_num_threads()), threads=1, warmup=1,
                      min_repeats=2, max_repeats=2)
    assert set(seen) == {1}
    assert m.threads == 1
    assert torch.get_num_threads() == before


def test_threads_restored_after_an_exception():
    before = torch.get_num_threads()

    def boom():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        bench.measure(boom, threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(KeyError):
        with bench.threads(1) as n:
            assert n == 1 and torch.get_num_threads() == 1
            raise KeyError("x")
    assert torch.get_num_threads() == before


# ----------------------------------------------------------------------------- statistics

def test_statistics_on_synthetic_samples():
    m = Measurement("syn", np.full(20, 0.01), batch_size=32)
    assert m.median_ms == pytest.approx(10.0)
    assert m.p90_ms == pytest.approx(10.0) and m.p99_ms == pytest.approx(10.0)
    assert m.std_ms == pytest.approx(0.0)
    assert m.throughput == pytest.approx(3200.0)


def test_median_ci_matches_binomial_order_statistics():
    # For n = 100 the classic 95 % interval for the median is (x_(40), x_(61)), 1-based.
    lo, hi = bench.median_ci(np.arange(1, 101))
    assert (lo, hi) == (40.0, 61.0)
    # Fewer than 6 samples: no pair reaches 95 %, the interval is the range.
    assert bench.median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)


@pytest.mark.parametrize("n", [1, 2, 5, 6, 11, 50, 333, 4000])
def test_ci_contains_median(n):
    rng = np.random.default_rng(n)
    m = Measurement("r", rng.lognormal(-6, 0.5, n))
    lo, hi = m.ci_median_ms
    assert lo <= m.median_ms <= hi


def test_to_dict_is_json_and_repr_is_one_line():
    m = Measurement("eager b32", np.linspace(0.003, 0.004, 50), batch_size=32, threads=2)
    d = m.to_dict()
    json.dumps(d)
    for key in ("name", "median_ms", "p90_ms", "p99_ms", "ci_median_ms", "throughput", "n"):
        assert key in d
    text = repr(m)
    assert "\n" not in text
    assert text.startswith("Measurement('eager b32': median ")
    assert "50 runs" in text and "items/s" in text


def test_empty_samples_rejected():
    with pytest.raises(OptkitError, match="samples_s"):
        Measurement("e", np.array([]))


# ----------------------------------------------------------------------------- compare

def test_compare_interleaves_in_rotated_order():
    order = []
    fns = {k: (lambda k=k: order.append(k)) for k in "abc"}
    comp = bench.compare(fns, rounds=3, warmup=1, min_repeats=3, max_repeats=3, max_time_s=0.0)
    warm, timed = order[:3], order[3:]
    assert warm == ["a", "b", "c"]
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(m.n == 3 for m in comp.measurements.values())


def test_compare_blocks_respect_min_and_max_repeats():
    comp = bench.compare({"a": noop, "b": noop}, rounds=4, warmup=0, min_repeats=10,
                         max_repeats=40, max_time_s=0.0)
    assert all(m.n == 12 for m in comp.measurements.values())  # ceil(10 / 4) = 3 per block
    comp = bench.compare({"a": noop}, rounds=4, warmup=0, min_repeats=1, max_repeats=40,
                         max_time_s=5.0)
    assert comp["a"].n == 40


def test_speedup_and_ratio_math():
    comp = Comparison({"slow": Measurement("slow", np.full(9, 0.004), batch_size=8),
                       "fast": Measurement("fast", np.full(9, 0.001), batch_size=8)}, rounds=1)
    assert comp.speedup("slow", "fast") == pytest.approx(4.0)
    assert comp.ratio("slow", "fast") == pytest.approx(4.0)
    assert comp.ratio("fast", "slow") == pytest.approx(0.25)
    t = comp.table()
    assert list(t.index) == ["slow", "fast"]
    assert t.loc["slow", "speedup"] == pytest.approx(1.0)
    assert t.loc["fast", "speedup"] == pytest.approx(4.0)
    assert t.loc["fast", "throughput"] == pytest.approx(8000.0)
    assert {"median_ms", "p90_ms", "p99_ms", "throughput", "speedup"} <= set(t.columns)
    assert "4.00x" in repr(comp)
    with pytest.raises(OptkitError, match="'slow'"):
        comp.speedup("slow", "nope")


# ----------------------------------------------------------------------------- sweep

def test_throughput_sweep_sets_batch_size():
    made = []

    def make(bs):
        made.append(bs)
        return noop

    ms = bench.throughput_sweep(make, [1, 4, 16], name="mlp", warmup=0, min_repeats=2, max_repeats=5)
    assert made == [1, 4, 16]
    assert [m.batch_size for m in ms] == [1, 4, 16]
    assert [m.name for m in ms] == ["mlp b1", "mlp b4", "mlp b16"]


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, parameter", [
    ({"fn": 3}, "fn"),
    ({"warmup": -1}, "warmup"),
    ({"min_repeats": 0}, "min_repeats"),
    ({"min_repeats": 10, "max_repeats": 5}, "max_repeats"),
    ({"batch_size": 0}, "batch_size"),
    ({"max_time_s": -1.0}, "max_time_s"),
    ({"threads": 0}, "threads"),
    ({"sync": "cuda"}, "sync"),
])
def test_measure_bad_input_names_parameter(kwargs, parameter):
    fn = kwargs.pop("fn", noop)
    with pytest.raises(OptkitError) as info:
        bench.measure(fn, **kwargs)
    assert info.value.parameter == parameter


def test_compare_and_sweep_bad_input():
    with pytest.raises(OptkitError) as info:
        bench.compare({})
    assert info.value.parameter == "fns"
    with pytest.raises(OptkitError, match="fns\\['b'\\]"):
        bench.compare({"a": noop, "b": None})
    with pytest.raises(OptkitError) as info:
        bench.throughput_sweep(lambda bs: noop, [])
    assert info.value.parameter == "batch_sizes"
    with pytest.raises(OptkitError) as info:
        bench.throughput_sweep(lambda bs: noop, [4, 0])
    assert info.value.parameter == "batch_sizes"
    with pytest.raises(OptkitError) as info:
        bench.throughput_sweep(lambda bs: None, [1])
    assert info.value.parameter == "make_fn"


# ----------------------------------------------------------------------------- memory

N_BYTES = 200_000_000


def allocate():
    a = np.ones(N_BYTES // 8)  # np.ones touches every page, so it is resident
    return float(a[-1])


def test_peak_memory_sees_200mb_allocation():
    r = bench.peak_memory(allocate)
    assert isinstance(r, MemoryResult) and isinstance(r, int)
    assert r.delta_rss_bytes >= 0.9 * N_BYTES
    assert int(r) == r.peak_rss_bytes >= r.delta_rss_bytes
    assert r.cuda_peak_bytes is None or r.cuda_peak_bytes >= 0
    assert "MB" in repr(r)


def test_peak_memory_passes_arguments():
    got = []
    bench.peak_memory(lambda a, b=0: got.append((a, b)), 1, b=2)
    assert got == [(1, 2)]


def test_sampling_fallback_sees_held_allocation():
    def hold():
        a = np.ones(N_BYTES // 8)
        time.sleep(0.05)
        return a[0]

    peak, delta, method = _peak_memory_sampled(hold, (), {})
    assert delta >= 0.9 * N_BYTES
    assert "sampling" in method


# ----------------------------------------------------------------------------- environment

def test_environment_keys_and_json():
    env = bench.environment()
    for key in ("cpu", "cpu_flags", "logical_cores", "available_cores", "torch_threads",
                "python", "numpy", "torch", "onnxruntime", "tensorflow", "gpu"):
        assert key in env
    text = json.dumps(env)
    assert env["torch_threads"] == torch.get_num_threads()
    assert 1 <= env["available_cores"] <= env["logical_cores"]
    host = socket.gethostname()
    if len(host) >= 4:
        assert host not in text


def test_environment_line_mentions_threads_and_gpu():
    line = bench.environment_line()
    assert "\n" not in line
    assert f"{torch.get_num_threads()} threads" in line
    assert "GPU" in line
    fake = {"cpu": "Test CPU", "cpu_flags": {"avx2": True, "avx512f": False},
            "available_cores": 2, "logical_cores": 8, "torch": "2.13.0+cpu", "torch_threads": 2}
    assert bench.environment_line(fake) == \
        "Test CPU (AVX2), 2 of 8 cores, torch 2.13.0 with 2 threads, no GPU"
    # a run with the kernels held below the CPU's best (make test ISA=avx2) says so beside its timings
    capped = {**fake, "isa_cap": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
    assert bench.environment_line(capped).endswith("no GPU, math kernels held to AVX2")


def test_environment_records_an_isa_cap(monkeypatch):
    for name in bench.ISA_CAP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert bench.environment()["isa_cap"] == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert bench.environment()["isa_cap"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_environment_never_imports_tensorflow():
    code = ("import sys, optkit.core.bench as b; b.environment(); b.environment_line(); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
