"""Additive white Gaussian noise on every pixel value (DeeperForensics-1.0 GNC levels; DF adds it
in YCbCr, here in RGB as ImageNet-C does)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fakeproof.corruptions._base import corruption, finish, generator_or_default


@corruption("gaussian_noise")
def corrupt(images: Tensor, amount: float, generator: Optional[torch.Generator]) -> Tensor:
    """``images + N(0, sigma^2)`` with sigma from ``severity``, drawn from ``generator``."""
    g = generator_or_default(generator)
    noise = torch.randn(images.shape, generator=g, dtype=torch.float32) * amount
    return finish(images.float() + noise.to(images.device))
