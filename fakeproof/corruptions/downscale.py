"""Downscale-then-upscale: a crop shrunk by a factor of 2-6 and resized back, bilinear both ways
without antialiasing (DeeperForensics-1.0's 'JPEG' distortion, which is this pixelation)."""

from __future__ import annotations

from typing import Optional

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from fakeproof.corruptions._base import check_images, check_severity, finish, level


def corrupt(images: Tensor, *, severity: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Resize to ``1 / factor`` of the size (``factor`` from ``severity``) and back."""
    images = check_images(images)
    if check_severity(severity) == 0:
        return images.clone()
    f = int(level("downscale", severity))
    h, w = images.shape[-2:]
    small = TF.resize(images.float(), [max(1, h // f), max(1, w // f)], antialias=False)
    return finish(TF.resize(small, [h, w], antialias=False))
