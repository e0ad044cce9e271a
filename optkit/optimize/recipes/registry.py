"""What a capstone recipe is, and the registry of recipes optkit tries.

A :class:`Recipe` is a small frozen record: a ``name``, the model ``formats`` it applies to, the
``runtime`` it produces a candidate for, and a ``build(context) -> Candidate`` function. A
:class:`Candidate` is an :class:`optkit.core.variant.Variant` (callable on a batch:
``predict(feed) -> outputs``, with its precision, settings, artifact and size) that also says which
recipe built it and how long that took; a :class:`Context` is what a ``build`` gets.
:func:`register` adds a recipe of your own; :func:`recipes_for` lists the ones that apply to a
format. A recipe that cannot apply here raises :class:`RecipeSkipped`.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from optkit.core.errors import OptkitError, check_callable, check_choice
from optkit.core.variant import Variant
from optkit.runtimes import formats as _formats

__all__ = [
    "FORMATS", "RUNTIMES", "Recipe", "Candidate", "Context", "RecipeSkipped",
    "register", "unregister", "recipes_for", "all_recipes", "get_recipe",
]

#: Model formats the capstone reads -> what they are (from the one registry, optkit.runtimes.formats).
FORMATS = {key: _formats.FORMATS[key].description for key in ("onnx", "torch_export", "keras", "tflite")}
#: Runtimes a recipe can produce a candidate for (the ``runtimes`` parameter filters by these).
RUNTIMES = ("onnxruntime", "pytorch", "tensorflow", "tflite", "tensorrt")


class RecipeSkipped(Exception):
    """Raised by a recipe's ``build`` when it does not apply to this model or machine; the message
    says why (e.g. "no GPU: fp16 pays only on a GPU")."""


@dataclass(repr=False)
class Candidate(Variant):
    """One way of running the model, ready to be verified and timed: a
    :class:`optkit.core.variant.Variant` (the one variant type: name, ``predict``, technique,
    ``config``, runtime, precision, artifact, size, notes) with the ``recipe`` that built it and how
    long the build took (``build_s``).

    ``predict(feed)`` takes a dict ``{input name: np.ndarray batch}`` and returns the list of
    outputs as numpy arrays (``run`` is the same callable, its 0.1 name). ``precision`` is one of
    :data:`optkit.core.variant.PRECISIONS` (``"fp32"``, ``"int8"``, ``"int8-dynamic"`` ...);
    ``config`` holds the recipe's settings (``info`` is its 0.1 name: the same dict). ``artifact``
    is the file or folder the recipe wrote (None when the recipe changes how the model is run, not
    the file: thread counts, ``torch.compile``); ``size_bytes`` is what would ship; ``notes`` are
    sentences for the report (a list).

    The 0.1 form still works for one release, with a ``DeprecationWarning``: ``run=`` for
    ``predict=``, ``info=`` for ``config=``, and the old positional order ``Candidate(name, recipe,
    technique, runtime, run, ...)``.

    Taught in 10_optimize_your_own_model.
    """

    recipe: str = ""
    build_s: float = 0.0
    notes: list = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.recipe, str):
            raise OptkitError("recipe", self.recipe, "must be the name of the recipe that built the candidate",
                              "pass recipe='my-recipe'")
        self.recipe = self.recipe or self.name
        notes = self.notes
        self.notes = [] if notes is None else [notes] if isinstance(notes, str) else list(notes)

    @property
    def run(self) -> Callable[[dict], list]:
        """``predict``, under its 0.1 name: ``cand.run(feed)`` is ``cand.predict(feed)``."""
        return self.predict

    @property
    def info(self) -> dict:
        """``config``, under its 0.1 name (the same dict)."""
        return self.config

    @info.setter
    def info(self, value: dict) -> None:
        self.config = dict(value)

    def __call__(self, feed: dict) -> list:
        return self.predict(feed)

    def __repr__(self) -> str:
        size = "?" if self.size_bytes is None else f"{self.size_bytes / 1e6:.2f} MB"
        where = Path(self.artifact).name if self.artifact is not None else "no new file"
        return (f"Candidate({self.name!r}: {self.technique}, {self.runtime}, {self.precision}, {size}, {where}, "
                f"built in {self.build_s:.1f} s)")


#: Candidate's arguments in 0.1, in order (``run`` is now ``predict``, ``info`` is ``config``).
_V01_ORDER = ("name", "recipe", "technique", "runtime", "run", "artifact", "size_bytes", "build_s", "notes", "info")
_dataclass_init = Candidate.__init__


def _v01_arguments(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Map a 0.1-style call (``run=``, ``info=``, the old positional order) to the fields, warning."""
    old, named = [], set(kwargs)
    if len(args) > 1 and isinstance(args[1], str):  # 0.1: (name, recipe, ...); now (name, predict, ...)
        if len(args) > len(_V01_ORDER):
            raise TypeError(f"Candidate() takes at most {len(_V01_ORDER)} positional arguments in the 0.1 order")
        for key, value in zip(_V01_ORDER, args):
            if key in kwargs:
                raise TypeError(f"Candidate() got multiple values for argument {key!r}")
            kwargs[key] = value
        args = ()
        old.append("positional arguments in the 0.1 order (name, recipe, technique, runtime, run, ...)")
    for before, now in (("run", "predict"), ("info", "config")):
        if before in kwargs:
            if now in kwargs or (now == "predict" and len(args) > 1):
                raise OptkitError(before, kwargs[before], f"is the 0.1 name of {now}, which is given too",
                                  f"pass only {now}=")
            kwargs[now] = kwargs.pop(before)
            if before in named:
                old.append(f"{before}= (now {now}=)")
    warnings.warn("Candidate(" + "; ".join(old) + ") is the optkit 0.1 form: pass Candidate(name, predict=..., "
                  "recipe=..., technique=..., runtime=..., precision=..., config=...) (the old form goes in optkit "
                  "0.3)", DeprecationWarning, stacklevel=3)
    return args, kwargs


