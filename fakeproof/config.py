"""The one typed, validated loader for ``params.yaml``.

Every stage calls :func:`load_params` and reads only its own section. Values are checked against
the dataclasses below; a bad value raises :class:`ParamsError` whose message is one line naming the
key and what is allowed, e.g. ``params.yaml: adv.eps = '4/0': division by zero; use a float or a
fraction such as 4/255 in [0, 1]``.

Epsilons and step sizes accept floats and fraction strings: ``dvc exp run -S adv.eps=4/255`` writes
``eps: 4/255`` unquoted into params.yaml, which YAML reads as the string ``'4/255'``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from fakeproof.errors import FakeproofError

PARAMS_FILE = "params.yaml"
#: detect's and the web page's default checkpoint: dvc.yaml's path.robust (a test keeps them equal)
DEFAULT_CHECKPOINT = "models/robust.pt"
#: The common corruptions of ``eval.corruptions``, listed once (fakeproof/corruptions/ registers
#: exactly these; kept here so that the loader validates names without importing torch).
CORRUPTION_NAMES = ("jpeg", "h264", "gaussian_noise", "salt_pepper", "gaussian_blur", "brightness",
                    "contrast", "downscale")
#: The training augmentation presets of ``train.augment`` (fakeproof/augment.py defines them).
AUGMENT_PRESETS = ("none", "light", "standard", "strong")
CorruptionName = Literal[CORRUPTION_NAMES]
AugmentPreset = Literal[AUGMENT_PRESETS]
#: ``train.sbi``: Self-Blended Images (fakeproof/sbi.py) off, mixed in, or the only fakes.
SBI_MODES = ("off", "mix", "only")
SbiMode = Literal[SBI_MODES]


class ParamsError(FakeproofError, ValueError):
    """A params.yaml value is missing, unknown or out of range (message: one line)."""


_FRACTION = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*/\s*([+-]?\d+(?:\.\d*)?)\s*$")


def _as_float(value: Any, key: str, why: str, use: str) -> float:
    """A number, or a string of one, as a float; else one line: ``key = value: why; use``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ParamsError(f"{key} = {value!r}: not a number; {use}")
    try:
        return float(value)
    except ValueError:
        raise ParamsError(f"{key} = {value!r}: {why}; {use}") from None


def parse_fraction(value: Any, key: str = "value", lo: float = 0.0, hi: float = 1.0) -> float:
    """Parse a float or a fraction string ('4/255') into a float in [lo, hi].

    Booleans and anything that is not a finite number or ``a/b`` raise :class:`ParamsError`.
    """
    allowed = f"use a float or a fraction such as 4/255 in [{lo:g}, {hi:g}]"
    if isinstance(value, bool) or value is None:
        raise ParamsError(f"{key} = {value!r}: not a number; {allowed}")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        m = _FRACTION.match(value)
        if m:
            num, den = float(m.group(1)), float(m.group(2))
            if den == 0:
                raise ParamsError(f"{key} = {value!r}: division by zero; {allowed}")
            out = num / den
        else:
            out = _as_float(value, key, "not a number or fraction", allowed)
    else:
        raise ParamsError(f"{key} = {value!r}: not a number; {allowed}")
    if not math.isfinite(out) or out < lo or out > hi:
        raise ParamsError(f"{key} = {value!r}: out of range; {allowed}")
    return out


def Eps(default: Any, hi: float = 1.0, doc: str = "") -> Any:
    """A field holding a pixel-space magnitude given as a float or fraction string."""
    return field(default=default, metadata={"fraction": True, "hi": hi, "doc": doc})


