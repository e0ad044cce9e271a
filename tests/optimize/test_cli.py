"""The optkit command: `curriculum` still answers, `optimize` runs the capstone or fails in one line."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from optkit import cli

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_optimize import _logits, _onnx_model  # noqa: E402


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_help_lists_both_commands(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "curriculum run" in out and "optimize [MODEL]" in out
    assert cli.main(["nonsense"]) == 2
    assert "unknown command 'nonsense'" in capsys.readouterr().err


def test_curriculum_subcommand_still_dispatches(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["curriculum", "--help"])
    assert exc.value.code == 0 and "run" in capsys.readouterr().out


def test_optimize_options_mirror_the_notebook_parameters():
    import ast

    src = (Path(__file__).resolve().parents[2] / "notebooks" / "src" / "10_optimize_your_own_model.py").read_text()
    cell = src.split('# %% tags=["parameters"]')[1].split("# %%")[0]
    names = {t.id for node in ast.parse(cell).body if isinstance(node, ast.Assign) for t in node.targets}
    # section 9 runs one of the course's third-party models, not the user's: no CLI option for it
    names -= {"third_party_model", "third_party_rows", "third_party_budget_s"}
    assert names, "the parameters cell was not found"
    options = {a.dest for a in cli.optimize_parser()._actions}
    assert names <= options, names - options
    flags = {s for a in cli.optimize_parser()._actions for s in a.option_strings}
    assert {"--" + n.replace("_", "-") for n in names} <= flags | {"--model-path", "--data-path"}


@pytest.mark.parametrize("argv, fragment", [
    (["missing.onnx"], "model_path="),
    (["model.txt"], "does not read (.txt)"),
    (["MODEL", "--data", "missing.npz"], "data_path="),
    (["MODEL", "--max-accuracy-drop", "-3"], "max_accuracy_drop=-3"),
    (["MODEL", "--data", "WRONG"], "labels of the wrong length"),
    (["MODEL", "--recipes", "nope"], "recipes=['nope']"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, monkeypatch, capsys, argv, fragment):
    monkeypatch.chdir(tmp_path)
    model = _onnx_model(tmp_path / "m.onnx")
    (tmp_path / "model.txt").write_text("x")
    x = np.zeros((6, 16), np.float32)
    np.savez(tmp_path / "wrong.npz", x=x, y=np.zeros(4, np.int64))
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    argv = [str(model) if a == "MODEL" else str(tmp_path / "wrong.npz") if a == "WRONG" else a for a in argv]
    assert cli.main(["optimize", *argv, "--output-dir", str(tmp_path / "out"), "--quiet"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert line.startswith("optkit optimize: error: ") and fragment in line
    assert hashlib.sha256(model.read_bytes()).hexdigest() == digest


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["optimize", "--batch-sizes", "x"])
    assert exc.value.code == 2
    assert "invalid int value" in _one_line_error(capsys.readouterr().err)


def test_list_recipes(capsys):
    assert cli.main(["optimize", "--list-recipes"]) == 0
    out = capsys.readouterr().out
    assert "ort-int8-static" in out and "tflite-int8" in out and "pt2e-int8-static" in out


def test_optimize_runs_and_prints_the_result(tmp_path, capsys):
    model = _onnx_model(tmp_path / "mlp.onnx")
    x = np.random.default_rng(0).random((40, 16), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=_logits(model, x).argmax(1))
    argv = ["optimize", str(model), "--data", str(tmp_path / "d.npz"), "--output-dir", str(tmp_path / "out"),
            "--recipes", "ort-int8-dynamic", "--batch-sizes", "1", "4", "--time-budget-s", "3", "--threads", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "[optimize] built ort-int8-dynamic" in out and "recommended: " in out and "report: " in out
    latest = (tmp_path / "out" / "latest").read_text().strip()
    assert (tmp_path / "out" / latest / "report.html").is_file()


def test_console_script_bad_input_has_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("optkit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "optkit.cli"]
    proc = subprocess.run([*cmd, "optimize", str(tmp_path / "nope.onnx")], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert "no such file" in _one_line_error(proc.stderr)
    assert not (tmp_path / "optkit-optimize").exists()  # nothing written for a bad input
