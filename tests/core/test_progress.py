"""optkit.core.progress: bars where someone watches, silence in static (papermill/nbval) runs."""
from __future__ import annotations

from optkit.core import progress


def test_static_runs_get_a_silent_bar_that_still_iterates(monkeypatch):
    monkeypatch.setenv("OPTKIT_STATIC", "1")
    b = progress.bar(range(3), desc="x")
    assert list(b) == [0, 1, 2] and not progress.shown()
    b.set_description("y"), b.update(1), b.close()  # accepts tqdm's calls
    with progress.bar(total=5) as silent:
        assert list(silent) == []


def test_interactive_runs_get_tqdm(monkeypatch):
    monkeypatch.delenv("OPTKIT_STATIC", raising=False)
    b = progress.bar(range(2), disable=True)
    assert type(b).__module__.startswith("tqdm") and list(b) == [0, 1]
    assert not progress.shown(enabled=False)
    assert type(progress.bar(range(2), enabled=False)).__name__ == "_Silent"
