"""A registry of binary face-forgery detectors, built by name (in the manner of timm).

Every model takes images in [0, 1] (N, 3, H, W) and returns one fake logit (N, 1): normalisation
is a layer inside the model, so attacks work in pixel space with eps in pixel units.

Registered backbones:

- ``smallcnn``: four conv-BN-ReLU blocks and global pooling; a fast baseline for CPU runs.
- ``mobilenet_v3_small``: Howard et al., "Searching for MobileNetV3", ICCV 2019 (torchvision).
- ``resnet18`` / ``resnet50``: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
- ``efficientnet_b0``: Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019.

``pretrained`` (params ``model.pretrained``) is ``null`` (train from scratch), ``imagenet``
(torchvision's weights enum: downloaded once into ``$TORCH_HOME``, read from that cache offline),
or a path to a local state-dict file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torchvision
from torch import nn
from fakeproof.errors import FakeproofError

_log = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelError(FakeproofError, RuntimeError):
    """A model name, weights file or checkpoint is unusable (one-line message)."""


@dataclass(frozen=True)
class ModelConfig:
    """Default config of a registered model (cf. timm's ``default_cfg``)."""

    name: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224
    paper: str = ""
    tv_weights: Optional[str] = None  # torchvision weights enum member for ``imagenet``
    extra: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, tuple[Callable[[], nn.Module], ModelConfig]] = {}