def Num(default: Any, lo: Optional[float] = None, hi: Optional[float] = None, doc: str = "") -> Any:
    """A numeric field with optional inclusive bounds."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "doc": doc})


def Opt(default_factory: Any, doc: str = "") -> Any:
    return field(default_factory=default_factory, metadata={"doc": doc})


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoParams:
    """The embedded demo dataset, generated offline from public-domain photos."""

    groups: int = Num(15, 3, 1000, "groups of (two real clips, their fakes); each group is split as one")
    frames: int = Num(24, 4, 600, "frames per clip")
    fps: int = Num(12, 1, 60)
    size: int = Num(256, 96, 1024, "clip width and height in pixels")
    crf: int = Num(23, 0, 51, "h264 constant rate factor")


@dataclass(frozen=True)
class FFppParams:
    compression: Literal["raw", "c23", "c40"] = "c23"
    methods: list[str] = Opt(
        lambda: ["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter"])
    include_actors: bool = False
    server: Optional[Literal["EU", "EU2", "CA"]] = None
    accept_terms: bool = False  # true: you accepted the FF++ terms on the form; answers its prompt


@dataclass(frozen=True)
class CelebdfParams:
    """Celeb-DF v2: which non-test videos to drop next to the official test list."""

    exclude: Literal["clip", "identity"] = "clip"  # a shared source clip, or any shared identity


@dataclass(frozen=True)
class DfdcParams:
    parts: list[str] = Opt(list, "dfdc_train_part_N folder names to use; empty = all found")
    groups: Optional[str] = None  # CSV video,group (e.g. face clusters): merged into the grouping


@dataclass(frozen=True)
class DataParams:
    source: Literal["demo", "ffpp", "celebdf", "dfdc", "folder", "csv"] = "demo"
    root: Optional[str] = None
    url: Optional[str] = None
    sha256: Optional[str] = None
    ffpp_downloader: Optional[str] = None
    ffpp_downloader_sha256: Optional[str] = None  # required when ffpp_downloader is a URL
    seed: int = Num(0, 0)
    demo: DemoParams = Opt(DemoParams)
    ffpp: FFppParams = Opt(FFppParams)
    celebdf: CelebdfParams = Opt(CelebdfParams)
    dfdc: DfdcParams = Opt(DfdcParams)


@dataclass(frozen=True)
class FramesParams:
    mode: Literal["count", "fps"] = "count"
    count: int = Num(8, 1, 10000, "frames spaced evenly per video (mode: count)")
    fps: float = Num(1.0, 0.001, 1000.0, "frames per second (mode: fps)")
    max_frames: int = Num(300, 1, 100000, "cap on frames per video in fps mode")
    train_count: Optional[int] = Num(None, 1, 10000, "frames per video training uses, evenly "
                                     "spaced among the stored ones; null: all (val, test: all)")
    max_side: int = Num(1280, 64, 8192, "frames larger than this are downscaled before storing")
    jpeg_quality: int = Num(95, 1, 100)
    workers: int = Num(0, 0, 4096, "processes over videos; 0 = every core, 1 = this process only")
    scheduler: Optional[str] = field(default=None, metadata={
        "doc": "dask.distributed scheduler address (tcp://host:8786); null = local processes"})


@dataclass(frozen=True)
class FacesParams:
    image_size: int = Num(128, 16, 1024, "side of the stored square crop (the model's input)")
    margin: float = Num(0.3333, 0.0, 3.0, "extra box size on each side, as a share of the box")
    thresholds: list[float] = Opt(lambda: [0.6, 0.7, 0.7], "MTCNN P/R/O-net thresholds")
    min_face_size: int = Num(20, 4, 2048)
    detect_max_side: int = Num(640, 64, 8192, "frames are downscaled to this for detection")
    select: Literal["largest", "all"] = "largest"
    min_prob: float = Num(0.9, 0.0, 1.0, "faces below this detection probability are dropped")
    batch_size: int = Num(16, 1, 1024)
    reuse_original_boxes: bool = True
    encoding: Literal["png", "jpeg", "raw"] = "png"
    jpeg_quality: int = Num(95, 1, 100)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # MTCNN's; auto = cuda when torch sees one
    videos_per_task: int = Num(1, 1, 100000, "videos per task; detection batches fill across them")
    workers: int = Num(0, 0, 4096, "processes over videos; 0 = every core, 1 = this process only")
    scheduler: Optional[str] = field(default=None, metadata={
        "doc": "dask.distributed scheduler address (tcp://host:8786); null = local processes"})


@dataclass(frozen=True)
class SplitParams:
    train: float = Num(0.6, 0.0, 1.0)
    val: float = Num(0.2, 0.0, 1.0)
    test: float = Num(0.2, 0.0, 1.0)
    seed: int = Num(0, 0)
    official: bool = True


@dataclass(frozen=True)
class ModelParams:
    name: str = "smallcnn"
    pretrained: Optional[str] = None
    input_size: Optional[int] = Num(None, 16, 2048, "side the detector resizes its input to inside "
                                    "forward; null = as stored (fixed-size models resize anyway)")


@dataclass(frozen=True)
class TrainParams:
    epochs: int = Num(10, 1, 10000)
    batch_size: int = Num(32, 1, 4096)
    lr: float = Num(2e-3, 0.0, 10.0)
    weight_decay: float = Num(1e-4, 0.0, 1.0)
    loss: Literal["balanced_bce", "bce"] = "balanced_bce"
    patience: int = Num(5, 1, 10000, "epochs without val AUC gain before early stop")
    augment: AugmentPreset = "light"  # none | light | standard | strong (fakeproof/augment.py)
    sbi: SbiMode = "off"  # off | mix | only: Self-Blended Images pseudo-fakes (fakeproof/sbi.py)
    sbi_ratio: float = Num(1.0, 0.0, 16.0, "train.sbi mix: pseudo-fakes per real training face")
    grad_accum: int = Num(1, 1, 4096, "micro-batches of train.batch_size per optimiser step: the "
                                      "update of an N times larger batch (up to BatchNorm statistics)")
    seed: int = Num(0, 0)
    num_workers: int = Num(-1, -1, 64, "loader workers; -1 = auto (none on the CPU; on CUDA all "
                                       "cores but one, at most 16)")
    threads: int = Num(2, 1, 256)
    decode: Literal["auto", "cpu", "device"] = "auto"  # where crops are decoded and augmented:
    # device = on train.device, batched (fakeproof/device_feed.py); auto: device on CUDA, else cpu
    device: str = field(default="auto", metadata={"doc": "auto | cpu | cuda | cuda:N"})
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    deterministic: bool = True
    nproc: int = Num(1, 1, 1024, "data-parallel training processes on this machine (DDP)")
    freeze_epochs: int = Num(0, 0, 10000, "epochs with the backbone frozen (head only) first")


@dataclass(frozen=True)
class AdvParams:
    eps: float = Eps("2/255", doc="training budget (L-inf, pixels); README: why 2/255 on the demo")
    alpha: Optional[float] = Eps(None, doc="attack step while training; null: the paper's (2.5 * "
                                 "eps / steps: pgd, trades, mart, Madry et al. 2018; 1.25 * eps: "
                                 "fgsm_rs, Wong et al. 2020)")
    steps: int = Num(5, 1, 1000)
    random_start: bool = True
    craft_precision: Literal["float32", "amp"] = "float32"  # amp: craft under train.amp's autocast
    clean_share: float = Num(0.0, 0.0, 1.0, "share of each batch left clean (pgd, fgsm_rs); 0: Madry")
    method: Literal["pgd", "fgsm_rs", "trades", "mart"] = "pgd"  # fakeproof/objectives
    beta: float = Num(6.0, 0.0, 1000.0, "weight of the KL term of trades and mart (papers: 6)")
    warmup_epochs: int = Num(2, 0, 10000, "epochs over which eps ramps linearly from 0")
    epochs: int = Num(20, 1, 10000)
    lr: float = Num(2e-3, 0.0, 10.0)
    seed: int = Num(0, 0)
    select_steps: int = Num(10, 1, 10000, "PGD steps of the val attack that selects the robust "
                                          "checkpoint; must exceed adv.steps")
    select_seed: int = Num(1, 0, doc="seed of that val attack (never the training attack's)")
    val_eps: list[float] = field(default_factory=lambda: ["1/255", "2/255", "4/255", "8/255"], metadata={
        "fraction": True, "hi": 1.0, "doc": "val-side eps sweep of the chosen model: pick adv.eps on it"})
    select_videos: Optional[int] = Num(None, 0, 10000000, "whole val videos (stratified by class "
                                       "and method) the selection attack and val sweep use; null or "
                                       "0: every val video")
    select_auc_keep: float = Num(0.8, 0.0, 1.0, "an epoch is selectable only if its val AUC keeps "
                                 "this share of the clean AUC above chance: AUC - 0.5 >= keep * "
                                 "(clean AUC - 0.5)")


@dataclass(frozen=True)
class EvalParams:
    preset: Literal["quick", "standard"] = "quick"
    eps: list[float] = field(
        default_factory=lambda: [0.0, "2/255", "4/255", "8/255", "16/255"],
        metadata={"fraction": True, "hi": 1.0})
    attacks: list[str] = Opt(lambda: ["fgsm", "pgd", "apgd", "square"])
    headline_eps: float = Eps("2/255", doc="eps of the headline metrics and the PGD ROC curve")
    pgd_steps: Optional[int] = Num(None, 1, 100000, "null: from eval.preset")
    pgd_alpha: Optional[float] = Eps(None, doc="PGD step; null: 2.5 * eps / pgd_steps (Madry et al.)")
    pgd_restarts: Optional[int] = Num(None, 1, 1000, "null: from eval.preset")
    apgd_steps: Optional[int] = Num(None, 1, 100000, "null: from eval.preset")
    apgd_restarts: Optional[int] = Num(None, 1, 1000, "null: from eval.preset")
    square_queries: Optional[int] = Num(None, 1, 10000000, "null: from eval.preset")
    attack_videos: Optional[int] = Num(None, 0, 10000000, "whole test videos attacked, stratified "
                                       "by class and method; null: eval.preset's; 0: all")
    bootstrap: int = Num(1000, 10, 1000000, "bootstrap draws (videos resampled) per interval")
    batch_size: int = Num(64, 1, 4096)
    video_agg: Literal["mean", "max", "confident"] = "mean"
    gallery: int = Num(6, 0, 100)
    cross: Optional[str] = None
    seed: int = Num(0, 0)
    corruptions: list[CorruptionName] = Opt(lambda: list(CORRUPTION_NAMES),
                                            "common corruptions swept on test (fakeproof/corruptions)")
    corruption_severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5], metadata={
        "lo": 1, "hi": 5, "doc": "severities 1-5 of every corruption (levels in fakeproof/corruptions)"})
    calibrate: bool = True  # training fits Platt scaling on val (false: a = 1, b = 0)
    min_videos: int = Num(5, 2, 1000000, "per class: fewer videos, and an interval is not estimable")


@dataclass(frozen=True)
class EnsembleParams:
    """The ensemble stage (fakeproof/ensemble.py): which checkpoints, and how their logits fuse."""

    members: list[str] = Opt(list, "names of the stage's --member checkpoints (dvc.yaml passes "
                                   "clean and robust); empty = every one")
    fit: Literal["logloss", "robust", "equal"] = "robust"  # val log loss clean (logloss), clean
    # plus adversarial crafted on the ensemble (robust), or 1/k (equal)


@dataclass(frozen=True)
class Params:
    data: DataParams
    frames: FramesParams
    faces: FacesParams
    split: SplitParams
    model: ModelParams
    train: TrainParams
    adv: AdvParams
    eval: EvalParams
    ensemble: EnsembleParams = Opt(EnsembleParams, "optional: mappings written before it existed "
                                                   "(checkpoint recipes) load with its defaults")


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, meta)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value is False and "off" in choices:  # YAML 1.1 reads an unquoted off as false
            value = "off"
        if value not in choices:
            raise ParamsError(f"{key} = {value!r}: not allowed; use {_type_name(tp)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"{key} = {value!r}: not a list; use {_type_name(tp)}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]", meta) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if meta.get("fraction"):
        return parse_fraction(value, key, 0.0, meta.get("hi", 1.0))
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key} = {value!r}: not allowed; use true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key} = {value!r}: not an integer; use a whole number{_bounds(meta)}")
        _check_bounds(value, key, meta)
        return value
    if tp is float:
        value = _as_float(value, key, "not a number", f"use a number{_bounds(meta)}")
        if not math.isfinite(value):
            raise ParamsError(f"{key} = {value!r}: not finite; use a number{_bounds(meta)}")
        _check_bounds(value, key, meta)
        return value
    if tp is str:
        if not isinstance(value, str) or not value:
            raise ParamsError(f"{key} = {value!r}: not a non-empty string")
        return value
    raise ParamsError(f"{key}: unsupported type {tp!r}")  # pragma: no cover - programming error


def _bounds(meta: dict) -> str:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and hi is not None:
        return f" in [{lo:g}, {hi:g}]"
    return f" >= {lo:g}" if lo is not None else f" <= {hi:g}" if hi is not None else ""


def _check_bounds(value: float, key: str, meta: dict) -> None:
    lo, hi = meta.get("lo"), meta.get("hi")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ParamsError(f"{key} = {value!r}: out of range; use a number{_bounds(meta)}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ParamsError(f"{prefix} = {raw!r}: not a mapping; give {prefix} as a section of keys")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(
            f"{prefix}.{unknown[0]}: unknown key; allowed keys in {prefix}: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name in raw:
            kwargs[name] = _coerce(raw[name], hints[name], key, dict(f.metadata))
        else:
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                raise ParamsError(f"{key}: missing; add it to {PARAMS_FILE}")
            kwargs[name] = (_coerce(default, hints[name], key, dict(f.metadata))
                            if not dataclasses.is_dataclass(default) else default)
    return cls(**kwargs)


def params_from_dict(raw: Any, source: str = PARAMS_FILE) -> Params:
    """Validate a parsed params mapping; every section must be present."""
    try:
        if not isinstance(raw, dict):
            raise ParamsError("top level is not a mapping of sections")
        sections = [f.name for f in dataclasses.fields(Params)]
        unknown = sorted(set(raw) - set(sections))
        if unknown:
            raise ParamsError(f"{unknown[0]}: unknown section; allowed sections: {', '.join(sections)}")
        hints = typing.get_type_hints(Params)
        kwargs = {}
        optional = {f.name for f in dataclasses.fields(Params)
                    if f.default_factory is not dataclasses.MISSING}  # type: ignore[misc]
        for name in sections:
            if name not in raw and name not in optional:
                raise ParamsError(f"{name}: missing section; add '{name}:' (see README, Parameters)")
            kwargs[name] = _build(hints[name], raw.get(name, {}), name)
        _check_cross(kwargs)
        return Params(**kwargs)
    except ParamsError as e:
        raise ParamsError(f"{source}: {e}") from None


def _check_cross(sections: dict) -> None:
    s = sections["split"]
    total = s.train + s.val + s.test
    if abs(total - 1.0) > 1e-6:
        raise ParamsError(f"split.train + split.val + split.test = {total:g}: must sum to 1")
    if len(sections["faces"].thresholds) != 3:
        raise ParamsError("faces.thresholds: give three MTCNN thresholds, e.g. [0.6, 0.7, 0.7]")
    device, tr = sections["train"].device, sections["train"]
    if tr.decode == "device" and tr.sbi != "off":
        raise ParamsError(f"train.decode = 'device' with train.sbi = {tr.sbi!r}: Self-Blended "
                          "Images are made on the CPU path only; use train.decode: auto or cpu")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ParamsError(f"train.device = {device!r}: not allowed; use auto, cpu, cuda or cuda:N")
    ev = sections["eval"]
    if not ev.eps:
        raise ParamsError("eval.eps: empty; give a list such as [0, 2/255, 4/255, 8/255]")
    if not any(abs(e - ev.headline_eps) < 1e-12 for e in ev.eps):
        raise ParamsError(f"eval.headline_eps = {ev.headline_eps:.6g}: not in eval.eps; add it there")
    for key in ("corruptions", "corruption_severities"):
        values = list(getattr(ev, key))
        dup = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if dup is not None:
            raise ParamsError(f"eval.{key}: {dup!r} is listed twice; list each once")
    adv = sections["adv"]
    if adv.select_steps <= adv.steps:
        raise ParamsError(f"adv.select_steps = {adv.select_steps}: must exceed adv.steps = "
                          f"{adv.steps} (select on val with an attack stronger than the training one)")
    if adv.select_seed == adv.seed:
        raise ParamsError(f"adv.select_seed = {adv.select_seed}: must differ from adv.seed")


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml``; raise :class:`ParamsError` with a one-line message."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project root or pass --params") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{where}; fix the syntax") from None
    return params_from_dict(raw, str(path))


def default_params() -> dict:
    """The documented defaults as a params mapping (params.yaml must equal it, key by key)."""
    out = {}
    for f in dataclasses.fields(Params):
        out[f.name] = as_dict(_build(typing.get_type_hints(Params)[f.name], {}, f.name))
    return out


def as_dict(obj: Any) -> Any:
    """A plain-dict view of a params dataclass (for logging and checkpoints)."""
    return dataclasses.asdict(obj)