@functools.wraps(_dataclass_init)
def _candidate_init(self, *args: Any, **kwargs: Any) -> None:
    if (len(args) > 1 and isinstance(args[1], str)) or "run" in kwargs or "info" in kwargs:
        args, kwargs = _v01_arguments(args, kwargs)
    _dataclass_init(self, *args, **kwargs)


Candidate.__init__ = _candidate_init  # the dataclass's own __init__, also taking the 0.1 form


@dataclass
class Context:
    """What a recipe's ``build`` gets: the model (``summary``: format, path, inputs, outputs), the
    data (``data``: calibration batches, inputs), a folder for artifacts, the thread count, the
    baseline candidate and a ``cache`` shared by recipes (an ONNX export of a torch program, say).
    A recipe that searches (tries several settings and keeps the best) uses ``judge(candidate)``,
    which returns the candidate's :class:`~optkit.optimize.verification.Check` against the original
    and its speed-up over it at the largest batch size (timed interleaved), and stops trying new
    settings after ``deadline`` (a ``time.perf_counter()`` value).

    ``artifact(filename)`` returns a fresh path inside the artifacts folder (never an existing
    file, never the input model).

    Taught in 10_optimize_your_own_model.
    """

    summary: Any
    data: Any
    artifacts: Path
    threads: int
    baseline: Candidate | None = None
    cache: dict = field(default_factory=dict)
    gpu: bool = False
    judge: Callable | None = None
    deadline: float | None = None

    def artifact(self, filename: str) -> Path:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.artifacts / filename
        stem, suffix = path.name[: -len("".join(path.suffixes)) or None], "".join(path.suffixes)
        i = 2
        while path.exists():
            path = self.artifacts / f"{stem}-{i}{suffix}"
            i += 1
        if path.resolve() == Path(self.summary.path).resolve():  # pragma: no cover - a fresh folder
            raise OptkitError("output_dir", str(self.artifacts), "would write over the input model",
                              "choose an output_dir that is not the model's own folder")
        return path

    def calibration(self, batch_size: int = 16) -> list[dict]:
        """Calibration feeds (dicts of arrays) from the held-out calibration rows of the data."""
        return self.data.calibration(batch_size=batch_size)


