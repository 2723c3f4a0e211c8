"""Contrast reduction about each channel's mean, ``(x - mean) * c + mean`` (ImageNet-C's
formula) with DeeperForensics-1.0's colour-contrast factors 0.85-0.35."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fakeproof.corruptions._base import corruption, finish


@corruption("contrast")
def corrupt(images: Tensor, amount: float, generator: Optional[torch.Generator]) -> Tensor:
    """Pull every value towards its crop's channel mean by the factor of ``severity``."""
    c = amount
    x = images.float()
    mean = x.mean(dim=(2, 3), keepdim=True)
    return finish((x - mean) * c + mean)
