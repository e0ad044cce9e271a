"""What a capstone recipe is, and the registry of recipes optkit tries.

A :class:`Recipe` is a small frozen record: a ``name``, the model ``formats`` it applies to, the
``runtime`` it produces a candidate for, and a ``build(context) -> Candidate`` function. A
:class:`Candidate` is something that can be called on a batch (``run(feed) -> outputs``), with the
artifact it wrote (if any), its size and how long it took to build; a :class:`Context` is what a
``build`` gets. :func:`register` adds a recipe of your own; :func:`recipes_for` lists the ones
that apply to a format. A recipe that cannot apply here raises :class:`RecipeSkipped`.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from optkit.core.errors import OptkitError, check_callable, check_choice
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


@dataclass
class Candidate:
    """One way of running the model, ready to be verified and timed.

    ``run(feed)`` takes a dict ``{input name: np.ndarray batch}`` and returns the list of outputs
    as numpy arrays. ``artifact`` is the file or folder the recipe wrote (None when the recipe
    changes how the model is run, not the file: thread counts, ``torch.compile``); ``size_bytes``
    is what would ship. ``notes`` are sentences for the report; ``info`` recipe details.

    Taught in 10_optimize_your_own_model.
    """

    name: str
    recipe: str
    technique: str
    runtime: str
    run: Callable[[dict], list]
    artifact: Path | None = None
    size_bytes: int | None = None
    build_s: float = 0.0
    notes: list = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def __call__(self, feed: dict) -> list:
        return self.run(feed)

    def __repr__(self) -> str:
        size = "?" if self.size_bytes is None else f"{self.size_bytes / 1e6:.2f} MB"
        where = self.artifact.name if self.artifact is not None else "no new file"
        return (f"Candidate({self.name!r}: {self.technique}, {self.runtime}, {size}, {where}, "
                f"built in {self.build_s:.1f} s)")


@dataclass
class Context:
    """What a recipe's ``build`` gets: the model (``summary``: format, path, inputs, outputs), the
    data (``data``: calibration batches, inputs), a folder for artifacts, the thread count, the
    baseline candidate and a ``cache`` shared by recipes (an ONNX export of a torch program, say).

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

