"""Conclusions printed by the cell that checks them, never asserted in prose.

A notebook's markdown may say what to *expect* and why; whether it *happened* is printed by a cell
that evaluates the statement on the current run, with the numbers and the CPU features it depends
on. On another machine a learner sees their own result, and the committed output can never
contradict the prose above it.

- :func:`check` prints one claim with its verdict: holds here, does not hold here, or inside the
  noise (``holds=None``), the evidence, and the machine facts it depends on.
- :func:`faster` decides "A is faster than B" from two latencies (or two Records), with a noise
  band: a ratio within ``noise`` of 1 is neither faster nor slower.
- :func:`better` decides "A scores higher than B" from two values and an optional confidence
  interval of the difference (an interval touching 0 is inside the noise).
- :func:`machine_facts` lists the CPU features that decide most speed conclusions (VNNI, AMX,
  AVX-512 BF16, core count, an instruction-set cap).

Each verdict travels in the output's metadata (``optkit_claim``); the curriculum runner collects
them into the run summary, so a run states which conclusions held on the machine that ran it.

Taught in 00_measure_first (and used by every notebook).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from optkit.core.bench import environment
from optkit.core.errors import OptkitError, check_choice

__all__ = ["Claim", "check", "faster", "better", "machine_facts", "CLAIM_KEY", "FACTS"]

#: Key under which :func:`check` stores its verdict in an output's metadata.
CLAIM_KEY = "optkit_claim"

#: Machine facts a claim can depend on, and how each is read from ``bench.environment()``.
FACTS = {
    "cores": "available cores",
    "vnni": "int8 dot-product instructions (AVX-512 VNNI or AVX-VNNI)",
    "amx": "AMX tile instructions (int8 and bf16 matrix units)",
    "avx512_bf16": "AVX-512 BF16 instructions",
    "avx512": "AVX-512",
    "gpu": "a CUDA GPU",
    "isa_cap": "math libraries held below the CPU's best kernels",
}

_MARK = {True: "✔ holds here", False: "✘ does not hold here", None: "≈ inside the noise here"}


def _fact(env: Mapping[str, Any], key: str) -> str:
    flags = env.get("cpu_flags") or {}

    def yes(value: bool) -> str:
        return "yes" if value else "no"

    if key == "cores":
        return f"{env.get('available_cores') or env.get('logical_cores') or '?'} cores"
    if key == "vnni":
        return "VNNI " + yes(bool(flags.get("avx512_vnni") or flags.get("avx_vnni")))
    if key == "amx":
        return "AMX " + yes(bool(flags.get("amx_tile")))
    if key == "avx512_bf16":
        return "AVX-512 BF16 " + yes(bool(flags.get("avx512_bf16")))
    if key == "avx512":
        return "AVX-512 " + yes(bool(flags.get("avx512f")))
    if key == "gpu":
        return f"GPU {env['gpu']}" if env.get("gpu") else "no GPU"
    cap = env.get("isa_cap") or {}
    held = cap.get("ONEDNN_MAX_CPU_ISA") or cap.get("ATEN_CPU_CAPABILITY")
    return f"kernels held to {held}" if held else "native kernels"


def machine_facts(depends: Sequence[str] = ("cores", "vnni", "amx", "avx512_bf16"),
                  env: Mapping[str, Any] | None = None) -> str:
    """The machine facts in ``depends`` as one phrase, e.g. ``"2 cores, VNNI yes, AMX no, native kernels"``.

    Keys are those of :data:`FACTS`. An instruction-set cap (``make test ISA=avx2``) is always
    named, since it changes which kernels ran.
    """
    keys = list(depends)
    for key in keys:
        check_choice("depends", key, list(FACTS))
    env = environment() if env is None else env
    if "isa_cap" not in keys and env.get("isa_cap"):
        keys.append("isa_cap")
    return ", ".join(_fact(env, k) for k in keys)


@dataclass(frozen=True)
class Claim:
    """One checked conclusion: the statement, its verdict here, the evidence and the machine."""

    statement: str
    holds: bool | None
    evidence: str
    machine: str

    @property
    def verdict(self) -> str:
        return _MARK[self.holds]

    def __str__(self) -> str:
        text = f"{self.verdict}: {self.statement}"
        if self.evidence:
            text += f"\n    evidence: {self.evidence}"
        if self.machine:
            text += f"\n    on: {self.machine}"
        return text

    def __repr__(self) -> str:
        return f"Claim({self.statement!r}, holds={self.holds}, evidence={self.evidence!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"statement": self.statement, "holds": self.holds, "evidence": self.evidence,
                "machine": self.machine}


def check(statement: str, holds: bool | None, evidence: str = "", *,
          depends: Sequence[str] = ("cores", "vnni", "amx", "avx512_bf16"),
          env: Mapping[str, Any] | None = None, show: bool = True) -> Claim:
    """Print ``statement`` with its verdict on this run, the evidence and the machine facts.

    ``holds`` is True (it holds here), False (it does not) or None (the measurement cannot tell:
    inside the noise). ``depends`` names the machine facts of :data:`FACTS` the outcome depends on
    (``()`` for a conclusion about data rather than speed). Returns the :class:`Claim`; with
    ``show`` the claim is displayed and tagged for the run summary.

    Taught in 00_measure_first.
    """
    if not isinstance(statement, str) or not statement.strip():
        raise OptkitError("statement", statement, "must be a non-empty string",
                          "state the conclusion, e.g. 'int8 is faster than the best float at batch 32'")
    if holds is not None and not isinstance(holds, bool):
        try:
            import numpy as np

            if isinstance(holds, np.bool_):
                holds = bool(holds)
        except ImportError:  # pragma: no cover - numpy is a dependency
            pass
    if holds is not None and not isinstance(holds, bool):
        raise OptkitError("holds", holds, "must be True, False or None",
                          "pass the result of the comparison (None when it is inside the noise)")
    machine = machine_facts(depends, env) if depends else ""
    claim = Claim(statement.strip(), holds, str(evidence), machine)
    if show:
        _display(claim)
    return claim


def _display(claim: Claim) -> None:
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - outside IPython
        print(claim)
        return
    display({"text/plain": str(claim)}, raw=True, metadata={CLAIM_KEY: claim.to_dict()})


def _latency(value: Any, parameter: str) -> float:
    latency = getattr(value, "latency_ms", None)
    if latency is None:
        latency = getattr(value, "median_ms", value)
    try:
        latency = float(latency)
    except (TypeError, ValueError):
        raise OptkitError(parameter, value, "is not a latency",
                          "pass milliseconds, a Record or a Measurement") from None
    if not math.isfinite(latency) or latency <= 0:
        raise OptkitError(parameter, value, "must be a positive latency", "pass a measured latency in ms")
    return latency


def _name(value: Any, default: str) -> str:
    return str(getattr(value, "name", None) or default)


def faster(statement: str, fast: Any, slow: Any, *, noise: float = 0.05, min_ratio: float = 1.0,
           depends: Sequence[str] = ("cores", "vnni", "amx", "avx512_bf16"),
           env: Mapping[str, Any] | None = None, show: bool = True) -> Claim:
    """Check "``fast`` is faster than ``slow``" (by at least ``min_ratio``) and print the verdict.

    ``fast`` and ``slow`` are latencies in ms, Records or Measurements (their median). The ratio
    ``slow / fast`` decides: above ``min_ratio * (1 + noise)`` it holds, below
    ``min_ratio * (1 - noise)`` it does not, in between it is inside the noise (timings on a
    shared machine move by a few per cent from run to run).

    Taught in 00_measure_first.
    """
    a, b = _latency(fast, "fast"), _latency(slow, "slow")
    if not 0 <= noise < 1:
        raise OptkitError("noise", noise, "must be in [0, 1)", "pass e.g. 0.05 for a 5 % band")
    ratio = b / a
    holds = None if min_ratio * (1 - noise) <= ratio <= min_ratio * (1 + noise) else ratio > min_ratio
    evidence = (f"{_name(fast, 'A')} {a:.4g} ms vs {_name(slow, 'B')} {b:.4g} ms: {ratio:.2f}x"
                f" (needs > {min_ratio:g}x, noise band ±{noise:.0%})")
    return check(statement, holds, evidence, depends=depends, env=env, show=show)


def better(statement: str, value: float, than: float, *, interval: tuple[float, float] | None = None,
           n: int | None = None, margin: float = 0.0, unit: str = "", diff_unit: str | None = None,
           higher_is_better: bool = True,
           depends: Sequence[str] = (), env: Mapping[str, Any] | None = None, show: bool = True) -> Claim:
    """Check "``value`` is better than ``than`` (by more than ``margin``)" and print the verdict.

    ``interval`` is a confidence interval of the difference ``value - than`` (e.g. from
    :func:`optkit.core.verify.paired_difference`); when it contains ``margin`` the verdict is
    "inside the noise". ``n`` is the number of examples (or seeds) the difference rests on.
    ``unit`` follows the values; ``diff_unit`` the difference and its interval (default: ``unit``,
    but " points" when the values are in per cent: 83 % - 81 % is 2 points, not 2 %).

    Taught in 04_knowledge_distillation.
    """
    diff = float(value) - float(than)
    if diff_unit is None:
        diff_unit = " points" if unit.strip() == "%" else unit
    sign = 1.0 if higher_is_better else -1.0
    holds: bool | None = sign * diff > margin
    text = f"{value:.4g}{unit} vs {than:.4g}{unit}: difference {diff:+.3g}{diff_unit}"
    if interval is not None:
        lo, hi = (float(interval[0]), float(interval[1]))
        text += f", 95 % interval [{lo:+.3g}, {hi:+.3g}]{diff_unit}"
        if lo <= sign * margin <= hi:  # the interval cannot tell the difference from the margin
            holds = None
    if n is not None:
        text += f" on {n:,} examples"
    return check(statement, holds, text, depends=depends, env=env, show=show)