@dataclass(frozen=True)
class Recipe:
    """A way to make a model faster or smaller: ``build(context) -> Candidate``.

    ``formats``: the model formats it applies to (keys of :data:`FORMATS`); ``runtime``: one of
    :data:`RUNTIMES`; ``technique``: a few words for tables; ``description``: one sentence for
    the report. Register your own with :func:`register`.

    Taught in 10_optimize_your_own_model.
    """

    name: str
    formats: tuple
    runtime: str
    technique: str
    build: Callable[[Context], Candidate]
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name):
            raise OptkitError("name", self.name, "must be a non-empty name without spaces",
                              "use e.g. 'ort-int8-static-entropy'")
        formats = (self.formats,) if isinstance(self.formats, str) else tuple(self.formats)
        unknown = [f for f in formats if f not in FORMATS]
        if not formats or unknown:
            raise OptkitError("formats", self.formats, "holds no known model format" if not unknown
                              else f"holds unknown formats {unknown}", "use some of " + ", ".join(FORMATS))
        object.__setattr__(self, "formats", formats)
        check_choice("runtime", self.runtime, RUNTIMES)
        check_callable("build", self.build, fix="pass a function build(context) -> Candidate")

    def applies_to(self, fmt: str) -> bool:
        """Whether this recipe is tried on models of format ``fmt``."""
        return fmt in self.formats

    def __repr__(self) -> str:
        return f"Recipe({self.name!r}: {self.technique}, {self.runtime}, for {', '.join(self.formats)})"


_REGISTRY: dict[str, Recipe] = {}


def register(recipe: Recipe, *, replace: bool = False) -> Recipe:
    """Add ``recipe`` to the registry (tried in registration order); ``replace=True`` swaps a
    recipe of the same name. Returns the recipe.

    Taught in 10_optimize_your_own_model.
    """
    if not isinstance(recipe, Recipe):
        raise OptkitError("recipe", type(recipe).__name__, "is not a Recipe",
                          "build one with optkit.optimize.Recipe(name, formats, runtime, technique, build)")
    if recipe.name in _REGISTRY and not replace:
        raise OptkitError("recipe", recipe.name, "is already registered", "pick another name, or pass replace=True")
    _REGISTRY[recipe.name] = recipe
    return recipe


def unregister(name: str) -> None:
    """Remove the recipe called ``name`` (an unknown name is an OptkitError)."""
    get_recipe(name)
    del _REGISTRY[name]


def get_recipe(name: str) -> Recipe:
    """The registered recipe called ``name``."""
    if name not in _REGISTRY:
        raise OptkitError("recipes", name, "is not a registered recipe", "use some of " + ", ".join(_REGISTRY))
    return _REGISTRY[name]


def all_recipes() -> list[Recipe]:
    """Every registered recipe, in the order they are tried."""
    return list(_REGISTRY.values())


def recipes_for(fmt: str, runtimes: Sequence[str] | None = None, names: Sequence[str] | None = None) -> list[Recipe]:
    """The registered recipes that apply to format ``fmt``, optionally only those producing one
    of ``runtimes`` and only those called one of ``names``.

    Taught in 10_optimize_your_own_model.
    """
    if names is not None:
        for n in names:
            get_recipe(n)
    out = []
    for r in _REGISTRY.values():
        if not r.applies_to(fmt):
            continue
        if runtimes is not None and r.runtime not in runtimes:
            continue
        if names is not None and r.name not in names:
            continue
        out.append(r)
    return out



# =============================================================================== helpers for the recipes

def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    return (text[0][:limit] if text else "") or type(e).__name__


def _size(path: Path) -> int:
    from optkit.runtimes.model_files import file_size

    return int(file_size(path))

