"""The inference recipe a checkpoint carries: everything ``fakeproof detect`` needs besides weights.

A trained detector is only usable with the preprocessing it was trained on: the frame sampling
(``frames.*``), the MTCNN settings and crop policy (``faces.*``), the crop size, the normalisation,
the video aggregation (``eval.video_agg``) and a decision threshold chosen on val. Training stores
them in the checkpoint's meta as ``meta["recipe"]`` (the role of timm's ``pretrained_cfg``, which
``resolve_model_data_config`` reads back), so inference needs no ``params.yaml`` and cannot drift
from what the model saw.

The checkpoint stores the recipe as a plain mapping (JSON types only, so
``torch.load(weights_only=True)`` reads it); :meth:`Recipe.from_meta` checks it and reads it,
once, into a frozen :class:`Recipe` that every consumer (detect, compare, ensemble, evaluate, the
web page) uses::

    {"version": 1, "model": "smallcnn", "input_size": 128, "mean": [...], "std": [...],
     "frames": {<every frames.* key>}, "faces": {<faces.* keys used at inference>},
     "video_agg": "mean", "platt_a": 0.8, "platt_b": -1.1, "threshold": 0.42}

``platt_a``, ``platt_b``: P(fake) is ``sigmoid(platt_a * logit + platt_b)`` (Platt scaling fitted
on val; ``1, 0`` means uncalibrated). ``threshold``: a file is labelled fake when its calibrated
P(fake) is above it. Together they are the deployed decision boundary
(:class:`fakeproof.boundary.Boundary`), which evaluation scores and attacks. Bump :data:`RECIPE_VERSION` whenever a key is added or its meaning
changes: a checkpoint with another version is refused with the command that refreshes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from fakeproof.boundary import Boundary
from fakeproof.config import FacesParams, FramesParams, Params, ParamsError, as_dict, params_from_dict
from fakeproof.errors import FakeproofError
from fakeproof.models import model_config

RECIPE_VERSION = 2
REFRESH = "dvc repro -f pretrain adv_finetune"
#: faces.* keys that matter when cropping one file (box reuse across videos is training-data only).
INFERENCE_FACE_KEYS = ("image_size", "margin", "thresholds", "min_face_size", "detect_max_side",
                       "select", "min_prob", "batch_size", "encoding", "jpeg_quality")
RECIPE_KEYS = ("version", "model", "input_size", "mean", "std", "frames", "faces", "video_agg",
               "platt_a", "platt_b", "threshold")


class RecipeError(FakeproofError, ValueError):
    """A checkpoint has no usable inference recipe (none, an older version, bad values)."""


def build_recipe(params: Params, boundary: Boundary) -> dict[str, Any]:
    """The recipe of a model trained with ``params``; ``boundary`` (Platt calibration and the
    threshold) fitted on val.

    Args:
        params: the run's validated params (``model``, ``frames``, ``faces`` and ``eval`` are read).
        boundary: the deployed decision boundary (checked by :class:`Boundary` itself).
    """
    cfg = model_config(params.model.name)
    faces = as_dict(params.faces)
    return {
        "version": RECIPE_VERSION,
        "model": params.model.name,
        "input_size": int(params.faces.image_size),
        "mean": [float(v) for v in cfg.mean],
        "std": [float(v) for v in cfg.std],
        "frames": as_dict(params.frames),
        "faces": {k: faces[k] for k in INFERENCE_FACE_KEYS},
        "video_agg": params.eval.video_agg,
        **boundary.to_recipe(),
    }


@dataclass(frozen=True)
class Recipe:
    """A checkpoint's inference recipe, read once (:meth:`from_meta`); fields as in the module
    docstring (``frames`` and ``faces`` stay the stored mappings: :meth:`params` validates them)."""

    version: int
    model: str
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    frames: Mapping[str, Any]
    faces: Mapping[str, Any]
    video_agg: str
    platt_a: float
    platt_b: float
    threshold: float

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], where: str) -> "Recipe":
        """The checkpoint's recipe, checked; ``where`` (the checkpoint path) names it in errors."""
        r = _checked(meta, where)
        return cls(version=r["version"], model=r["model"], input_size=int(r["input_size"]),
                   mean=tuple(r["mean"]), std=tuple(r["std"]), frames=dict(r["frames"]),
                   faces=dict(r["faces"]), video_agg=str(r["video_agg"]),
                   platt_a=float(r["platt_a"]), platt_b=float(r["platt_b"]),
                   threshold=float(r["threshold"]))

    @property
    def boundary(self) -> Boundary:
        """The deployed decision boundary: Platt calibration and the val threshold."""
        return Boundary(self.platt_a, self.platt_b, self.threshold)


