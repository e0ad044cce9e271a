"""A wrong papermill parameter stops a real notebook run with one clear line (issue 2, bad input)."""
from __future__ import annotations

import pytest

from optkit.course import curriculum

pytest.importorskip("papermill")

NB = curriculum.NOTEBOOK_DIR / "00_measure_first.ipynb"


@pytest.mark.parametrize("params, expected", [
    ({"thread": 1}, "OptkitError: thread=1: is not a parameter of this notebook. Fix: did you mean 'threads'?"),
    ({"batch_sizes": "32"}, "OptkitError: batch_sizes='32': has type str but the default [1, 32] is a list"),
    ({"max_time_s": -1.0}, "OptkitError: max_time_s=-1.0: must lie in [0.01, 600]"),
])
def test_bad_papermill_parameter_gives_one_clear_message(tmp_path, params, expected):
    result = curriculum.execute(NB, tmp_path / NB.name, params, timeout_s=300)
    assert not result.ok
    assert result.error.startswith(expected), result.error
    # it stops at the check, before any measurement: no headline figures were produced
    assert result.headlines == []
