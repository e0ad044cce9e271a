"""optkit.core.quiet.silenced: the one silencer (tf.silenced, onnx's exporters, quantize.quiet_torchao)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import pytest

from optkit.techniques import quantize
from optkit.core import quiet
from optkit.runtimes import tflow


def test_descriptor_level_text_is_captured_and_restored(capfd):
    with quiet.silenced() as buf:
        os.write(1, b"from C on fd 1\n")
        os.write(2, b"from C on fd 2\n")
        print("from Python")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert "from C on fd 1" in buf.getvalue() and "from C on fd 2" in buf.getvalue()
    assert "from Python" in buf.getvalue()
    os.write(1, b"visible again\n")
    assert "visible again" in capfd.readouterr().out


def test_a_failure_keeps_what_was_printed_as_a_note():
    with pytest.raises(RuntimeError) as err:
        with quiet.silenced():
            os.write(2, b"converter: tensor 'x' has no shape\n")
            raise RuntimeError("conversion failed")
    assert "tensor 'x' has no shape" in "\n".join(getattr(err.value, "__notes__", []))


def test_loggers_levels_and_warnings_come_back():
    lg = logging.getLogger("optkit.test.noisy")
    lg.setLevel(logging.DEBUG)
    with quiet.silenced(loggers=["optkit.test.noisy"], logging_below=logging.WARNING, ignore_warnings=True):
        assert lg.level == logging.ERROR and logging.root.manager.disable == logging.WARNING
        warnings.warn("dropped")  # would fail under -W error if not ignored
    assert lg.level == logging.DEBUG and logging.root.manager.disable == logging.NOTSET


def test_the_lessons_silencers_are_this_one():
    assert tflow.silenced is quiet.silenced
    code = ("import os, sys; from optkit.techniques import quantize\n"
            "with quantize.quiet_torchao():\n    os.write(2, b'Failed to load mxfp8\\n')\n"
            "print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "ok" and "Failed to load" not in res.stderr
    assert quantize.quiet_torchao.__doc__ and "silenced" in quantize.quiet_torchao.__doc__
