"""JPEG re-compression of each crop (libjpeg through torchvision), quality 25-7 (ImageNet-C)."""

from __future__ import annotations

from typing import Optional

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from fakeproof.corruptions._base import check_images, check_severity, level, to_uint8


def corrupt(images: Tensor, *, severity: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Encode each crop as a JPEG at the quality of ``severity`` and decode it (deterministic)."""
    images = check_images(images)
    if check_severity(severity) == 0:
        return images.clone()
    out = TF.jpeg(to_uint8(images), int(level("jpeg", severity)))
    return out.to(torch.float32) / 255.0
