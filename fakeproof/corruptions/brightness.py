"""Brightness: the HSV value channel raised by 0.1-0.5 and clipped (ImageNet-C ``brightness``).

Raising ``V = max(R, G, B)`` to ``min(V + c, 1)`` with hue and saturation kept is scaling the
pixel's RGB by ``min(V + c, 1) / V`` (a black pixel becomes grey ``c``), so no HSV round trip is
needed."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fakeproof.corruptions._base import corruption, finish


@corruption("brightness")
def corrupt(images: Tensor, amount: float, generator: Optional[torch.Generator]) -> Tensor:
    """Every pixel's HSV value raised by the amount of ``severity`` (deterministic)."""
    c = amount
    x = images.float()
    v = x.amax(dim=1, keepdim=True)
    scaled = x * (torch.clamp(v + c, max=1.0) / v.clamp(min=1e-12))
    return finish(torch.where(v > 0, scaled, torch.full_like(x, min(c, 1.0))))