def deployed_boundary(meta: Any) -> Boundary:
    """The boundary of a checkpoint's meta; the raw model at 0.5 (``Boundary()``) when it has no
    recipe."""
    recipe = meta.get("recipe") if isinstance(meta, Mapping) else None
    if not isinstance(recipe, Mapping) or "platt_a" not in recipe:
        return Boundary()
    return Boundary(float(recipe["platt_a"]), float(recipe["platt_b"]), float(recipe["threshold"]))


def read_recipe(meta: Mapping[str, Any], where: str) -> Recipe:
    """The checkpoint's recipe, checked and read (:meth:`Recipe.from_meta`)."""
    return Recipe.from_meta(meta, where)


def _checked(meta: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    recipe = meta.get("recipe") if isinstance(meta, Mapping) else None
    if recipe is None:
        raise RecipeError(f"{where}: checkpoint has no inference recipe (written before "
                          f"fakeproof detect needed one); refresh it with `{REFRESH}`")
    if not isinstance(recipe, Mapping):
        raise RecipeError(f"{where}: meta['recipe'] is a {type(recipe).__name__}, not a mapping; "
                          f"refresh the checkpoint with `{REFRESH}`")
    version = recipe.get("version")
    if version != RECIPE_VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > RECIPE_VERSION:
            raise RecipeError(f"{where}: recipe version {version} is newer than this fakeproof "
                              f"reads ({RECIPE_VERSION}); upgrade fakeproof")
        raise RecipeError(f"{where}: recipe version {version!r} is older than this fakeproof "
                          f"reads ({RECIPE_VERSION}); refresh it with `{REFRESH}`")
    missing = [k for k in RECIPE_KEYS if k not in recipe]
    if missing:
        raise RecipeError(f"{where}: recipe lacks {', '.join(missing)}; refresh it with `{REFRESH}`")
    for key, ok in (("threshold", lambda v: 0.0 <= v <= 1.0), ("platt_a", lambda v: v > 0.0),
                    ("platt_b", lambda v: True)):
        value = recipe[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not ok(float(value)):
            raise RecipeError(f"{where}: recipe {key} = {value!r} is out of range; refresh it with "
                              f"`{REFRESH}`")
    return recipe


def recipe_params(recipe: Recipe, where: str) -> tuple[FramesParams, FacesParams]:
    """``frames.*`` and ``faces.*`` of a recipe, validated by the one params loader."""
    faces = dict(recipe.faces)
    if faces.get("image_size") != recipe.input_size:
        raise RecipeError(f"{where}: recipe input_size {recipe.input_size!r} differs from its "
                          f"faces.image_size {faces.get('image_size')!r}; refresh it with `{REFRESH}`")
    try:
        params = params_from_dict({"data": {}, "frames": dict(recipe.frames), "faces": faces,
                                   "split": {}, "model": {"name": recipe.model}, "train": {},
                                   "adv": {}, "eval": {"video_agg": recipe.video_agg}},
                                  source=f"{where} recipe")
    except ParamsError as e:
        raise RecipeError(f"{e}; refresh the checkpoint with `{REFRESH}`") from None
    return params.frames, params.faces
