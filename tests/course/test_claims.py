"""optkit.course.claims: a conclusion is printed with its verdict on this run and the machine facts."""
from __future__ import annotations

import pytest

from optkit.core.errors import OptkitError
from optkit.core.record import Record
from optkit.course import claims

ENV = {"cpu": "Test CPU", "available_cores": 2, "cpu_flags": {"avx512_vnni": True, "amx_tile": False,
                                                                 "avx512_bf16": True, "avx512f": True},
       "isa_cap": {}}


def test_check_states_the_verdict_evidence_and_machine(capsys):
    c = claims.check("int8 is faster", True, "0.5 ms vs 1.0 ms", env=ENV, show=False)
    assert str(c).startswith("✔ holds here: int8 is faster")
    assert "0.5 ms vs 1.0 ms" in str(c) and "2 cores, VNNI yes, AMX no, AVX-512 BF16 yes" in c.machine
    assert claims.check("x", False, env=ENV, show=False).verdict == "✘ does not hold here"
    assert claims.check("x", None, env=ENV, show=False).verdict == "≈ inside the noise here"
    assert claims.check("data claim", True, depends=(), env=ENV, show=False).machine == ""
    capped = dict(ENV, isa_cap={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert "kernels held to AVX2" in claims.check("x", True, env=capped, show=False).machine
    with pytest.raises(OptkitError, match="holds"):
        claims.check("x", "yes", env=ENV, show=False)
    with pytest.raises(OptkitError, match="depends"):
        claims.check("x", True, depends=("warp drive",), env=ENV, show=False)


def test_faster_has_a_noise_band_and_reads_records():
    fast, slow = Record("int8", latency_ms=1.0), Record("fp32", latency_ms=1.5)
    c = claims.faster("int8 beats fp32", fast, slow, env=ENV, show=False)
    assert c.holds is True and "int8 1 ms vs fp32 1.5 ms: 1.50x" in c.evidence
    assert claims.faster("a", 1.0, 1.03, env=ENV, show=False).holds is None  # 3 % is inside ±5 %
    assert claims.faster("a", 1.0, 0.8, env=ENV, show=False).holds is False
    assert claims.faster("2x", 1.0, 1.5, min_ratio=2.0, env=ENV, show=False).holds is False
    with pytest.raises(OptkitError, match="fast"):
        claims.faster("a", -1.0, 1.0, env=ENV, show=False)


def test_better_respects_the_interval():
    assert claims.better("KD helps", 0.86, 0.84, show=False).holds is True
    assert claims.better("KD helps", 0.86, 0.84, interval=(-0.01, 0.05), n=400, show=False).holds is None
    assert "on 400 examples" in claims.better("KD", 0.86, 0.84, interval=(0.01, 0.03), n=400, show=False).evidence
    assert claims.better("smaller error", 0.1, 0.2, higher_is_better=False, show=False).holds is True


def test_check_tags_its_output_for_the_run_summary(monkeypatch):
    shown = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False, metadata=None: shown.append(metadata))
    claims.check("x", True, "e", env=ENV)
    assert shown[0][claims.CLAIM_KEY]["holds"] is True and shown[0][claims.CLAIM_KEY]["statement"] == "x"


def test_a_difference_of_percentages_is_in_points():
    c = claims.better("KD", 83.28, 81.24, interval=(0.84, 3.24), unit=" %", show=False)
    assert "83.28 % vs 81.24 %: difference +2.04 points, 95 % interval [+0.84, +3.24] points" in c.evidence
