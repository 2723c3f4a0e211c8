"""Downscale-then-upscale: a crop shrunk by a factor of 2-6 and resized back, bilinear both ways
without antialiasing (DeeperForensics-1.0's 'JPEG' distortion, which is this pixelation)."""

from __future__ import annotations

from typing import Optional

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from fakeproof.corruptions._base import corruption, finish


@corruption("downscale")
def corrupt(images: Tensor, amount: float, generator: Optional[torch.Generator]) -> Tensor:
    """Resize to ``1 / factor`` of the size (``factor`` from ``severity``) and back."""
    f = int(amount)
    h, w = images.shape[-2:]
    small = TF.resize(images.float(), [max(1, h // f), max(1, w // f)], antialias=False)
    return finish(TF.resize(small, [h, w], antialias=False))