def register_model(cfg: ModelConfig) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    def deco(fn: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        _REGISTRY[cfg.name] = (fn, cfg)
        return fn
    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_config(name: str) -> ModelConfig:
    if name not in _REGISTRY:
        raise ModelError(f"model.name = {name!r}: unknown; use one of {', '.join(list_models())}")
    return _REGISTRY[name][1]


class Normalize(nn.Module):
    """Per-channel (x - mean) / std as a layer, so the model's input space is [0, 1] pixels."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Detector(nn.Module):
    """Normalisation layer + backbone; returns the fake logit (N, 1)."""

    def __init__(self, backbone: nn.Module, cfg: ModelConfig) -> None:
        super().__init__()
        self.normalize = Normalize(cfg.mean, cfg.std)
        self.backbone = backbone
        self.name = cfg.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone(self.normalize(x))
        if out.ndim == 1:
            out = out.unsqueeze(1)
        if out.ndim != 2 or out.shape[1] != 1 or out.shape[0] != x.shape[0]:
            raise ModelError(f"model {self.name}: backbone returned shape {tuple(out.shape)} for "
                             f"{x.shape[0]} images; a detector must return one fake logit (N, 1)")
        return out


def _head(in_features: int) -> nn.Module:
    return nn.Sequential(nn.Dropout(0.2), nn.Linear(in_features, 1))


@register_model(ModelConfig("smallcnn", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=128,
                            paper="a 4-block CNN baseline (cf. MesoNet, Afchar et al., WIFS 2018)"))
def smallcnn() -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 64), *block(64, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), _head(128))


@register_model(ModelConfig("mobilenet_v3_small", input_size=224, paper="Howard et al., ICCV 2019",
                            tv_weights="MobileNet_V3_Small_Weights.IMAGENET1K_V1"))
def mobilenet_v3_small() -> nn.Module:
    return torchvision.models.mobilenet_v3_small(weights=None)


@register_model(ModelConfig("resnet18", paper="He et al., CVPR 2016",
                            tv_weights="ResNet18_Weights.IMAGENET1K_V1"))
def resnet18() -> nn.Module:
    return torchvision.models.resnet18(weights=None)


@register_model(ModelConfig("resnet50", paper="He et al., CVPR 2016",
                            tv_weights="ResNet50_Weights.IMAGENET1K_V2"))
def resnet50() -> nn.Module:
    return torchvision.models.resnet50(weights=None)


@register_model(ModelConfig("efficientnet_b0", paper="Tan & Le, ICML 2019",
                            tv_weights="EfficientNet_B0_Weights.IMAGENET1K_V1"))
def efficientnet_b0() -> nn.Module:
    return torchvision.models.efficientnet_b0(weights=None)


def _replace_head(net: nn.Module) -> nn.Module:
    """Swap a torchvision classifier's last Linear for a single-logit head."""
    for attr in ("classifier", "fc"):
        head = getattr(net, attr, None)
        if isinstance(head, nn.Linear):
            setattr(net, attr, _head(head.in_features))
            return net
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
            head[-1] = nn.Linear(head[-1].in_features, 1)
            return net
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if linears and linears[-1].out_features == 1:  # the builder already ends in one logit
        return net
    raise ModelError(f"{type(net).__name__}: no classifier/fc Linear head found to replace with a "
                     "one-logit head; register a builder that ends in nn.Linear(features, 1)")


def _load_pretrained(net: nn.Module, cfg: ModelConfig, pretrained: str) -> None:
    if pretrained == "imagenet":
        if not cfg.tv_weights:
            raise ModelError(f"model.pretrained = imagenet: {cfg.name} has no ImageNet weights; "
                             "use null or a local weights file")
        enum_name, member = cfg.tv_weights.split(".")
        weights = getattr(getattr(torchvision.models, enum_name), member)
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as e:  # URLError, OSError, ...: no network and no TORCH_HOME cache
            raise ModelError(
                f"model.pretrained = imagenet: could not load {cfg.tv_weights} ({type(e).__name__}); "
                f"offline? put {weights.url.rsplit('/', 1)[-1]} into $TORCH_HOME/hub/checkpoints "
                "or set model.pretrained to a local file") from None
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise ModelError(f"model.pretrained = {pretrained!r}: no such file; give a state-dict "
                             "path, 'imagenet' or null")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelError(f"{path}: not a loadable state dict ({type(e).__name__})") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    report = load_matching(net, state, f"model.pretrained = {pretrained!r}")
    _log.info("pretrained %s into %s: %d tensors matched, %d missing, %d unexpected or mis-shaped",
              pretrained, cfg.name, len(report["matched"]), len(report["missing"]),
              len(report["unexpected"]))


def load_matching(net: nn.Module, state: dict, what: str, min_share: float = 0.9) -> dict:
    """Load the tensors of ``state`` whose name and shape match ``net``'s, and report the rest.

    A classifier head that does not match is expected (it is replaced afterwards); anything
    below ``min_share`` of the net's tensors matched is refused with the first missing keys named.
    """
    own = net.state_dict()
    matched = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    missing = [k for k in own if k not in matched]
    unexpected = [k for k in state if k not in matched]
    if len(matched) < min_share * len(own):
        raise ModelError(f"{what}: only {len(matched)} of {len(own)} tensors match {type(net).__name__}"
                         f"; missing e.g. {', '.join(missing[:3])}; give weights of this architecture")
    net.load_state_dict({k: state[k] for k in matched}, strict=False)
    return {"matched": matched, "missing": missing, "unexpected": unexpected}


def create_model(name: str, pretrained: Optional[str] = None) -> Detector:
    """Build a registered detector by name; ``pretrained`` as in the module docstring."""
    fn, cfg = _REGISTRY.get(name, (None, None))
    if fn is None or cfg is None:
        model_config(name)  # raises with the list of names
        raise AssertionError  # pragma: no cover
    net = fn()
    if pretrained:
        _load_pretrained(net, cfg, pretrained)
    net = _replace_head(net)
    return Detector(net, cfg)


def save_checkpoint(path: str | Path, model: Detector, meta: dict[str, Any]) -> None:
    """Save weights and metadata atomically (deterministic bytes for the same weights)."""
    from fakeproof.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"model": model.name, "state_dict": model.state_dict(), "meta": meta}, tmp)


def load_checkpoint(path: str | Path) -> tuple[Detector, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`; the model is in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found; run the stage that writes it (dvc repro)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = create_model(ckpt["model"])
        model.load_state_dict(ckpt["state_dict"])
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{path}: not a fakeproof checkpoint ({type(e).__name__}: {e})"[:300]) from None
    model.eval()
    return model, ckpt.get("meta", {})
