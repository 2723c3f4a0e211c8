"""JPEG re-compression of each crop (libjpeg through torchvision), quality 25-7 (ImageNet-C)."""

from __future__ import annotations

from typing import Optional

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from fakeproof.corruptions._base import corruption, to_uint8


@corruption("jpeg")
def corrupt(images: Tensor, amount: float, generator: Optional[torch.Generator]) -> Tensor:
    """Encode each crop as a JPEG at the quality of ``severity`` and decode it (deterministic)."""
    out = TF.jpeg(to_uint8(images), int(amount))
    return out.to(torch.float32) / 255.0
