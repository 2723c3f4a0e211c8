"""Contrast reduction about each channel's mean, ``(x - mean) * c + mean`` (ImageNet-C's
formula) with DeeperForensics-1.0's colour-contrast factors 0.85-0.35."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fakeproof.corruptions._base import check_images, check_severity, finish, level


def corrupt(images: Tensor, *, severity: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Pull every value towards its crop's channel mean by the factor of ``severity``."""
    images = check_images(images)
    if check_severity(severity) == 0:
        return images.clone()
    c = level("contrast", severity)
    x = images.float()
    mean = x.mean(dim=(2, 3), keepdim=True)
    return finish((x - mean) * c + mean)
