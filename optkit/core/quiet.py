"""One way to keep library noise out of a notebook: :func:`silenced`.

TensorFlow's C++ runtime, ONNX exporters, torchao's optional-kernel probes and torch's loggers
write to file descriptors 1 and 2 directly, log through :mod:`logging`, or raise Python warnings.
None of it is a learner's concern, and in a checked notebook any of it on stderr fails the cell.
:func:`silenced` points the descriptors at a temporary file and Python's streams at a buffer,
optionally quiets named loggers, all logging below a level, and warnings, and puts everything
back when the block ends. If the block raises, the captured text's last lines are attached to the
exception as a note, so nothing needed to understand a failure is lost.

Used by :mod:`optkit.runtimes.tflow` (``silenced``), :mod:`optkit.runtimes.onnxrt` (exporters) and
:mod:`optkit.techniques.quantize` (``quiet_torchao``). Imports no framework.
"""
from __future__ import annotations

import contextlib
import ctypes
import io as _io
import logging
import os
import sys
import tempfile
import warnings
from typing import Iterator, Sequence

__all__ = ["silenced"]


def _fflush_c() -> None:
    """Flush C's stdio buffers, so text printed by C code lands before a descriptor moves."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def silenced(stdout: bool = True, stderr: bool = True, *, loggers: Sequence[str] = (),
             logging_below: int | None = None, ignore_warnings: bool = False) -> Iterator[_io.StringIO]:
    """Keep prints, C++ log lines, log records and (optionally) warnings off the screen.

    ``stdout``/``stderr`` choose the streams redirected (Python-level and file descriptors 1/2);
    ``loggers`` are set to ERROR for the block; ``logging_below`` disables every log record below
    that level (``logging.WARNING`` hides warnings and infos); ``ignore_warnings`` drops Python
    warnings. Yields a buffer that holds the Python-level text while the block runs and, after
    it, the descriptor-level text too.

    Taught in 07_tensorflow_and_tflite (as ``optkit.runtimes.tflow.silenced``).
    """
    fds = [fd for fd, on in ((1, stdout), (2, stderr)) if on]
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    _fflush_c()
    buffer = _io.StringIO()
    sink = tempfile.TemporaryFile(mode="w+b")
    saved: dict[int, int] = {}
    try:
        for fd in fds:
            saved[fd] = os.dup(fd)
            os.dup2(sink.fileno(), fd)
    except OSError:  # no real descriptors (some embedded interpreters): Python-level only
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        saved = {}
    quieted = [logging.getLogger(name) for name in loggers]
    levels = [lg.level for lg in quieted]
    previous_disable = logging.root.manager.disable
    stack = contextlib.ExitStack()
    if stdout:
        stack.enter_context(contextlib.redirect_stdout(buffer))
    if stderr:
        stack.enter_context(contextlib.redirect_stderr(buffer))
    if ignore_warnings:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
    try:
        for lg in quieted:
            lg.setLevel(logging.ERROR)
        if logging_below is not None:
            logging.disable(logging_below)
        with stack:
            yield buffer
    except BaseException as exc:
        _fflush_c()
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace") + buffer.getvalue()
        tail = "\n".join(line for line in text.splitlines()[-15:] if line.strip())
        if tail and hasattr(exc, "add_note"):
            exc.add_note("captured output (last lines):\n" + tail)
        raise
    finally:
        _fflush_c()
        if logging_below is not None:
            logging.disable(previous_disable)
        for lg, level in zip(quieted, levels):
            lg.setLevel(level)
        for fd, copy in saved.items():
            with contextlib.suppress(OSError):
                os.dup2(copy, fd)
                os.close(copy)
        with contextlib.suppress(Exception):
            sink.seek(0)
            buffer.write(sink.read().decode("utf-8", "replace"))
        sink.close()
