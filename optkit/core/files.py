"""Writing files atomically: the one writer every artifact, record and report goes through.

:func:`atomic_write` yields a temporary path beside the destination; when the block succeeds the
file is flushed to disk, given the usual permissions (``0666`` less the umask, where a bare
temporary file would be ``0600``) and moved over the destination with one ``os.replace``, so a
reader sees the old file or the new one, never half of one. A block that raises leaves the
destination as it was. ``overwrite=False`` refuses an existing destination before anything is
written (:func:`optkit.core.errors.check_destination`).

Imports nothing heavy (no torch, TensorFlow or ONNX Runtime), so records and reports use it too.
Taught in 00_measure_first (through :func:`optkit.runtimes.model_files.atomic_write`, the same function).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from optkit.core.errors import check_destination

__all__ = ["atomic_write", "write_text"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path`` atomically.

    Write the file to the yielded path. If the block raises, the temporary file is removed and
    ``path`` is left as it was. With ``overwrite=False`` an existing ``path`` is refused before
    anything is written.

    Taught in 00_measure_first.
    """
    path = check_destination(path, overwrite=overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            with open(tmp_path, "rb") as f:  # the bytes reach the disk before the rename publishes them
                os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_write`; return the path."""
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path).expanduser()
