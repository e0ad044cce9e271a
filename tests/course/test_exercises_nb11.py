"""The checkers of notebook 11's exercises accept the reference solutions and reject the usual mistakes."""
from __future__ import annotations

from optkit.course.exercises import nb11 as ex


def test_pick_runtime_accepts_the_reference(capsys):
    rows = [{"name": "x", "latency_ms": 1.0, "peak_mb": 50.0, "accuracy": 0.8}]
    assert ex.check_pick_runtime(ex.reference_pick_runtime, rows, [(2.0, 100.0), (0.5, 100.0)])
    out = capsys.readouterr().out
    assert out.count("✓") == 1 and "'x'" in out and "None" in out


def test_pick_runtime_rejects_mistakes(capsys):
    def latency_only(rows, lat, mem):
        fits = [r for r in rows if r["latency_ms"] <= lat]
        return max(fits, key=lambda r: r["accuracy"])["name"] if fits else None

    def fastest(rows, lat, mem):
        fits = [r for r in rows if r["latency_ms"] <= lat and r["peak_mb"] <= mem]
        return min(fits, key=lambda r: r["latency_ms"])["name"] if fits else None

    def todo(rows, lat, mem):
        raise NotImplementedError

    for fn in (latency_only, fastest, todo):
        assert ex.check_pick_runtime(fn) is False
    assert "✗" in capsys.readouterr().out


def test_pick_runtime_reference_invariants():
    rows = [{"name": "a", "latency_ms": 1.0, "peak_mb": 10.0, "accuracy": 0.9},
            {"name": "b", "latency_ms": 0.5, "peak_mb": 10.0, "accuracy": 0.9}]
    assert ex.reference_pick_runtime(rows, 2.0, 20.0) == "b"  # equal accuracy: the faster
    assert ex.reference_pick_runtime(rows, 0.1, 20.0) is None
    assert ex.reference_pick_runtime([], 1.0, 1.0) is None


def test_frame_budget_accepts_the_reference_and_rejects_mistakes(capsys):
    assert ex.check_frame_budget(ex.reference_frame_budget, {"ort": 1.0, "keras": 50.0}, fps=30, overhead_ms=2.0)
    assert "['ort']" in capsys.readouterr().out

    def seconds(fps, lat, overhead):  # budget in seconds, not ms
        return 1 / fps, sorted(n for n, ms in lat.items() if ms + overhead <= 1000 / fps)

    def no_overhead(fps, lat, overhead):
        b = 1000 / fps
        return b, sorted((n for n, ms in lat.items() if ms <= b), key=lat.get)

    def unsorted(fps, lat, overhead):
        b = 1000 / fps
        return b, [n for n, ms in lat.items() if ms + overhead <= b]

    for fn in (seconds, no_overhead, unsorted, lambda *a: None):
        assert ex.check_frame_budget(fn) is False
    budget, names = ex.reference_frame_budget(25, {"a": 40.0, "b": 41.0})
    assert budget == 40.0 and names == ["a"]
