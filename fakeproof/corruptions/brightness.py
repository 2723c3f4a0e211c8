"""Brightness: the HSV value channel raised by 0.1-0.5 and clipped (ImageNet-C ``brightness``).

Raising ``V = max(R, G, B)`` to ``min(V + c, 1)`` with hue and saturation kept is scaling the
pixel's RGB by ``min(V + c, 1) / V`` (a black pixel becomes grey ``c``), so no HSV round trip is
needed."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fakeproof.corruptions._base import check_images, check_severity, finish, level


def corrupt(images: Tensor, *, severity: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Every pixel's HSV value raised by the amount of ``severity`` (deterministic)."""
    images = check_images(images)
    if check_severity(severity) == 0:
        return images.clone()
    c = level("brightness", severity)
    x = images.float()
    v = x.amax(dim=1, keepdim=True)
    scaled = x * (torch.clamp(v + c, max=1.0) / v.clamp(min=1e-12))
    return finish(torch.where(v > 0, scaled, torch.full_like(x, min(c, 1.0))))
