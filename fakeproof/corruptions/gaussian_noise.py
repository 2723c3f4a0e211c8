"""Additive white Gaussian noise on every pixel value (DeeperForensics-1.0 GNC levels; DF adds it
in YCbCr, here in RGB as ImageNet-C does)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fakeproof.corruptions._base import check_images, check_severity, finish, generator_or_default, level


def corrupt(images: Tensor, *, severity: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """``images + N(0, sigma^2)`` with sigma from ``severity``, drawn from ``generator``."""
    images = check_images(images)
    if check_severity(severity) == 0:
        return images.clone()
    g = generator_or_default(generator)
    noise = torch.randn(images.shape, generator=g, dtype=torch.float32) * level("gaussian_noise", severity)
    return finish(images.float() + noise.to(images.device))
